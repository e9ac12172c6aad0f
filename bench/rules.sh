#!/usr/bin/env bash
# Connection rate with and without 1,000 access rules, side by side: two
# socks5d -w 2 behind one nginx, one with no rules (the default policy), one
# with 1,000 rules that a request walks past (500 CIDRs and 500 .suffix
# names that never match, then `pass`).  loadgen -m rate -c 64 runs against
# each in turn, RUNS times (default 5, the order swapped every run), for
# DURATION seconds (default 5).  Reports the median connections per second,
# the median proxy CPU (master and workers, from /proc) per connection, and
# the ratio with rules / without.
# Usage: [RUNS=5] [DURATION=5] bench/rules.sh
. "$(dirname "$0")/common.sh"
make -s build/socks5d build/loadgen
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
WEB=$(free_port)
echo "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef012" > "$T/www/small"
start_nginx "$WEB" 4096

{
	echo "anonymous = always"
	for i in $(seq 0 499); do
		echo "block to 10.$((i / 250)).$((i % 250)).0/24 port 1-1024"
		echo "block to .host$i.example.net"
	done
	echo "pass"
} > "$T/rules.conf"
: > "$T/none.conf"

start_proxy() { # $1: port, $2: config; prints the master's pid
	./build/socks5d -f "$2" -l 127.0.0.1 -p "$1" -w 2 --dns-server 127.0.0.1:53 \
		>/dev/null 2>"$T/err.$1" &
	local master=$!
	for _ in $(seq 50); do
		curl -s -o /dev/null -x "socks5://127.0.0.1:$1" "http://127.0.0.1:$WEB/small" && break
		sleep 0.1
	done
	echo "$master"
}
ticks() { # CPU ticks of a master and its children
	local t=0 p
	for p in "$1" $(cat "/proc/$1/task/$1/children"); do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
	done
	echo "$t"
}
P_NONE=$(free_port)
P_RULES=$(free_port)
M_NONE=$(start_proxy "$P_NONE" "$T/none.conf")
M_RULES=$(start_proxy "$P_RULES" "$T/rules.conf")
# Started inside $( ): not jobs of this shell, so common.sh's clean-up
# would not stop them.
trap 'kill "$M_NONE" "$M_RULES" 2>/dev/null; kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$T"' EXIT
grep -q "1001 rules\|ready" "$T/err.$P_RULES" || true
HZ=$(getconf CLK_TCK)
: > "$T/none"
: > "$T/rules"
for i in $(seq "$RUNS"); do
	order="none rules"
	[ $((i % 2)) -eq 0 ] && order="rules none"
	for side in $order; do
		if [ $side = none ]; then port=$P_NONE m=$M_NONE; else port=$P_RULES m=$M_RULES; fi
		t0=$(ticks "$m")
		out=$(./build/loadgen -m rate -c 64 -d "$DURATION" -x "127.0.0.1:$port" \
			-t "127.0.0.1:$WEB" -p /small)
		t1=$(ticks "$m")
		conns=$(sed -n 's/.*conns=\([0-9]*\).*/\1/p' <<<"$out")
		rate=$(sed -n 's/.*rate=\([0-9]*\).*/\1/p' <<<"$out")
		awk -v r="$rate" -v c="$conns" -v t="$((t1 - t0))" -v hz="$HZ" \
			'BEGIN { printf "%d %.1f\n", r, (c > 0 ? t / hz / c * 1e6 : 0) }' >> "$T/$side"
	done
done
med() { sort -n | awk '{ v[NR] = $1 } END { printf "%.1f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
n_r=$(cut -d' ' -f1 "$T/none" | med)
r_r=$(cut -d' ' -f1 "$T/rules" | med)
n_c=$(cut -d' ' -f2 "$T/none" | med)
r_c=$(cut -d' ' -f2 "$T/rules" | med)
printf '| rules | conn/s, 64 clients (median of %s) | proxy CPU µs per connection |\n|---|---|---|\n' "$RUNS"
printf '| none (default policy) | %s | %s |\n| 1,000 + pass | %s | %s |\n' "$n_r" "$n_c" "$r_r" "$r_c"
awk -v a="$r_r" -v b="$n_r" -v c="$r_c" -v d="$n_c" \
	'BEGIN { printf "with/without: rate %.3f, CPU per connection %.3f\n", a / b, c / d }'
