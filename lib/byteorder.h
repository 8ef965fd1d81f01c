/*
 * byteorder.h — loads and stores of the on-disk little-endian fields.
 *
 * On-disk structures declare their fields as mfs_le16/32/64; code reads them only with
 * mfs_get*() and writes them only with mfs_put*(), so a big-endian host would need only
 * this file changed.
 */
#ifndef MFS_BYTEORDER_H
#define MFS_BYTEORDER_H

#include <endian.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t mfs_get16(uint16_t v) { return le16toh(v); }
static inline uint32_t mfs_get32(uint32_t v) { return le32toh(v); }
static inline uint64_t mfs_get64(uint64_t v) { return le64toh(v); }

#define mfs_put16(field, v) ((field) = htole16(v))
#define mfs_put32(field, v) ((field) = htole32(v))
#define mfs_put64(field, v) ((field) = htole64(v))

#endif
