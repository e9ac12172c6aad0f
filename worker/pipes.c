#include "pipes.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static struct rpipe *spare;
static unsigned nspare;
static size_t nopen;
/* What the kernel granted the last time a pipe of granted_for bytes was
 * asked for: below the size under the per-user pipe limits. */
static uint32_t granted, granted_for;

static void close_pipe(struct rpipe *p)
{
	close(p->rfd);
	close(p->wfd);
	free(p);
	nopen--;
}

struct rpipe *pipes_get(uint32_t size, bool may_create)
{
	/* A spare smaller than the setting is replaced, unless the kernel
	 * would give no more now (a new one would be as small). */
	while (spare) {
		struct rpipe *p = spare;
		spare = p->next_free;
		nspare--;
		if (p->cap >= size || (granted_for == size && p->cap >= granted)) {
			p->len = 0;
			return p;
		}
		close_pipe(p);
	}
	if (!may_create) {
		errno = EMFILE;
		return NULL;
	}
	struct rpipe *p = malloc(sizeof *p);
	if (!p)
		return NULL;
	int fds[2];
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
		int e = errno;
		free(p);
		errno = e;
		return NULL;
	}
	nopen++;
	p->rfd = fds[0];
	p->wfd = fds[1];
	p->len = 0;
	int cap = fcntl(p->wfd, F_GETPIPE_SZ);
	if (cap >= 0 && (uint32_t)cap < size) {
		int got = fcntl(p->wfd, F_SETPIPE_SZ, (int)size);
		if (got > 0)
			cap = got;
	}
	p->cap = cap > 0 ? (uint32_t)cap : 4096;
	granted = p->cap;
	granted_for = size;
	return p;
}

void pipes_put(struct rpipe *p)
{
	if (nspare >= PIPES_SPARE_MAX) {
		close_pipe(p);
		return;
	}
	p->next_free = spare;
	spare = p;
	nspare++;
}

void pipes_discard(struct rpipe *p)
{
	if (p)
		close_pipe(p);
}

void pipes_drain(void)
{
	while (spare) {
		struct rpipe *p = spare;
		spare = p->next_free;
		close_pipe(p);
	}
	nspare = 0;
}

size_t pipes_open(void)
{
	return nopen;
}
