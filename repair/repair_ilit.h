/*
 * repair_ilit.h — what an inode's literal area tells about itself when a field that frames
 * it is damaged (repair_ilit.c), shared by the inode core, extent map and attribute
 * rebuilders (repair_inode.c, repair_bmap.c, repair_xattr.c), so that each one reads the
 * evidence the same way:
 *   - a "regular file" whose data fork holds a directory's names (its mode is the damage:
 *     the extent map rebuild must not free them, the inode record rebuild gives the type
 *     back);
 *   - inline attributes whose fork offset is the damage: the one offset where they parse.
 */
#ifndef MFS_REPAIR_ILIT_H
#define MFS_REPAIR_ILIT_H

#include <stdint.h>

struct mfs_fs;
struct mfs_inode;

/* Whether ip's data fork is a btree whose root block is a name-btree block (MFS_DIRBT_MAGIC)
 * owned by ip: a directory's names, whatever the mode says.  Reads the root block (the
 * caller holds ip's lock); an unreadable or out-of-range root is "no". */
int rep_fork_is_names_btree(struct mfs_fs *fs, const struct mfs_inode *ip);

/* Whether a loaded regular file's data fork holds a directory's names: inline bytes (a
 * file's data is never inline) or rep_fork_is_names_btree. */
int rep_file_holds_names(struct mfs_fs *fs, const struct mfs_inode *ip);

/* Inline attribute entries from byte `at` of a literal area of litsize bytes: how many
 * parse (up to the zeroes after the last one or the area's end), or -1 when one does not. */
long rep_local_attrs_count(const uint8_t *lit, uint32_t litsize, uint32_t at);

/*
 * An inline attribute fork whose offset is the damage: the one offset (8-byte units), past
 * the room the data fork needs (dformat, dnext, size: a LOCAL fork's size bytes, an extent
 * list's dnext records, a btree's root), at which the entries parse to exactly `anext`;
 * 0 when none or several do (or anext is 0).
 */
uint32_t rep_local_attrs_find(const uint8_t *lit, uint32_t litsize, uint8_t dformat,
			      uint32_t dnext, uint64_t size, uint32_t anext);

#endif
