#!/usr/bin/env bash
# What the TCP congestion control costs the relay.  Every system of the
# bench runs on loopback, where no qdisc paces: a congestion control that
# paces (BBR) does it inside TCP with a timer per socket, and on loopback a
# sender also runs its receiver's TCP input, so the cost lands on whoever
# sends.  For each congestion control in CCS (default: the machine's and
# cubic, the kernel's own default), a network namespace of its own with that
# default (net.ipv4.tcp_congestion_control is per namespace; the machine's
# is left alone) runs nginx (2 workers, sendfile, a 1 GiB file), `socks5d
# -w 2` with default settings, and, where that namespace's default is not
# cubic, a second socks5d with --client-congestion cubic
# --target-congestion cubic (its own two sockets only); bench/loadgen
# fetches with 1 and 32 streams for DURATION seconds, directly and through
# each proxy, RUNS rounds (the order reversed every other round), medians.
# CPU per GB of each end: the proxy (master, workers, threads:
# /proc/PID/task/TID/schedstat), nginx likewise, the client (loadgen's own
# time), and their sum.  Run as root.  Usage: [CCS="bbr cubic"] [RUNS=3]
# [DURATION=4] bench/congestion.sh (UPDATE_DOCS=1 also writes the table
# into docs/performance.md between <!-- congestion:begin --> and
# <!-- congestion:end -->; make bench runs it so.)
. "$(dirname "$0")/common.sh"
[ "$(id -u)" = 0 ] || { echo "congestion.sh: run as root (network namespaces)" >&2; exit 1; }
make -s build/socks5d build/loadgen
RUNS=${RUNS:-3}
DURATION=${DURATION:-4}
MACHINE_CC=$(cat /proc/sys/net/ipv4/tcp_congestion_control)
CCS=${CCS:-$(printf '%s\n' "$MACHINE_CC" cubic | awk '!seen[$0]++' | tr '\n' ' ')}
mkdir -p build/bench-data
[ -f build/bench-data/big.bin ] || head -c 1G /dev/urandom > build/bench-data/big.bin
ln "$(pwd)/build/bench-data/big.bin" "$T/www/big.bin" 2>/dev/null || cp build/bench-data/big.bin "$T/www/big.bin"
head -c 100 /dev/zero | tr '\0' x > "$T/www/small"
chmod 644 "$T/www/"*
WEB=18096
NSS=()
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true
	for n in "${NSS[@]}"; do ip netns del "$n" 2>/dev/null || true; done; rm -rf "$T"' EXIT

declare -A PORT MASTER NGINX
nport=0
RES=$T/results
: > "$RES"
for cc in $CCS; do
	ns=s5cc$$$cc
	ip netns add "$ns"
	NSS+=("$ns")
	IN=(ip netns exec "$ns")
	"${IN[@]}" ip link set lo up
	if ! "${IN[@]}" sysctl -q -w net.ipv4.tcp_congestion_control="$cc"; then
		echo "congestion.sh: $cc is not available: skipped" >&2
		continue
	fi
	mkdir -p "$T/$cc"
	cat > "$T/$cc/nginx.conf" <<NGX
worker_processes 2;
daemon off;
error_log $T/$cc/error.log;
pid $T/$cc/nginx.pid;
events { worker_connections 1024; }
http { access_log off; sendfile on; server { listen 127.0.0.1:$WEB; root $T/www; } }
NGX
	"${IN[@]}" /usr/sbin/nginx -c "$T/$cc/nginx.conf" -p "$T/$cc" &
	NGINX[$cc]=$!
	systems="direct socks5d"
	[ "$cc" = cubic ] || systems="$systems socks5d-cubic"
	for s in $systems; do
		[ "$s" = direct ] && continue
		opts=()
		[ "$s" = socks5d-cubic ] && opts=(--client-congestion cubic --target-congestion cubic)
		nport=$((nport + 1))
		PORT[$cc/$s]=$((WEB + nport))
		"${IN[@]}" build/socks5d -l 127.0.0.1 -p "${PORT[$cc/$s]}" -w 2 --dns-server 127.0.0.1:9 \
			--anonymous always --admin-socket "$T/$cc/$s.sock" "${opts[@]}" >/dev/null 2>"$T/$cc/$s.err" &
		MASTER[$cc/$s]=$!
	done
	for _ in $(seq 100); do
		ok=1
		for s in $systems; do
			x=()
			[ "$s" != direct ] && x=(-W -x "127.0.0.1:${PORT[$cc/$s]}")
			"${IN[@]}" build/loadgen -m rate -c 1 -n 1 -d 2 "${x[@]}" -t "127.0.0.1:$WEB" \
				-p /small >/dev/null 2>&1 || ok=0
		done
		[ $ok = 1 ] && break
		sleep 0.1
	done
	[ $ok = 1 ] || { echo "congestion.sh: nginx or socks5d did not start in $ns" >&2; exit 1; }
	for i in $(seq "$RUNS"); do
		order=$systems
		[ $((i % 2)) -eq 0 ] && order=$(echo "$systems" | tr ' ' '\n' | tac | tr '\n' ' ')
		for streams in 1 32; do
			for s in $order; do
				x=()
				p0=0 p1=0
				[ "$s" != direct ] && x=(-W -x "127.0.0.1:${PORT[$cc/$s]}") && p0=$(tree_cpu_ns "${MASTER[$cc/$s]}")
				n0=$(tree_cpu_ns "${NGINX[$cc]}")
				out=$("${IN[@]}" build/loadgen -m bulk -c "$streams" -d "$DURATION" "${x[@]}" \
					-t "127.0.0.1:$WEB" -p /big.bin)
				[ "$s" != direct ] && p1=$(tree_cpu_ns "${MASTER[$cc/$s]}")
				n1=$(tree_cpu_ns "${NGINX[$cc]}")
				echo "cc=$cc sys=$s streams=$streams proxy_ns=$((p1 - p0)) nginx_ns=$((n1 - n0)) $out" >> "$RES"
				echo "$cc $s $streams: $out" >&2
			done
		done
	done
	for s in $systems; do [ "$s" = direct ] || kill "${MASTER[$cc/$s]}" 2>/dev/null || true; done
	kill -QUIT "${NGINX[$cc]}" 2>/dev/null || true
	wait
done

/usr/bin/python3 - "$RES" "$MACHINE_CC" > "$T/table.md" <<'PY'
import statistics, sys
rows = []
for line in open(sys.argv[1]):
    rows.append(dict(t.split("=", 1) for t in line.split() if "=" in t))
def med(cc, s, st, f):
    v = [f(r) for r in rows if r["cc"] == cc and r["sys"] == s and r["streams"] == st]
    return statistics.median(v) if v else None
names = {"direct": "direct (no proxy)", "socks5d": "socks5d (default settings)",
         "socks5d-cubic": "socks5d --client-congestion cubic --target-congestion cubic"}
print("| congestion control (namespace default) | streams | system | GB/s | x direct | proxy s/GB | nginx s/GB | client s/GB | sum s/GB |")
print("|---|---|---|---|---|---|---|---|---|")
seen = []
for r in rows:
    k = (r["cc"], r["streams"], r["sys"])
    if k not in seen:
        seen.append(k)
for cc, st, s in sorted(seen, key=lambda k: (k[0] != sys.argv[2], k[0], int(k[1]), list(names).index(k[2]))):
    gb = lambda r: float(r["bytes"])
    rate = med(cc, s, st, lambda r: gb(r) / float(r["seconds"]) / 1e9)
    d = med(cc, "direct", st, lambda r: gb(r) / float(r["seconds"]) / 1e9)
    px = med(cc, s, st, lambda r: float(r["proxy_ns"]) / gb(r))
    ng = med(cc, s, st, lambda r: float(r["nginx_ns"]) / gb(r))
    cl = med(cc, s, st, lambda r: float(r["cpu_us"]) * 1e3 / gb(r))
    label = cc + (" (the machine's)" if cc == sys.argv[2] else "")
    print("| %s | %s | %s | %.2f | %.2f | %s | %.3f | %.3f | %.3f |" % (
        label, st, names[s], rate, rate / d, "-" if s == "direct" else "%.3f" % px, ng, cl,
        (0 if s == "direct" else px) + ng + cl))
PY
cat "$T/table.md"
if [ "${UPDATE_DOCS:-0}" = 1 ]; then
	doc_block congestion "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), $(nproc) CPUs: \`bench/congestion.sh\` (CCS=\"${CCS% }\" RUNS=$RUNS DURATION=$DURATION), medians" "$T/table.md"
fi
