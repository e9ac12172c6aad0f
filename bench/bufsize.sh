#!/usr/bin/env bash
# Relay buffer size vs. single-stream throughput and proxy CPU, on loopback.
# Starts nginx (sendfile) with a 1 GiB file and socks5d -w 1 --no-splice (the
# copying relay) with each buffer
# size; fetches the file through the proxy RUNS times with curl.
# Usage: bench/bufsize.sh [SIZES...]   (default: 16384 65536 262144)
. "$(dirname "$0")/common.sh"
make -s build/socks5d
SIZES=${*:-16384 65536 262144}
RUNS=${RUNS:-3}
head -c 1G /dev/urandom > "$T/www/big.bin"
start_nginx 18091 64
secs() { /usr/bin/time -f %e "$@" 2>&1 >/dev/null | tail -n1; }
printf '| buffer | seconds per GiB (median of %s) | proxy CPU s per GiB |\n|---|---|---|\n' "$RUNS"
d=$(for i in $(seq "$RUNS"); do secs curl -sf -o /dev/null http://127.0.0.1:18091/big.bin; done | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
printf '| direct | %s | - |\n' "$d"
for bs in $SIZES; do
	./build/socks5d -l 127.0.0.1 -p 11091 -w 1 --no-splice --buffer-size "$bs" >/dev/null 2>&1 &
	master=$!
	sleep 0.5
	worker=$(tr -d " " < /proc/$master/task/$master/children)
	t=$(for i in $(seq "$RUNS"); do secs curl -sf -o /dev/null -x socks5://127.0.0.1:11091 http://127.0.0.1:18091/big.bin; done | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
	ticks=$(awk '{print $14 + $15}' "/proc/$worker/stat")
	cpu=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v r="$RUNS" 'BEGIN { printf "%.2f", t / hz / r }')
	printf '| %s | %s | %s |\n' "$bs" "$t" "$cpu"
	kill "$master"
	wait "$master" || true
done
