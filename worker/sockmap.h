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
 * Where the program cannot be loaded (no CAP_BPF, a kernel without
 * sockmap), the worker says so once, counts M_SOCKMAP_FALLBACKS once (a
 * worker whose relay could not load), and relays by splice or copy.
 *
 * One socket hash per worker process, created at the first session that
 * may use it and sized to the worker's descriptor limit.  Loop thread only.
 */
#ifndef SOCKS5D_SOCKMAP_H
#define SOCKS5D_SOCKMAP_H

#include <stdbool.h>

struct session;

/* Hand the session to the kernel relay when it may go there now.  True:
 * it is there, and its handler is the kernel relay's from now on. */
bool sockmap_try(struct session *s);
/* The session ends: its bytes counted, its sockets out of the maps.
 * Called by session_finalize before the access log. */
void sockmap_session_end(struct session *s);

#endif
