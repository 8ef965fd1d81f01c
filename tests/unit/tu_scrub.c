/*
 * tu_scrub.c — the unit-test harness's helpers for the scrub and repair tests: named inodes
 * made through the library as the daemon makes them, one checker run with its findings
 * counted, one repair with memfd scratch and the engine's scratch promises checked.
 */
#include "tu.h"

#include "dir.h"
#include "fs.h"
#include "ialloc.h"
#include "inode.h"
#include "mendfs_format.h"
#include "repair.h"
#include "scrub.h"
#include "trans.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

uint64_t tu_mknode(struct mfs_fs *fs, uint64_t dir, const char *name, uint16_t mode,
		   uint32_t nlink, const char *target)
{
	struct mfs_inode *dp, *ip;
	struct mfs_trans *tp;
	uint64_t ino;

	CK_OK(mfs_iget(fs, dir, 0, &dp));
	pthread_rwlock_wrlock(&dp->lock);
	CK_OK(mfs_trans_alloc(fs, &tp));
	CK_OK(mfs_ialloc(tp, dir, mode, &ino));
	CK_OK(mfs_iget(fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	ip->nlink = nlink ? nlink : S_ISDIR(mode) ? 2 : 1;
	if (S_ISDIR(mode)) {
		CK_OK(mfs_dir_init(tp, ip, dir));
		dp->nlink++;
	} else if (target) {
		ck_assert_uint_le(strlen(target), fs->geo.inodesize - sizeof(struct mfs_dinode));
		ip->dformat = MFS_FMT_LOCAL;
		memcpy(ip->lit, target, strlen(target));
		ip->size = strlen(target);
	}
	CK_OK(mfs_inode_log(tp, ip));
	CK_OK(mfs_dir_add(tp, dp, name, (unsigned)strlen(name), ino, (uint8_t)IFTODT(mode)));
	CK_OK(mfs_inode_log(tp, dp));
	CK_OK(mfs_trans_commit(tp));
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	pthread_rwlock_unlock(&dp->lock);
	mfs_iput(dp);
	return ino;
}

struct tu_collect {
	struct tu_findings *f;
	uint32_t mask;
};

static void tu_collect(void *arg, uint32_t flag, const char *msg)
{
	struct tu_collect *c = arg;
	struct tu_findings *f = c->f;

	if (c->mask && !(flag & c->mask))
		return;
	if (!f->n)
		snprintf(f->first, sizeof(f->first), "%s", msg);
	f->n++;
	f->flags |= flag;
}

int tu_scrub_one(struct mfs_fs *fs, uint32_t type, uint32_t agno, uint64_t ino,
		 uint32_t mask, struct tu_findings *f)
{
	struct tu_collect c = { f, mask };
	struct mfs_scrub_ctx ctx;

	memset(&ctx, 0, sizeof(ctx));
	memset(f, 0, sizeof(*f));
	ctx.fs = fs;
	ctx.type = type;
	ctx.agno = agno;
	ctx.ino = ino;
	ctx.report = tu_collect;
	ctx.hook_arg = &c;
	return mfs_scrub(&ctx);
}

int tu_repair_one(struct mfs_fs *fs, uint32_t type, uint32_t agno, uint64_t ino,
		  int (*hook)(void *arg, enum mfs_repair_point at), void *hook_arg,
		  struct mfs_repair_ctx *out)
{
	return tu_repair_flags(fs, type, agno, ino, 0, hook, hook_arg, out);
}

int tu_repair_flags(struct mfs_fs *fs, uint32_t type, uint32_t agno, uint64_t ino,
		    unsigned flags, int (*hook)(void *arg, enum mfs_repair_point at),
		    void *hook_arg, struct mfs_repair_ctx *out)
{
	struct mfs_repair_ctx rc;
	struct stat st;
	int err;

	memset(&rc, 0, sizeof(rc));
	rc.fs = fs;
	rc.type = type;
	rc.agno = agno;
	rc.ino = ino;
	rc.fds[0] = tu_scratch_fd(0);
	rc.nfds = 1;
	rc.margin = 1;
	rc.flags = flags;
	rc.test_hook = hook;
	rc.hook_arg = hook_arg;
	err = mfs_repair(&rc);
	CK_EQ(fstat(rc.fds[0], &st), 0);
	ck_assert_msg(st.st_size == 0, "type %u: %lld bytes of scratch left after the repair",
		      type, (long long)st.st_size);   /* given back, however it ended */
	close(rc.fds[0]);
	if (!err)
		ck_assert_msg(rc.scratch_used <= rc.estimate, "type %u: scratch used %llu, "
			      "estimate %llu", type, (unsigned long long)rc.scratch_used,
			      (unsigned long long)rc.estimate);
	if (out)
		*out = rc;
	return err;
}
