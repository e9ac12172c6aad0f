#!/usr/bin/env bash
# The splice relay against the copying relay, on loopback: nginx (sendfile)
# serves a 1 GiB file, bench/loadgen fetches it through `socks5d -w 1` for
# DURATION seconds with 1 and with 32 streams, for each relay setting; the
# worker's CPU time (user + system, /proc) is divided by the bytes moved.
# Then `strace -c` counts the worker's system calls per GB (32 streams) for
# the copying relay and the default, and per connection for the
# connection-rate workload (64 clients, 100-byte responses).
# Usage: bench/splice.sh        (root not needed; DURATION=4 by default)
. "$(dirname "$0")/common.sh"
make -s build/socks5d build/loadgen
DURATION=${DURATION:-4}
mkdir -p build/bench-data
[ -f build/bench-data/big.bin ] || head -c 1G /dev/urandom > build/bench-data/big.bin
ln "$(pwd)/build/bench-data/big.bin" "$T/www/big.bin" 2>/dev/null || cp build/bench-data/big.bin "$T/www/big.bin"
head -c 100 /dev/urandom > "$T/www/small"
chmod 644 "$T/www/"*
start_nginx 18093 1024 'keepalive_requests 100000;' small
HZ=$(getconf CLK_TCK)
port=11093

start() {
	port=$((port + 2))
	./build/socks5d -l 127.0.0.1 -p $port -P $((port + 1)) --anonymous always \
		--dns-server 127.0.0.1:9 --admin-socket "$T/adm.sock" -w 1 "$@" >/dev/null 2>&1 &
	master=$!
	until worker=$(cat /proc/$master/task/$master/children 2>/dev/null) && [ -n "$worker" ]; do sleep 0.05; done
	worker=${worker// /}
	sleep 0.3
}
stop() { kill "$master"; wait "$master" 2>/dev/null || true; }
ticks() { awk '{print $14 + $15}' "/proc/$worker/stat"; }

echo "| relay | streams | GB/s | worker CPU s per GB |"
echo "|---|---|---|---|"
for streams in 1 32; do
	out=$(./build/loadgen -t 127.0.0.1:18093 -m bulk -c $streams -d "$DURATION" -p /big.bin)
	bytes=$(sed -n 's/.* bytes=\([0-9]*\).*/\1/p' <<<"$out")
	awk -v b="$bytes" -v d="$DURATION" -v s=$streams 'BEGIN { printf "| direct (no proxy) | %d | %.2f | - |\n", s, b / d / 1e9 }'
	for cfg in "--no-splice" "--pipe-size 65536" "--pipe-size 262144" "--pipe-size 1048576"; do
		start $cfg
		t0=$(ticks)
		out=$(./build/loadgen -x 127.0.0.1:$port -t 127.0.0.1:18093 -m bulk -W -c $streams -d "$DURATION" -p /big.bin)
		t1=$(ticks)
		stop
		bytes=$(sed -n 's/.* bytes=\([0-9]*\).*/\1/p' <<<"$out")
		awk -v b="$bytes" -v d="$DURATION" -v t=$((t1 - t0)) -v hz="$HZ" -v c="$cfg" -v s=$streams \
			'BEGIN { printf "| %s | %d | %.2f | %.2f |\n", c, s, b / d / 1e9, t / hz / (b / 1e9) }'
	done
done

# System calls: strace -c on the worker (strace slows it down; the counts
# are what matters, not the times).
calls() { # $1: label, $2: GB or connection; the rest: loadgen arguments
	local label=$1 per=$2
	shift 2
	timeout 60 strace -c -f -p "$worker" -o "$T/strace.txt" &
	local st=$!
	sleep 0.5
	out=$(./build/loadgen -x 127.0.0.1:$port -t 127.0.0.1:18093 -W "$@")
	sleep 0.3
	kill -INT $st 2>/dev/null || true
	wait $st 2>/dev/null || true
	local n
	if [ "$per" = GB ]; then
		n=$(sed -n 's/.* bytes=\([0-9]*\).*/\1/p' <<<"$out")
		n=$(awk -v b="$n" 'BEGIN { print b / 1e9 }')
	else
		n=$(sed -n 's/.* conns=\([0-9]*\).*/\1/p' <<<"$out")
	fi
	# strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall
	awk -v n="$n" -v l="$label" -v per="$per" '
		$1 ~ /^[0-9.]+$/ && $NF != "total" {
			line = line sprintf(" %s %.1f", $NF, $4 / n)
			sum += $4
		}
		END { printf "%s: %.1f system calls per %s:%s\n", l, sum / n, per, line }' "$T/strace.txt"
}
echo
start --no-splice
calls "copying relay (--no-splice), 32 streams" GB -m bulk -c 32 -d 3 -p /big.bin
stop
start
calls "splice relay (default), 32 streams" GB -m bulk -c 32 -d 3 -p /big.bin
calls "connection rate, 64 clients" connection -m rate -c 64 -n 3000 -d 10 -p /small
stop
