#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

struct outq {
	int fd;
	int saved_flags;
	char *buf;
	size_t len;
	uint64_t dropped;
	uint64_t dropped_unreported;
};

static struct {
	int active;
	enum log_level level;
	struct outq q[2];
} lg = {.level = LOG_INFO, .q = {{.fd = 1, .saved_flags = -1}, {.fd = 2, .saved_flags = -1}}};

static const char *const level_names[] = {"error", "warn", "info", "debug"};

const char *log_level_name(enum log_level level)
{
	return level_names[level];
}

int log_parse_level(const char *s, enum log_level *out)
{
	for (unsigned i = 0; i < 4; i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void log_set_level(enum log_level level)
{
	lg.level = level;
}

/* O_NONBLOCK is a property of the open file description, which a pipe or a
 * terminal shares with the shell and its other programs.  Where possible,
 * reopen the stream for a description of our own; otherwise (a socket) set
 * the flag on the shared one and restore it at shutdown.  Regular files
 * never make a writer wait and stay as they are. */
static void make_nonblocking(struct outq *q)
{
	struct stat st;
	q->saved_flags = -1;
	if (fstat(q->fd, &st) < 0 || S_ISREG(st.st_mode))
		return;
	if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
		char path[64];
		snprintf(path, sizeof path, "/proc/self/fd/%d", q->fd);
		int fd = open(path, O_WRONLY | O_NONBLOCK | O_NOCTTY);
		if (fd >= 0) {
			dup2(fd, q->fd);
			close(fd);
			return;
		}
	}
	q->saved_flags = fcntl(q->fd, F_GETFL);
	if (q->saved_flags >= 0)
		(void)fcntl(q->fd, F_SETFL, q->saved_flags | O_NONBLOCK);
}

int log_init(enum log_level level)
{
	lg.level = level;
	for (int i = 0; i < 2; i++) {
		struct outq *q = &lg.q[i];
		q->buf = malloc(LOG_QUEUE_BYTES);
		if (!q->buf)
			return -ENOMEM;
		q->len = 0;
		make_nonblocking(q);
	}
	lg.active = 1;
	return 0;
}

void log_escape(char *out, size_t outlen, const uint8_t *in, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	if (outlen == 0)
		return;
	for (size_t i = 0; i < n && o + 5 < outlen; i++) {
		uint8_t c = in[i];
		if (c > 0x20 && c < 0x7f && c != '\\') {
			out[o++] = (char)c;
		} else {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
}

void log_iso8601(char out[21], int64_t unix_seconds)
{
	time_t t = (time_t)unix_seconds;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Write batches of whole lines, each at most PIPE_BUF bytes so that a pipe
 * takes it atomically or not at all. */
static int outq_flush(struct outq *q)
{
	size_t off = 0;
	while (off < q->len) {
		size_t n = q->len - off;
		if (n > PIPE_BUF) {
			n = PIPE_BUF;
			while (n > 0 && q->buf[off + n - 1] != '\n')
				n--;
			if (n == 0)
				n = PIPE_BUF;
		}
		ssize_t w = write(q->fd, q->buf + off, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			/* The stream is gone (closed pipe, full disk): drop what is queued. */
			q->dropped += 1;
			off = q->len;
			break;
		}
		off += (size_t)w;
	}
	if (off > 0) {
		memmove(q->buf, q->buf + off, q->len - off);
		q->len -= off;
	}
	return q->len > 0;
}

static void outq_push(struct outq *q, const char *line, size_t len)
{
	if (!lg.active) {
		ssize_t w = write(q->fd, line, len);
		(void)w;
		return;
	}
	if (q->len + len > LOG_QUEUE_BYTES) {
		q->dropped++;
		q->dropped_unreported++;
		return;
	}
	/* Written by log_flush(), which the loop calls once per iteration:
	 * one write for all the lines of a batch of events. */
	memcpy(q->buf + q->len, line, len);
	q->len += len;
}

static void report_drops(void)
{
	for (int i = 0; i < 2; i++) {
		struct outq *q = &lg.q[i];
		if (q->dropped_unreported && lg.q[LOG_STREAM_ERR].len + 256 < LOG_QUEUE_BYTES) {
			uint64_t n = q->dropped_unreported;
			q->dropped_unreported = 0;
			log_msg(LOG_WARN, "%llu %s lines dropped: the stream was not read fast enough",
			        (unsigned long long)n, i == LOG_STREAM_OUT ? "record" : "diagnostic");
		}
	}
}

void log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
	if (level > lg.level)
		return;
	char line[LOG_LINE_MAX];
	char date[21];
	int n;
	if (lg.active) {
		log_iso8601(date, (int64_t)time(NULL));
		n = snprintf(line, sizeof line, "%s socks5d[%d] %s: ", date, (int)getpid(),
		             level_names[level]);
	} else {
		/* Before the server runs (command line, config file): the plain
		 * form of a command-line tool's errors. */
		n = snprintf(line, sizeof line, "socks5d: ");
	}
	int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof line - 2)
		len = sizeof line - 2;
	line[len++] = '\n';
	outq_push(&lg.q[LOG_STREAM_ERR], line, len);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

void log_record(const char *line, size_t len)
{
	char buf[LOG_LINE_MAX];
	if (len > sizeof buf - 1)
		len = sizeof buf - 1;
	memcpy(buf, line, len);
	buf[len++] = '\n';
	outq_push(&lg.q[LOG_STREAM_OUT], buf, len);
}

void log_after_fork(void)
{
	for (int i = 0; i < 2; i++) {
		lg.q[i].len = 0;
		lg.q[i].dropped = 0;
		lg.q[i].dropped_unreported = 0;
	}
}

unsigned log_flush(void)
{
	unsigned want = 0;
	if (!lg.active)
		return 0;
	report_drops();
	for (int i = 0; i < 2; i++)
		if (lg.q[i].len && outq_flush(&lg.q[i]))
			want |= 1u << i;
	return want;
}

int log_fd(enum log_stream s)
{
	return lg.q[s].fd;
}

uint64_t log_dropped_total(void)
{
	return lg.q[0].dropped + lg.q[1].dropped;
}

void log_shutdown(int timeout_ms)
{
	if (!lg.active)
		return;
	int64_t deadline = clock_ms() + timeout_ms;
	report_drops();
	for (;;) {
		unsigned want = log_flush();
		if (!want)
			break;
		int64_t left = deadline - clock_ms();
		if (left <= 0)
			break;
		struct pollfd p[2];
		nfds_t n = 0;
		for (int i = 0; i < 2; i++)
			if (want & (1u << i))
				p[n++] = (struct pollfd){.fd = lg.q[i].fd, .events = POLLOUT};
		if (poll(p, n, (int)left) < 0 && errno != EINTR)
			break;
	}
	lg.active = 0;
	for (int i = 0; i < 2; i++) {
		free(lg.q[i].buf);
		lg.q[i].buf = NULL;
		lg.q[i].len = 0;
		if (lg.q[i].saved_flags >= 0)
			(void)fcntl(lg.q[i].fd, F_SETFL, lg.q[i].saved_flags);
	}
}
