/*
 * orphan.h — the per-AG lists of unlinked inodes still in use ("orphans").
 *
 * An inode whose last name goes away while the kernel still holds it (open, or looked up)
 * keeps its data until the last user lets go.  If the system goes down first, the next
 * read-write mount must free it.  So every such inode is on its AG's orphan list: the AG
 * header's `unlinked` field is the head (an inode number, 0: empty), and the inodes are
 * linked through mfs_dinode.next_unlinked (mendfs(5), ORPHAN LIST).
 *
 * Invariant (committed state): an allocated inode (mode != 0) has link count 0 exactly
 * when it is on its AG's list.  The transaction that drops the link count to 0 adds the
 * inode (mfs_orphan_add); the transaction that frees it removes it (mfs_orphan_remove,
 * then mfs_ifree in the same transaction).
 *
 * Choice of structure: singly linked, new inodes prepended.  Adding is cheap — it changes
 * the inode being unlinked and the AG header, nothing else, so the unlink path never
 * touches a third inode (nor its lock).  Removing from the middle needs the predecessor:
 * a table of hints (inode -> the inode before it, in memory, struct mfs_orphans) gives it
 * in O(1); a hint is only believed after checking the predecessor's on-disk pointer, and
 * without one (a hint lost to a cancelled transaction, or a table that could not grow)
 * the list is walked on disk — bounded by the AG's inode count, so a loop is corruption,
 * not a hang.  A doubly linked list would make removal O(1) without hints, but then
 * adding would change the old head too, taking a third inode's lock on every unlink.
 *
 * Locks: an inode's next_unlinked (in core and on disk) changes only under that inode's
 * exclusive lock AND its AG's lock (held by the transaction); the head only under the AG
 * lock.  With the AG lock held, the on-disk pointers in the cluster buffers are the
 * committed ones (every change to those buffers needs the AG lock), so the walk reads
 * them, never the in-core copies of inodes it does not hold.  Removing from the middle
 * changes the predecessor, whose lock must be taken like any inode lock: in increasing
 * inode number and before the AG lock.  So mfs_orphan_remove never takes it: it tells
 * the caller which inode it needs (-EAGAIN), the caller cancels, locks both inodes in
 * order and tries again.  Pointers of inodes already on a list change only when an inode
 * is taken off, and only one thread takes inodes off (the daemon's worker), so the answer
 * stays true between the two tries.
 */
#ifndef MFS_ORPHAN_H
#define MFS_ORPHAN_H

#include <stdint.h>

struct mfs_fs;
struct mfs_trans;
struct mfs_inode;
struct mfs_orphans;

/* The hint table (one per mounted filesystem).  Never required: NULL works, slower. */
int mfs_orphans_create(struct mfs_orphans **out);
void mfs_orphans_free(struct mfs_orphans *o);

/*
 * Put `ip` at the head of its AG's list, inside `tp`.  Call in the transaction that drops
 * its link count to 0, with ip->lock held exclusive, BEFORE logging ip (this sets
 * ip->next_unlinked; the caller's mfs_inode_log writes it).  Locks the inode's AG in tp:
 * the transaction must hold no higher AG, or have locked this one already (lock order).
 * -EFSCORRUPTED if the head read from the AG header is not an inode of that AG.
 */
int mfs_orphan_add(struct mfs_trans *tp, struct mfs_orphans *o, struct mfs_inode *ip);

/*
 * Take `ip` off its AG's list, inside `tp` (the transaction that frees it), with ip->lock
 * held exclusive; the AG is locked as by mfs_orphan_add.  Sets ip->next_unlinked to 0 and logs nothing of ip (the caller frees or
 * logs it).  When ip is not the head, the inode before it is changed and logged: the
 * caller passes it in `pred`, locked exclusive (NULL when it does not know it yet).
 * Returns 0; -EAGAIN with *need set to the predecessor's number when `pred` is not it
 * (nothing changed: cancel, lock both inodes in inode-number order, try again); -ENOENT,
 * with a message, when ip is not on the list (a filesystem from before the list, or a
 * damaged one: the caller may free the inode anyway); -EFSCORRUPTED for a damaged list.
 */
int mfs_orphan_remove(struct mfs_trans *tp, struct mfs_orphans *o, struct mfs_inode *ip,
		      struct mfs_inode *pred, uint64_t *need);

/*
 * The same for a set: take set[0..n) — distinct inodes of one AG, each held exclusive — off
 * the list inside `tp`, wherever they lie on it (next to each other or not).  Each run of
 * members is unlinked at the inode before it: the head, or an inode that must be in
 * preds[0..npreds) (held exclusive), else -EAGAIN with the missing ones in
 * need[0..*nneed) (at most `needmax`): nothing is changed then (cancel, lock the set and
 * them in inode-number order, try again).  So freeing a batch costs one change per run
 * instead of one per inode.  Sets every member's next_unlinked to 0 and logs nothing of
 * them; -ENOENT with a message when one is not on the list; -EFSCORRUPTED for a damaged
 * list (or a loop among members), -EINVAL for a member of another AG.
 */
int mfs_orphan_remove_set(struct mfs_trans *tp, struct mfs_orphans *o,
			  struct mfs_inode **set, unsigned n, struct mfs_inode **preds,
			  unsigned npreds, uint64_t *need, unsigned needmax, unsigned *nneed);

/*
 * After mfs_orphan_remove's -EAGAIN: take the inode `need` before `ip` on its list, and
 * lock it and `ip` exclusive in increasing inode number (`ip` is held exclusive on entry and
 * on return: it is let go and taken again, harmless for an unlinked inode nobody else can
 * reach).  *pred gets it, referenced and locked; mfs_orphan_unlock_pred lets it go (and
 * sets *pred to NULL; NULL is fine).  -EFSCORRUPTED, after a message, when `need` is free.
 */
int mfs_orphan_lock_pred(struct mfs_inode *ip, uint64_t need, struct mfs_inode **pred);
void mfs_orphan_unlock_pred(struct mfs_inode **pred);

/* The head of AG `agno`'s list (0: empty), checked to be an inode of that AG. */
int mfs_orphan_head(struct mfs_fs *fs, uint32_t agno, uint64_t *ino);

/*
 * Check AG `agno`'s list without changing anything (mendfs_db check, scrub): every member
 * is an inode of the AG, allocated, with link count 0, and the list ends (no loop: at most
 * the AG's inode count of members).  *count gets the number of members.  0 or
 * -EFSCORRUPTED after a message naming the AG and the inode.
 */
int mfs_orphan_check(struct mfs_fs *fs, uint32_t agno, uint64_t *count);

#endif
