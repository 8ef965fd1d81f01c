/*
 * mendfs_format.h — the on-disk format of mendfs, every structure in one place.
 *
 * All multi-byte fields are little-endian and of fixed width; every structure has a static
 * size assertion below it.  The byte layout is also documented for users in mendfs(5);
 * keep the two in step.
 *
 * Geometry
 * --------
 * The device is an array of blocks of `blocksize` bytes (a power of two, 1 KiB .. 64 KiB).
 * It is split into `agcount` allocation groups (AGs) of `agblocks` blocks each; the last AG
 * may be shorter.  A filesystem block number ("fsblock", 64 bits) is
 *
 *         fsblock = agno * agblocks + agbno
 *
 * where agbno (32 bits) is the block's number inside its AG.  Inside an AG, btree pointers
 * are 32-bit agbnos; elsewhere (inode extent maps) pointers are 64-bit fsblocks.
 *
 * Every AG starts with three fixed blocks:
 *
 *     agbno 0   superblock (AG 0: the primary; other AGs: copies, rewritten by growfs/repair)
 *     agbno 1   AG header  (roots of the AG's btrees, free/inode counters, free-list indices)
 *     agbno 2   AG free list (AGFL): a small stock of free blocks from which the free-space
 *               and reverse-map btrees take blocks when they split, so that allocating a
 *               block never has to recurse into the trees being changed.
 *
 * Self-describing metadata
 * ------------------------
 * Every metadata block begins with struct mfs_blkhdr: magic, CRC32C of the whole block
 * (computed with the crc field as zero), the filesystem UUID, the block's own fsblock
 * number, its owner (AG number for AG metadata, inode number for inode metadata) and the
 * journal sequence that last wrote it.  A block read from the wrong place, of the wrong kind,
 * belonging to another filesystem or torn, fails the verifier on every read.
 *
 * Inodes carry their own smaller header (struct mfs_dinode): magic, CRC32C of the inode,
 * self inode number, and the UUID.
 *
 * Inode numbers
 * -------------
 * Inodes live in chunks of MFS_INODES_PER_CHUNK consecutive inodes, each chunk aligned to its
 * own size in blocks.  With inopblog = log2(blocksize / inodesize) and agblklog =
 * ceil(log2(agblocks)):
 *
 *         agino = (agbno << inopblog) | index-in-block
 *         ino   = (agno << (agblklog + inopblog)) | agino
 *
 * so an inode's location is computed, never looked up.  Inode number 0 is never valid.
 */
#ifndef MENDFS_FORMAT_H
#define MENDFS_FORMAT_H

#include <stdint.h>
#include <assert.h>

typedef uint16_t mfs_le16;
typedef uint32_t mfs_le32;
typedef uint64_t mfs_le64;

#define MFS_VERSION             1

#define MFS_MIN_BLOCKSIZE       1024u
#define MFS_MAX_BLOCKSIZE       65536u
#define MFS_DEFAULT_BLOCKSIZE   4096u
#define MFS_MIN_INODESIZE       256u
#define MFS_MAX_INODESIZE       2048u
#define MFS_DEFAULT_INODESIZE   256u
#define MFS_INODES_PER_CHUNK    64u
#define MFS_NAME_MAX            255u

/* Fixed blocks at the start of every AG. */
#define MFS_SB_AGBNO            0u
#define MFS_AGH_AGBNO           1u
#define MFS_AGFL_AGBNO          2u
#define MFS_AG_FIXED_BLOCKS     3u

/* Smallest AG: fixed blocks, four tree roots, AGFL stock, and room to allocate. */
#define MFS_MIN_AGBLOCKS        64u
#define MFS_MAX_AGBLOCKS        (1u << 31)
#define MFS_MAX_AGCOUNT         (1u << 20)

/* ---- magic numbers (ASCII, read as little-endian u32) ---------------------------------- */
#define MFS_MAGIC(a, b, c, d) \
	((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)

#define MFS_SB_MAGIC      MFS_MAGIC('M', 'N', 'D', 'S')   /* superblock */
#define MFS_AGH_MAGIC     MFS_MAGIC('M', 'A', 'G', 'H')   /* AG header */
#define MFS_AGFL_MAGIC    MFS_MAGIC('M', 'A', 'F', 'L')   /* AG free list */
#define MFS_BNOBT_MAGIC   MFS_MAGIC('M', 'B', 'N', 'O')   /* free space by block number */
#define MFS_CNTBT_MAGIC   MFS_MAGIC('M', 'C', 'N', 'T')   /* free space by length */
#define MFS_INOBT_MAGIC   MFS_MAGIC('M', 'I', 'N', 'O')   /* inode chunks */
#define MFS_RMAPBT_MAGIC  MFS_MAGIC('M', 'R', 'M', 'P')   /* reverse map */
#define MFS_BMBT_MAGIC    MFS_MAGIC('M', 'B', 'M', 'P')   /* an inode's extent map btree */
#define MFS_DINODE_MAGIC  MFS_MAGIC('M', 'I', 'N', 'D')   /* one on-disk inode */

/* ---- feature flags ------------------------------------------------------------------- */
/* Incompatible: a reader that does not know one must refuse the filesystem. */
#define MFS_FEAT_INCOMPAT_SUPPORTED    0u
/* Read-only compatible: a writer that does not know one must mount read-only. */
#define MFS_FEAT_RO_COMPAT_SUPPORTED   0u
/* Compatible: safe to ignore. */
#define MFS_FEAT_COMPAT_SUPPORTED      0u

/* Superblock state. */
#define MFS_STATE_CLEAN     1u    /* unmounted cleanly */
#define MFS_STATE_DIRTY     2u    /* mounted read-write, or crashed */
#define MFS_STATE_ERRORS    4u    /* corruption was found and not yet repaired */

/* ---- the common metadata block header ------------------------------------------------ */
struct mfs_blkhdr {
	mfs_le32 magic;
	mfs_le32 crc;          /* CRC32C of the whole block, this field taken as zero */
	mfs_le64 blkno;        /* this block's own fsblock number */
	mfs_le64 owner;        /* AG number, or inode number for inode metadata */
	mfs_le64 lsn;          /* journal sequence of the last write (0 before the journal) */
	uint8_t  uuid[16];     /* filesystem UUID */
};
static_assert(sizeof(struct mfs_blkhdr) == 48, "mfs_blkhdr");

/* ---- superblock: agbno 0 of every AG --------------------------------------------------- */
struct mfs_sb {
	struct mfs_blkhdr hdr;      /* owner = AG number of this copy */
	mfs_le32 version;           /* MFS_VERSION */
	mfs_le32 blocksize;
	mfs_le64 dblocks;           /* blocks in the filesystem */
	mfs_le32 agblocks;          /* blocks per AG (the last AG may be shorter) */
	mfs_le32 agcount;
	mfs_le16 inodesize;
	uint8_t  blocklog;          /* log2(blocksize) */
	uint8_t  inopblog;          /* log2(blocksize / inodesize) */
	uint8_t  agblklog;          /* ceil(log2(agblocks)) */
	uint8_t  pad0[3];
	mfs_le64 rootino;           /* root directory */
	mfs_le64 logstart;          /* fsblock of the journal */
	mfs_le32 logblocks;         /* journal length in blocks */
	mfs_le32 sunit;             /* stripe unit in blocks (0: none) */
	mfs_le32 swidth;            /* stripe width in blocks (0: none) */
	mfs_le32 state;             /* MFS_STATE_* */
	mfs_le32 features_compat;
	mfs_le32 features_ro_compat;
	mfs_le32 features_incompat;
	mfs_le32 pad1;
	mfs_le64 icount;            /* summary: inodes allocated (as of the last clean unmount) */
	mfs_le64 ifree;             /* summary: free inodes in allocated chunks */
	mfs_le64 fdblocks;          /* summary: free data blocks */
	mfs_le64 ctime;             /* mkfs time, seconds since the epoch */
	mfs_le64 wtime;             /* last write of the superblock */
	uint8_t  label[32];         /* NUL-padded volume label */
	mfs_le64 reserved[16];      /* zero */
};
static_assert(sizeof(struct mfs_sb) == 328, "mfs_sb");

/* ---- AG header: agbno 1 of every AG ---------------------------------------------------- */
enum mfs_ag_tree {
	MFS_BT_BNO = 0,      /* free space by block number */
	MFS_BT_CNT = 1,      /* free space by length */
	MFS_BT_INO = 2,      /* inode chunks */
	MFS_BT_RMAP = 3,     /* reverse map */
	MFS_AG_NTREES = 4,
};

#define MFS_AGFL_SIZE_MAX   64u    /* the AGFL holds at most this many blocks */

struct mfs_agh {
	struct mfs_blkhdr hdr;      /* owner = AG number */
	mfs_le32 seqno;             /* AG number */
	mfs_le32 length;            /* blocks in this AG */
	mfs_le32 roots[MFS_AG_NTREES];   /* agbno of each tree's root, by enum mfs_ag_tree */
	mfs_le32 levels[MFS_AG_NTREES];  /* height of each tree (1: the root is a leaf) */
	mfs_le32 freeblks;          /* free blocks in the free-space trees (not the AGFL) */
	mfs_le32 longest;           /* longest free extent */
	mfs_le32 btreeblks;         /* blocks used by bno/cnt/rmap trees beyond their roots */
	mfs_le32 icount;            /* inodes allocated (chunks × 64) */
	mfs_le32 ifree;             /* free inodes in allocated chunks */
	mfs_le32 fl_first;          /* AGFL: index of the first valid slot */
	mfs_le32 fl_count;          /* AGFL: number of valid slots (circular from fl_first) */
	mfs_le32 flags;             /* MFS_AGH_* */
	mfs_le64 unlinked;          /* head of the AG's orphan list: the inode number of an
	                               unlinked inode still in use, 0: empty (lib/orphan.h) */
	mfs_le64 reserved[7];       /* zero */
};
static_assert(sizeof(struct mfs_agh) == 184, "mfs_agh");
/*
 * MFS_AGH_REAP: a rebuild of the AG's free-space trees or reverse map has committed its new
 * trees and is freeing the old trees' blocks in transactions of its own (repair_reap.c).
 * Until it clears the flag, MFS_OWN_AG records may cover blocks in no tree and not on the
 * free list: those are the old blocks still to free.  After a crash the next read-write
 * mount (or mendfs_repair) frees them, by rebuilding the free-space trees.
 */
#define MFS_AGH_REAP        0x1u
#define MFS_AGH_FLAGS_KNOWN MFS_AGH_REAP

/* ---- AG free list: agbno 2 of every AG ------------------------------------------------ */
struct mfs_agfl {
	struct mfs_blkhdr hdr;      /* owner = AG number */
	mfs_le32 bno[MFS_AGFL_SIZE_MAX];   /* circular array of agbnos, see mfs_agh.fl_* */
};
static_assert(sizeof(struct mfs_agfl) == 48 + 4 * MFS_AGFL_SIZE_MAX, "mfs_agfl");

/* ---- btree blocks --------------------------------------------------------------------- */
/*
 * Every btree block: the common header, then level and record count, then either
 * records (level 0, a leaf) or keys followed by child pointers (level > 0, a node).
 * In a node, keys[i] is the lowest key in the subtree under ptrs[i].  With `cap` the
 * block's capacity, the keys occupy cap * keylen bytes after the header and the pointers
 * follow them, so a node with n entries holds keys[0..n) and ptrs[0..n).
 */
#define MFS_BTREE_MAXLEVELS 9

struct mfs_btree_block {
	struct mfs_blkhdr hdr;
	mfs_le16 level;             /* 0 = leaf */
	mfs_le16 numrecs;           /* records (leaf) or key/pointer pairs (node) */
	mfs_le32 pad;
	mfs_le64 reserved;          /* zero */
};
static_assert(sizeof(struct mfs_btree_block) == 64, "mfs_btree_block");

/* Free space by block number: key = record = (startblock). */
struct mfs_alloc_rec {
	mfs_le32 startblock;        /* agbno */
	mfs_le32 blockcount;
};
static_assert(sizeof(struct mfs_alloc_rec) == 8, "mfs_alloc_rec");
/* The by-block tree keys on startblock; the by-length tree on (blockcount, startblock).
 * Both use struct mfs_alloc_rec as record and key. */

/* Inode chunks: one record per allocated chunk of 64 inodes. */
struct mfs_inobt_rec {
	mfs_le32 startino;          /* agino of the chunk's first inode */
	mfs_le32 freecount;         /* free inodes in the chunk (popcount of freemask) */
	mfs_le64 freemask;          /* bit i set: inode startino + i is free */
};
static_assert(sizeof(struct mfs_inobt_rec) == 16, "mfs_inobt_rec");
struct mfs_inobt_key {
	mfs_le32 startino;
};

/*
 * Reverse map: which owner holds each allocated extent of the AG.  Records never overlap;
 * the key is the start block.  `owner` is an inode number, or one of MFS_OWN_* below for
 * space that belongs to the filesystem itself.  For inode owners, `offset` is the file
 * block offset of the extent's first block, with flag bits in its top byte.
 */
struct mfs_rmap_rec {
	mfs_le32 startblock;        /* agbno */
	mfs_le32 blockcount;
	mfs_le64 owner;
	mfs_le64 offset;            /* file offset in blocks | MFS_RMAP_* flags */
};
static_assert(sizeof(struct mfs_rmap_rec) == 24, "mfs_rmap_rec");
struct mfs_rmap_key {
	mfs_le32 startblock;
};

#define MFS_RMAP_OFF_MASK     ((1ull << 56) - 1)
#define MFS_RMAP_ATTR_FORK    (1ull << 63)    /* extent of the attribute fork */
#define MFS_RMAP_BMBT_BLOCK   (1ull << 62)    /* block of the owner's extent btree */

/* Special owners (never valid inode numbers: inode numbers stay below 2^56). */
#define MFS_OWN_NULL      (~0ull - 0)     /* no owner (never stored) */
#define MFS_OWN_FS        (~0ull - 1)     /* superblock, AG header, AGFL block */
#define MFS_OWN_LOG       (~0ull - 2)     /* journal */
#define MFS_OWN_AG        (~0ull - 3)     /* bno, cnt and rmap btree blocks, AGFL stock */
#define MFS_OWN_INOBT     (~0ull - 4)     /* inode btree blocks */
#define MFS_OWN_INODES    (~0ull - 5)     /* inode chunks */
#define MFS_OWN_MIN       MFS_OWN_INODES  /* owners >= this are special */

/* An inode's extent map btree (when its extents do not fit inline). */
struct mfs_bmbt_rec {
	mfs_le64 startoff;          /* file offset in blocks */
	mfs_le64 startblock;        /* fsblock */
	mfs_le32 blockcount;
	mfs_le32 flags;             /* MFS_EXT_* */
};
static_assert(sizeof(struct mfs_bmbt_rec) == 24, "mfs_bmbt_rec");
struct mfs_bmbt_key {
	mfs_le64 startoff;
};
#define MFS_EXT_UNWRITTEN   1u      /* allocated, reads as zeroes (fallocate) */

/* ---- inodes ---------------------------------------------------------------------------- */
/* How a fork's data is stored in the inode's literal area. */
enum mfs_fork_format {
	MFS_FMT_NONE = 0,       /* no fork (attribute fork absent) */
	MFS_FMT_DEV = 1,        /* device number only (block/char devices) */
	MFS_FMT_LOCAL = 2,      /* bytes inline: small file, symlink, small directory/xattrs */
	MFS_FMT_EXTENTS = 3,    /* an array of struct mfs_bmbt_rec inline */
	MFS_FMT_BTREE = 4,      /* a struct mfs_fork_root pointing to an extent btree */
};

struct mfs_timestamp {
	mfs_le64 sec;               /* seconds since the epoch (signed) */
	mfs_le32 nsec;
	mfs_le32 pad;
};
static_assert(sizeof(struct mfs_timestamp) == 16, "mfs_timestamp");

struct mfs_dinode {
	mfs_le32 magic;             /* MFS_DINODE_MAGIC */
	mfs_le32 crc;               /* CRC32C of the whole inode (inodesize bytes), crc as zero */
	mfs_le64 ino;               /* self */
	mfs_le64 lsn;
	uint8_t  uuid[16];
	mfs_le16 mode;              /* S_IFMT | permissions; 0 = free inode */
	uint8_t  dformat;           /* enum mfs_fork_format of the data fork */
	uint8_t  aformat;           /* enum mfs_fork_format of the attribute fork */
	mfs_le32 nlink;
	mfs_le32 uid;
	mfs_le32 gid;
	mfs_le64 size;              /* bytes */
	mfs_le64 nblocks;           /* blocks used, both forks, including btree blocks */
	struct mfs_timestamp atime, mtime, ctime, btime;
	mfs_le32 flags;             /* MFS_DIFLAG_* */
	mfs_le32 generation;
	mfs_le32 dnext;             /* data fork: extents inline, or btree levels */
	mfs_le32 anext;             /* attribute fork: the same */
	mfs_le16 forkoff;           /* attribute fork offset in the literal area, 8-byte units
	                               (0: no attribute fork) */
	mfs_le16 pad0;
	mfs_le32 rdev;              /* device number for MFS_FMT_DEV */
	mfs_le64 next_unlinked;     /* orphan list: next unlinked-but-open inode (0: end) */
	mfs_le64 reserved[2];
	/* the literal area follows, to the end of the inode */
};
static_assert(sizeof(struct mfs_dinode) == 184, "mfs_dinode");

/* MFS_FMT_BTREE fork: the root of the extent btree lives in a block. */
struct mfs_fork_root {
	mfs_le64 rootblock;         /* fsblock of the extent btree root */
	mfs_le32 levels;
	mfs_le32 pad;
};

#define MFS_DIFLAG_IMMUTABLE   1u
#define MFS_DIFLAG_APPEND      2u
#define MFS_DIFLAG_NODUMP      4u
#define MFS_DIFLAG_NOATIME     8u

/* The root directory is the first inode of the first chunk mkfs allocates in AG 0. */

/* ======================================================================================
 * The metadata journal (write-ahead log)                       owned by lib/journal.c
 * ======================================================================================
 *
 * The log is the block range [logstart, logstart + logblocks) named by the superblock.
 * Log blocks 0 and 1 are two copies of the journal header (struct mfs_jhdr), written
 * alternately: the valid copy with the higher `gen` is current, so a torn header write
 * leaves the previous one.  Blocks 2 .. logblocks-1 are a circular area of records.
 *
 * One record is one committed transaction, or several committed one after the other and
 * joined into one record before it was written (each block then appears once, with its
 * contents after the last of them, or as a revoke if that one freed it); `seq` numbers
 * strictly increasing:
 *
 *     descriptor block(s)  tags naming the fsblock of every image that follows, and the
 *                          blocks the transaction freed ("revokes": no image follows)
 *     image blocks         the full new contents of each logged block, in tag order
 *     commit block         sequence, block count, CRC32C over every block above
 *
 * Every log block is self-describing: it starts with struct mfs_jblk (magic, CRC32C of
 * the block, sequence, filesystem UUID, index inside its record), so a block left from an
 * earlier lap round the log (lower sequence), from another filesystem, or torn, is seen.
 * An image block's first MFS_JBLK_SIZE bytes are moved into its tag ("escaped") and
 * replaced by that header; replay puts them back.
 *
 * Replay starts at the header's tail (tail_blk, expecting tail_seq) and applies records
 * while each is complete and checks out; the first that does not ends the log.
 */
#define MFS_JHDR_MAGIC    MFS_MAGIC('M', 'J', 'H', 'D')   /* journal header */
#define MFS_JDESC_MAGIC   MFS_MAGIC('M', 'J', 'D', 'S')   /* record descriptor */
#define MFS_JIMG_MAGIC    MFS_MAGIC('M', 'J', 'I', 'M')   /* escaped block image */
#define MFS_JCMT_MAGIC    MFS_MAGIC('M', 'J', 'C', 'M')   /* record commit */

#define MFS_JOURNAL_VERSION   1u
#define MFS_JHDR_COPIES       2u     /* log blocks 0 and 1 */
#define MFS_JOURNAL_MIN_BLOCKS 8u    /* two headers and room for a small record */

/* The header of every record block (descriptor, image, commit). */
struct mfs_jblk {
	mfs_le32 magic;
	mfs_le32 crc;          /* CRC32C of the whole log block, this field taken as zero */
	mfs_le64 seq;          /* the record's sequence number */
	uint8_t  uuid[16];     /* filesystem UUID */
	mfs_le32 index;        /* block index inside its record (descriptor 0 is index 0) */
	mfs_le32 pad;
};
#define MFS_JBLK_SIZE 40u
static_assert(sizeof(struct mfs_jblk) == MFS_JBLK_SIZE, "mfs_jblk");

/* Journal header: log blocks 0 and 1. */
struct mfs_jhdr {
	mfs_le32 magic;             /* MFS_JHDR_MAGIC */
	mfs_le32 crc;               /* CRC32C of the whole block, this field taken as zero */
	mfs_le64 gen;               /* bumped at every header write; the higher valid copy wins */
	uint8_t  uuid[16];          /* filesystem UUID */
	mfs_le32 version;           /* MFS_JOURNAL_VERSION */
	mfs_le32 blocksize;
	mfs_le64 logstart;          /* must match the superblock */
	mfs_le32 logblocks;
	mfs_le32 tail_blk;          /* log block of the oldest live record, 2 .. logblocks-1 */
	mfs_le64 tail_seq;          /* the sequence expected there (= the next one if empty) */
	mfs_le32 flags;             /* MFS_JHDR_CLEAN when written by a clean close */
	mfs_le32 pad;
	mfs_le64 reserved[8];       /* zero */
};
static_assert(sizeof(struct mfs_jhdr) == 136, "mfs_jhdr");
#define MFS_JHDR_CLEAN  1u

/* A descriptor block: this header, then `ntags` tags. */
struct mfs_jdesc {
	struct mfs_jblk hdr;        /* magic MFS_JDESC_MAGIC */
	mfs_le32 ndesc;             /* descriptor blocks in the record (all come first) */
	mfs_le32 ntags;             /* tags in this descriptor */
	mfs_le32 ntags_total;       /* tags in the whole record */
	mfs_le32 nimages;           /* image blocks in the whole record */
	mfs_le64 reserved;          /* zero */
};
static_assert(sizeof(struct mfs_jdesc) == 64, "mfs_jdesc");

struct mfs_jtag {
	mfs_le64 fsblock;           /* where the image goes, or the block revoked */
	mfs_le32 flags;             /* MFS_JTAG_* */
	mfs_le32 pad;
	uint8_t  head[MFS_JBLK_SIZE];   /* the image's first bytes, displaced by its mfs_jblk */
};
static_assert(sizeof(struct mfs_jtag) == 56, "mfs_jtag");
#define MFS_JTAG_REVOKE  1u     /* the block was freed: no image; older images are void */

/* The commit block closes a record. */
struct mfs_jcommit {
	struct mfs_jblk hdr;        /* magic MFS_JCMT_MAGIC, index = nblocks - 1 */
	mfs_le32 nblocks;           /* blocks in the record, this one included */
	mfs_le32 ntags;
	mfs_le32 data_crc;          /* CRC32C chained over every earlier block of the record,
	                               as stored in the log */
	mfs_le32 pad;
	mfs_le64 time;              /* commit time, seconds since the epoch */
	mfs_le64 reserved[3];
};
static_assert(sizeof(struct mfs_jcommit) == 88, "mfs_jcommit");

/* ======================================================================================
 * Directories                                                    owned by lib/dir.c
 * ======================================================================================
 *
 * The data fork of a directory holds its names, in one of two formats (dformat):
 *
 * MFS_FMT_LOCAL — small directories, inline in the literal area.  The fork's first `size`
 * bytes are an le64 parent inode number (the target of "..") followed by packed, unaligned
 * entries (struct mfs_dir_lent, then the name), sorted by entry id (below).  `size` is
 * 8 + the sum of (11 + namelen) over the entries; an empty directory has size 8.  (mkfs
 * writes the root with size 0: an empty directory whose parent is itself — only the root
 * directory may have size 0.)  "." and ".." are never stored.
 *
 * MFS_FMT_BTREE — larger directories: the data fork is a struct mfs_dir_root (the root of
 * the directory's *name btree*, not an extent map: for a directory, "btree data fork"
 * means this tree; for a regular file it means the extent btree), dnext = the tree's
 * levels.  The tree is a generic btree (struct mfs_btree_block, magic MDIR, owner = the
 * directory's inode number, 8-byte fsblock pointers) of fixed 48-byte records keyed by
 *
 *         key = hash << 32 | seq << 8 | part          (le64)
 *
 * hash: MFS dir hash of the name — SipHash-2-4 keyed with the 16-byte filesystem UUID, of
 *       the name's bytes, folded to 32 bits (low 32 bits xor high 32 bits);
 * seq:  24-bit collision sequence: an entry takes the lowest seq not used by another
 *       entry of the same hash at the time it is added, and keeps it while it lives;
 * part: 0 for the head record (struct mfs_dir_rec: inode, type, length and the first
 *       MFS_DIR_HEAD_NAME bytes of the name); a name longer than that continues in
 *       records part 1, 2, ... (struct mfs_dir_cont, MFS_DIR_CONT_NAME bytes each), which
 *       sort right after their head.
 *
 * Why one tree of 48-byte records: a name of up to 30 bytes (nearly every real name) is one
 * record and a lookup is one descent plus a compare; long names cost up to 7 adjacent
 * records in the same tree rather than a second structure.  The entry id (hash << 24 | seq,
 * 56 bits) is the same in both formats (local entries carry their seq in a byte), so a
 * readdir cookie (id + 3; 0, 1, 2 mean start, ".", "..") survives a change of format and
 * every insertion or removal of other entries.
 *
 * Blocks of the name btree are reverse-mapped to (owner = directory inode, offset =
 * MFS_RMAP_BMBT_BLOCK) and counted in the inode's nblocks.  `size` keeps its local meaning
 * (8 + sum of (11 + namelen)), so it is a deterministic function of the entries.
 *
 * ftype is the dirent type (DT_* values of <dirent.h>: 1 fifo, 2 char device, 4 directory,
 * 6 block device, 8 regular, 10 symlink, 12 socket).
 */
#define MFS_DIRBT_MAGIC    MFS_MAGIC('M', 'D', 'I', 'R')   /* directory name btree */

#define MFS_DIR_REC_SIZE    48u
#define MFS_DIR_HEAD_NAME   30u     /* name bytes in a head record */
#define MFS_DIR_CONT_NAME   40u     /* name bytes in a continuation record */
#define MFS_DIR_MAX_PARTS   7u      /* 30 + 6 * 40 >= MFS_NAME_MAX */
#define MFS_DIR_SEQ_MAX     0xffffffu
#define MFS_DIR_COOKIE_FIRST 3u     /* the first cookie of a stored entry (id 0) */

/* A local-format entry: these 11 bytes, then namelen bytes of name (no NUL). */
struct mfs_dir_lent {
	uint8_t ino[8];             /* le64, unaligned */
	uint8_t ftype;
	uint8_t namelen;            /* 1 .. MFS_NAME_MAX */
	uint8_t seq;                /* collision sequence (local entries: < 256) */
};
static_assert(sizeof(struct mfs_dir_lent) == 11, "mfs_dir_lent");
#define MFS_DIR_LOCAL_HDR   8u      /* the le64 parent before the entries */

/* The data fork of a btree-format directory. */
struct mfs_dir_root {
	mfs_le64 rootblock;         /* fsblock of the name btree's root */
	mfs_le32 levels;            /* = dnext */
	mfs_le32 pad;
	mfs_le64 parent;            /* ".." */
	mfs_le64 count;             /* entries (head records) in the tree */
};
static_assert(sizeof(struct mfs_dir_root) == 32, "mfs_dir_root");

/* Head record (part 0). */
struct mfs_dir_rec {
	mfs_le64 key;
	mfs_le64 ino;
	uint8_t  ftype;
	uint8_t  namelen;
	uint8_t  name[MFS_DIR_HEAD_NAME];
};
static_assert(sizeof(struct mfs_dir_rec) == MFS_DIR_REC_SIZE, "mfs_dir_rec");

/* Continuation record (part >= 1) of a name longer than MFS_DIR_HEAD_NAME. */
struct mfs_dir_cont {
	mfs_le64 key;
	uint8_t  name[MFS_DIR_CONT_NAME];
};
static_assert(sizeof(struct mfs_dir_cont) == MFS_DIR_REC_SIZE, "mfs_dir_cont");

/* Node keys of the name btree: the le64 key alone. */
struct mfs_dir_key {
	mfs_le64 key;
};

/* ======================================================================================
 * Extended attributes                                            owned by lib/xattr.c
 * ======================================================================================
 *
 * An inode's extended attributes live in its attribute fork: the part of the literal area
 * from byte forkoff * 8 to the end (forkoff 0, aformat MFS_FMT_NONE: no attribute).  The
 * data fork keeps [0, forkoff * 8) and never moves; only the boundary does.  Every name
 * belongs to a namespace (MFS_XATTR_NS_*: user, trusted, security, system — POSIX ACLs are
 * system.posix_acl_access / system.posix_acl_default, stored as opaque bytes) and is 1..255
 * bytes without NUL (the prefix "user." etc. is not stored); a value is 0..65536 bytes.
 *
 * MFS_FMT_LOCAL — the attributes inline: `anext` packed, unaligned entries (struct
 * mfs_xattr_lent, then the name, then the value) in no particular order, from the start of
 * the fork; the bytes after the last entry are zero.  The fork is exactly as large as the
 * entries need, rounded up to 8 bytes: forkoff = (litsize - roundup8(bytes)) / 8, so the data
 * fork keeps every other byte.  It is recomputed at every change, and a change is made inline
 * only while the data fork keeps at least what it uses (inline extents, inline directory
 * entries, a btree root; at least 8 bytes).  When the data fork leaves no room even for the
 * btree root below, it is first moved into its own btree format (a directory's entries into
 * its name btree, a file's extents into an extent btree); an inline symlink target filling
 * the literal area cannot move, and the attribute is refused (ENOSPC).
 *
 * MFS_FMT_BTREE — when the entries do not fit inline: the fork is a struct mfs_fork_root
 * (16 bytes: forkoff = (litsize - 16) / 8), anext = levels, of the inode's *attribute btree*
 * (generic btree, magic MXAT, owner = the inode, 8-byte fsblock pointers) of fixed 64-byte
 * records keyed, like directory names, by
 *
 *         key = namespace << 56 | hash << 24 | seq << 8 | part          (le64)
 *
 * hash: the directory name hash of the name (SipHash-2-4 keyed with the UUID, folded to 32
 *       bits; see "Directories");
 * seq:  collision sequence, 0..MFS_XATTR_SEQ_MAX: the lowest not used by another name of the
 *       same namespace and hash when the attribute was created; kept while it lives (a
 *       replaced value keeps its seq);
 * part: 0 for the head record (struct mfs_xattr_rec), 1, 2, ... for continuations (struct
 *       mfs_xattr_cont).  The entry's bytes — the name, then either the value (valuelen <=
 *       MFS_XATTR_INREC_MAX) or a struct mfs_xattr_remote (head flag MFS_XATTR_REMOTE) — fill
 *       the head's 48 data bytes and then 56 per continuation; unused bytes are zero.
 *
 * A larger value lives in one extent of `blocks` blocks of its own ("value blocks"), each a
 * struct mfs_xattr_vblk header (magic MXAV, owner = inode, the entry's head key, offset and
 * length of the value bytes it holds) followed by up to blocksize - 64 value bytes.  The
 * remote descriptor also holds the CRC32C of the whole value.
 *
 * Reverse map: attribute btree blocks are (owner = inode, offset = MFS_RMAP_ATTR_FORK |
 * MFS_RMAP_BMBT_BLOCK); value block i of an entry is (owner = inode, offset =
 * MFS_RMAP_ATTR_FORK | MFS_XATTR_RMAP_OFF(namespace, hash, seq, i)): the attribute fork's
 * logical block number, unique in the inode, from which repair finds the entry.  Both kinds
 * count in the inode's nblocks.
 *
 * A btree whose entries fit inline again (one leaf, no value blocks) goes back inline after
 * the removal or replacement that made them fit.
 */
#define MFS_XATTRBT_MAGIC   MFS_MAGIC('M', 'X', 'A', 'T')   /* attribute btree */
#define MFS_XATTRV_MAGIC    MFS_MAGIC('M', 'X', 'A', 'V')   /* attribute value block */

#define MFS_XATTR_NS_USER       1u
#define MFS_XATTR_NS_TRUSTED    2u
#define MFS_XATTR_NS_SECURITY   3u
#define MFS_XATTR_NS_SYSTEM     4u
#define MFS_XATTR_NS_MAX        4u

#define MFS_XATTR_NAME_MAX      255u      /* name bytes after the namespace prefix */
#define MFS_XATTR_SIZE_MAX      65536u    /* value bytes */
#define MFS_XATTR_REC_SIZE      64u
#define MFS_XATTR_HEAD_DATA     48u       /* entry bytes in a head record */
#define MFS_XATTR_CONT_DATA     56u       /* entry bytes in a continuation record */
#define MFS_XATTR_INREC_MAX     512u      /* larger values go to value blocks */
#define MFS_XATTR_MAX_PARTS     14u       /* 48 + 13 * 56 >= 255 + 512 */
#define MFS_XATTR_SEQ_MAX       0x3fffu
#define MFS_XATTR_REMOTE        1u        /* head flag: the value is in value blocks */

/* The attribute fork's logical block of value block i (i < 128) of entry (ns, hash, seq). */
#define MFS_XATTR_RMAP_OFF(ns, hash, seq, i) \
	((uint64_t)((ns) - 1) << 53 | (uint64_t)(hash) << 21 | (uint64_t)(seq) << 7 | (i))

/* A local-format entry: these 4 bytes, then namelen bytes of name, then valuelen bytes. */
struct mfs_xattr_lent {
	uint8_t ns;                 /* MFS_XATTR_NS_* */
	uint8_t namelen;            /* 1 .. 255 */
	uint8_t valuelen[2];        /* le16, unaligned */
};
static_assert(sizeof(struct mfs_xattr_lent) == 4, "mfs_xattr_lent");

/* Head record (part 0). */
struct mfs_xattr_rec {
	mfs_le64 key;
	mfs_le32 valuelen;          /* 0 .. MFS_XATTR_SIZE_MAX */
	uint8_t  namelen;           /* 1 .. 255 */
	uint8_t  flags;             /* MFS_XATTR_REMOTE */
	mfs_le16 pad;               /* zero */
	uint8_t  data[MFS_XATTR_HEAD_DATA];
};
static_assert(sizeof(struct mfs_xattr_rec) == MFS_XATTR_REC_SIZE, "mfs_xattr_rec");

/* Continuation record (part >= 1). */
struct mfs_xattr_cont {
	mfs_le64 key;
	uint8_t  data[MFS_XATTR_CONT_DATA];
};
static_assert(sizeof(struct mfs_xattr_cont) == MFS_XATTR_REC_SIZE, "mfs_xattr_cont");

/* Where a value larger than MFS_XATTR_INREC_MAX lives (after the name in the entry). */
struct mfs_xattr_remote {
	mfs_le64 fsblock;           /* first value block */
	mfs_le32 blocks;            /* ceil(valuelen / (blocksize - 64)) */
	mfs_le32 crc;               /* CRC32C of the value */
};
static_assert(sizeof(struct mfs_xattr_remote) == 16, "mfs_xattr_remote");

/* Header of a value block; the value bytes follow. */
struct mfs_xattr_vblk {
	struct mfs_blkhdr hdr;      /* magic MFS_XATTRV_MAGIC, owner = inode */
	mfs_le64 key;               /* head key of the entry */
	mfs_le32 offset;            /* of this block's bytes in the value */
	mfs_le32 bytes;             /* value bytes in this block */
};
static_assert(sizeof(struct mfs_xattr_vblk) == 64, "mfs_xattr_vblk");

/* Node keys of the attribute btree: the le64 key alone. */
struct mfs_xattr_key {
	mfs_le64 key;
};

#endif /* MENDFS_FORMAT_H */
