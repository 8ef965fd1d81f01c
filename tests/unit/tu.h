/*
 * tu.h — the unit tests' shared harness (tu_util.c, tu_fs.c; linked into every test).
 *
 *   assertions   T_* report only failures (cheap in loops of millions of checks), CK_* are
 *                the short forms used around library calls (CK_OK: returns 0);
 *   UNDER_ASAN   1 in the sanitizer build, where tests scale their counts down;
 *   random       one seeded xorshift64* stream per process (tu_srand/tu_rand), and
 *                tu_seed() that takes a seed from an environment variable or the clock and
 *                prints it, so any failing run can be replayed;
 *   images       sparse temporary image files, their CRC, and programs from $BIN;
 *                scratch descriptors (memfd / O_TMPFILE) and an open-descriptor count;
 *   AG model     tu_ag.c: a handle over an unformatted image plus a model of every block's
 *                owner, and tu_check_ag() that holds an AG's trees and header to it;
 *   filesystems  tu_format() formats an image in process with lib/format (the same code
 *                as mkfs.mendfs), tu_fs_open/close open it; tu_geom() + tu_fs_create() give
 *                a handle over an unformatted image for tests that build AGs themselves;
 *                tu_img_* a formatted image with an inode cache, checked by mendfs_db.
 *
 * Every helper asserts its own success (a failure fails the calling test), so tests read as
 * the steps they take.
 */
#ifndef TU_H
#define TU_H

#include <check.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ag.h"
#include "geom.h"
#include "repair.h"

struct mfs_fs;
struct mfs_format_opts;

/* ---- assertions ------------------------------------------------------------------------------
 * Check's ck_assert_* records every passing assertion with a write(2) to its log, which
 * dominates loops of millions of checks; these report only failures (through ck_abort_msg,
 * so the file and line and both values are still in the failure message). */
#define T_CMP(a, op, b, type, fmt)                                                      \
	do {                                                                            \
		type _a = (type)(a), _b = (type)(b);                                     \
		if (!(_a op _b))                                                        \
			ck_abort_msg("%s:%d: %s %s %s failed: " fmt " vs " fmt, __FILE__,    \
				     __LINE__, #a, #op, #b, _a, _b);                        \
	} while (0)
#define T_IEQ(a, b) T_CMP(a, ==, b, long long, "%lld")
#define T_IGE(a, b) T_CMP(a, >=, b, long long, "%lld")
#define T_UEQ(a, b) T_CMP(a, ==, b, unsigned long long, "%llu")
#define T_UGE(a, b) T_CMP(a, >=, b, unsigned long long, "%llu")
#define T_UGT(a, b) T_CMP(a, >, b, unsigned long long, "%llu")
#define T_ULT(a, b) T_CMP(a, <, b, unsigned long long, "%llu")
#define T_ULE(a, b) T_CMP(a, <=, b, unsigned long long, "%llu")
#define T_TRUE(c)                                                                       \
	do {                                                                            \
		if (!(c))                                                               \
			ck_abort_msg("%s:%d: %s failed", __FILE__, __LINE__, #c);       \
	} while (0)

#define CK_EQ(x, y) do { long long x_ = (long long)(x), y_ = (long long)(y); \
		if (x_ != y_) ck_assert_msg(0, "%s == %lld, expected %s == %lld", #x, x_, #y, y_); \
	} while (0)
#define CK_TRUE(e) do { if (!(e)) ck_assert_msg(0, "%s", #e); } while (0)
#define CK_OK(e) do { int e_ = (e); if (e_) ck_assert_msg(0, "%s: %d (%s)", #e, e_, \
							    strerror(-e_)); } while (0)

/* ---- the sanitizer build -------------------------------------------------------------------- */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* ---- random numbers --------------------------------------------------------------------------
 * One xorshift64* stream per process (each Check test runs in its own child).  tu_srand
 * scrambles the seed (splitmix64), so nearby seeds give unrelated streams and 0 is valid. */
void tu_srand(uint64_t seed);
uint64_t tu_rand(void);
uint32_t tu_rand_below(uint32_t n);          /* 0..n-1; 0 when n is 0 */
/* A seed from $env (decimal or 0x hex) or else from the clock and pid, never 0; printed on
 * stdout as "<what>: seed N (set <env>=N to repeat)".  Does not seed the stream. */
uint64_t tu_seed(const char *env, const char *what);

/* Monotonic seconds. */
double tu_now(void);

/* ---- temporary images and programs ---------------------------------------------------------- */
#define TU_PATH_MAX 64
/* A new sparse file of `bytes` bytes, unlinked at once: its name in path[TU_PATH_MAX] is
 * /proc/self/fd/N (valid here and in programs this process runs) until tu_image_remove. */
void tu_image_create(char *path, const char *tag, uint64_t bytes);
void tu_image_remove(const char *path);
/* Flush `fs` (when not NULL) and return the CRC32C of the whole file. */
uint32_t tu_image_crc(struct mfs_fs *fs, const char *path);
/* The path of a built program, $BIN/<name> (default build/bin) in buf; 0 if executable,
 * -ENOENT if not. */
int tu_program(const char *name, char *buf, size_t len);
/* system(cmd, printf-style): the exit status, or 128 + signal. */
int tu_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Run one suite in CK_NORMAL mode; the process exit status (EXIT_SUCCESS/EXIT_FAILURE). */
int tu_run_suite(Suite *s);
/* The same, unless the built program `prog` ($BIN) is missing: then a "skipped" line and
 * 77, the test runner's skip status (the suite is freed unrun). */
int tu_run_suite_needing(const char *prog, Suite *s);

/* A scratch file descriptor for the scratch stores (xfarray, xblob): a memfd, or with
 * `tmpfile` an unnamed O_TMPFILE in /var/tmp.  Fails the test if it cannot be made. */
int tu_scratch_fd(int tmpfile);
/* The number of entries in /proc/self/fd: descriptor leak checks compare two counts. */
int tu_count_fds(void);

/* ---- filesystems ---------------------------------------------------------------------------- */
/* Create (or truncate to) a sparse image of `bytes` at `path` and format it in process with
 * lib/format; `opts` NULL means every default.  Fails the test if the format fails. */
void tu_format(const char *path, uint64_t bytes, const struct mfs_format_opts *opts);
/* tu_image_create + tu_format in one step. */
void tu_format_new(char *path, const char *tag, uint64_t bytes,
		   const struct mfs_format_opts *opts);
/* mfs_fs_open with `flags` (MFS_OPEN_*) and the default cache; tu_fs_close closes it. */
struct mfs_fs *tu_fs_open(const char *path, unsigned flags);
void tu_fs_close(struct mfs_fs *fs);

/* Mark the superblock dirty, as a mounted filesystem's is: its summary counters are then
 * not expected to match the AGs (mendfs_db's check recounts them). */
void tu_sb_mark_dirty(struct mfs_fs *fs);

/* A formatted image opened with an inode cache: the filesystem of the tests that work on
 * inodes, directories and extent maps.  `flags` (MFS_OPEN_*) are used for every open. */
struct tu_img {
	char path[TU_PATH_MAX];
	struct mfs_fs *fs;
	unsigned flags;
};
/* A new image /tmp/<tag>.XXXXXX of `bytes` formatted with `opts` (tu_format_new), opened. */
void tu_img_make(struct tu_img *t, const char *tag, uint64_t bytes,
		 const struct mfs_format_opts *opts, unsigned flags);
void tu_img_open(struct tu_img *t);              /* tu_fs_open + mfs_icache_init */
void tu_img_close(struct tu_img *t);             /* mfs_icache_destroy + tu_fs_close */
void tu_img_destroy(struct tu_img *t);           /* closes if open, removes the image */
/* Close, run the built mendfs_db's check on the image (it must exit 0), reopen.  The
 * program must exist: test mains skip (exit 77) without it (tu_program). */
void tu_img_db_check(struct tu_img *t);
/* mfs_ialloc, then give the new inode one link (as a directory entry would), so that
 * whole-filesystem checks do not take it for an unlinked inode missing from the orphan
 * list.  For tests of allocation that never name their inodes. */
int tu_ialloc_linked(struct mfs_trans *tp, uint64_t hint, uint16_t mode, uint64_t *ino);

/* ---- scrub and repair (tu_scrub.c) ---- */
/* A new inode of `mode` named `name` in directory `dir`, in one transaction as the daemon
 * makes it (a directory gets "." and ".." and its parent a link); `nlink` the count written
 * (0: the right one); `target` an inline symlink target or NULL.  Returns its number. */
uint64_t tu_mknode(struct mfs_fs *fs, uint64_t dir, const char *name, uint16_t mode,
		   uint32_t nlink, const char *target);
/* The findings of one checker run: how many, their flags or-ed, the first one's text. */
struct tu_findings {
	unsigned n;
	uint32_t flags;
	char first[512];
};
/* Run the checker of one object; count the findings whose flag is in `mask` (0: all).
 * Returns mfs_scrub()'s status. */
int tu_scrub_one(struct mfs_fs *fs, uint32_t type, uint32_t agno, uint64_t ino,
		 uint32_t mask, struct tu_findings *f);
/* Repair one object with memfd scratch (margin 1, the test hook if any); asserts that the
 * scratch was given back (size 0 after) and, on success, used within the estimate.
 * Returns mfs_repair()'s status; *out (may be NULL) gets the context (reason, records). */
int tu_repair_one(struct mfs_fs *fs, uint32_t type, uint32_t agno, uint64_t ino,
		  int (*hook)(void *arg, enum mfs_repair_point at), void *hook_arg,
		  struct mfs_repair_ctx *out);
/* The same with the repair's flags (MFS_REPAIR_OFFLINE...). */
int tu_repair_flags(struct mfs_fs *fs, uint32_t type, uint32_t agno, uint64_t ino,
		    unsigned flags, int (*hook)(void *arg, enum mfs_repair_point at),
		    void *hook_arg, struct mfs_repair_ctx *out);

/* A valid geometry of `agcount` AGs of `agblocks` blocks (`dblocks` in all) with 256-byte
 * inodes, no journal, the root chunk where format puts it; `uuid` NULL: a fixed one.  Checked
 * with the mount validator. */
void tu_geom(struct mfs_geom *g, uint32_t bs, uint32_t agblocks, uint32_t agcount,
	     uint64_t dblocks, const uint8_t *uuid);
/* A handle with geometry `g` over the existing image `path` (nothing read from it); cache
 * 0: the default. */
struct mfs_fs *tu_fs_create(const char *path, const struct mfs_geom *g, size_t cache_bytes);

/* A scratch filesystem for btree tests: one AG of `agblocks` blocks over a fresh sparse
 * image, nothing formatted, a UUID drawn from the tu_rand stream, a 1 GiB cache. */
struct tu_scratch {
	char path[TU_PATH_MAX];
	struct mfs_geom geo;
	struct mfs_fs *fs;
};
void tu_scratch_open(struct tu_scratch *t, const char *tag, uint32_t bs, uint32_t agblocks);
/* Write everything back and drop the cache: the next reads come from the image. */
void tu_scratch_remount(struct tu_scratch *t);
void tu_scratch_close(struct tu_scratch *t);      /* closes and removes the image */

/* Records of 16 bytes (u64 key, u64 value) with 8-byte keys, all little-endian: the test
 * trees' key order and record-to-key functions (struct mfs_btree_ops). */
int tu_key64_cmp(const void *a, const void *b);
void tu_key64_of_rec(const void *rec, void *key);

/* ---- the AG model (tu_ag.c) ----------------------------------------------------------------- */
#define TU_OWN_FREE 0ull          /* model: the block is free (0 is never an owner) */

struct tu_agfs {
	char path[TU_PATH_MAX];
	struct mfs_fs *fs;
	/* model, one entry per fsblock: owner and rmap offset of the block itself */
	uint64_t *owner;
	uint64_t *offset;
};

/* A handle (tu_geom, fixed UUID) over a fresh sparse image; AGs not yet formatted. */
void tu_agfs_open(struct tu_agfs *t, uint32_t bs, uint32_t agblocks, uint32_t agcount,
		  uint64_t dblocks);
/* Close the handle (flushing everything) and open a new one on the image: a cold cache. */
void tu_agfs_reopen(struct tu_agfs *t);
void tu_agfs_close(struct tu_agfs *t);
/* Record in the model that [fsb, fsb+len) belongs to (owner, offset). */
void tu_model_set(struct tu_agfs *t, uint64_t fsb, uint32_t len, uint64_t owner,
		  uint64_t offset);
/* Format every AG with no used extents. */
void tu_agfs_format_all(struct tu_agfs *t);
/* Everything about AG `agno` that must hold between operations.  Returns the number of
 * records of each tree in nrecs_out[] and their heights in levels_out[] when not NULL. */
void tu_check_ag(struct tu_agfs *t, uint32_t agno, uint64_t nrecs_out[MFS_AG_NTREES],
		 unsigned levels_out[MFS_AG_NTREES]);
void tu_check_all(struct tu_agfs *t);

#endif
