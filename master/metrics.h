/*
 * metrics: the Prometheus endpoint of the master (--metrics ADDR:PORT).
 *
 * An HTTP/1.x listener on the master's loop that answers GET and HEAD of
 * /metrics with the text exposition format 0.0.4 (OpenMetrics 1.0.0 when
 * the Accept field names application/openmetrics-text): the counters and gauges
 * of the shared segment summed over the workers, per-worker sessions, the
 * name-lookup latency histogram and per-user byte counters (one series per
 * user and direction: at most SHM_MAX_USERS users).  The request head is
 * read by shared/httpreq.c; any other request gets its 4xx and a close.
 *
 * It never blocks the master: non-blocking sockets, at most
 * METRICS_CONNS_MAX connections (more are answered 503 and closed), a head
 * of at most HTTPREQ_HEAD_MAX bytes, METRICS_TIMEOUT_MS for the whole
 * exchange, one response per connection (Connection: close).
 *
 * Master loop thread only.
 */
#ifndef SOCKS5D_METRICS_H
#define SOCKS5D_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "../shared/loop.h"
#include "../shared/shm.h"

#define METRICS_CONNS_MAX 16
#define METRICS_TIMEOUT_MS 5000
#define METRICS_PAUSE_MS 1000 /* accepting paused after EMFILE/ENFILE */
#define METRICS_LINGER_MAX 65536 /* bytes read and dropped after an answer, then closed */

struct metrics;

/* Listen on endpoint (ADDR:PORT or [ADDR6]:PORT).  A negative errno (the
 * reason logged) when the address cannot be used. */
int metrics_open(struct loop *l, struct shm_segment *seg, const char *endpoint,
                 struct metrics **out);
void metrics_close(struct metrics *mx);
/* In a forked worker: close the descriptors, free, touch no epoll set. */
void metrics_forget(struct metrics *mx);

/* The exposition text of the segment, malloc'd (NULL when out of memory):
 * the text format 0.0.4, or OpenMetrics 1.0.0. */
char *metrics_render(struct shm_segment *seg, bool openmetrics, size_t *len);

#endif
