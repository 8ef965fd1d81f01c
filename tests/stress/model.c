/*
 * model.c — mendfs_stress's model of one process's subtree: names (dents), the objects they
 * point at, and each regular file's content as tagged byte ranges (see stress.h for the
 * invariants).  Nothing here touches the filesystem.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "stress.h"

static void *xrealloc(void *ptr, size_t n)
{
	void *q = realloc(ptr, n);

	if (!q) {
		fprintf(stderr, "mendfs_stress: out of memory\n");
		exit(2);
	}
	return q;
}

struct obj *obj_new(mode_t type, mode_t perm)
{
	struct obj *ob = xrealloc(NULL, sizeof(*ob));

	memset(ob, 0, sizeof(*ob));
	ob->type = type;
	ob->perm = perm;
	return ob;
}

void obj_put(struct obj *ob)
{
	if (ob->nlink > 0)
		return;
	free(ob->segs);
	free(ob->target);
	free(ob);
}

struct dent *dent_add(struct proc *p, struct dent *parent, const char *name, struct obj *ob)
{
	struct dent *d = xrealloc(NULL, sizeof(*d));

	d->name = xrealloc(NULL, strlen(name) + 1);
	strcpy(d->name, name);
	d->obj = ob;
	d->parent = parent;
	if (p->ndents == p->capdents) {
		p->capdents = p->capdents ? 2 * p->capdents : 256;
		p->dents = xrealloc(p->dents, p->capdents * sizeof(*p->dents));
	}
	d->idx = p->ndents;
	p->dents[p->ndents++] = d;
	ob->nlink++;
	parent->obj->nchildren++;
	if (S_ISDIR(ob->type))
		parent->obj->nsubdirs++;
	return d;
}

void dent_del(struct proc *p, struct dent *d)
{
	struct obj *ob = d->obj;

	p->dents[d->idx] = p->dents[--p->ndents];
	p->dents[d->idx]->idx = d->idx;
	d->parent->obj->nchildren--;
	if (S_ISDIR(ob->type))
		d->parent->obj->nsubdirs--;
	ob->nlink--;
	obj_put(ob);
	free(d->name);
	free(d);
}

void dent_move(struct dent *d, struct dent *newparent, const char *newname)
{
	d->parent->obj->nchildren--;
	newparent->obj->nchildren++;
	if (S_ISDIR(d->obj->type)) {
		d->parent->obj->nsubdirs--;
		newparent->obj->nsubdirs++;
	}
	d->parent = newparent;
	if (newname != d->name) {
		char *n = xrealloc(NULL, strlen(newname) + 1);
		strcpy(n, newname);
		free(d->name);
		d->name = n;
	}
}

struct dent *dent_child(const struct proc *p, const struct dent *dir, const char *name)
{
	for (size_t i = 0; i < p->ndents; i++)
		if (p->dents[i]->parent == dir && !strcmp(p->dents[i]->name, name))
			return p->dents[i];
	return NULL;
}

int dent_is_ancestor(const struct dent *a, const struct dent *d)
{
	for (; d; d = d->parent)
		if (d == a)
			return 1;
	return 0;
}

size_t dent_path(const struct dent *d, char *buf, size_t size)
{
	const struct dent *chain[256];
	size_t n = 0, len = 0;

	for (; d && d->parent && n < 256; d = d->parent)
		chain[n++] = d;
	if (!n)
		return (size_t)snprintf(buf, size, ".");
	buf[0] = 0;
	while (n--) {
		int w = snprintf(buf + len, len < size ? size - len : 0, "%s%s", len ? "/" : "",
				 chain[n]->name);
		len += (size_t)w;
	}
	return len;
}

/* Make room for k more segments at position at. */
static void seg_open(struct obj *ob, size_t at, size_t k)
{
	if (ob->nsegs + k > ob->capsegs) {
		ob->capsegs = (ob->nsegs + k) * 2 + 8;
		ob->segs = xrealloc(ob->segs, ob->capsegs * sizeof(*ob->segs));
	}
	memmove(ob->segs + at + k, ob->segs + at, (ob->nsegs - at) * sizeof(*ob->segs));
	ob->nsegs += k;
}

/* Replace [start, end) by tag (0: zeroes, no segment). */
void seg_write(struct obj *ob, uint64_t start, uint64_t end, uint64_t tag)
{
	size_t i = 0, j;

	if (start >= end)
		return;
	while (i < ob->nsegs && ob->segs[i].end <= start)
		i++;
	/* a segment that starts before start and reaches past it: split off its head */
	if (i < ob->nsegs && ob->segs[i].start < start) {
		seg_open(ob, i, 1);
		ob->segs[i + 1] = ob->segs[i];
		ob->segs[i].end = start;
		ob->segs[i + 1].start = start;
		i++;
	}
	/* segments [i, j) lie inside [start, end) or cross end */
	for (j = i; j < ob->nsegs && ob->segs[j].start < end; j++)
		;
	if (j > i && ob->segs[j - 1].end > end) {
		/* keep the tail of the last one */
		ob->segs[j - 1].start = end;
		j--;
	}
	if (j > i) {         /* (an object without segments has no array: segs NULL) */
		memmove(ob->segs + i, ob->segs + j, (ob->nsegs - j) * sizeof(*ob->segs));
		ob->nsegs -= j - i;
	}
	if (tag) {
		seg_open(ob, i, 1);
		ob->segs[i] = (struct seg){ start, end, tag };
	}
}

void obj_write(struct obj *ob, uint64_t off, uint64_t len, uint64_t tag)
{
	seg_write(ob, off, off + len, tag);
	if (off + len > ob->size)
		ob->size = off + len;
}

void obj_truncate(struct obj *ob, uint64_t size)
{
	if (size < ob->size)
		seg_write(ob, size, ob->size, 0);
	ob->size = size;
}

void model_free(struct proc *p)
{
	while (p->ndents) {
		/* children first, so that directory counts stay right */
		struct dent *d = p->dents[p->ndents - 1];
		for (size_t i = 0; i < p->ndents; i++)
			if (!S_ISDIR(p->dents[i]->obj->type) || !p->dents[i]->obj->nchildren) {
				d = p->dents[i];
				break;
			}
		dent_del(p, d);
	}
	free(p->dents);
	p->dents = NULL;
}
