#!/usr/bin/env bash
# Costs that should stay flat as the work grows, each measured side by side
# in one run: two socks5d that differ only in the size of one table,
# driven in turn by `loadgen -m rate -c 64 -W` (connect, SOCKS5 handshake,
# GET of 100 bytes, close), RUNS times (default 5, the order reversed every
# run) for DURATION seconds (default 5); proxy CPU is the time on CPU of the
# master, its workers and all their threads (/proc/PID/task/TID/schedstat)
# per connection completed.  Reports the medians, the spread and the ratio.
#   idle   connection cost with IDLE (100,000) idle sessions held through
#          one proxy against the same proxy with none (both with
#          IDLE_WORKERS (16) workers, to stay under 20,000 descriptors a
#          process); IDLE=0 skips it
#   users  (-w 2) RFC 1929 login cost with 1,000 users in the table (the one
#          logging in is the last) against 1 user; USERS=0 skips it
# (The access rules' table is bench/rules.sh.)
# Usage: [IDLE=100000] [USERS=1] [RUNS=5] [DURATION=5] bench/flat.sh
. "$(dirname "$0")/common.sh"
SOCKS5D=${SOCKS5D:-build/socks5d}
make -s build/loadgen
[ "$SOCKS5D" != build/socks5d ] || make -s build/socks5d
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
IDLE=${IDLE:-100000}
USERS=${USERS:-1}
NUSERS=${NUSERS:-1000}
log() { printf '[flat %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# A process may hold 20,000 descriptors here: the held sessions are spread
# over IDLE_WORKERS workers (both proxies of the comparison have as many),
# nginx runs 8 workers, and each loadgen holds at most 12,500.
IDLE_WORKERS=${IDLE_WORKERS:-16}

# nginx: eight workers, each with its own SO_REUSEPORT socket on 127.0.0.1
# and on 127.0.1.1-8 (the held sessions' targets, so that no address pair
# runs out of ports); idle connections that have sent no request are kept
# for 10 minutes.
WEB=$(free_port)
head -c 100 /dev/zero | tr '\0' x > "$T/www/small"
start_nginx "$WEB" 19000 "client_header_timeout 600s; keepalive_timeout 600s;" small
kill -QUIT "$(cat "$T/nginx.pid")"
wait
listen="listen 127.0.0.1:$WEB reuseport backlog=4096;"
for i in $(seq 8); do listen="$listen listen 127.0.1.$i:$WEB reuseport backlog=4096;"; done
sed -i "s|listen 127.0.0.1:$WEB;|$listen|; s/^worker_processes 1;/worker_processes 8; worker_rlimit_nofile 20000;/" "$T/nginx.conf"
/usr/sbin/nginx -c "$T/nginx.conf" -p "$T" &
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$WEB/small" && break; sleep 0.1; done
TARGETS=$(for i in $(seq 8); do printf '127.0.1.%d:%d,' "$i" "$WEB"; done)
TARGETS=${TARGETS%,}

declare -A PORT MASTER AUTH
start() { # start NAME OPTIONS...: with the login of AUTH[NAME], if any
	start_socks5d "$1" "$SOCKS5D" "${AUTH[$1]:-}" "$WEB" "${@:2}"
}
stop() { kill -TERM "${MASTER[$1]}" 2>/dev/null || true; wait "${MASTER[$1]}" 2>/dev/null || true; }
# compare A B LABEL-A LABEL-B BOUND: alternate rate runs, print the rows
compare() {
	local a=$1 b=$2 i s order out c0 c1 conns rate auth
	: > "$T/res.$a"
	: > "$T/res.$b"
	for i in $(seq "$RUNS"); do
		order="$a $b"
		[ $((i % 2)) -eq 0 ] && order="$b $a"
		for s in $order; do
			auth=()
			[ -n "${AUTH[$s]:-}" ] && auth=(-u "${AUTH[$s]}")
			c0=$(tree_cpu_ns "${MASTER[$s]}")
			out=$(./build/loadgen -m rate -c 64 -d "$DURATION" -W -x "127.0.0.1:${PORT[$s]}" \
				-t "127.0.0.1:$WEB" -p /small "${auth[@]}")
			c1=$(tree_cpu_ns "${MASTER[$s]}")
			conns=$(sed -n 's/.*conns=\([0-9]*\).*/\1/p' <<<"$out")
			rate=$(sed -n 's/.*rate=\([0-9]*\).*/\1/p' <<<"$out")
			awk -v r="$rate" -v c="$conns" -v t="$((c1 - c0))" \
				'BEGIN { printf "%d %.1f\n", r, (c > 0 ? t / 1000 / c : 0) }' >> "$T/res.$s"
			log "run $i $s: $out cpu_us_per_conn=$(tail -n 1 "$T/res.$s" | cut -d' ' -f2)"
		done
	done
	local rm rl rh cm cl ch
	printf '| %s | conn/s, 64 clients (median of %s) | spread | proxy CPU µs per connection | spread |\n|---|---|---|---|---|\n' "$5" "$RUNS"
	for s in "$a" "$b"; do
		read -r rm rl rh <<<"$(stat 1 "$T/res.$s")"
		read -r cm cl ch <<<"$(stat 2 "$T/res.$s")"
		printf '| %s | %.0f | %.0f-%.0f | %s | %s-%s |\n' "$([ "$s" = "$a" ] && echo "$3" || echo "$4")" \
			"$rm" "$rl" "$rh" "$cm" "$cl" "$ch"
	done
	read -r ra _ <<<"$(stat 1 "$T/res.$a")"
	read -r rb _ <<<"$(stat 1 "$T/res.$b")"
	read -r ca _ <<<"$(stat 2 "$T/res.$a")"
	read -r cb _ <<<"$(stat 2 "$T/res.$b")"
	awk -v l="$4 / $3" -v ra="$ra" -v rb="$rb" -v ca="$ca" -v cb="$cb" -v bound="$6" \
		'BEGIN { printf "\n%s: rate %.3f, CPU per connection %.3f (bound %s)\n\n", l, rb / ra, cb / ca, bound }'
}
stat() { cut -d' ' -f"$1" "$2" | sort -n | awk '{ v[NR] = $1 } END {
	m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
	printf "%.1f %.1f %.1f", m, v[1], v[NR] }'; }

# ---------------------------------------------------------------- idle sessions
if [ "$IDLE" -gt 0 ]; then
	start none -w "$IDLE_WORKERS" --anonymous always
	start held -w "$IDLE_WORKERS" --anonymous always
	per=12500
	procs=$(((IDLE + per - 1) / per))
	log "holding $IDLE idle sessions through one proxy ($procs loadgens)"
	lgs=()
	for i in $(seq 0 $((procs - 1))); do
		n=$per
		[ $(((i + 1) * per)) -gt "$IDLE" ] && n=$((IDLE - i * per))
		./build/loadgen -m hold -W -x "127.0.0.1:${PORT[held]}" -t "$TARGETS" -s "127.0.2.$((i + 2))" \
			-c "$n" -k 64 -r 120 -d 3600 >"$T/hold-$i.out" 2>"$T/hold-$i.err" &
		lgs+=($!)
	done
	end=$((SECONDS + 150))
	while [ $SECONDS -lt $end ]; do
		[ "$(cat "$T"/hold-*.err | grep -c "ramp done")" -ge "$procs" ] && break
		sleep 1
	done
	held=$(ss -Htn state established "( sport = :${PORT[held]} )" | wc -l)
	log "ramp over: $(cat "$T"/hold-*.err | grep "ramp done" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^established=/) { split($i, kv, "="); s += kv[2] } } END { print s + 0 }') established, $held connections open to the proxy"
	echo "Idle sessions held: $held (established connections to the proxy before the runs)"
	echo
	compare none held "none" "$IDLE" "idle sessions held" "10%"
	held=$(ss -Htn state established "( sport = :${PORT[held]} )" | wc -l)
	echo "Still held after the runs: $held"
	echo
	for p in "${lgs[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${lgs[@]}"; do wait "$p" 2>/dev/null || true; done
	stop held
	stop none
fi

# ---------------------------------------------------------------- users
if [ "$USERS" = 1 ]; then
	hash=$(printf 'benchpass\n' | "$SOCKS5D" --hash-password)
	{
		echo "anonymous = never"
		echo "user = bench:$hash"
	} > "$T/one.conf"
	{
		echo "anonymous = never"
		for i in $(seq 2 "$NUSERS"); do echo "user = benchuser$i:$hash"; done
		echo "user = bench:$hash"
	} > "$T/many.conf"
	AUTH[one]=bench:benchpass
	AUTH[many]=bench:benchpass
	start one -w 2 -f "$T/one.conf"
	start many -w 2 -f "$T/many.conf"
	compare one many "1" "$NUSERS (the user logging in is the last)" "users in the table" "10%"
	stop one
	stop many
fi
