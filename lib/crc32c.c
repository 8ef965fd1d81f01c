/*
 * crc32c.c — CRC32C with the SSE4.2 crc32 instruction where the CPU has it, and a
 * slicing-by-8 table implementation otherwise.  Both give identical results; the unit test
 * compares them on random buffers and on every length across the stream sizes below.
 *
 * The crc32 instruction takes 3 cycles but a new one can start every cycle: one chain of
 * it over a buffer waits on itself.  So a long enough stretch is cut into three equal
 * parts of S bytes, A B C, whose CRCs run interleaved (B's and C's from a zero register)
 * and are joined after: the raw register is linear in what it starts from and in the
 * data, so crc(r, A B) = shift_S(crc(r, A)) ^ crc(0, B), where shift_S(x) = crc(x, S zero
 * bytes).  shift_S is linear in x: four tables of 256 (one per byte of x) give it, made
 * at start from the table CRC of 32 single-bit registers.
 */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#define CRC32C_POLY 0x82f63b78u     /* reflected Castagnoli polynomial */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_have_sse42;

/* The stream sizes of the interleaved CRC, largest first (multiples of 8), and shift_S of
 * each: crc_shift[i][k][b] = crc(b << 8k, crc_streams[i] zero bytes). */
static const size_t crc_streams[] = { 1024, 128, 32 };
#define CRC_NSTREAMS (sizeof(crc_streams) / sizeof(crc_streams[0]))
static uint32_t crc_shift[CRC_NSTREAMS][4][256];

static uint32_t crc_sw(uint32_t c, const unsigned char *p, size_t len);

static void crc_shift_init(void)
{
	static const unsigned char zeros[1024];

	for (size_t i = 0; i < CRC_NSTREAMS; i++)
		for (unsigned k = 0; k < 4; k++) {
			uint32_t *t = crc_shift[i][k];

			t[0] = 0;
			for (unsigned bit = 0; bit < 8; bit++)
				t[1u << bit] = crc_sw(1u << (8 * k + bit), zeros, crc_streams[i]);
			/* the rest by linearity: b's lowest bit and the others */
			for (unsigned b = 1; b < 256; b++)
				t[b] = t[b & (b - 1)] ^ t[b & -b];
		}
}

static inline uint32_t crc_shift_by(size_t i, uint32_t x)
{
	return crc_shift[i][0][x & 0xff] ^ crc_shift[i][1][(x >> 8) & 0xff] ^
	       crc_shift[i][2][(x >> 16) & 0xff] ^ crc_shift[i][3][x >> 24];
}

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^
					  crc_table[0][crc_table[t - 1][i] & 0xff];
	crc_shift_init();
#if defined(__x86_64__)
	__builtin_cpu_init();
	crc_have_sse42 = __builtin_cpu_supports("sse4.2");
#endif
}

/* Table version on the raw (already inverted) register. */
static uint32_t crc_sw(uint32_t c, const unsigned char *p, size_t len)
{
	while (len && ((uintptr_t)p & 7)) {
		c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
		len--;
	}
	while (len >= 8) {
		uint64_t v;

		memcpy(&v, p, 8);
		v ^= c;
		c = crc_table[7][v & 0xff] ^ crc_table[6][(v >> 8) & 0xff] ^
		    crc_table[5][(v >> 16) & 0xff] ^ crc_table[4][(v >> 24) & 0xff] ^
		    crc_table[3][(v >> 32) & 0xff] ^ crc_table[2][(v >> 40) & 0xff] ^
		    crc_table[1][(v >> 48) & 0xff] ^ crc_table[0][v >> 56];
		p += 8;
		len -= 8;
	}
	while (len--)
		c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t c, const unsigned char *p, size_t len)
{
	uint64_t c64;

	while (len && ((uintptr_t)p & 7)) {
		c = __builtin_ia32_crc32qi(c, *p++);
		len--;
	}
	c64 = c;
	for (size_t i = 0; i < CRC_NSTREAMS; i++) {
		size_t sz = crc_streams[i];

		while (len >= 3 * sz) {
			uint64_t a = c64, b = 0, d = 0;

			for (size_t o = 0; o < sz; o += 8) {
				uint64_t va, vb, vd;

				memcpy(&va, p + o, 8);
				memcpy(&vb, p + sz + o, 8);
				memcpy(&vd, p + 2 * sz + o, 8);
				a = __builtin_ia32_crc32di(a, va);
				b = __builtin_ia32_crc32di(b, vb);
				d = __builtin_ia32_crc32di(d, vd);
			}
			c64 = crc_shift_by(i, crc_shift_by(i, (uint32_t)a) ^ (uint32_t)b) ^
			      (uint32_t)d;
			p += 3 * sz;
			len -= 3 * sz;
		}
	}
	while (len >= 8) {
		uint64_t v;

		memcpy(&v, p, 8);
		c64 = __builtin_ia32_crc32di(c64, v);
		p += 8;
		len -= 8;
	}
	c = (uint32_t)c64;
	while (len--)
		c = __builtin_ia32_crc32qi(c, *p++);
	return c;
}
#endif

uint32_t mfs_crc32c(uint32_t crc, const void *buf, size_t len)
{
	uint32_t c = ~crc;

	pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
	if (crc_have_sse42)
		return ~crc_hw(c, buf, len);
#endif
	return ~crc_sw(c, buf, len);
}

uint32_t mfs_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc_once, crc_init);
	return ~crc_sw(~crc, buf, len);
}

const char *mfs_crc32c_impl(void)
{
	pthread_once(&crc_once, crc_init);
	return crc_have_sse42 ? "sse4.2" : "table";
}
