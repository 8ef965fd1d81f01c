/*
 * check_crc32c.c — CRC32C: known answers, hardware and table paths agree, chaining.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"

START_TEST(known_answers)
{
	/* The standard check value of CRC-32C over "123456789". */
	ck_assert_uint_eq(mfs_crc32c(0, "123456789", 9), 0xe3069283u);
	ck_assert_uint_eq(mfs_crc32c_sw(0, "123456789", 9), 0xe3069283u);
	ck_assert_uint_eq(mfs_crc32c(0, "", 0), 0);
	unsigned char zeros[32] = { 0 };
	/* RFC 3720 B.4: 32 bytes of zeroes. */
	ck_assert_uint_eq(mfs_crc32c(0, zeros, 32), 0x8a9136aau);
}
END_TEST

START_TEST(hw_matches_table_and_chains)
{
	unsigned char buf[8192];

	srandom(42);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)random();
	for (int iter = 0; iter < 2000; iter++) {
		size_t off = (size_t)random() % 64, len = (size_t)random() % (sizeof(buf) - 64);
		size_t cut = len ? (size_t)random() % len : 0;
		uint32_t whole = mfs_crc32c(0, buf + off, len);

		ck_assert_uint_eq(whole, mfs_crc32c_sw(0, buf + off, len));
		ck_assert_uint_eq(whole, mfs_crc32c(mfs_crc32c(0, buf + off, cut), buf + off + cut,
						    len - cut));
	}
}
END_TEST

/* Every length from 0 to past three 1024-byte streams and a tail, at every alignment: each
 * way of cutting a buffer into the interleaved streams of 1024, 128 and 32 bytes and the
 * serial rest (a wrong join or shift table differs from the table CRC). */
START_TEST(streams_every_length)
{
	static unsigned char buf[3 * 1024 + 300 + 8];

	srandom(7);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)random();
	for (size_t off = 0; off < 8; off++)
		for (size_t len = 0; len + off + 8 <= sizeof(buf); len++)
			ck_assert_uint_eq(mfs_crc32c(0x12345678u, buf + off, len),
					  mfs_crc32c_sw(0x12345678u, buf + off, len));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("crc32c");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int nf;

	tcase_add_test(tc, known_answers);
	tcase_add_test(tc, hw_matches_table_and_chains);
	tcase_add_test(tc, streams_every_length);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
