/*
 * sockmap: the kernel-only relay (sockmap = yes).  An established session
 * whose bytes nothing needs to see (no dissector still looking, no rate
 * limit, no GSS-API encapsulation, no urgent data) puts its two sockets in
 * the worker's BPF socket hash; the stream verdict program of
 * bpf/relay.bpf.c then sends each side's bytes out of the other inside the
 * kernel, and the worker no longer wakes for them.  The worker still
 * watches both sockets for EOF and errors (EPOLLRDHUP only): a FIN is
 * passed on with shutdown(2) once every byte that came before it has left
 * through the peer, and the session ends through session_finalize as any
 * other.  The bytes are counted per socket in a BPF map, read by the idle
 * timer (which restarts while bytes move) and at the end, for the access
 * log and the metrics.
 *
 * Loading the program and creating its maps takes CAP_BPF and
 * CAP_NET_ADMIN; using them through their descriptors afterwards takes
 * none.  So the set of a worker is loaded while the process may: by the
 * master at start, one per worker slot, before run-as gives root up
 * (sockmap_preload; a worker restarted in that slot reuses it), else by
 * the forked worker before it gives up its capabilities
 * (sockmap_at_fork), else at the first session that may use it (sockmap
 * turned on by a reload in a worker that runs with its privileges).
 * Where the program cannot be loaded (no CAP_BPF, a kernel without
 * sockmap, a worker that gave its privileges up before sockmap was on),
 * the worker says so once at its first session that could have used it,
 * counts M_SOCKMAP_FALLBACKS once, and relays by splice or copy.
 *
 * One socket hash per worker process, sized to the descriptor limit.
 * sockmap_preload/unload: the master's thread; the rest: the worker's
 * loop thread.
 */
#ifndef SOCKS5D_SOCKMAP_H
#define SOCKS5D_SOCKMAP_H

#include <stdbool.h>
#include <stddef.h>

struct session;
struct relay_bpf;

/* A worker's program and maps, loaded and attached ahead; NULL where the
 * kernel or the privileges refuse (the worker then says why). */
struct relay_bpf *sockmap_preload(void);
void sockmap_unload(struct relay_bpf *skel);
/* In a forked worker, before it gives up its capabilities: keeps
 * kits[mine] as its own (or, enabled and none, loads one now), closes the
 * others' copies and empties kits[].  enabled: sockmap = yes now. */
void sockmap_at_fork(struct relay_bpf **kits, size_t n, size_t mine, bool enabled);

/* Hand the session to the kernel relay when it may go there now.  True:
 * it is there, and its handler is the kernel relay's from now on. */
bool sockmap_try(struct session *s);
/* The session ends: its bytes counted, its sockets out of the maps.
 * Called by session_finalize before the access log. */
void sockmap_session_end(struct session *s);

#endif
