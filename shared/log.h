/*
 * log: diagnostics on stderr and records (access log, credential log) on
 * stdout, written without ever blocking the caller's loop.
 *
 * Each stream has a bounded queue of whole lines.  Lines are written in
 * batches of complete lines no larger than PIPE_BUF, so that lines from
 * different processes sharing one pipe never interleave mid-line.  A line
 * that does not fit in the queue is dropped and counted; the drop count is
 * reported once on stderr when the queue accepts lines again.
 *
 * Process-wide state owned by this module; single-threaded use only (the
 * loop thread of the master or of a worker).
 */
#ifndef SOCKS5D_LOG_H
#define SOCKS5D_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

enum log_stream { LOG_STREAM_OUT = 0, LOG_STREAM_ERR = 1 };

#define LOG_LINE_MAX 2048
#define LOG_QUEUE_BYTES (1u << 20)

/* Make stdout and stderr non-blocking and start queueing.  Before this is
 * called (and after log_shutdown) diagnostics are written directly, as
 * "socks5d: message". */
int log_init(enum log_level level);
void log_set_level(enum log_level level);
int log_parse_level(const char *s, enum log_level *out);
const char *log_level_name(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Queue one record line (without its newline) on stdout. */
void log_record(const char *line, size_t len);

/* In a freshly forked child: forget lines queued by the parent, which the
 * parent still owns and writes. */
void log_after_fork(void);

/* Write what can be written now (each loop calls this before it waits).
 * Returns a bitmask of (1 << stream) for
 * streams that still hold data and want a writability event. */
unsigned log_flush(void);
int log_fd(enum log_stream s);
uint64_t log_dropped_total(void);

/* Flush with blocking writes for at most timeout_ms, restore the streams'
 * blocking mode and free the queues. */
void log_shutdown(int timeout_ms);

/* Copy untrusted bytes for a record field: bytes outside printable ASCII,
 * the space and the backslash become \xHH, so that a tab or a newline
 * cannot break a record.  Truncated to fit; always terminated. */
void log_escape(char *out, size_t outlen, const uint8_t *in, size_t n);

/* Format "2026-11-27T18:00:00Z" (21 bytes with the NUL) for a wall-clock time. */
void log_iso8601(char out[21], int64_t unix_seconds);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
