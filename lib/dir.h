/*
 * dir.h — directories: the names of a directory inode's data fork, inline (local format)
 * or in a hashed name btree, looked up, added, removed, replaced and listed with readdir
 * cookies that stay valid while the directory changes.
 *
 * The on-disk format is described in mendfs_format.h ("Directories") and mendfs(5).  In
 * short: a small directory keeps a parent number and packed entries in the literal area;
 * when they no longer fit it becomes a btree of 48-byte records keyed by
 * (32-bit keyed hash of the name, collision sequence, part), and goes back to inline when
 * its entries fit again.  "." and ".." are never stored: "." is the directory itself, ".."
 * the stored parent.
 *
 * Rules of use
 * ------------
 * - The caller holds dp->lock: shared for lookup, iterate, count, is_empty and check;
 *   exclusive for every change.  dp must be a directory (S_IFDIR).
 * - Changes happen inside the caller's transaction `tp` (blocks joined with
 *   mfs_trans_modify, new ones allocated near the directory's inode with owner = dp->ino
 *   and rmap offset MFS_RMAP_BMBT_BLOCK, freed with mfs_free_extent) and end with
 *   mfs_inode_log(tp, dp): dp->size, dp->nblocks, dp->dnext, dp->dformat and the literal
 *   area move together.  The directory's AG is locked in tp before any block is
 *   allocated.  Times (mtime/ctime) and link counts are the caller's business.
 * - On any error from a change, the caller cancels the transaction and then re-reads the
 *   in-core inode (mfs_inode_reload under the exclusive lock, or mfs_inode_invalidate):
 *   the in-core copy may have been changed before the error.
 * - dp->size is 8 + the sum over entries of (11 + name length), in both formats (the bytes
 *   the entries take inline), so it grows and shrinks with the names.
 *
 * Names are byte strings of 1..MFS_NAME_MAX (255) bytes without '/' or NUL; a longer one is
 * -ENAMETOOLONG (checked first), an empty one or one with '/' or NUL -EINVAL.  "." and ".."
 * are answered by lookup and refused (-EINVAL) by add, remove and replace.
 */
#ifndef MFS_DIR_H
#define MFS_DIR_H

#include <stdint.h>

struct mfs_trans;
struct mfs_inode;

/* readdir cookies: 0 start, 1 after ".", 2 after ".."; stored entries from 3 on. */
#define MFS_DIR_COOKIE_DOT     1u
#define MFS_DIR_COOKIE_DOTDOT  2u
/* No cookie is ever this large: iteration from here returns nothing (end of directory). */
#define MFS_DIR_COOKIE_EOF     (1ull << 62)

/* Make `dp` an empty local-format directory whose ".." is `parent`. */
int mfs_dir_init(struct mfs_trans *tp, struct mfs_inode *dp, uint64_t parent_ino);

/* Find `name`: 0 with *ino and *ftype (either may be NULL) set, -ENOENT, -ENAMETOOLONG,
 * -EINVAL, or an I/O / corruption error.  "." gives dp itself, ".." the parent (type
 * DT_DIR). */
int mfs_dir_lookup(struct mfs_inode *dp, const char *name, unsigned len, uint64_t *ino,
		   uint8_t *ftype);

/* Add an entry; -EEXIST if the name is present (nothing changed). */
int mfs_dir_add(struct mfs_trans *tp, struct mfs_inode *dp, const char *name, unsigned len,
		uint64_t ino, uint8_t ftype);

/* Remove an entry, returning its inode number in *ino (may be NULL); -ENOENT. */
int mfs_dir_remove(struct mfs_trans *tp, struct mfs_inode *dp, const char *name,
		   unsigned len, uint64_t *ino);

/* Point an existing entry at another inode (rename over an existing name); its readdir
 * cookie stays the same.  *old_ino (may be NULL) gets the inode it named.  -ENOENT. */
int mfs_dir_replace(struct mfs_trans *tp, struct mfs_inode *dp, const char *name,
		    unsigned len, uint64_t new_ino, uint8_t new_ftype, uint64_t *old_ino);

/* Change "..": rename of a directory into another parent. */
int mfs_dir_set_parent(struct mfs_trans *tp, struct mfs_inode *dp, uint64_t parent);
int mfs_dir_get_parent(struct mfs_inode *dp, uint64_t *parent);

/* 1 if the directory holds no entry (besides "." and ".."), 0 if it holds some, or a
 * negative error. */
int mfs_dir_is_empty(struct mfs_inode *dp);

/* Number of stored entries (not counting "." and ".."). */
int mfs_dir_count(struct mfs_inode *dp, uint64_t *count);

/*
 * readdir: call fn for "." (cookie 0), ".." (cookie <= 1) and then every stored entry whose
 * cookie is >= `cookie`, in cookie order (hash order).  `next_cookie` is the cookie to
 * resume from to continue after this entry.  fn returns 0 to go on, > 0 to stop (the entry
 * is then taken as not consumed: resume from the next_cookie of the last one kept), < 0 for
 * an error, which mfs_dir_iterate returns.  Returns 0 at the end or when fn stopped.
 *
 * Entry cookies never change while the entry lives, so an iteration resumed after other
 * entries were added or removed returns every entry present throughout exactly once (an
 * entry added meanwhile may or may not be returned).  fn must not change the directory.
 */
typedef int (*mfs_dir_iter_fn)(void *priv, const char *name, unsigned len, uint64_t ino,
			       uint8_t ftype, uint64_t next_cookie);
int mfs_dir_iterate(struct mfs_inode *dp, uint64_t cookie, mfs_dir_iter_fn fn, void *priv);

/*
 * Full check of a directory's data fork (the scrubber's, and the tests'): local entries in
 * bounds, sorted, unique ids, names valid and unique; the btree passes mfs_btree_verify;
 * every head record's name hashes to its key, its continuations follow complete and in
 * order, no orphan continuation; the stored count and dp->size match the entries; the
 * btree's block count is dp->nblocks (no attribute fork blocks counted yet).  0 or
 * -EFSCORRUPTED after a message naming the directory and the entry.
 */
int mfs_dir_check(struct mfs_inode *dp);

/*
 * mfs_dir_check in the same single walk as a listing: fn (as mfs_dir_iterate's, but never
 * given "." or "..") is called on each entry once the entry itself passed its checks, in
 * cookie order.  The checks of what comes after (later entries, the stored count and size)
 * are made after fn saw the earlier entries: when the directory is damaged, fn has seen
 * the entries before the damage.  fn returns 0 to go on, < 0 for an error or > 0 to stop:
 * either ends the walk unfinished and is returned.  Else as mfs_dir_check.
 */
int mfs_dir_check_iterate(struct mfs_inode *dp, mfs_dir_iter_fn fn, void *priv);

/*
 * Convert a local-format directory to the name-btree format (nothing to do for one already
 * in it), so that its data fork holds only the 32-byte root: for the attribute fork
 * (xattr.c), which needs literal-area bytes the inline entries use.  Same transaction rules
 * as mfs_dir_add; the entries, their cookies and dp->size do not change.  A later removal
 * converts the directory back when its entries fit the (then smaller) data fork.
 */
int mfs_dir_to_btree(struct mfs_trans *tp, struct mfs_inode *dp);

/* The 32-bit name hash of the filesystem with UUID `uuid` (mendfs_format.h). */
uint32_t mfs_dir_hash(const uint8_t uuid[16], const char *name, unsigned len);

/*
 * Tests only: AND every hash with `mask` (0xffffffff: normal), to force collisions.  It
 * changes where names are stored, so an image written with one mask reads correctly only
 * with the same mask.  Not thread-safe; set before using directories.
 */
void mfs_dir_test_set_hash_mask(uint32_t mask);

#endif
