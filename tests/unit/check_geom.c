/*
 * check_geom.c — superblock geometry: a sane superblock decodes, and every field that is
 * out of range or inconsistent with the others is refused (never trusted, never a crash);
 * inode-number arithmetic round-trips; mfs_ino_check (masks, not divisions) gives the
 * verdict of the plain arithmetic for every number, hostile ones included.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"

static struct mfs_sb sb;

static void good_sb(void)
{
	struct mfs_geom g = { 0 };

	g.blocksize = 4096;
	g.blocklog = 12;
	g.agblocks = 1u << 18;
	g.agblklog = 18;
	g.agcount = 4;
	g.dblocks = 3ull * g.agblocks + 1000;
	g.inodesize = 256;
	g.inopblog = 4;
	g.rootino = mfs_agino_to_ino(&g, 0, mfs_agbno_to_agino(&g, 32));
	g.logstart = 64;
	g.logblocks = 1024;
	memset(&sb, 0, sizeof(sb));
	mfs_geom_to_sb(&g, &sb);
	mfs_log_quiet();
}

static int decode(uint64_t devbytes)
{
	struct mfs_geom g;

	return mfs_geom_from_sb(&g, &sb, devbytes);
}

START_TEST(good_geometry)
{
	struct mfs_geom g;

	good_sb();
	ck_assert_int_eq(mfs_geom_from_sb(&g, &sb, 0), 0);
	ck_assert_uint_eq(g.chunkblocks, 4);
	ck_assert_uint_eq(mfs_ag_length(&g, 3), 1000);
	ck_assert_uint_eq(mfs_ag_length(&g, 0), 1u << 18);
	/* Inode numbers round-trip through AG, block and offset. */
	for (uint32_t agno = 0; agno < 4; agno++)
		for (uint32_t agbno = 8; agbno < 1000; agbno += 97)
			for (uint32_t i = 0; i < 16; i++) {
				uint64_t ino = mfs_agino_to_ino(&g, agno,
								mfs_agbno_to_agino(&g, agbno) | i);

				ck_assert_uint_eq(mfs_ino_to_agno(&g, ino), agno);
				ck_assert_uint_eq(mfs_ino_to_fsb(&g, ino),
						  mfs_agbno_to_fsb(&g, agno, agbno));
				ck_assert_uint_eq(mfs_ino_to_offset(&g, ino), i * 256);
			}
}
END_TEST

/* Each case damages one field; all must be refused with -EFSCORRUPTED. */
START_TEST(bad_field)
{
	good_sb();
	switch (_i) {
	case 0: mfs_put32(sb.version, 99); break;
	case 1: mfs_put32(sb.blocksize, 3000); break;
	case 2: mfs_put32(sb.blocksize, 512); sb.blocklog = 9; break;
	case 3: sb.blocklog = 13; break;
	case 4: mfs_put16(sb.inodesize, 8192); break;
	case 5: sb.inopblog = 3; break;
	case 6: mfs_put32(sb.agblocks, 10); break;
	case 7: sb.agblklog = 17; break;
	case 8: mfs_put32(sb.agcount, 0); break;
	case 9: mfs_put32(sb.agcount, 9); break;                 /* too many for dblocks */
	case 10: mfs_put64(sb.dblocks, 5ull << 18); break;        /* more than agcount AGs */
	case 11: mfs_put64(sb.dblocks, 3ull * (1u << 18) + 10); break;  /* last AG too small */
	case 12: mfs_put64(sb.logstart, ~0ull - 5); break;
	case 13: mfs_put32(sb.logblocks, 0xffffffffu); break;
	case 14: mfs_put64(sb.rootino, 0); break;
	case 15: mfs_put64(sb.rootino, ~0ull); break;
	case 16: mfs_put32(sb.agcount, 0xffffffffu); break;
	case 17: sb.inopblog = 40; break;                        /* would be a shift overflow */
	case 18: sb.inopblog = 200; break;
	case 19: mfs_put64(sb.logstart, 0); break;               /* over AG 0's superblock */
	case 20: mfs_put64(sb.logstart, (1u << 18) - 100); break; /* crosses into AG 1 */
	case 21: mfs_put64(sb.logstart, (1u << 18) + 1); break;  /* over AG 1's header */
	case 22: mfs_put32(sb.logblocks, 3); break;              /* too small to be a journal */
	}
	ck_assert_int_eq(decode(0), -EFSCORRUPTED);
}
END_TEST

START_TEST(truncated_device)
{
	good_sb();
	/* The image holds fewer blocks than the superblock claims. */
	ck_assert_int_eq(decode(4096ull * 1000), -EFSCORRUPTED);
	ck_assert_int_eq(decode(4096ull * (3ull * (1u << 18) + 1000)), 0);
}
END_TEST

/* The rule of mfs_ino_check spelled out with plain division and modulo: a number names an
 * inode that could exist when it is nonzero, below 2^56, in an existing AG (the whole AG
 * part, not its low 32 bits), its chunk starts after the AG headers and ends inside the AG,
 * and in blocks of more than 64 inodes it is among the first 64. */
static int ino_ok_plain(const struct mfs_geom *g, uint64_t ino)
{
	uint64_t per_ag = 1ull << (g->agblklog + g->inopblog), ipb = 1ull << g->inopblog;
	uint64_t agno, agino, agbno, first, aglen;

	if (ino == 0 || ino >= (1ull << 56))
		return 0;
	agno = ino / per_ag;
	if (agno >= g->agcount)
		return 0;
	agino = ino % per_ag;
	agbno = agino / ipb;
	first = agbno / g->chunkblocks * g->chunkblocks;
	aglen = agno + 1 < g->agcount ? g->agblocks : g->dblocks - agno * g->agblocks;
	if (first < MFS_AG_FIXED_BLOCKS || first + g->chunkblocks > aglen)
		return 0;
	return ipb <= MFS_INODES_PER_CHUNK || agino % ipb < MFS_INODES_PER_CHUNK;
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Geometries: inode-per-block logs 0 (64-block chunks) to 8 (256 inodes a block, one-block
 * chunks), a short and a full last AG, and a chunk size that is not a power of two (no
 * superblock makes one, but the check must not depend on that). */
START_TEST(ino_check_matches_plain)
{
	static const struct { uint32_t inopblog, agblocks, agcount, lastlen, chunkblocks; } geo[] = {
		{ 4, 1000, 3, 500, 0 },   { 4, 1000, 3, 1000, 0 }, { 0, 300, 2, 131, 0 },
		{ 6, 4096, 4, 4096, 0 },  { 8, 777, 3, 5, 0 },     { 7, 1024, 1, 1024, 0 },
		{ 2, 1000, 3, 999, 3 },   { 3, 100, 2, 67, 6 },
	};
	struct mfs_fs *fs = calloc(1, sizeof(*fs));
	struct mfs_geom *g;
	uint64_t seed = 0x9e3779b97f4a7c15ull;

	ck_assert_ptr_nonnull(fs);
	g = &fs->geo;
	for (size_t k = 0; k < sizeof(geo) / sizeof(geo[0]); k++) {
		uint32_t s;
		uint64_t end;
		uint64_t special[] = { 0, 1, 2, (1ull << 56) - 1, 1ull << 56, UINT64_MAX,
				       UINT64_MAX >> 1, 1ull << 32, (1ull << 32) - 1, 0, 0, 0, 0 };

		memset(g, 0, sizeof(*g));
		g->inopblog = geo[k].inopblog;
		g->agblocks = geo[k].agblocks;
		g->agblklog = mfs_log2_ceil(g->agblocks);
		g->agcount = geo[k].agcount;
		g->dblocks = (uint64_t)(g->agcount - 1) * g->agblocks + geo[k].lastlen;
		g->chunkblocks = geo[k].chunkblocks ? geo[k].chunkblocks
			: (MFS_INODES_PER_CHUNK >> g->inopblog ? MFS_INODES_PER_CHUNK >> g->inopblog : 1);
		s = g->agblklog + g->inopblog;
		/* AG numbers whose low 32 bits name a real AG */
		special[9] = (1ull << 32) << s | 1ull << g->inopblog << 4;
		special[10] = ((1ull << 32) + g->agcount - 1) << s | 1ull << g->inopblog << 4;
		special[11] = (uint64_t)g->agcount << s;
		special[12] = ((uint64_t)g->agcount << s) - 1;
		/* every number up to two AGs past the end */
		end = (uint64_t)(g->agcount + 2) << s;
		for (uint64_t ino = 0; ino < end; ino++)
			if ((mfs_ino_check(fs, ino) == 0) != ino_ok_plain(g, ino))
				ck_abort_msg("geometry %zu: inode %llu: check says %d", k,
					     (unsigned long long)ino, mfs_ino_check(fs, ino));
		for (size_t i = 0; i < sizeof(special) / sizeof(special[0]); i++)
			ck_assert_msg((mfs_ino_check(fs, special[i]) == 0) ==
				      ino_ok_plain(g, special[i]), "geometry %zu: inode %llu", k,
				      (unsigned long long)special[i]);
		/* random numbers of every width */
		for (int i = 0; i < 200000; i++) {
			uint64_t ino = xorshift(&seed) >> (i % 64);

			ck_assert_msg((mfs_ino_check(fs, ino) == 0) == ino_ok_plain(g, ino),
				      "geometry %zu: inode %llu", k, (unsigned long long)ino);
		}
	}
	free(fs);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("geom");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int nf;

	/* A hang bound, not Check's 4 s: ino_check_matches_plain walks millions of inode
	 * numbers (~0.3 s of CPU), which took over 4 s on a loaded 2-core machine. */
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, good_geometry);
	tcase_add_loop_test(tc, bad_field, 0, 23);
	tcase_add_test(tc, truncated_device);
	tcase_add_test(tc, ino_check_matches_plain);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
