/*
 * repair_dirwalk.h — what the inode-object rebuilders (the directory, inode core and link
 * count rebuilds) ask of the whole namespace: every allocated directory in turn, and the
 * entries that name one inode (repair_dirwalk.c).  Both read committed on-disk inodes and
 * directories only, under their own locks, one at a time: the caller holds no inode lock
 * the walk could wait for (or only its own: the directory rebuild's callbacks only try
 * other directories' locks, mfs_iget's included, and never wait for them).
 */
#ifndef MFS_REPAIR_DIRWALK_H
#define MFS_REPAIR_DIRWALK_H

#include <stdint.h>

struct rep;

/* Call fn(priv, ino, its stored "..") for every allocated directory of the filesystem (from
 * its committed on-disk copy: rep_inode_peek), no lock held during the call, in inode
 * order; fn's positive return stops the walk (0 then), a negative one is returned.  A
 * damaged inode btree is -EFSCORRUPTED with r's reason set. */
typedef int (*rep_dir_fn)(void *priv, uint64_t ino, uint64_t parent);
int rep_walk_dirs(struct rep *r, rep_dir_fn fn, void *priv);

/* The entries naming inode `ino` in every directory but itself (each directory read under
 * its lock shared): how many, the file types they give (bit DT_x of dtypes), and the first
 * directory holding one.  A directory that cannot be read is passed over (its own repair
 * names it).  0, or an error with r's reason set. */
struct rep_names {
	uint64_t n;
	uint64_t holder;
	uint16_t dtypes;
};
int rep_inode_named(struct rep *r, uint64_t ino, struct rep_names *out);
/* The same count in one directory dp only (locked by the caller, at least shared); nothing
 * counted when dp is not a linked directory.  0 or mfs_dir_iterate's error. */
struct mfs_inode;
int rep_dir_names(struct mfs_inode *dp, uint64_t ino, struct rep_names *out);

#endif
