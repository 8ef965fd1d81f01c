/*
 * pattern.c — mendfs_stress's random numbers and file content.
 *
 * Random numbers: xoshiro256** per process, seeded by splitmix64 from (seed, process index),
 * so a run is reproduced by its seed, process count and operation count.
 *
 * Content: byte `off` of the data written by write `tag` is byte (off % 8) of
 * mix(seed, tag, off / 8).  It depends on the absolute file offset, so data that lands at the
 * wrong offset, a stale block, or another write's block all fail the comparison.
 */
#include <string.h>
#include "stress.h"

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

void rng_seed(struct proc *p, uint64_t seed, int idx)
{
	uint64_t x = seed * 0x2545f4914f6cdd1dull + (uint64_t)idx;

	for (int i = 0; i < 4; i++)
		p->rng[i] = splitmix(&x);
}

uint64_t rng_next(struct proc *p)
{
	uint64_t *s = p->rng;
	uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return r;
}

uint64_t rng_below(struct proc *p, uint64_t n)
{
	return n ? rng_next(p) % n : 0;
}

static uint64_t word(uint64_t seed, uint64_t tag, uint64_t w)
{
	uint64_t x = seed ^ (tag * 0xd6e8feb86659fd93ull) ^ (w * 0x9e3779b97f4a7c15ull);

	return splitmix(&x);
}

void pattern_fill(uint64_t seed, uint64_t tag, uint64_t off, unsigned char *buf, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint64_t o = off + i, v = word(seed, tag, o >> 3);
		unsigned b = o & 7;

		for (; b < 8 && i < len; b++, i++)
			buf[i] = (unsigned char)(v >> (8 * b));
	}
}

/* Walk [off, off+len) of ob's model: fn gets each piece with its tag (0: zeroes). */
typedef int (*piece_fn)(void *arg, uint64_t tag, uint64_t start, uint64_t end);

static int walk(const struct obj *ob, uint64_t off, uint64_t len, piece_fn fn, void *arg)
{
	uint64_t pos = off, end = off + len;
	size_t i = 0;
	int r;

	/* the first segment ending after off (segs are sorted) */
	size_t lo = 0, hi = ob->nsegs;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (ob->segs[mid].end <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (i = lo; i < ob->nsegs && pos < end; i++) {
		const struct seg *s = &ob->segs[i];
		if (s->start >= end)
			break;
		if (s->start > pos) {
			if ((r = fn(arg, 0, pos, s->start)))
				return r;
			pos = s->start;
		}
		uint64_t e = s->end < end ? s->end : end;
		if ((r = fn(arg, s->tag, pos, e)))
			return r;
		pos = e;
	}
	if (pos < end)
		return fn(arg, 0, pos, end);
	return 0;
}

struct cmp_arg {
	uint64_t seed, off;
	const unsigned char *buf;
	long bad;
};

static int cmp_piece(void *a, uint64_t tag, uint64_t start, uint64_t end)
{
	struct cmp_arg *c = a;
	unsigned char tmp[4096];

	if (tag == SEG_UNKNOWN)
		return 0;
	for (uint64_t s = start; s < end; s += sizeof(tmp)) {
		size_t n = end - s < sizeof(tmp) ? end - s : sizeof(tmp);
		const unsigned char *got = c->buf + (s - c->off);
		if (tag)
			pattern_fill(c->seed, tag, s, tmp, n);
		else
			memset(tmp, 0, n);
		if (memcmp(tmp, got, n)) {
			for (size_t j = 0; j < n; j++)
				if (tmp[j] != got[j]) {
					c->bad = (long)(s - c->off + j);
					return 1;
				}
		}
	}
	return 0;
}

long model_compare(const struct proc *p, const struct obj *ob, uint64_t off,
		   const unsigned char *buf, size_t len)
{
	struct cmp_arg c = { p->o->seed, off, buf, -1 };

	walk(ob, off, len, cmp_piece, &c);
	return c.bad;
}

struct fill_arg {
	uint64_t seed, off;
	unsigned char *buf;
};

static int fill_piece(void *a, uint64_t tag, uint64_t start, uint64_t end)
{
	struct fill_arg *f = a;

	if (tag && tag != SEG_UNKNOWN)
		pattern_fill(f->seed, tag, start, f->buf + (start - f->off), end - start);
	else
		memset(f->buf + (start - f->off), 0, end - start);
	return 0;
}

void model_expect(const struct proc *p, const struct obj *ob, uint64_t off, unsigned char *buf,
		  size_t len)
{
	struct fill_arg f = { p->o->seed, off, buf };

	walk(ob, off, len, fill_piece, &f);
}

int model_has_unknown(const struct obj *ob)
{
	for (size_t i = 0; i < ob->nsegs; i++)
		if (ob->segs[i].tag == SEG_UNKNOWN)
			return 1;
	return 0;
}
