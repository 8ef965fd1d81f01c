/*
 * crc32c.h — CRC32C (Castagnoli), the checksum of every metadata block and inode.
 */
#ifndef MFS_CRC32C_H
#define MFS_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC32C over `len` bytes.  Start with crc = 0; the result is final (the usual
 * pre- and post-inversion are done inside), so chaining two calls equals one over both. */
uint32_t mfs_crc32c(uint32_t crc, const void *buf, size_t len);

/* The table implementation whatever the CPU (tests compare the two). */
uint32_t mfs_crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* "sse4.2" when the hardware instruction is used, "table" otherwise. */
const char *mfs_crc32c_impl(void);

#endif
