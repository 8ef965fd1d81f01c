/*
 * journal_replay.c — reading the journal header, finding the complete records from the
 * tail, replaying them, and opening the journal (see journal.h).
 *
 * The scan trusts nothing: a block ends the log unless its magic, CRC32C, UUID, sequence
 * and index inside the record are exactly what the record being read needs, and a record
 * counts only when its commit block's CRC over all its other blocks matches.  Lengths are
 * bounded by the log size before anything is read with them.  A record that passes every
 * checksum but whose contents are impossible (counts that disagree, a block outside the
 * filesystem or inside the log, a revoke of an AG's fixed block, an image for a fixed block
 * that is not that block) is not a torn write: that is corruption, -EFSCORRUPTED.  Every
 * record is checked in the first pass, before anything is written: a corrupt journal is
 * refused whole and leaves the filesystem as it was.
 *
 * Replay is two passes over the found records: the first gathers the revokes (block,
 * sequence), the second writes every image whose block was not revoked by the same or a
 * later record, in sequence order, so the last image of each block wins.
 */
#include "mem.h"
#include "journal.h"
#include "journal_priv.h"
#include "bcache.h"
#include "byteorder.h"
#include "crc32c.h"
#include "dev.h"
#include "fs.h"
#include "log.h"
#include "verify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jhdr_info {
	uint64_t gen, tail_seq;
	uint32_t tail_blk, flags;
};

/* Whether header copy `blk` is valid for this filesystem; if not, why (in `why`). */
static int jhdr_check(const struct mfs_journal *j, const void *blk, struct jhdr_info *hi,
		      char *why, size_t len)
{
	const struct mfs_jhdr *h = blk;
	uint32_t tail;

	if (mfs_get32(h->magic) != MFS_JHDR_MAGIC) {
		snprintf(why, len, "magic 0x%08x, expected 0x%08x", mfs_get32(h->magic),
			 MFS_JHDR_MAGIC);
		return 0;
	}
	if (!mfs_blk_crc_ok(blk, j->bs)) {
		snprintf(why, len, "checksum mismatch (torn or damaged)");
		return 0;
	}
	if (memcmp(h->uuid, j->fs->geo.uuid, 16)) {
		snprintf(why, len, "belongs to another filesystem (UUID differs)");
		return 0;
	}
	if (mfs_get32(h->version) != MFS_JOURNAL_VERSION || mfs_get32(h->blocksize) != j->bs ||
	    mfs_get64(h->logstart) != j->logstart || mfs_get32(h->logblocks) != j->logblocks) {
		snprintf(why, len, "version %u, block size %u, log %u blocks at %llu; expected "
			 "version %u, %u, %u at %llu", mfs_get32(h->version),
			 mfs_get32(h->blocksize), mfs_get32(h->logblocks),
			 (unsigned long long)mfs_get64(h->logstart), MFS_JOURNAL_VERSION, j->bs,
			 j->logblocks, (unsigned long long)j->logstart);
		return 0;
	}
	tail = mfs_get32(h->tail_blk);
	if (tail < MFS_JHDR_COPIES || tail >= j->logblocks || !mfs_get64(h->tail_seq)) {
		snprintf(why, len, "tail at log block %u, sequence %llu (outside %u..%u)", tail,
			 (unsigned long long)mfs_get64(h->tail_seq), MFS_JHDR_COPIES,
			 j->logblocks - 1);
		return 0;
	}
	hi->gen = mfs_get64(h->gen);
	hi->tail_seq = mfs_get64(h->tail_seq);
	hi->tail_blk = tail;
	hi->flags = mfs_get32(h->flags);
	return 1;
}

static int read_header(struct mfs_journal *j, struct jhdr_info *out)
{
	char why[MFS_JHDR_COPIES][160];
	struct jhdr_info hi;
	int found = 0, err = 0;
	void *blk = mfs_jbuf_alloc(j->bs, 1);

	if (!blk)
		return -ENOMEM;
	for (uint32_t slot = 0; slot < MFS_JHDR_COPIES; slot++) {
		err = mfs_jlog_io(j, slot, 1, blk, 0);
		if (err)
			break;
		if (jhdr_check(j, blk, &hi, why[slot], sizeof(why[slot])) &&
		    (!found || hi.gen > out->gen)) {
			*out = hi;
			found = 1;
		}
	}
	free(blk);
	if (err)
		return err;
	if (!found)
		return MFS_CORRUPT("journal header (log blocks %llu and %llu): copy 0: %s; copy 1: "
				   "%s.  The log cannot be replayed: a read-write mount is refused; "
				   "mount read-only without recovery, or repair",
				   (unsigned long long)j->logstart,
				   (unsigned long long)j->logstart + 1, why[0], why[1]);
	return 0;
}

/* A record block's header is what record `seq` needs at `index`. */
static int jblk_ok(const struct mfs_journal *j, const void *blk, uint32_t magic,
		   uint64_t seq, uint32_t index)
{
	const struct mfs_jblk *h = blk;

	return mfs_get32(h->magic) == magic && mfs_get64(h->seq) == seq &&
	       mfs_get32(h->index) == index && !memcmp(h->uuid, j->fs->geo.uuid, 16) &&
	       mfs_blk_crc_ok(blk, j->bs);
}

struct scan_buf {
	char *data;
	size_t cap;                 /* blocks */
};

/*
 * Tag `k` of record `seq` puts an image on block `fsb`, one of its AG's fixed blocks
 * (superblock, AG header, free list).  Those are logged like any metadata block, but a
 * wrong image there would wreck the filesystem: the restored image (`img`, its first bytes
 * in `head`) must verify as exactly that block.  0 or -EFSCORRUPTED, -ENOMEM.
 */
static int fixed_image_check(struct mfs_journal *j, uint64_t seq, uint32_t k, uint64_t fsb,
			     const char *img, const uint8_t *head)
{
	const struct mfs_geom *g = &j->fs->geo;
	uint32_t agno = mfs_fsb_to_agno(g, fsb), agbno = mfs_fsb_to_agbno(g, fsb);
	struct mfs_blk_expect e;
	char *blk = mfs_jbuf_alloc(j->bs, 1);
	int err;

	if (!blk)
		return -ENOMEM;
	if (agbno == MFS_SB_AGBNO)
		mfs_expect_sb(j->fs, agno, &e);
	else if (agbno == MFS_AGH_AGBNO)
		mfs_expect_agh(j->fs, agno, &e);
	else
		mfs_expect_agfl(j->fs, agno, &e);
	memcpy(blk, img, j->bs);
	memcpy(blk, head, MFS_JBLK_SIZE);
	err = mfs_blk_verify(blk, j->bs, fsb, g->uuid, &e, 0);
	free(blk);
	if (err)
		return MFS_CORRUPT("journal record %llu tag %u: the image for block %llu is not a "
				   "valid %s; the journal is corrupt and nothing was replayed",
				   (unsigned long long)seq, k, (unsigned long long)fsb, e.what);
	return 0;
}

/*
 * Read and check the record expected at `lpos` with sequence `seq`, at most `room` blocks
 * long.  1: complete, its blocks in sb->data and its length in *lenp; 0: the log ends
 * here; negative: I/O error, ENOMEM, or -EFSCORRUPTED.
 */
static int rec_read(struct mfs_journal *j, uint64_t lpos, uint64_t seq, uint32_t room,
		    struct scan_buf *sb, uint32_t *lenp)
{
	const struct mfs_geom *g = &j->fs->geo;
	uint32_t bs = j->bs, tpd = mfs_jtags_per_desc(bs);
	uint32_t nd, ntags, nimg, len, k = 0;
	const struct mfs_jdesc *d0;
	const struct mfs_jcommit *c;
	int err;

	if (!sb->cap) {
		sb->data = mfs_jbuf_alloc(bs, 1);
		if (!sb->data)
			return -ENOMEM;
		sb->cap = 1;
	}
	err = mfs_jlog_io_lpos(j, lpos, 1, sb->data, 0);
	if (err)
		return err;
	if (!jblk_ok(j, sb->data, MFS_JDESC_MAGIC, seq, 0))
		return 0;
	d0 = (const struct mfs_jdesc *)sb->data;
	nd = mfs_get32(d0->ndesc);
	ntags = mfs_get32(d0->ntags_total);
	nimg = mfs_get32(d0->nimages);
	if (nd < 1 || nd > j->usable || ntags > (uint64_t)nd * tpd ||
	    (ntags ? (ntags + tpd - 1) / tpd : 1) != nd || nimg > ntags)
		return MFS_CORRUPT("journal record %llu at log block %u: %u descriptors for %u "
				   "tags (%u images)", (unsigned long long)seq,
				   mfs_jlpos_blk(j, lpos), nd, ntags, nimg);
	len = nd + nimg + 1;
	if (len > room)
		return 0;       /* cannot be a record of this lap */
	if (len > sb->cap) {
		free(sb->data);
		sb->cap = 0;
		sb->data = mfs_jbuf_alloc(bs, len);
		if (!sb->data)
			return -ENOMEM;
		sb->cap = len;
	}
	err = mfs_jlog_io_lpos(j, lpos, len, sb->data, 0);
	if (err)
		return err;
	for (uint32_t i = 0; i < len - 1; i++)
		if (!jblk_ok(j, sb->data + (size_t)i * bs, i < nd ? MFS_JDESC_MAGIC : MFS_JIMG_MAGIC,
			     seq, i))
			return 0;
	c = (const struct mfs_jcommit *)(sb->data + (size_t)(len - 1) * bs);
	if (!jblk_ok(j, c, MFS_JCMT_MAGIC, seq, len - 1) || mfs_get32(c->nblocks) != len ||
	    mfs_get32(c->ntags) != ntags ||
	    mfs_get32(c->data_crc) != mfs_crc32c(0, sb->data, (size_t)(len - 1) * bs))
		return 0;

	/* Complete and intact: from here on, anything wrong is corruption. */
	for (uint32_t di = 0; di < nd; di++) {
		const struct mfs_jdesc *d = (const void *)(sb->data + (size_t)di * bs);
		const struct mfs_jtag *t = (const struct mfs_jtag *)(d + 1);
		uint32_t cnt = mfs_get32(d->ntags);

		if (mfs_get32(d->ndesc) != nd || mfs_get32(d->ntags_total) != ntags ||
		    mfs_get32(d->nimages) != nimg ||
		    cnt != (di + 1 < nd ? tpd : ntags - di * tpd))
			return MFS_CORRUPT("journal record %llu descriptor %u: counts disagree "
					   "with the first descriptor", (unsigned long long)seq, di);
		for (uint32_t ti = 0; ti < cnt; ti++, k++) {
			uint64_t fsb = mfs_get64(t[ti].fsblock);
			uint32_t fl = mfs_get32(t[ti].flags);

			if (fl != (k < nimg ? 0 : MFS_JTAG_REVOKE))
				return MFS_CORRUPT("journal record %llu tag %u: flags 0x%x, "
						   "expected 0x%x", (unsigned long long)seq, k,
						   fl, k < nimg ? 0 : MFS_JTAG_REVOKE);
			if (fsb >= g->dblocks ||
			    (fsb >= j->logstart && fsb < j->logstart + j->logblocks))
				return MFS_CORRUPT("journal record %llu tag %u: block %llu is "
						   "outside the filesystem (%llu blocks) or inside "
						   "the log (blocks %llu..%llu); nothing was "
						   "replayed", (unsigned long long)seq, k,
						   (unsigned long long)fsb,
						   (unsigned long long)g->dblocks,
						   (unsigned long long)j->logstart,
						   (unsigned long long)j->logstart +
						   j->logblocks - 1);
			if (mfs_fsb_to_agbno(g, fsb) >= MFS_AG_FIXED_BLOCKS)
				continue;
			if (k >= nimg)
				return MFS_CORRUPT("journal record %llu tag %u: revokes block "
						   "%llu, fixed block %u of AG %u, which is never "
						   "freed; nothing was replayed",
						   (unsigned long long)seq, k,
						   (unsigned long long)fsb,
						   mfs_fsb_to_agbno(g, fsb), mfs_fsb_to_agno(g, fsb));
			err = fixed_image_check(j, seq, k, fsb, sb->data + (size_t)(nd + k) * bs,
						t[ti].head);
			if (err)
				return err;
		}
	}
	*lenp = len;
	return 1;
}

static const struct mfs_jtag *rec_tag(const struct mfs_journal *j, const char *rec,
				      uint32_t k)
{
	uint32_t tpd = mfs_jtags_per_desc(j->bs);
	const struct mfs_jdesc *d = (const void *)(rec + (size_t)(k / tpd) * j->bs);

	return (const struct mfs_jtag *)(d + 1) + k % tpd;
}

struct found_rec {
	uint64_t lpos, seq;
	uint32_t len;
};

struct revoke {
	uint64_t blkno, seq;
};

struct scan {
	struct jhdr_info hi;
	struct found_rec *recs;
	size_t nrecs, reccap;
	struct revoke *revs;
	size_t nrevs, revcap;
	uint64_t end_lpos;          /* just after the last complete record */
	uint64_t nimages;
	struct scan_buf sb;
};

static void scan_free(struct scan *s)
{
	free(s->recs);
	free(s->revs);
	free(s->sb.data);
}

static int grow(void **arr, size_t *cap, size_t need, size_t size)
{
	void *p;
	size_t ncap;

	if (need <= *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 64;
	p = mfs_realloc(*arr, ncap * size);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

/* Pass 1: the header, then every complete record from the tail; revokes gathered. */
static int scan_log(struct mfs_journal *j, struct scan *s)
{
	uint64_t lpos, seq, used = 0;
	int err = read_header(j, &s->hi);

	if (err)
		return err;
	lpos = s->hi.tail_blk - MFS_JHDR_COPIES;
	seq = s->hi.tail_seq;
	for (;;) {
		uint32_t len;
		const char *rec;

		err = rec_read(j, lpos, seq, (uint32_t)(j->usable - used), &s->sb, &len);
		if (err <= 0)
			break;
		rec = s->sb.data;
		err = grow((void **)&s->recs, &s->reccap, s->nrecs + 1, sizeof(*s->recs));
		if (err)
			break;
		s->recs[s->nrecs++] = (struct found_rec){ lpos, seq, len };
		{
			const struct mfs_jdesc *d0 = (const void *)rec;
			uint32_t ntags = mfs_get32(d0->ntags_total), nimg = mfs_get32(d0->nimages);

			s->nimages += nimg;
			for (uint32_t k = nimg; k < ntags && !err; k++) {
				err = grow((void **)&s->revs, &s->revcap, s->nrevs + 1,
					   sizeof(*s->revs));
				if (!err)
					s->revs[s->nrevs++] = (struct revoke){
						mfs_get64(rec_tag(j, rec, k)->fsblock), seq };
			}
		}
		if (err)
			break;
		lpos += len;
		used += len;
		seq++;
	}
	s->end_lpos = lpos;
	return err < 0 ? err : 0;
}

static int revoke_cmp(const void *a, const void *b)
{
	const struct revoke *x = a, *y = b;

	if (x->blkno != y->blkno)
		return x->blkno < y->blkno ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The latest sequence that revoked `blkno`, or 0.  Revokes sorted by (blkno, seq). */
static uint64_t revoked_at(const struct scan *s, uint64_t blkno)
{
	size_t lo = 0, hi = s->nrevs;

	while (lo < hi) {       /* first entry with blkno > wanted */
		size_t mid = lo + (hi - lo) / 2;

		if (s->revs[mid].blkno <= blkno)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo && s->revs[lo - 1].blkno == blkno ? s->revs[lo - 1].seq : 0;
}

/* Pass 2: write the images home, oldest record first. */
static int replay(struct mfs_journal *j, struct scan *s)
{
	uint32_t bs = j->bs;
	char *img;
	int err = 0;

	if (!s->nrecs)
		return 0;
	if (s->nrevs)
		qsort(s->revs, s->nrevs, sizeof(*s->revs), revoke_cmp);
	img = mfs_jbuf_alloc(bs, 1);
	if (!img)
		return -ENOMEM;
	for (size_t r = 0; r < s->nrecs && !err; r++) {
		const struct found_rec *fr = &s->recs[r];
		const struct mfs_jdesc *d0;
		uint32_t len, nd, nimg;

		err = rec_read(j, fr->lpos, fr->seq, fr->len, &s->sb, &len);
		if (err <= 0) {
			if (!err)
				err = MFS_CORRUPT("journal record %llu at log block %u changed "
						  "between two reads", (unsigned long long)fr->seq,
						  mfs_jlpos_blk(j, fr->lpos));
			break;
		}
		err = 0;
		d0 = (const void *)s->sb.data;
		nd = mfs_get32(d0->ndesc);
		nimg = mfs_get32(d0->nimages);
		for (uint32_t k = 0; k < nimg && !err; k++) {
			const struct mfs_jtag *t = rec_tag(j, s->sb.data, k);
			uint64_t fsb = mfs_get64(t->fsblock);

			if (revoked_at(s, fsb) >= fr->seq)
				continue;
			memcpy(img, s->sb.data + (size_t)(nd + k) * bs, bs);
			memcpy(img, t->head, MFS_JBLK_SIZE);
			mfs_bcache_forget(j->bc, fsb);
			err = mfs_jhome_write(j, fsb, img);
			if (!err)
				j->st.replayed_blocks++;
		}
		if (!err)
			j->st.replayed_records++;
	}
	free(img);
	if (!err)
		err = mfs_jflush(j);
	return err;
}

int mfs_journal_peek(struct mfs_fs *fs, struct mfs_journal_info *info)
{
	struct mfs_journal *j;
	struct scan s;
	int err;

	memset(info, 0, sizeof(*info));
	err = mfs_journal_alloc(fs, &j);
	if (err)
		return err;
	memset(&s, 0, sizeof(s));
	err = scan_log(j, &s);
	if (!err) {
		info->tail_seq = s.hi.tail_seq;
		info->tail_blk = s.hi.tail_blk;
		info->clean = !!(s.hi.flags & MFS_JHDR_CLEAN);
		info->records = s.nrecs;
		info->blocks = s.nimages;
	}
	scan_free(&s);
	mfs_journal_free(j);
	return err;
}

int mfs_journal_open(struct mfs_fs *fs, unsigned flags, struct mfs_journal **out)
{
	struct mfs_journal *j;
	struct scan s;
	uint64_t last;
	int err;

	if (out)
		*out = NULL;
	if (fs->log)
		return -EBUSY;
	err = mfs_journal_alloc(fs, &j);
	if (err)
		return err;
	memset(&s, 0, sizeof(s));
	err = scan_log(j, &s);
	if (!err)
		err = replay(j, &s);
	if (err) {
		scan_free(&s);
		mfs_journal_free(j);
		return err;
	}
	if (s.nrecs)
		mfs_log(MFS_LOG_INFO, "journal: replayed %llu transactions (%llu blocks), "
			"sequences %llu..%llu", (unsigned long long)j->st.replayed_records,
			(unsigned long long)j->st.replayed_blocks,
			(unsigned long long)s.recs[0].seq,
			(unsigned long long)s.recs[s.nrecs - 1].seq);

	/*
	 * Start after the last good record.  Remains of a torn batch may follow it, with
	 * sequences up to last + usable (each record takes at least two blocks), so the next
	 * sequence skips past all of them: none can ever be taken for a new record.
	 */
	last = s.nrecs ? s.recs[s.nrecs - 1].seq : s.hi.tail_seq - 1;
	j->next_seq = last + 1 + j->usable;
	j->durable_seq = j->next_seq - 1;
	j->head_lpos = j->tail_lpos = s.end_lpos;
	j->tail_seq = j->next_seq;
	j->hdr_gen = s.hi.gen;
	scan_free(&s);
	mfs_jfill_init(j);
	err = mfs_jhdr_write(j, j->tail_lpos, j->tail_seq, 0);
	if (!err)
		err = mfs_jlogd_start(j);
	if (err) {
		mfs_journal_free(j);
		return err;
	}
	mfs_journal_attach(j);
	if (out)
		*out = j;
	return 0;
}
