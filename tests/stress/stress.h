/*
 * stress.h — the interface between the parts of mendfs_stress, the project's fsstress-style
 * load generator and verifier.
 *
 * Every worker process owns one subdirectory (DIR/p<N>) and nothing else, so it can keep an
 * exact model of what lives there: a tree of names (struct dent) pointing at objects (struct
 * obj: a file, directory, symlink or special file, shared by hard links).  A regular file's
 * content is never stored: the model keeps a sorted list of non-overlapping byte ranges
 * (struct seg), each tagged with the unique id of the write that produced it, and every byte
 * of a range is a pure function of (seed, tag, offset) (pattern.c).  Bytes outside every
 * range read as zeroes.  So any read, at any offset, can be checked exactly.
 *
 * Invariants of the model (what the real filesystem must agree with after every operation):
 *  - a directory's children are exactly the live dents whose parent is that directory;
 *  - a non-directory object's nlink is the number of dents pointing at it, a directory's is
 *    2 + its number of subdirectories;
 *  - segs are sorted, non-overlapping, non-empty, and end at or before obj->size;
 *  - tag SEG_UNKNOWN marks bytes whose content is not known (an ENOSPC in the middle of a
 *    write): they are skipped by the checks, and a file holding some is never logged as
 *    fsync'd.
 */
#ifndef MENDFS_STRESS_H
#define MENDFS_STRESS_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

#define MAXPROCS	64
#define SEG_UNKNOWN	UINT64_MAX
#define MAXXATTRS	8

/* The operations, in the order of their names in ops.c. */
enum op_kind {
	OP_CREAT, OP_MKDIR, OP_WRITE, OP_APPEND, OP_READ, OP_MMAPR, OP_MMAPW, OP_TRUNCATE,
	OP_FALLOC, OP_PUNCH, OP_ZERO, OP_RENAME, OP_EXCHANGE, OP_LINK, OP_UNLINK, OP_RMDIR,
	OP_SYMLINK, OP_MKNOD, OP_SETXATTR, OP_RMXATTR, OP_CHMOD, OP_CHOWN, OP_UTIMES,
	OP_FSYNC, OP_FDATASYNC, OP_READDIR, OP_STAT, OP_ORPHAN,
	NOPS
};

/* Per-process counters, in memory shared with the parent (it prints the summary). */
struct pstat {
	uint64_t ok[NOPS];		/* the operation did what the model said */
	uint64_t experr[NOPS];		/* it failed with the errno the model expected */
	uint64_t enospc[NOPS];		/* ENOSPC, allowed by -S */
	uint64_t notsup[NOPS];		/* ENOTSUP (xattrs the daemon does not serve yet) */
	uint64_t ops;			/* operations started */
	uint64_t bytes_written, bytes_verified, reads_verified;
	uint64_t files_verified, dirs_verified;	/* the final walk */
	int failed, done, gone;		/* gone: the filesystem went away (-k) */
};

struct seg {
	uint64_t start, end;		/* [start, end) */
	uint64_t tag;
};

struct xat {
	char name[40];
	uint64_t tag;
	uint32_t len;
};

struct obj {
	mode_t type;			/* S_IFREG, S_IFDIR, ... */
	mode_t perm;			/* the 07777 bits */
	uid_t uid;
	gid_t gid;
	uint64_t ino;
	int nlink;			/* dents pointing here (non-directories) */
	int nsubdirs, nchildren;	/* directories */
	uint64_t size;
	struct seg *segs;
	size_t nsegs, capsegs;
	char *target;			/* symlinks */
	dev_t rdev;
	struct xat xattrs[MAXXATTRS];
	int nxattrs;
};

struct dent {
	char *name;
	struct obj *obj;
	struct dent *parent;		/* NULL for the process's root */
	size_t idx;			/* position in proc.dents */
};

struct opts {
	int nprocs;
	uint64_t nops;			/* per process; 0: until the time limit */
	double seconds;			/* 0: no time limit */
	uint64_t seed;
	unsigned weights[NOPS];
	int allow_enospc;		/* -S */
	int gone_ok;			/* -k: ENOTCONN ends the run quietly (crash tests) */
	int verbose;
	int cleanup;			/* -c: remove everything after the final check */
	int paranoid;			/* -P: check a file's whole content after each change */
	unsigned max_entries;		/* names per process */
	uint64_t max_size;		/* bytes per file */
	const char *synclog;		/* -l FILE */
	const char *manifest;		/* -m FILE */
	const char *dir;
};

#define RING 16
struct proc {
	int idx;
	const struct opts *o;
	struct pstat *st;
	uint64_t rng[4];
	int rootfd;
	char rootname[16];		/* "p3" */
	struct dent root;
	struct dent **dents;		/* every live dent but the root */
	size_t ndents, capdents;
	uint64_t nextname, nexttag;
	uint64_t opno;
	double t0;
	int synclogfd;
	int xattr_off;			/* the filesystem said ENOTSUP */
	struct obj *touched;		/* the file the current operation opened (-P) */
	unsigned char *buf, *buf2;	/* BUFSZ each */
	char ring[RING][200];		/* the last operations, for a failure report */
	char failmsg[1024];		/* the first failure */
};
#define BUFSZ (1u << 20)

/* pattern.c: random numbers and content */
uint64_t rng_next(struct proc *p);
uint64_t rng_below(struct proc *p, uint64_t n);	/* uniform in [0, n), n > 0 */
void rng_seed(struct proc *p, uint64_t seed, int idx);
void pattern_fill(uint64_t seed, uint64_t tag, uint64_t off, unsigned char *buf, size_t len);
/* Compare buf (holding [off, off+len) of obj) against the model; -1 when equal, else the
 * index of the first differing byte. */
long model_compare(const struct proc *p, const struct obj *ob, uint64_t off,
		   const unsigned char *buf, size_t len);
/* Expected content of [off, off+len) (len <= BUFSZ); unknown bytes come out as zero. */
void model_expect(const struct proc *p, const struct obj *ob, uint64_t off, unsigned char *buf,
		  size_t len);
int model_has_unknown(const struct obj *ob);

/* model.c */
struct obj *obj_new(mode_t type, mode_t perm);
void obj_put(struct obj *ob);			/* frees once nothing points at it */
struct dent *dent_add(struct proc *p, struct dent *parent, const char *name, struct obj *ob);
void dent_del(struct proc *p, struct dent *d);
void dent_move(struct dent *d, struct dent *newparent, const char *newname);
struct dent *dent_child(const struct proc *p, const struct dent *dir, const char *name);
int dent_is_ancestor(const struct dent *a, const struct dent *d);	/* a == d or above */
size_t dent_path(const struct dent *d, char *buf, size_t size);	/* relative to the root */
void seg_write(struct obj *ob, uint64_t start, uint64_t end, uint64_t tag);
void obj_write(struct obj *ob, uint64_t off, uint64_t len, uint64_t tag);	/* and extend */
void obj_truncate(struct obj *ob, uint64_t size);
void model_free(struct proc *p);

/* check.c: comparing the filesystem with the model */
int check_stat(struct proc *p, struct dent *d, const char *why);
int check_dir(struct proc *p, struct dent *d);
int check_content(struct proc *p, struct dent *d, int fd);
int check_all(struct proc *p);
int check_xattrs(struct proc *p, struct dent *d);

/* ops.c */
extern const char *const op_names[NOPS];
extern const unsigned op_default_weights[NOPS];
int run_op(struct proc *p, enum op_kind k);

/* synclog.c: the fsync record for crash tests */
void synclog_dirty(struct proc *p, const struct dent *d);	/* d and everything below */
void synclog_dirty_obj(struct proc *p, const struct obj *ob);	/* every name of ob */
void synclog_synced(struct proc *p, const struct dent *d);
int synclog_verify(const char *log, const char *dir);

/* manifest.c: the list of everything left (-m), checked later (-M) */
int manifest_write(struct proc *p, const char *file);
int manifest_verify(const char *file, const char *dir);

/* main.c: reporting */
int fail(struct proc *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void note_op(struct proc *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int is_gone(int err);
double now_sec(void);

#endif
