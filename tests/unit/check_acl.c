/*
 * check_acl.c — POSIX ACLs in their xattr form (lib/acl.c): every rule of validation with
 * the errno Linux gives, encode(decode(x)) == x, the mode arithmetic against worked
 * examples (equivalence, the group class, inheritance masking, chmod), and random bytes and
 * mutated valid ACLs that must decode or be refused, never crash.
 */
#include "tu.h"

#include "acl.h"

#include <stdio.h>

#define UO MFS_ACL_USER_OBJ
#define U  MFS_ACL_USER
#define GO MFS_ACL_GROUP_OBJ
#define G  MFS_ACL_GROUP
#define M  MFS_ACL_MASK
#define O  MFS_ACL_OTHER
#define X  MFS_ACL_UNDEFINED

struct ent {
	uint16_t tag, perm;
	uint32_t id;
};

/* The xattr bytes of n entries (little-endian, version 2) into buf; returns the size. */
static size_t mk(uint8_t *buf, const struct ent *e, unsigned n)
{
	buf[0] = MFS_ACL_VERSION;
	buf[1] = buf[2] = buf[3] = 0;
	for (unsigned i = 0; i < n; i++) {
		uint8_t *q = buf + 4 + 8 * i;

		q[0] = (uint8_t)e[i].tag;
		q[1] = (uint8_t)(e[i].tag >> 8);
		q[2] = (uint8_t)e[i].perm;
		q[3] = (uint8_t)(e[i].perm >> 8);
		for (int b = 0; b < 4; b++)
			q[4 + b] = (uint8_t)(e[i].id >> (8 * b));
	}
	return 4 + 8 * (size_t)n;
}

static int decode_ents(const struct ent *e, unsigned n, struct mfs_acl **out)
{
	uint8_t buf[4 + 8 * 64];

	ck_assert_uint_le(n, 64);
	return mfs_acl_decode(buf, mk(buf, e, n), out);
}

#define ENTS(...) ((const struct ent[]){ __VA_ARGS__ }), \
	(unsigned)(sizeof((const struct ent[]){ __VA_ARGS__ }) / sizeof(struct ent))

static void expect_bad(int err, const struct ent *e, unsigned n, const char *what)
{
	struct mfs_acl *a = NULL;
	int got = decode_ents(e, n, &a);

	if (got != err)
		ck_abort_msg("%s: decode gave %d, expected %d", what, got, err);
	ck_assert_ptr_null(a);
}

START_TEST(test_valid)
{
	const struct ent min[] = { { UO, 6, X }, { GO, 4, X }, { O, 4, X } };
	const struct ent full[] = {
		{ UO, 7, X }, { U, 4, 0 }, { U, 6, 1000 }, { U, 1, 4294967294u }, { GO, 5, X },
		{ G, 2, 0 }, { G, 7, 65534 }, { M, 7, X }, { O, 0, X },
	};
	const struct ent maskonly[] = { { UO, 6, X }, { GO, 6, X }, { M, 4, X }, { O, 0, X } };
	const struct { const struct ent *e; unsigned n; } cases[] = {
		{ min, 3 }, { full, 9 }, { maskonly, 4 },
	};
	uint8_t buf[4 + 8 * 16], out[4 + 8 * 16];

	for (unsigned c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct mfs_acl *a;
		size_t size = mk(buf, cases[c].e, cases[c].n);

		CK_OK(mfs_acl_decode(buf, size, &a));
		CK_EQ(a->n, cases[c].n);
		for (unsigned i = 0; i < a->n; i++) {
			CK_EQ(a->e[i].tag, cases[c].e[i].tag);
			CK_EQ(a->e[i].perm, cases[c].e[i].perm);
			CK_EQ(a->e[i].id, cases[c].e[i].id);
		}
		CK_EQ(mfs_acl_size(a), size);
		memset(out, 0xa5, sizeof(out));
		mfs_acl_encode(a, out);
		CK_TRUE(memcmp(out, buf, size) == 0);
		free(a);
	}
	/* A header alone is an empty ACL (none); the unnamed entries' ids are normalized. */
	{
		struct mfs_acl *a;
		const struct ent odd[] = { { UO, 6, 17 }, { GO, 4, 0 }, { O, 4, 5 } };
		size_t size = mk(buf, odd, 3);

		CK_OK(mfs_acl_decode(buf, 4, &a));
		CK_EQ(a->n, 0);
		CK_EQ(mfs_acl_size(a), 4);
		free(a);
		CK_OK(mfs_acl_decode(buf, size, &a));
		for (unsigned i = 0; i < 3; i++)
			CK_EQ(a->e[i].id, X);
		free(a);
	}
}
END_TEST

START_TEST(test_invalid)
{
	uint8_t buf[64];
	struct mfs_acl *a = NULL;
	size_t size;

	/* sizes: shorter than the header, a torn entry */
	size = mk(buf, (const struct ent[]){ { UO, 6, X }, { GO, 4, X }, { O, 4, X } }, 3);
	CK_EQ(mfs_acl_decode(buf, 0, &a), -EINVAL);
	CK_EQ(mfs_acl_decode(buf, 3, &a), -EINVAL);
	CK_EQ(mfs_acl_decode(buf, size - 1, &a), -EINVAL);
	CK_EQ(mfs_acl_decode(buf, 6, &a), -EINVAL);
	ck_assert_ptr_null(a);
	/* version */
	buf[0] = 1;
	CK_EQ(mfs_acl_decode(buf, size, &a), -EOPNOTSUPP);
	buf[0] = 2;
	buf[3] = 1;
	CK_EQ(mfs_acl_decode(buf, size, &a), -EOPNOTSUPP);
	ck_assert_ptr_null(a);

	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { O, 4, X }), "no GROUP_OBJ");
	expect_bad(-EINVAL, ENTS({ GO, 4, X }, { O, 4, X }), "no USER_OBJ");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { GO, 4, X }), "no OTHER");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { UO, 6, X }, { GO, 4, X }, { O, 4, X }),
		   "two USER_OBJ");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { GO, 4, X }, { GO, 4, X }, { O, 4, X }),
		   "two GROUP_OBJ");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { GO, 4, X }, { O, 4, X }, { O, 4, X }),
		   "two OTHER");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { GO, 4, X }, { M, 4, X }, { M, 4, X },
				 { O, 4, X }), "two MASK");
	expect_bad(-EINVAL, ENTS({ GO, 4, X }, { UO, 6, X }, { O, 4, X }), "GROUP_OBJ first");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { O, 4, X }, { GO, 4, X }), "OTHER before group");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { GO, 4, X }, { O, 4, X }, { M, 4, X }),
		   "MASK after OTHER");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { GO, 4, X }, { U, 4, 5 }, { M, 4, X },
				 { O, 4, X }), "USER after GROUP_OBJ");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { G, 4, 5 }, { GO, 4, X }, { M, 4, X },
				 { O, 4, X }), "GROUP before GROUP_OBJ");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { U, 4, 5 }, { GO, 4, X }, { O, 4, X }),
		   "USER without MASK");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { GO, 4, X }, { G, 4, 5 }, { O, 4, X }),
		   "GROUP without MASK");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { U, 4, 9 }, { U, 4, 5 }, { GO, 4, X },
				 { M, 4, X }, { O, 4, X }), "USER ids decreasing");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { U, 4, 5 }, { U, 4, 5 }, { GO, 4, X },
				 { M, 4, X }, { O, 4, X }), "USER id repeated");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { GO, 4, X }, { G, 4, 7 }, { G, 4, 7 },
				 { M, 4, X }, { O, 4, X }), "GROUP id repeated");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { GO, 4, X }, { O, 8, X }), "perm bit 8");
	expect_bad(-EINVAL, ENTS({ UO, 0x106, X }, { GO, 4, X }, { O, 4, X }), "perm high bits");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { GO, 4, X }, { 0x40, 4, X }, { O, 4, X }),
		   "unknown tag");
	expect_bad(-EINVAL, ENTS({ UO, 6, X }, { 0, 4, X }, { GO, 4, X }, { O, 4, X }), "tag 0");
	/* the same id may be a user and a group */
	{
		CK_OK(decode_ents(ENTS({ UO, 6, X }, { U, 4, 5 }, { GO, 4, X }, { G, 4, 5 },
				       { M, 4, X }, { O, 4, X }), &a));
		free(a);
	}
}
END_TEST

/* Mode arithmetic, against what Linux does (posix_acl_equiv_mode, posix_acl_create_masq,
 * posix_acl_chmod) worked out by hand. */
START_TEST(test_mode)
{
	struct mfs_acl *a;
	uint16_t mode;

	/* equivalent: the mode's bits, other bits (type, setgid) kept */
	CK_OK(decode_ents(ENTS({ UO, 7, X }, { GO, 5, X }, { O, 4, X }), &a));
	mode = 0102600 | 02000;
	CK_EQ(mfs_acl_equiv_mode(a, &mode), 0);
	CK_EQ(mode, 0102754);
	free(a);
	/* a named entry: the mask is the group bits */
	CK_OK(decode_ents(ENTS({ UO, 6, X }, { U, 7, 65534 }, { GO, 4, X }, { M, 5, X },
			       { O, 0, X }), &a));
	mode = 0100777;
	CK_EQ(mfs_acl_equiv_mode(a, &mode), 1);
	CK_EQ(mode, 0100650);
	/* chmod 0741: owner 7, mask 4 (GROUP_OBJ untouched), other 1 */
	mfs_acl_chmod(a, 0741);
	CK_EQ(a->e[0].perm, 7);
	CK_EQ(a->e[1].perm, 7);
	CK_EQ(a->e[2].perm, 4);
	CK_EQ(a->e[3].perm, 4);
	CK_EQ(a->e[4].perm, 1);
	free(a);
	/* a mask alone is not equivalent (Linux keeps such an ACL) */
	CK_OK(decode_ents(ENTS({ UO, 6, X }, { GO, 6, X }, { M, 4, X }, { O, 0, X }), &a));
	mode = 0100000;
	CK_EQ(mfs_acl_equiv_mode(a, &mode), 1);
	CK_EQ(mode, 0100640);
	free(a);
	/* chmod without a mask changes GROUP_OBJ */
	CK_OK(decode_ents(ENTS({ UO, 6, X }, { GO, 6, X }, { O, 0, X }), &a));
	mfs_acl_chmod(a, 0513);
	CK_EQ(a->e[0].perm, 5);
	CK_EQ(a->e[1].perm, 1);
	CK_EQ(a->e[2].perm, 3);
	free(a);

	/* inheritance: default u::rwx,u:nobody:rwx,g::r-x,m::rwx,o::r-x */
	CK_OK(decode_ents(ENTS({ UO, 7, X }, { U, 7, 65534 }, { GO, 5, X }, { M, 7, X },
			       { O, 5, X }), &a));
	mode = 0100666;                               /* creat(0666) */
	CK_EQ(mfs_acl_create_masq(a, &mode), 1);
	CK_EQ(mode, 0100664);
	CK_EQ(a->e[0].perm, 6);
	CK_EQ(a->e[1].perm, 7);                       /* named entries are kept */
	CK_EQ(a->e[2].perm, 5);                       /* GROUP_OBJ too: the mask limits */
	CK_EQ(a->e[3].perm, 6);
	CK_EQ(a->e[4].perm, 4);
	free(a);
	/* without a mask the group entry is limited; an equivalent result is not stored */
	CK_OK(decode_ents(ENTS({ UO, 7, X }, { GO, 7, X }, { O, 7, X }), &a));
	mode = 040750 | 02000;
	CK_EQ(mfs_acl_create_masq(a, &mode), 0);
	CK_EQ(mode, 042750);
	CK_EQ(a->e[1].perm, 5);
	CK_EQ(a->e[2].perm, 0);
	free(a);
}
END_TEST

/* Random bytes and single-byte mutations of valid ACLs: decode returns 0 or an error and
 * never reads outside the buffer (ASan), and whatever decodes re-encodes to a canonical
 * form that decodes to the same entries. */
START_TEST(test_fuzz)
{
	const struct ent full[] = {
		{ UO, 7, X }, { U, 4, 3 }, { U, 6, 1000 }, { GO, 5, X }, { G, 2, 7 }, { M, 7, X },
		{ O, 1, X },
	};
	unsigned rounds = UNDER_ASAN ? 20000 : 200000, ok = 0;
	uint8_t base[4 + 8 * 7], buf[4 + 8 * 8], re[4 + 8 * 8];
	size_t bsize = mk(base, full, 7);

	tu_srand(tu_seed("MFS_SEED", "acl fuzz"));
	for (unsigned r = 0; r < rounds; r++) {
		struct mfs_acl *a = NULL, *b = NULL;
		size_t size;
		int err;

		if (r & 1) {
			size = bsize;
			memcpy(buf, base, bsize);
			buf[tu_rand() % bsize] ^= (uint8_t)(1u << (tu_rand() % 8));
		} else {
			size = tu_rand() % sizeof(buf);
			for (size_t i = 0; i < size; i++)
				buf[i] = (uint8_t)tu_rand();
			if (size >= 4 && (tu_rand() & 1)) {
				buf[0] = 2;
				buf[1] = buf[2] = buf[3] = 0;
			}
		}
		err = mfs_acl_decode(buf, size, &a);
		if (err) {
			if (err != -EINVAL && err != -EOPNOTSUPP)
				ck_abort_msg("round %u: decode gave %d", r, err);
			continue;
		}
		ok++;
		T_UEQ(mfs_acl_size(a), size);
		mfs_acl_encode(a, re);
		CK_OK(mfs_acl_decode(re, size, &b));
		T_UEQ(a->n, b->n);
		T_TRUE(memcmp(a->e, b->e, a->n * sizeof(a->e[0])) == 0);
		free(a);
		free(b);
	}
	printf("  acl fuzz: %u of %u inputs decoded\n", ok, rounds);
	ck_assert_uint_gt(ok, 0);
}
END_TEST

static Suite *acl_suite(void)
{
	Suite *s = suite_create("acl");
	TCase *tc = tcase_create("acl");

	tcase_add_test(tc, test_valid);
	tcase_add_test(tc, test_invalid);
	tcase_add_test(tc, test_mode);
	tcase_add_test(tc, test_fuzz);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(acl_suite());
}
