#!/usr/bin/env bash
# Cost of the credential dissectors on a bulk session that carries no
# credentials: nginx (sendfile) serves a file of SIZE (default 1G); curl
# fetches it through socks5d -w 1 with the dissectors on and through a
# second socks5d -w 1 -N, alternately, RUNS times each (default 7).
# Reports, per side, the median wall time and the median CPU time (user +
# system, from /proc) of the proxy's worker per GiB, and the ratio on/off.
# Then, because a shared machine makes those ratios noisy, the dissector's
# own cost measured alone (worker/sniff.c built -O2): per 64 KiB slice of a
# body it skips, and per request/response header pair it parses.
# Usage: [RUNS=7] [SIZE=1G] bench/dissect.sh
. "$(dirname "$0")/common.sh"
make -s build/socks5d
RUNS=${RUNS:-7}
SIZE=${SIZE:-1G}
WEB=$(free_port)
head -c "$SIZE" /dev/urandom > "$T/www/big.bin"
BYTES=$(stat -c %s "$T/www/big.bin")
start_nginx "$WEB" 64

start_proxy() { # $1: port, rest: extra options; prints the master's and the worker's pid
	local port=$1
	shift
	./build/socks5d -l 127.0.0.1 -p "$port" -w 1 --dns-server 127.0.0.1:9 "$@" >/dev/null 2>&1 &
	local master=$!
	local worker=""
	for _ in $(seq 50); do
		worker=$(tr -d ' ' < "/proc/$master/task/$master/children" 2>/dev/null || true)
		[ -n "$worker" ] && curl -s -o /dev/null -x "socks5://127.0.0.1:$port" "http://127.0.0.1:$WEB/" && break
		sleep 0.1
	done
	echo "$master $worker"
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

P_ON=$(free_port)
P_OFF=$(free_port)
read -r M_ON W_ON <<<"$(start_proxy "$P_ON")"
read -r M_OFF W_OFF <<<"$(start_proxy "$P_OFF" -N)"
# Started inside $( ): not jobs of this shell, so common.sh's clean-up
# would not stop them.
trap 'kill "$M_ON" "$M_OFF" 2>/dev/null; kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$T"' EXIT
HZ=$(getconf CLK_TCK)

: > "$T/on"
: > "$T/off"
for i in $(seq "$RUNS"); do
	# alternate which side goes first, so that neither always runs on a
	# warmer cache or a quieter machine
	order="on off"
	[ $((i % 2)) -eq 0 ] && order="off on"
	for side in $order; do
		if [ $side = on ]; then port=$P_ON w=$W_ON; else port=$P_OFF w=$W_OFF; fi
		t0=$(ticks "$w")
		s=$(/usr/bin/time -f %e curl -sf -o /dev/null -x "socks5://127.0.0.1:$port" \
			"http://127.0.0.1:$WEB/big.bin" 2>&1 >/dev/null | tail -n1)
		t1=$(ticks "$w")
		awk -v s="$s" -v t="$((t1 - t0))" -v hz="$HZ" -v b="$BYTES" \
			'BEGIN { g = b / 1073741824; printf "%.3f %.3f\n", s / g, t / hz / g }' >> "$T/$side"
	done
done

med() { sort -n | awk '{ v[NR] = $1 } END { printf "%.3f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
on_s=$(cut -d' ' -f1 "$T/on" | med)
off_s=$(cut -d' ' -f1 "$T/off" | med)
on_c=$(cut -d' ' -f2 "$T/on" | med)
off_c=$(cut -d' ' -f2 "$T/off" | med)
printf '| dissectors | seconds per GiB (median of %s) | proxy CPU s per GiB (median) |\n|---|---|---|\n' "$RUNS"
printf '| on | %s | %s |\n| off (-N) | %s | %s |\n' "$on_s" "$on_c" "$off_s" "$off_c"
awk -v a="$on_s" -v b="$off_s" -v c="$on_c" -v d="$off_c" \
	'BEGIN { printf "on/off: wall %.3f, CPU %.3f\n", a / b, (d > 0 ? c / d : 0) }'

cat > "$T/micro.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "sniff.h"
static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}
static void feed(struct sniff *sn, enum sniff_dir d, const char *s)
{
	sniff_feed(sn, d, (const unsigned char *)s, strlen(s), NULL, NULL);
}
int main(void)
{
	static unsigned char body[65536];
	static const char req[] = "GET /big HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
	struct sniff *sn = sniff_new();
	feed(sn, SNIFF_UP, req);
	feed(sn, SNIFF_DOWN, "HTTP/1.1 200 OK\r\nContent-Length: 1099511627776\r\n\r\n");
	long n = 16384L * 64; /* 64 GiB in 64 KiB slices */
	double t = now();
	for (long i = 0; i < n; i++)
		if (sniff_feed(sn, SNIFF_DOWN, body, sizeof body, NULL, NULL) != SNIFF_MORE)
			return 1;
	double d = now() - t;
	printf("skipping a body: %.1f ns per 64 KiB slice = %.3f ms CPU per GiB\n", d / (double)n * 1e9, d / 64 * 1e3);
	sniff_free(sn);
	sn = sniff_new();
	long m = 200000;
	t = now();
	for (long i = 0; i < m; i++) {
		feed(sn, SNIFF_UP, req);
		feed(sn, SNIFF_DOWN, "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 0\r\n\r\n");
	}
	d = now() - t;
	printf("parsing headers: %.0f ns per request/response pair; state %zu bytes\n", d / (double)m * 1e9, sniff_state_size());
	sniff_free(sn);
	return 0;
}
C
cc -O2 -std=c11 -D_GNU_SOURCE -Iworker -o "$T/micro" "$T/micro.c" worker/sniff.c shared/log.c
"$T/micro"
