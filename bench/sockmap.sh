#!/usr/bin/env bash
# The three relays side by side on loopback: copy (--no-splice), splice
# (the default) and the kernel-only relay (--sockmap yes), against direct
# (no proxy).  nginx (sendfile) serves a 1 GiB file; bench/loadgen fetches
# it for DURATION seconds with 1 and with 32 streams through `socks5d -w 2
# -N` (no dissectors in any mode: with them, HTTP sessions stay with the
# worker).  Each round runs every mode once, in reverse order on even
# rounds; ROUNDS rounds (default 5), reported as the median and the range.
#   machine CPU s/GB: busy time of the whole machine (/proc/stat: user,
#     nice, system, irq, softirq, steal over every CPU) per GB moved: it
#     counts nginx, loadgen and the kernel's workers too, which matters
#     here: the sockmap relay sends from a kernel work queue (kworker),
#     which no proxy process is charged for.
#   proxy CPU s/GB: user + system time of the master and its workers.
# Run as root (the sockmap relay needs CAP_BPF).  Usage: bench/sockmap.sh
# (UPDATE_DOCS=1 also writes the table into docs/performance.md, between
# <!-- sockmap:begin --> and <!-- sockmap:end -->; make bench runs it so.)
# CC=NAME runs it all inside a network namespace of its own whose default
# TCP congestion control is NAME (the machine's is left alone).
if [ -n "${CC:-}" ] && [ -z "${SOCKMAP_NS:-}" ]; then
	ns=s5sm$$
	ip netns add "$ns" || exit 1
	trap 'ip netns del "$ns" 2>/dev/null' EXIT
	ip -n "$ns" link set lo up &&
		ip netns exec "$ns" sysctl -q -w net.ipv4.tcp_congestion_control="$CC" || exit 1
	SOCKMAP_NS=$ns ip netns exec "$ns" "$0" "$@"
	exit $?
fi
. "$(dirname "$0")/common.sh"
make -s build/socks5d build/loadgen
DURATION=${DURATION:-3}
ROUNDS=${ROUNDS:-5}
mkdir -p build/bench-data
[ -f build/bench-data/big.bin ] || head -c 1G /dev/urandom > build/bench-data/big.bin
ln "$(pwd)/build/bench-data/big.bin" "$T/www/big.bin" 2>/dev/null || cp build/bench-data/big.bin "$T/www/big.bin"
chmod 644 "$T/www/"*
start_nginx 18095 1024
HZ=$(getconf CLK_TCK)
port=11195

start() {
	port=$((port + 3))
	./build/socks5d -l 127.0.0.1 -p $port -P $((port + 1)) --anonymous always -N \
		--dns-server 127.0.0.1:9 --admin-socket "$T/adm.sock" -w 2 \
		--metrics 127.0.0.1:$((port + 2)) "$@" >/dev/null 2>"$T/socks5d.err" &
	master=$!
	until [ "$(wc -w < /proc/$master/task/$master/children 2>/dev/null || echo 0)" -ge 2 ]; do sleep 0.05; done
	sleep 0.3
}
stop() { kill "$master"; wait "$master" 2>/dev/null || true; }
proxy_ticks() { # the master and its workers, user + system
	local t=0 p
	for p in $master $(cat /proc/$master/task/$master/children); do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
	done
	echo $t
}
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
metric() { curl -s "http://127.0.0.1:$((port + 2))/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }

RES=$T/results
: > "$RES"
modes="direct copy splice sockmap"
for round in $(seq "$ROUNDS"); do
	order=$modes
	[ $((round % 2)) = 0 ] && order=$(echo $modes | tr ' ' '\n' | tac | tr '\n' ' ')
	for streams in 1 32; do
		for mode in $order; do
			via=""
			case $mode in
			copy) start --no-splice ;;
			splice) start ;;
			sockmap) start --sockmap yes ;;
			esac
			[ "$mode" != direct ] && via="-W -x 127.0.0.1:$port"
			p0=0; [ "$mode" != direct ] && p0=$(proxy_ticks)
			m0=$(machine_ticks)
			# shellcheck disable=SC2086
			out=$(./build/loadgen -t 127.0.0.1:18095 -m bulk $via -c $streams -d "$DURATION" -p /big.bin)
			m1=$(machine_ticks)
			p1=0; [ "$mode" != direct ] && p1=$(proxy_ticks)
			kernel=-
			if [ "$mode" = sockmap ]; then
				kernel="$(metric socks5d_sockmap_sessions_total)/$(metric socks5d_sockmap_handbacks_total)"
				grep -q "sockmap relay unavailable" "$T/socks5d.err" && kernel=fallback
			fi
			[ "$mode" != direct ] && stop
			bytes=$(sed -n 's/.* bytes=\([0-9]*\).*/\1/p' <<<"$out")
			echo "$mode $streams $round $bytes $((m1 - m0)) $((p1 - p0)) $kernel" >> "$RES"
			echo "round $round: $mode $streams streams: bytes=$bytes machine_ticks=$((m1 - m0)) proxy_ticks=$((p1 - p0)) sockmap_sessions/handbacks=$kernel" >&2
		done
	done
done

{
echo "| relay | streams | GB/s | x direct | machine CPU s/GB | proxy CPU s/GB | sockmap sessions/hand-backs |"
echo "|---|---|---|---|---|---|---|"
# Medians, with the range over the rounds in brackets.
awk -v d="$DURATION" -v hz="$HZ" '
	function med(a, n,   i, j, t) {
		for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	function cell(a, n, fmt,   lo, hi, i, m) {
		lo = hi = a[1]
		for (i = 2; i <= n; i++) { if (a[i] < lo) lo = a[i]; if (a[i] > hi) hi = a[i] }
		m = med(a, n)
		return sprintf(fmt " [" fmt "-" fmt "]", m, lo, hi)
	}
	{
		k = $1 " " $2; n[k]++; i = n[k]
		gb = $4 / 1e9
		rate[k, i] = gb / d; mach[k, i] = $5 / hz / gb; prox[k, i] = $6 / hz / gb; kern[k] = $7
		if (!(k in seen)) { seen[k] = 1; keys[++nk] = k }
	}
	END {
		for (s = 1; s <= 2; s++) {
			st = s == 1 ? 1 : 32
			for (j = 1; j <= nk; j++) {
				split(keys[j], kk, " "); if (kk[2] != st) continue
				k = keys[j]; m = n[k]
				for (i = 1; i <= m; i++) { r[i] = rate[k, i]; mc[i] = mach[k, i]; pc[i] = prox[k, i] }
				for (i = 1; i <= n["direct " st]; i++) dr[i] = rate["direct " st, i]
				ratio = med(r, m) / med(dr, n["direct " st])
				printf "| %s | %d | %s | %.2f | %s | %s | %s |\n", kk[1], st, cell(r, m, "%.2f"), ratio,
					cell(mc, m, "%.3f"), kk[1] == "direct" ? "-" : cell(pc, m, "%.3f"), kern[k]
			}
		}
	}' "$RES"
} > "$T/table.md"
cat "$T/table.md"
if [ "${UPDATE_DOCS:-0}" = 1 ]; then
	doc_block sockmap "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), $(nproc) CPUs, congestion control $(sysctl -n net.ipv4.tcp_congestion_control): \`bench/sockmap.sh\` (DURATION=$DURATION ROUNDS=$ROUNDS), medians [range]" "$T/table.md"
fi
