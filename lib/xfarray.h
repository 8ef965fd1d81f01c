/*
 * xfarray.h — a big array of fixed-size records kept in a scratch file descriptor.
 *
 * The repair engine gathers records (free extents, reverse mappings, directory entries...)
 * into these arrays.  The records live in a file that the scrub client hands over (a memfd
 * or an O_TMPFILE file), never in the daemon heap: the array itself only keeps a small,
 * fixed cache of file windows (MFS_XFARRAY_CACHE_BYTES) and, while sorting, one in-memory
 * buffer (MFS_XFARRAY_SORTBUF_BYTES).  Heap use does not depend on the number of records.
 *
 * Layout: record i sits at byte offset base + i * recsize of the file.  There is no header
 * and no per-record metadata.  A record whose bytes are all zero is an UNSET slot: storing
 * an all-zero record is refused with -EINVAL, reading an unset slot gives -ENOENT, and
 * iteration skips unset slots.  The region of the file the array uses must read as zeros
 * when the array is created (a fresh memfd, a fresh O_TMPFILE, or a fallocated reserve).
 *
 * Errors: every function returns 0 (or a documented positive value) or a negative errno.
 * I/O errors of the scratch file keep their errno (-ENOSPC, -EFBIG, -EIO, -ENOMEM...);
 * a short read or write (the file was truncated under us, or the filesystem wrote nothing)
 * is -ENOMEM, "scratch exhausted".  After any I/O error the array is FAILED: every later
 * call returns the same error, and the only thing left to do is mfs_xfarray_destroy().
 * A repair treats all of them the same way: it aborts.
 *
 * Cancellation: an array may be given a pointer to an abort flag (a C11 atomic_int, e.g.
 * the one of the memory-pressure watcher, see pressure.h).  Long loops — sort, iteration
 * helpers, binary search — look at it every MFS_XFARRAY_ABORT_CHECK steps and return
 * -ECANCELED when it is non-zero.  An interrupted sort leaves the array holding exactly the
 * same records, in an unspecified order.
 */
#ifndef MFS_XFARRAY_H
#define MFS_XFARRAY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct mfs_xfarray;

/* Heap budget of one array: its window cache, and the buffer a sort borrows. */
#define MFS_XFARRAY_WINDOW_BYTES   (64u * 1024)
#define MFS_XFARRAY_CACHE_WINDOWS  16u
#define MFS_XFARRAY_CACHE_BYTES    (MFS_XFARRAY_WINDOW_BYTES * MFS_XFARRAY_CACHE_WINDOWS)
#define MFS_XFARRAY_SORTBUF_BYTES  (2u * 1024 * 1024)
#define MFS_XFARRAY_MAX_RECSIZE    MFS_XFARRAY_WINDOW_BYTES
#define MFS_XFARRAY_ABORT_CHECK    1024u

/* Comparator: <0, 0, >0 like qsort(3); priv is passed through. Never sees unset records. */
typedef int (*mfs_xfarray_cmp_fn)(const void *a, const void *b, void *priv);

/*
 * Create an array of recsize-byte records (1..MFS_XFARRAY_MAX_RECSIZE) at byte offset
 * base of fd.  max_nr bounds the index (0 = as many as a 63-bit file offset allows); a
 * store past it gives -EFBIG.  fd must be open read-write; it stays owned by the caller
 * (destroy does not close it).
 */
int mfs_xfarray_create(int fd, uint64_t base, size_t recsize, uint64_t max_nr,
		       struct mfs_xfarray **out);

/* Write back cached records (ignoring a failed state) and free the array.  NULL is fine. */
void mfs_xfarray_destroy(struct mfs_xfarray *a);

/* Give the array an abort flag to watch (NULL = none).  The flag must outlive the array. */
void mfs_xfarray_set_abort(struct mfs_xfarray *a, const atomic_int *flag);

/* One past the highest index ever stored (unset slots below it included). */
uint64_t mfs_xfarray_count(const struct mfs_xfarray *a);
/* Number of unset slots below mfs_xfarray_count(). */
uint64_t mfs_xfarray_unset_count(const struct mfs_xfarray *a);
size_t mfs_xfarray_recsize(const struct mfs_xfarray *a);
/* Bytes of the scratch file in use (allocated blocks, from fstat), or a negative errno. */
int64_t mfs_xfarray_file_bytes(const struct mfs_xfarray *a);

/* Store rec at index count (the next free index); *idx (may be NULL) receives it. */
int mfs_xfarray_append(struct mfs_xfarray *a, const void *rec, uint64_t *idx);
/* Store rec at idx; -EINVAL for an all-zero record, -EFBIG past max_nr. */
int mfs_xfarray_set(struct mfs_xfarray *a, uint64_t idx, const void *rec);
/* Read record idx into rec: 0, -ENOENT if the slot is unset (rec is zeroed), -ENODATA if
 * idx >= count. */
int mfs_xfarray_get(struct mfs_xfarray *a, uint64_t idx, void *rec);
/* Empty the array (count 0), its cached records dropped unwritten, the file left as it
 * is: for an array refilled by appends only — a set past count would find the old
 * bytes in the slots it skips, not unset ones. */
void mfs_xfarray_clear(struct mfs_xfarray *a);
/* Make slot idx unset.  Unsetting the last slot shrinks count; -ENODATA past count. */
int mfs_xfarray_unset(struct mfs_xfarray *a, uint64_t idx);

/*
 * Iterate over set records: start with *cursor = 0; each call returns 1 with the record
 * in rec and its index in *idx (may be NULL), 0 at the end, or a negative errno.  Holes
 * of the file are skipped with SEEK_DATA, so sparse arrays iterate fast.
 */
int mfs_xfarray_iter(struct mfs_xfarray *a, uint64_t *cursor, void *rec, uint64_t *idx);

/*
 * Sort by cmp: an iterative quicksort on the file (median-of-9 pivots, Hoare partition,
 * smaller side first so the stack stays under 64 frames), ranges that fit in
 * MFS_XFARRAY_SORTBUF_BYTES are read into memory, sorted there and written back.  Unset
 * slots go to the end and are dropped from the count, so a sorted array has no unset
 * slot.  Returns 0, -ECANCELED when the abort flag was raised, or an I/O error.
 */
int mfs_xfarray_sort(struct mfs_xfarray *a, mfs_xfarray_cmp_fn cmp, void *priv);

/*
 * Binary search of a sorted array: 0 and *idx = the first index whose record compares
 * equal to key (rec, may be NULL, receives it); -ENOENT if none, *idx is then where key
 * would be inserted.
 */
int mfs_xfarray_bsearch(struct mfs_xfarray *a, const void *key, mfs_xfarray_cmp_fn cmp,
			void *priv, uint64_t *idx, void *rec);

/* Write every cached dirty window to the file. */
int mfs_xfarray_flush(struct mfs_xfarray *a);

#endif /* MFS_XFARRAY_H */
