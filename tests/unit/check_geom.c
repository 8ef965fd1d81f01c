/*
 * check_geom.c — superblock geometry: a sane superblock decodes, and every field that is
 * out of range or inconsistent with the others is refused (never trusted, never a crash);
 * inode-number arithmetic round-trips.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "byteorder.h"
#include "geom.h"
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

int main(void)
{
	Suite *s = suite_create("geom");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int nf;

	tcase_add_test(tc, good_geometry);
	tcase_add_loop_test(tc, bad_field, 0, 23);
	tcase_add_test(tc, truncated_device);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
