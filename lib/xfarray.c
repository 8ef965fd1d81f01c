/*
 * xfarray.c — fixed-record arrays in a scratch file: the window cache, record access,
 * iteration, the out-of-core sort and binary search.  See xfarray.h for the contract.
 *
 * The file is reached only through pread/pwrite, never mmap: a scratch file that is
 * truncated or that runs out of space then shows up as an error code, never as SIGBUS.
 *
 * WINDOW CACHE.  The file is cut into windows of rpw records (rpw is a power of two, so a
 * record never straddles two windows and index arithmetic is shifts and masks).  The array
 * caches MFS_XFARRAY_CACHE_WINDOWS of them, fully associative, evicting the window a
 * stream left two steps behind, else the least recently used one (win_victim), and writing
 * it back if dirty.  A pointer into a cached window stays valid until the next lookup of
 * another window evicts it; the window touched by the previous lookup is never the victim,
 * so code may hold two record pointers at once (a swap) as long as it looks them up one
 * after the other.
 *
 * WRITTEN_END.  The array remembers the highest file offset it knows to hold data (the
 * file size at creation, then every write).  Reading past EOF below that mark means that
 * somebody truncated the file under us: -ENOMEM.  Reading past it yields zeros (unset
 * slots) without a system call, which keeps appending to a fresh array cheap.
 *
 * SORT.  Quicksort with an explicit stack.  A range larger than the sort buffer is
 * partitioned in place in the file (through the window cache) around the median of nine
 * evenly spaced records; a range that fits is read into the buffer, sorted there (the same
 * quicksort with a median-of-three pivot, insertion sort below 16 records) and written
 * back.  The smaller side of every partition is pushed, the larger one continues, so the
 * stack holds at most log2(n) frames.  glibc's qsort is not used: it may malloc a copy of
 * the whole range.
 */
#include "mem.h"
#include "xfarray.h"
#include "fdio.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NO_WINDOW UINT64_MAX
#define ISORT_MAX 16
#define STACK_MAX 64

struct xf_window {
	uint64_t widx;		/* window number, NO_WINDOW when empty */
	uint64_t lru;		/* tick of the last lookup */
	bool dirty;
	unsigned char *buf;
};

struct mfs_xfarray {
	int fd;
	int failed;		/* sticky negative errno after an I/O error, else 0 */
	uint64_t base;		/* file offset of record 0 */
	size_t recsize;
	uint64_t max_nr;
	uint64_t nr;		/* one past the highest stored index */
	uint64_t unset;		/* unset slots below nr */
	unsigned rpw_shift;	/* records per window = 1 << rpw_shift */
	size_t wbytes;		/* bytes per window */
	uint64_t written_end;	/* file offset below which the file is known to hold data */
	uint64_t tick;
	const atomic_int *abort;
	struct xf_window *last;
	struct xf_window win[MFS_XFARRAY_CACHE_WINDOWS];
	unsigned char *tmp;	/* one scratch record */
};

/* ---- file I/O: full transfers, EINTR retried, short transfers are -ENOMEM ------------- */

static int read_at(struct mfs_xfarray *a, void *buf, size_t len, uint64_t off)
{
	size_t done;
	int err;

	if (off >= a->written_end) {
		memset(buf, 0, len);
		return 0;
	}
	err = mfs_pread_full(a->fd, buf, len, off, &done);
	if (err == -ENODATA) {
		/* EOF: fine past what we ever wrote, a truncation below it. */
		if (off + done < a->written_end)
			return -ENOMEM;
		memset((unsigned char *)buf + done, 0, len - done);
		return 0;
	}
	return err;
}

static int write_at(struct mfs_xfarray *a, const void *buf, size_t len, uint64_t off)
{
	int err = mfs_pwrite_full(a->fd, buf, len, off);

	if (err)
		return err;
	if (off + len > a->written_end)
		a->written_end = off + len;
	return 0;
}

static int fail(struct mfs_xfarray *a, int err)
{
	if (!a->failed)
		a->failed = err;
	return a->failed;
}

static bool rec_is_zero(const unsigned char *p, size_t n)
{
	/* Most records are set; the first non-zero byte ends the scan early. */
	while (n >= 8) {
		uint64_t v;

		memcpy(&v, p, 8);
		if (v)
			return false;
		p += 8;
		n -= 8;
	}
	while (n--)
		if (*p++)
			return false;
	return true;
}

/* ---- window cache ------------------------------------------------------------------------ */

static uint64_t win_off(const struct mfs_xfarray *a, uint64_t widx)
{
	return a->base + widx * a->wbytes;
}

static int win_writeback(struct mfs_xfarray *a, struct xf_window *w)
{
	int rc;

	if (!w->dirty)
		return 0;
	rc = write_at(a, w->buf, a->wbytes, win_off(a, w->widx));
	if (rc)
		return fail(a, rc);
	w->dirty = false;
	return 0;
}

static struct xf_window *win_cached(struct mfs_xfarray *a, uint64_t widx)
{
	for (unsigned i = 0; i < MFS_XFARRAY_CACHE_WINDOWS; i++)
		if (a->win[i].widx == widx)
			return &a->win[i];
	return NULL;
}

/*
 * The window to give up for `widx`.  A stream walking the array one way (an append, a
 * scan, a partition's cursor) leaves behind it the window two steps back, which it will
 * not come back to: that one goes first, so that a stream turns over two or three cached
 * windows instead of cycling through all of them — the cache's other windows keep what
 * the array's random accesses brought in, and the buffers of windows never needed are
 * never touched (resident memory: the engine's data lives in the scratch file).  Else the
 * least recently used window (empty ones first).  Never the window of the previous lookup
 * (a->last; see WINDOW CACHE at the top).
 */
static struct xf_window *win_victim(struct mfs_xfarray *a, uint64_t widx)
{
	struct xf_window *victim = &a->win[0];

	for (unsigned i = 0; i < MFS_XFARRAY_CACHE_WINDOWS; i++) {
		struct xf_window *w = &a->win[i];

		if (w != a->last && w->widx != NO_WINDOW &&
		    ((widx >= 2 && w->widx == widx - 2) || w->widx == widx + 2))
			return w;
		if (w->lru < victim->lru)
			victim = w;
	}
	return victim;
}

/* Point *pp at record idx in the cache, loading its window; marks it dirty if asked. */
static int rec_ptr(struct mfs_xfarray *a, uint64_t idx, bool dirty, unsigned char **pp)
{
	uint64_t widx = idx >> a->rpw_shift;
	struct xf_window *w = a->last;
	int rc;

	if (!w || w->widx != widx) {
		w = win_cached(a, widx);
		if (!w) {
			struct xf_window *victim = win_victim(a, widx);

			rc = win_writeback(a, victim);
			if (rc)
				return rc;
			victim->widx = NO_WINDOW;
			rc = read_at(a, victim->buf, a->wbytes, win_off(a, widx));
			if (rc)
				return fail(a, rc);
			victim->widx = widx;
			w = victim;
		}
		a->last = w;
	}
	w->lru = ++a->tick;
	if (dirty)
		w->dirty = true;
	*pp = w->buf + (size_t)(idx & ((1ull << a->rpw_shift) - 1)) * a->recsize;
	return 0;
}

int mfs_xfarray_flush(struct mfs_xfarray *a)
{
	if (a->failed)
		return a->failed;
	for (unsigned i = 0; i < MFS_XFARRAY_CACHE_WINDOWS; i++) {
		int rc = win_writeback(a, &a->win[i]);

		if (rc)
			return rc;
	}
	return 0;
}

/* ---- create / destroy / accessors ---------------------------------------------------------- */

int mfs_xfarray_create(int fd, uint64_t base, size_t recsize, uint64_t max_nr,
		       struct mfs_xfarray **out)
{
	struct mfs_xfarray *a;
	struct stat st;
	uint64_t limit;
	unsigned shift = 0;

	*out = NULL;
	if (fd < 0 || recsize == 0 || recsize > MFS_XFARRAY_MAX_RECSIZE || base > INT64_MAX)
		return -EINVAL;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	limit = ((uint64_t)INT64_MAX - base) / recsize;
	if (max_nr == 0 || max_nr > limit)
		max_nr = limit;

	while (((size_t)2 << shift) * recsize <= MFS_XFARRAY_WINDOW_BYTES)
		shift++;

	a = mfs_calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->fd = fd;
	a->base = base;
	a->recsize = recsize;
	a->max_nr = max_nr;
	a->rpw_shift = shift;
	a->wbytes = ((size_t)1 << shift) * recsize;
	a->written_end = (uint64_t)st.st_size;
	a->tmp = mfs_malloc(recsize);
	if (!a->tmp)
		goto nomem;
	for (unsigned i = 0; i < MFS_XFARRAY_CACHE_WINDOWS; i++) {
		a->win[i].widx = NO_WINDOW;
		a->win[i].buf = mfs_malloc(a->wbytes);
		if (!a->win[i].buf)
			goto nomem;
	}
	*out = a;
	return 0;
nomem:
	mfs_xfarray_destroy(a);
	return -ENOMEM;
}

void mfs_xfarray_destroy(struct mfs_xfarray *a)
{
	if (!a)
		return;
	if (!a->failed)
		(void)mfs_xfarray_flush(a);
	for (unsigned i = 0; i < MFS_XFARRAY_CACHE_WINDOWS; i++)
		free(a->win[i].buf);
	free(a->tmp);
	free(a);
}

void mfs_xfarray_clear(struct mfs_xfarray *a)
{
	for (unsigned i = 0; i < MFS_XFARRAY_CACHE_WINDOWS; i++) {
		a->win[i].widx = NO_WINDOW;
		a->win[i].dirty = false;
	}
	a->last = NULL;
	a->nr = 0;
	a->unset = 0;
}

void mfs_xfarray_set_abort(struct mfs_xfarray *a, const atomic_int *flag)
{
	a->abort = flag;
}

uint64_t mfs_xfarray_count(const struct mfs_xfarray *a)
{
	return a->nr;
}

uint64_t mfs_xfarray_unset_count(const struct mfs_xfarray *a)
{
	return a->unset;
}

size_t mfs_xfarray_recsize(const struct mfs_xfarray *a)
{
	return a->recsize;
}

int64_t mfs_xfarray_file_bytes(const struct mfs_xfarray *a)
{
	struct stat st;

	if (fstat(a->fd, &st) < 0)
		return -errno;
	return (int64_t)st.st_blocks * 512;
}

static bool aborted(const struct mfs_xfarray *a)
{
	return a->abort && atomic_load_explicit(a->abort, memory_order_relaxed) != 0;
}

/* ---- single records ---------------------------------------------------------------------- */

int mfs_xfarray_set(struct mfs_xfarray *a, uint64_t idx, const void *rec)
{
	unsigned char *p;
	bool was_zero;
	int rc;

	if (a->failed)
		return a->failed;
	if (rec_is_zero(rec, a->recsize))
		return -EINVAL;
	if (idx >= a->max_nr)
		return -EFBIG;
	rc = rec_ptr(a, idx, true, &p);
	if (rc)
		return rc;
	was_zero = idx < a->nr && rec_is_zero(p, a->recsize);
	memcpy(p, rec, a->recsize);
	if (idx >= a->nr) {
		a->unset += idx - a->nr;	/* the slots skipped over are unset */
		a->nr = idx + 1;
	} else if (was_zero) {
		a->unset--;
	}
	return 0;
}

int mfs_xfarray_append(struct mfs_xfarray *a, const void *rec, uint64_t *idx)
{
	uint64_t i = a->nr;
	int rc = mfs_xfarray_set(a, i, rec);

	if (rc == 0 && idx)
		*idx = i;
	return rc;
}

int mfs_xfarray_get(struct mfs_xfarray *a, uint64_t idx, void *rec)
{
	unsigned char *p;
	int rc;

	if (a->failed)
		return a->failed;
	if (idx >= a->nr)
		return -ENODATA;
	rc = rec_ptr(a, idx, false, &p);
	if (rc)
		return rc;
	memcpy(rec, p, a->recsize);
	return rec_is_zero(p, a->recsize) ? -ENOENT : 0;
}

int mfs_xfarray_unset(struct mfs_xfarray *a, uint64_t idx)
{
	unsigned char *p;
	int rc;

	if (a->failed)
		return a->failed;
	if (idx >= a->nr)
		return -ENODATA;
	rc = rec_ptr(a, idx, false, &p);
	if (rc)
		return rc;
	if (rec_is_zero(p, a->recsize))
		return 0;
	rc = rec_ptr(a, idx, true, &p);
	if (rc)
		return rc;
	memset(p, 0, a->recsize);
	if (idx + 1 == a->nr)
		a->nr--;
	else
		a->unset++;
	/* Trailing unset slots are no longer part of the array. */
	while (a->nr > 0 && a->unset > 0) {
		rc = rec_ptr(a, a->nr - 1, false, &p);
		if (rc)
			return rc;
		if (!rec_is_zero(p, a->recsize))
			break;
		a->nr--;
		a->unset--;
	}
	return 0;
}

/* ---- iteration --------------------------------------------------------------------------- */

int mfs_xfarray_iter(struct mfs_xfarray *a, uint64_t *cursor, void *rec, uint64_t *idx)
{
	unsigned steps = 0;

	if (a->failed)
		return a->failed;
	while (*cursor < a->nr) {
		uint64_t i = *cursor;
		unsigned char *p;
		int rc;

		/* At a window boundary outside the cache, let the file skip its holes. */
		if ((i & ((1ull << a->rpw_shift) - 1)) == 0 &&
		    !win_cached(a, i >> a->rpw_shift)) {
			uint64_t off = a->base + i * a->recsize;
			off_t d;

			rc = mfs_xfarray_flush(a);
			if (rc)
				return rc;
			d = lseek(a->fd, (off_t)off, SEEK_DATA);
			if (d < 0 && errno == ENXIO) {
				*cursor = a->nr;
				return 0;
			}
			if (d < 0 && errno != EINVAL && errno != EOPNOTSUPP)
				return fail(a, -errno);
			if (d > 0 && (uint64_t)d > off) {
				uint64_t ni = ((uint64_t)d - a->base) / a->recsize;

				if (ni > i) {
					*cursor = ni;
					continue;
				}
			}
		}
		if (++steps % MFS_XFARRAY_ABORT_CHECK == 0 && aborted(a))
			return -ECANCELED;
		rc = rec_ptr(a, i, false, &p);
		if (rc)
			return rc;
		*cursor = i + 1;
		if (!rec_is_zero(p, a->recsize)) {
			memcpy(rec, p, a->recsize);
			if (idx)
				*idx = i;
			return 1;
		}
	}
	return 0;
}

/* ---- sort -------------------------------------------------------------------------------- */

struct sortctx {
	struct mfs_xfarray *a;
	mfs_xfarray_cmp_fn cmp;
	void *priv;
	bool nulls;		/* unset records may be present: sort them last */
	unsigned ops;		/* steps since the last look at the abort flag */
	size_t rs;
	unsigned char *buf;	/* MFS_XFARRAY_SORTBUF_BYTES */
	size_t buf_nr;		/* records that fit in buf */
	unsigned char *pivot;	/* one record */
	unsigned char *tmp;	/* one record */
	unsigned char *nine;	/* 9 sampled records */
	uint64_t rng;		/* xorshift state for the pivots of too deep ranges */
};

static int rcmp(struct sortctx *s, const void *x, const void *y)
{
	if (s->nulls) {
		bool zx = rec_is_zero(x, s->rs), zy = rec_is_zero(y, s->rs);

		if (zx || zy)
			return (int)zx - (int)zy;
	}
	return s->cmp(x, y, s->priv);
}

/* Every MFS_XFARRAY_ABORT_CHECK steps, look at the abort flag. */
static int tick(struct sortctx *s)
{
	if (++s->ops < MFS_XFARRAY_ABORT_CHECK)
		return 0;
	s->ops = 0;
	return aborted(s->a) ? -ECANCELED : 0;
}

static void mswap(struct sortctx *s, unsigned char *x, unsigned char *y)
{
	memcpy(s->tmp, x, s->rs);
	memcpy(x, y, s->rs);
	memcpy(y, s->tmp, s->rs);
}

/* Insertion sort of n records at b (n is small). */
static int mem_isort(struct sortctx *s, unsigned char *b, size_t n)
{
	size_t rs = s->rs;

	for (size_t i = 1; i < n; i++) {
		size_t j = i;
		int rc;

		if ((rc = tick(s)))
			return rc;
		if (rcmp(s, b + (j - 1) * rs, b + j * rs) <= 0)
			continue;
		memcpy(s->pivot, b + i * rs, rs);
		while (j > 0 && rcmp(s, b + (j - 1) * rs, s->pivot) > 0) {
			memcpy(b + j * rs, b + (j - 1) * rs, rs);
			j--;
		}
		memcpy(b + j * rs, s->pivot, rs);
	}
	return 0;
}

/* Move record r of the heap b[0, n) down to its place. */
static int sift_down(struct sortctx *s, unsigned char *b, size_t r, size_t n)
{
	size_t rs = s->rs, c;
	int rc;

	while ((c = 2 * r + 1) < n) {
		if ((rc = tick(s)))
			return rc;
		if (c + 1 < n && rcmp(s, b + c * rs, b + (c + 1) * rs) < 0)
			c++;
		if (rcmp(s, b + r * rs, b + c * rs) >= 0)
			break;
		mswap(s, b + r * rs, b + c * rs);
		r = c;
	}
	return 0;
}

/* Heapsort of n records at b: the worst-case guard of mem_sort (introsort). */
static int mem_heapsort(struct sortctx *s, unsigned char *b, size_t n)
{
	int rc;

	for (size_t k = n / 2; k > 0; k--)
		if ((rc = sift_down(s, b, k - 1, n)))
			return rc;
	for (size_t end = n - 1; end > 0; end--) {
		mswap(s, b, b + end * s->rs);
		if ((rc = sift_down(s, b, 0, end)))
			return rc;
	}
	return 0;
}

/* Index of the median of records x, y, z of b. */
static size_t med3(struct sortctx *s, unsigned char *b, size_t x, size_t y, size_t z)
{
	size_t rs = s->rs;
	unsigned char *X = b + x * rs, *Y = b + y * rs, *Z = b + z * rs;

	if (rcmp(s, X, Y) < 0) {
		if (rcmp(s, Y, Z) < 0)
			return y;
		return rcmp(s, X, Z) < 0 ? z : x;
	}
	if (rcmp(s, X, Z) < 0)
		return x;
	return rcmp(s, Y, Z) < 0 ? z : y;
}

/*
 * In-memory quicksort of n records at b: explicit stack, smaller side pushed, pivot the
 * median of three (of three medians of three past 128 records), and a heapsort for any
 * range that is still partitioned deeper than 2*log2(n) levels (introsort), so the worst
 * case stays O(n log n).
 */
static int mem_sort(struct sortctx *s, unsigned char *b, size_t n)
{
	size_t stk_lo[STACK_MAX], stk_hi[STACK_MAX];
	unsigned stk_depth[STACK_MAX], depth = 0, max_depth = 0;
	size_t rs = s->rs, lo = 0, hi = n - 1;
	int sp = 0, rc;

	if (n < 2)
		return 0;
	for (size_t m = n; m > 1; m >>= 1)
		max_depth += 2;
	for (;;) {
		while (hi - lo + 1 > ISORT_MAX) {
			size_t len = hi - lo + 1, mid = lo + len / 2, pv, i, j;
			unsigned char *L = b + lo * rs;

			if (++depth > max_depth) {
				rc = mem_heapsort(s, L, len);
				if (rc)
					return rc;
				lo = hi;
				break;
			}
			if (len > 128) {
				size_t e = len / 8;

				pv = med3(s, b, med3(s, b, lo, lo + e, lo + 2 * e),
					  med3(s, b, mid - e, mid, mid + e),
					  med3(s, b, hi - 2 * e, hi - e, hi));
			} else {
				pv = med3(s, b, lo, mid, hi);
			}
			mswap(s, L, b + pv * rs);
			memcpy(s->pivot, L, rs);

			i = lo;
			j = hi + 1;
			for (;;) {
				do {
					i++;
					if ((rc = tick(s)))
						return rc;
				} while (i <= hi && rcmp(s, b + i * rs, s->pivot) < 0);
				do {
					j--;
					if ((rc = tick(s)))
						return rc;
				} while (rcmp(s, s->pivot, b + j * rs) < 0);
				if (i >= j)
					break;
				mswap(s, b + i * rs, b + j * rs);
			}
			mswap(s, L, b + j * rs);

			/* [lo, j-1] and [j+1, hi]: push the larger, go on with the smaller. */
			if (j - lo > hi - j) {
				if (j > lo + 1) {
					stk_lo[sp] = lo;
					stk_hi[sp] = j - 1;
					stk_depth[sp] = depth;
					sp++;
				}
				lo = j + 1;
				if (lo >= hi)
					break;
			} else {
				if (hi > j + 1) {
					stk_lo[sp] = j + 1;
					stk_hi[sp] = hi;
					stk_depth[sp] = depth;
					sp++;
				}
				if (j <= lo + 1) {
					lo = hi;	/* nothing left on this side */
					break;
				}
				hi = j - 1;
			}
		}
		if (hi > lo) {
			rc = mem_isort(s, b + lo * rs, hi - lo + 1);
			if (rc)
				return rc;
		}
		if (sp == 0)
			return 0;
		sp--;
		lo = stk_lo[sp];
		hi = stk_hi[sp];
		depth = stk_depth[sp];
	}
}

/* Copy records [lo, lo+n) between the file (or its cached windows) and buf. */
static int range_io(struct sortctx *s, uint64_t lo, size_t n, bool write)
{
	struct mfs_xfarray *a = s->a;
	uint64_t rpw = 1ull << a->rpw_shift;
	unsigned char *b = s->buf;

	while (n > 0) {
		uint64_t widx = lo >> a->rpw_shift, first = lo & (rpw - 1);
		size_t cnt = (size_t)(rpw - first) < n ? (size_t)(rpw - first) : n;
		size_t len = cnt * a->recsize;
		struct xf_window *w = win_cached(a, widx);
		int rc;

		if (w) {
			unsigned char *p = w->buf + first * a->recsize;

			if (write) {
				memcpy(p, b, len);
				w->dirty = true;
			} else {
				memcpy(b, p, len);
			}
		} else {
			uint64_t off = a->base + lo * a->recsize;

			rc = write ? write_at(a, b, len, off) : read_at(a, b, len, off);
			if (rc)
				return fail(a, rc);
		}
		b += len;
		lo += cnt;
		n -= cnt;
	}
	return 0;
}

/* Swap records x and y of the file through the cache. */
static int file_swap(struct sortctx *s, uint64_t x, uint64_t y)
{
	unsigned char *px, *py;
	int rc;

	if (x == y)
		return 0;
	if ((rc = rec_ptr(s->a, x, true, &px)))
		return rc;
	memcpy(s->tmp, px, s->rs);
	if ((rc = rec_ptr(s->a, y, true, &py)))	/* px stays valid, see the cache comment */
		return rc;
	memcpy(px, py, s->rs);
	memcpy(py, s->tmp, s->rs);
	return 0;
}

/*
 * The median of nine records of [lo, hi] is swapped into lo.  The nine are evenly spaced;
 * for a range nested too deep (an input that defeats even spacing) they are drawn at
 * random, which makes quadratic behaviour vanishingly unlikely without a heapsort that
 * would be slow on a file.
 */
static int pick_pivot(struct sortctx *s, uint64_t lo, uint64_t hi, bool deep)
{
	uint64_t idx[9], step = (hi - lo) / 8;
	size_t rs = s->rs;
	unsigned char *p;
	int rc;

	for (int k = 0; k < 9; k++) {
		idx[k] = k == 8 ? hi : lo + (uint64_t)k * step;
		if (deep) {
			s->rng ^= s->rng << 13;
			s->rng ^= s->rng >> 7;
			s->rng ^= s->rng << 17;
			idx[k] = lo + s->rng % (hi - lo + 1);
		}
		if ((rc = rec_ptr(s->a, idx[k], false, &p)))
			return rc;
		memcpy(s->nine + (size_t)k * rs, p, rs);
	}
	/* Insertion sort of the nine samples, carrying their indices along. */
	for (int i = 1; i < 9; i++) {
		for (int j = i; j > 0 && rcmp(s, s->nine + (size_t)(j - 1) * rs,
					     s->nine + (size_t)j * rs) > 0; j--) {
			uint64_t t = idx[j];

			mswap(s, s->nine + (size_t)(j - 1) * rs, s->nine + (size_t)j * rs);
			idx[j] = idx[j - 1];
			idx[j - 1] = t;
		}
	}
	return file_swap(s, lo, idx[4]);
}

/* Hoare partition of [lo, hi] of the file around a[lo]; *mid gets the pivot's place. */
static int file_partition(struct sortctx *s, uint64_t lo, uint64_t hi, bool deep,
			  uint64_t *mid)
{
	uint64_t i = lo, j = hi + 1;
	unsigned char *p;
	int rc;

	if ((rc = pick_pivot(s, lo, hi, deep)))
		return rc;
	if ((rc = rec_ptr(s->a, lo, false, &p)))
		return rc;
	memcpy(s->pivot, p, s->rs);
	for (;;) {
		for (;;) {
			i++;
			if (i > hi)
				break;
			if ((rc = tick(s)) || (rc = rec_ptr(s->a, i, false, &p)))
				return rc;
			if (rcmp(s, p, s->pivot) >= 0)
				break;
		}
		for (;;) {
			j--;
			if ((rc = tick(s)) || (rc = rec_ptr(s->a, j, false, &p)))
				return rc;
			if (rcmp(s, s->pivot, p) >= 0)
				break;
		}
		if (i >= j)
			break;
		if ((rc = file_swap(s, i, j)))
			return rc;
	}
	if ((rc = file_swap(s, lo, j)))
		return rc;
	*mid = j;
	return 0;
}

static int sort_range_in_memory(struct sortctx *s, uint64_t lo, uint64_t hi)
{
	size_t n = (size_t)(hi - lo + 1);
	int rc;

	if ((rc = range_io(s, lo, n, false)))
		return rc;
	if ((rc = mem_sort(s, s->buf, n)))
		return rc;	/* the file still holds the range unsorted: nothing lost */
	return range_io(s, lo, n, true);
}

static int file_sort(struct sortctx *s, uint64_t lo, uint64_t hi)
{
	uint64_t stk_lo[STACK_MAX], stk_hi[STACK_MAX], mid;
	unsigned stk_depth[STACK_MAX], depth = 0, max_depth = 0;
	int sp = 0, rc;

	for (uint64_t m = hi - lo + 1; m > 1; m >>= 1)
		max_depth += 2;
	for (;;) {
		while (hi > lo && hi - lo + 1 > s->buf_nr) {
			if ((rc = file_partition(s, lo, hi, ++depth > max_depth, &mid)))
				return rc;
			if (sp >= STACK_MAX)
				return -EOVERFLOW;	/* cannot happen: smaller side first */
			if (mid - lo > hi - mid) {
				if (mid > lo + 1) {
					stk_lo[sp] = lo;
					stk_hi[sp] = mid - 1;
					stk_depth[sp] = depth;
					sp++;
				}
				lo = mid + 1;
			} else {
				if (hi > mid + 1) {
					stk_lo[sp] = mid + 1;
					stk_hi[sp] = hi;
					stk_depth[sp] = depth;
					sp++;
				}
				if (mid == lo) {
					lo = hi;
					break;
				}
				hi = mid - 1;
			}
		}
		if (hi > lo) {
			if ((rc = sort_range_in_memory(s, lo, hi)))
				return rc;
		}
		if (sp == 0)
			return 0;
		sp--;
		lo = stk_lo[sp];
		hi = stk_hi[sp];
		depth = stk_depth[sp];
	}
}

int mfs_xfarray_sort(struct mfs_xfarray *a, mfs_xfarray_cmp_fn cmp, void *priv)
{
	struct sortctx s = { .a = a, .cmp = cmp, .priv = priv, .rs = a->recsize,
			     .rng = 0x9e3779b97f4a7c15ull ^ a->nr };
	int rc;

	if (a->failed)
		return a->failed;
	if (a->nr < 2)
		return 0;
	if (aborted(a))
		return -ECANCELED;
	s.nulls = a->unset > 0;
	s.buf_nr = MFS_XFARRAY_SORTBUF_BYTES / a->recsize;
	s.buf = mfs_malloc(s.buf_nr * a->recsize + 11 * a->recsize);
	if (!s.buf)
		return -ENOMEM;
	s.pivot = s.buf + s.buf_nr * a->recsize;
	s.tmp = s.pivot + a->recsize;
	s.nine = s.tmp + a->recsize;

	rc = file_sort(&s, 0, a->nr - 1);
	free(s.buf);
	if (rc)
		return rc;
	/* The unset slots are now the tail: drop them. */
	a->nr -= a->unset;
	a->unset = 0;
	return 0;
}

/* ---- binary search ----------------------------------------------------------------------- */

int mfs_xfarray_bsearch(struct mfs_xfarray *a, const void *key, mfs_xfarray_cmp_fn cmp,
			void *priv, uint64_t *idx, void *rec)
{
	struct sortctx s = { .a = a, .cmp = cmp, .priv = priv, .rs = a->recsize,
			     .nulls = a->unset > 0 };
	uint64_t lo = 0, hi = a->nr;
	unsigned char *p;
	int rc;

	if (a->failed)
		return a->failed;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		if ((rc = rec_ptr(a, mid, false, &p)))
			return rc;
		if (rcmp(&s, p, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*idx = lo;
	if (lo >= a->nr)
		return -ENOENT;
	if ((rc = rec_ptr(a, lo, false, &p)))
		return rc;
	if (rcmp(&s, p, key) != 0)
		return -ENOENT;
	if (rec)
		memcpy(rec, p, a->recsize);
	return 0;
}
