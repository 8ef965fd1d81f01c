/*
 * repair_space.c — edits of an AG's two free-space trees for a rebuild that takes free
 * space for its new tree or gives an old tree's blocks back (the reverse-map rebuild,
 * repair_rmapbt.c), without touching the reverse map: the rebuild writes the new
 * reverse map itself, with these blocks' owners already as they will be.
 *
 * The edits are the allocator's own (mfs_freesp_take/give, alloc.h: both trees in step,
 * free extents merged, a give busy until the commit is durable), in the rebuild's
 * transaction, without the reverse map and without the AG header's counters, which the
 * rebuild sets once all its edits are made (split blocks come from the AG free list,
 * blocks of emptied tree blocks go back to it: both MFS_OWN_AG, so no owner changes).
 * Here they only gain the rebuild's reasons, naming the AG and the blocks.
 */
#include "repair_ag.h"

#include "alloc.h"
#include "fs.h"

#include <errno.h>
#include <string.h>

int rep_space_take(struct agrep *ar, uint32_t s, uint32_t l)
{
	int err = mfs_freesp_take(ar->tp, ar->agno, ar->agh_bp, s, l, MFS_FREESP_NOCOUNT);

	return err ? rep_fail(ar->r, err, "AG %u: taking blocks %u+%u from free space for the "
			      "new tree: %s", ar->agno, s, l, strerror(-err)) : 0;
}

int rep_space_give(struct agrep *ar, uint32_t s, uint32_t l)
{
	int err = mfs_freesp_give(ar->tp, ar->agno, ar->agh_bp, s, l, MFS_FREESP_NOCOUNT);

	return err ? rep_fail(ar->r, err, "AG %u: giving blocks %u+%u back to free space: %s",
			      ar->agno, s, l, strerror(-err)) : 0;
}

int rep_space_longest(struct agrep *ar, uint32_t *longest)
{
	int err = mfs_freesp_longest(ar->tp, ar->agno, ar->agh_bp, longest);

	return err ? rep_fail(ar->r, err, "AG %u: reading the by-length tree: %s", ar->agno,
			      strerror(-err)) : 0;
}
