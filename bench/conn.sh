#!/usr/bin/env bash
# Connection cost side by side: one nginx, socks5d -w 2 without and with
# RFC 1929 authentication, and the same for a second build (BASE) when
# given, each driven in turn by `loadgen -m rate -c 64 -W` (connect, SOCKS5
# handshake, GET of 100 bytes, close), RUNS times (default 5; the order
# reverses every run) for DURATION seconds (default 5).  Proxy CPU is the
# time on CPU of the master and its workers, every thread, from
# /proc/PID/task/TID/schedstat (nanoseconds), divided by the connections
# completed.  Reports the median connections per second and CPU per
# connection with the spread (lowest-highest), and with BASE the ratio of
# the medians (this build / BASE).
# With STRACE=1 it then counts the system calls of one worker of this build
# (strace -c -f) over a run, per connection.
# Usage: [BASE=/path/to/socks5d] [RUNS=5] [DURATION=5] [AUTH=1] [STRACE=0] bench/conn.sh
. "$(dirname "$0")/common.sh"
SOCKS5D=${SOCKS5D:-build/socks5d}
make -s build/loadgen
[ "$SOCKS5D" != build/socks5d ] || make -s build/socks5d
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
AUTH=${AUTH:-1}
WEB=$(free_port)
head -c 100 /dev/zero | tr '\0' x > "$T/www/small"
start_nginx "$WEB" 4096 "" small

declare -A PORT MASTER
# start NAME BINARY OPTIONS...: -w 2, with the bench login for a NAME *auth
start() {
	local name=$1 bin=$2 login=""
	shift 2
	[[ $name == *auth ]] && login=bench:benchpass
	start_socks5d "$name" "$bin" "$login" "$WEB" -w 2 "$@"
}

SYSTEMS="new"
start new "$SOCKS5D" --anonymous always
if [ "$AUTH" = 1 ]; then
	start new-auth "$SOCKS5D" -u bench:benchpass --anonymous never
	SYSTEMS="$SYSTEMS new-auth"
fi
if [ -n "${BASE:-}" ]; then
	start base "$BASE" --anonymous always
	SYSTEMS="base $SYSTEMS"
	if [ "$AUTH" = 1 ]; then
		start base-auth "$BASE" -u bench:benchpass --anonymous never
		SYSTEMS="$SYSTEMS base-auth"
	fi
fi

for s in $SYSTEMS; do : > "$T/res.$s"; done
for i in $(seq "$RUNS"); do
	order=$SYSTEMS
	[ $((i % 2)) -eq 0 ] && order=$(echo "$SYSTEMS" | tr ' ' '\n' | tac | tr '\n' ' ')
	for s in $order; do
		auth=()
		[[ $s == *auth ]] && auth=(-u bench:benchpass)
		c0=$(tree_cpu_ns "${MASTER[$s]}")
		out=$(./build/loadgen -m rate -c 64 -d "$DURATION" -W -x "127.0.0.1:${PORT[$s]}" \
			-t "127.0.0.1:$WEB" -p /small "${auth[@]}")
		c1=$(tree_cpu_ns "${MASTER[$s]}")
		conns=$(sed -n 's/.*conns=\([0-9]*\).*/\1/p' <<<"$out")
		rate=$(sed -n 's/.*rate=\([0-9]*\).*/\1/p' <<<"$out")
		awk -v r="$rate" -v c="$conns" -v t="$((c1 - c0))" \
			'BEGIN { printf "%d %.1f\n", r, (c > 0 ? t / 1000 / c : 0) }' >> "$T/res.$s"
		echo "run $i $s: $out cpu_us_per_conn=$(tail -n 1 "$T/res.$s" | cut -d' ' -f2)" >&2
	done
done
# median and spread of column $1 of a result file
stat() { cut -d' ' -f"$1" "$2" | sort -n | awk '{ v[NR] = $1 } END {
	m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
	printf "%.1f %.1f %.1f", m, v[1], v[NR] }'; }
printf '| system | conn/s, 64 clients (median of %s) | spread | proxy CPU µs per connection | spread |\n|---|---|---|---|---|\n' "$RUNS"
for s in $SYSTEMS; do
	read -r rm rl rh <<<"$(stat 1 "$T/res.$s")"
	read -r cm cl ch <<<"$(stat 2 "$T/res.$s")"
	printf '| %s | %.0f | %.0f-%.0f | %s | %s-%s |\n' "$s" "$rm" "$rl" "$rh" "$cm" "$cl" "$ch"
done
if [ -n "${BASE:-}" ]; then
	for a in "" -auth; do
		[ -s "$T/res.new$a" ] && [ -s "$T/res.base$a" ] || continue
		read -r nr _ <<<"$(stat 1 "$T/res.new$a")"
		read -r br _ <<<"$(stat 1 "$T/res.base$a")"
		read -r nc _ <<<"$(stat 2 "$T/res.new$a")"
		read -r bc _ <<<"$(stat 2 "$T/res.base$a")"
		awk -v a="new$a/base$a" -v nr="$nr" -v br="$br" -v nc="$nc" -v bc="$bc" \
			'BEGIN { printf "%s: rate %.3f, CPU per connection %.3f\n", a, nr / br, nc / bc }'
	done
fi

if [ "${STRACE:-0}" = 1 ]; then
	for s in new ${AUTH/1/new-auth}; do
		[ "$s" = 0 ] && continue
		w=$(cut -d' ' -f1 "/proc/${MASTER[$s]}/task/${MASTER[$s]}/children")
		auth=()
		[[ $s == *auth ]] && auth=(-u bench:benchpass)
		strace -c -f -q -p "$w" -o "$T/strace.$s" &
		sp=$!
		sleep 0.5
		out=$(./build/loadgen -m rate -c 64 -d "$DURATION" -W -x "127.0.0.1:${PORT[$s]}" \
			-t "127.0.0.1:$WEB" -p /small "${auth[@]}")
		kill -INT $sp
		wait $sp 2>/dev/null || true
		# the connections this worker handled: its accept4 calls that returned one
		n=$(awk '$NF == "accept4" { print $4 - (NF == 6 ? $5 : 0) }' "$T/strace.$s")
		echo "$s: one worker under strace, $n connections accepted; calls per connection:"
		awk -v n="$n" 'NR > 2 && $1 !~ /^-/ && $NF != "total" {
			printf "  %-14s %6.2f\n", $NF, $4 / n; tot += $4 }
			END { printf "  %-14s %6.2f\n", "total", tot / n }' "$T/strace.$s"
	done
fi
