/*
 * pipes: the pipe pool of one worker process, for the splice(2) relay.
 *
 * A relaying direction holds a pipe only while bytes sit in it; an empty
 * pipe goes back to the pool at once, so an idle session holds no pipe and
 * only its two sockets.  The pool keeps at most PIPES_SPARE_MAX empty pipes
 * (two descriptors each) and closes the rest.  One pool per process: each
 * worker is its own process.
 */
#ifndef SOCKS5D_PIPES_H
#define SOCKS5D_PIPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PIPES_SPARE_MAX 16

struct rpipe {
	struct rpipe *next_free;
	int rfd, wfd;
	uint32_t len; /* bytes in the pipe */
	uint32_t cap; /* its capacity (F_GETPIPE_SZ) */
};

/* An empty pipe of at least `size` bytes where the kernel allows it (the
 * capacity is rounded to pages, and may be smaller under the per-user pipe
 * limits), or NULL with errno set (EMFILE, ENFILE, ENOMEM).  A spare is
 * reused; a new pipe is made only if may_create (the caller's descriptor
 * budget has room for two more). */
struct rpipe *pipes_get(uint32_t size, bool may_create);

/* Give back an empty pipe (len 0). */
void pipes_put(struct rpipe *p);

/* Close a pipe that may still hold bytes (a session that ends early). */
void pipes_discard(struct rpipe *p);

/* Close every spare pipe (a worker out of descriptors, or exiting). */
void pipes_drain(void);

/* Pipes open (held by sessions or spare): two descriptors each. */
size_t pipes_open(void);

#endif
