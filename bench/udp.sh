#!/usr/bin/env bash
# UDP ASSOCIATE side by side on loopback: direct (no proxy), Dante 1.4.2
# (danted) and socks5d, at 64- and 1,400-byte datagrams, all against one
# UDP echo target (`loadgen udp-echo`, recvmmsg/sendmmsg), driven by
# `loadgen -m udp`.  Run as root (bench/run.sh runs it last, so `make
# bench` does; alone: bench/udp.sh, about three minutes).  It writes:
#   build/bench/udp-results.txt  one line per loadgen run (raw loadgen output
#                                plus the proxy's CPU)
#   build/bench/raw/udp-*        every loadgen's output, the proxies' logs
#   build/bench/udp-tables.md    the table (also printed on stdout)
#   docs/performance.md          the section between <!-- bench-udp:begin -->
#                                and <!-- bench-udp:end --> (nothing else)
#
# For each size, RUNS times (the systems in reverse order on even runs):
#   1. closed loop: UDP_ASSOCS associations, each with UDP_WINDOW datagrams
#      in flight (`-w`), the next sent as an echo comes back: the rate each
#      path sustains without loss.  Direct's rate is "the direct rate".
#   2. paced (`-R`) at the direct rate, then at half of it, through each
#      proxy (and direct at its own rate, as a check): received per second
#      and loss.
# Proxy CPU: utime+stime (and that of reaped children) of the proxy's
# processes from /proc over the closed-loop run, per datagram relayed (each
# echo counts twice: the datagram out and its echo back).
#
# A proxy that refuses UDP ASSOCIATE (socks5d before it relays UDP answers
# 0x07) or does not start is reported as n/a with the reason.
#
# Environment (defaults in brackets):
#   SOCKS5D [build/socks5d]  LOADGEN [build/loadgen]
#   DURATION [5] seconds per run    RUNS [2]    UDP_SIZES ["64 1400"]
#   UDP_ASSOCS [8]  UDP_WINDOW [32]  UDP_PORT_BASE [21250] (4 ports from it, and +100)
#   UPDATE_DOCS [1] 0 leaves docs/ alone
. "$(dirname "$0")/common.sh"
ROOT=$PWD
SOCKS5D=${SOCKS5D:-build/socks5d}
LOADGEN=${LOADGEN:-build/loadgen}
DURATION=${DURATION:-5}
RUNS=${RUNS:-2}
UDP_SIZES=${UDP_SIZES:-64 1400}
UDP_ASSOCS=${UDP_ASSOCS:-8}
UDP_WINDOW=${UDP_WINDOW:-32}
UDP_PORT_BASE=${UDP_PORT_BASE:-21250}
UPDATE_DOCS=${UPDATE_DOCS:-1}
OUT=$ROOT/build/bench
RAW=$OUT/raw
RESULTS=$OUT/udp-results.txt

log() { printf '[bench-udp %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get, and danted starts as root)"
case $SOCKS5D in /*) ;; *) SOCKS5D=$ROOT/$SOCKS5D ;; esac
case $LOADGEN in /*) ;; *) LOADGEN=$ROOT/$LOADGEN ;; esac
[ -x "$LOADGEN" ] || make -s build/loadgen
[ -x "$SOCKS5D" ] || make -s build/socks5d
[ -x "$SOCKS5D" ] && [ -x "$LOADGEN" ] || die "need $SOCKS5D and $LOADGEN"
[ $((UDP_PORT_BASE + 103)) -lt 32768 ] || die "UDP_PORT_BASE must stay below the ephemeral range"

# Dante from the Debian mirror if missing, its service kept from starting
# (policy-rc.d 101 for the install, only if there is none already).
if [ ! -x /usr/sbin/danted ]; then
	log "installing dante-server"
	made_policy=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		made_policy=1
	fi
	mkdir -p "$ROOT/build"
	rc=0
	DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q dante-server >"$ROOT/build/bench-apt.log" 2>&1 ||
		{ timeout 300 apt-get update -q >>"$ROOT/build/bench-apt.log" 2>&1 &&
		  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q dante-server >>"$ROOT/build/bench-apt.log" 2>&1; } ||
		rc=$?
	[ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
	[ $rc = 0 ] || die "apt-get install dante-server failed, see build/bench-apt.log"
fi

mkdir -p "$OUT" "$RAW"
rm -f "$RAW"/udp-* "$RESULTS"
chmod 755 "$T"   # danted's unprivileged user reads its files here

P_ECHO=$UDP_PORT_BASE
declare -A PORT=([dante]=$((UDP_PORT_BASE + 1)) [socks5d]=$((UDP_PORT_BASE + 2)))
for p in "$P_ECHO" "${PORT[@]}" $((PORT[socks5d] + 100)); do
	! ss -Htuln "sport = :$p" | grep -q . || die "port $p is in use (set UDP_PORT_BASE)"
done

declare -A PID=()  # system -> pid of its first process
declare -A NA=()   # system -> why it has no numbers
stop() {
	local p=${PID[$1]:-}
	[ -n "$p" ] || return 0
	kill -TERM "$p" 2>/dev/null || true
	for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
	unset "PID[$1]"
}
cleanup() {
	local rc=$?
	set +e
	for s in "${!PID[@]}"; do stop "$s"; done
	cp -f "$T"/*.log "$T"/*.err "$T"/*.conf "$RAW"/ 2>/dev/null
	# shellcheck disable=SC2046
	kill $(jobs -p) 2>/dev/null
	wait 2>/dev/null
	rm -rf "$T"
	exit $rc
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log terminated; exit 143' TERM

# CPU of a process and its descendants, ns: utime stime cutime cstime
tree_pids() {
	local p=$1 c
	[ -d "/proc/$p" ] || return 0
	echo "$p"
	for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do tree_pids "$c"; done
}
cpu_ns() {
	local files=() p
	for p in $(tree_pids "${PID[$1]}"); do files+=("/proc/$p/stat"); done
	{ cat "${files[@]}" 2>/dev/null || true; } | sed 's/.*) //' |
		awk -v hz="$(getconf CLK_TCK)" '{ t += $12 + $13 + $14 + $15 } END { printf "%.0f\n", t * 1e9 / hz }'
}

# ------------------------------------------------------------------ servers
# In sessions of their own: a Ctrl-C reaches this script, whose clean-up
# stops them.
setsid "$LOADGEN" udp-echo "127.0.0.1:$P_ECHO" >"$T/udp-echo.log" 2>"$T/udp-echo.err" </dev/null &
PID[echo]=$!

cat > "$T/udp-dante.conf" <<EOF
logoutput: $T/udp-danted.log
internal: 127.0.0.1 port = ${PORT[dante]}
external: 127.0.0.1
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
timeout.negotiate: 30
timeout.io: 0
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8 command: udpassociate }
socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8 command: udpreply }
EOF
declare -A CMD=(
	[dante]="/usr/sbin/danted -f $T/udp-dante.conf"
	[socks5d]="$SOCKS5D -l 127.0.0.1 -p ${PORT[socks5d]} --dns-server 127.0.0.1:9 --admin-socket $T/udp-socks5d.sock -P $((PORT[socks5d] + 100)) --grace 1 -w 2 --anonymous always"
)
: > "$OUT/udp-commands.txt"
echo "echo target: $LOADGEN udp-echo 127.0.0.1:$P_ECHO" >> "$OUT/udp-commands.txt"
for s in dante socks5d; do
	echo "$s: ${CMD[$s]}" >> "$OUT/udp-commands.txt"
	# shellcheck disable=SC2086
	setsid ${CMD[$s]} >/dev/null 2>"$T/udp-$s.err" </dev/null &
	PID[$s]=$!
done
for s in dante socks5d; do
	# up when a UDP association through it carries 10 datagrams, or n/a
	# with the reason (a refusal's reply code, an exit, silence)
	end=$((SECONDS + 20))
	while :; do
		if ! kill -0 "${PID[$s]}" 2>/dev/null; then
			NA[$s]="did not start: $(tail -n 2 "$T/udp-$s.err" | tr '\n' ' ')"
			break
		fi
		err=$("$LOADGEN" -m udp -x "127.0.0.1:${PORT[$s]}" -t "127.0.0.1:$P_ECHO" -c 1 -R 100 -n 10 -d 2 2>&1 >/dev/null) && break
		if [[ $err == *"reply 0x07"* ]]; then
			NA[$s]="not supported (UDP ASSOCIATE answered 0x07, command not supported)"
			break
		elif [[ $err == *"refused: reply"* ]]; then
			NA[$s]="UDP ASSOCIATE refused: ${err#*refused: }"
			break
		fi
		if [ $SECONDS -ge $end ]; then
			NA[$s]="no UDP association through it within 20 s: $err"
			break
		fi
		sleep 0.3
	done
	if [ -n "${NA[$s]:-}" ]; then
		log "$s: n/a (${NA[$s]})"
		stop "$s"
	fi
done

# one run: run_udp SYS SIZE KIND RUN LOADGEN-ARGS...
run_udp() {
	local sys=$1 size=$2 kind=$3 run=$4
	shift 4
	if [ -n "${NA[$sys]:-}" ]; then
		echo "wl=udp sys=$sys size=$size kind=$kind run=$run na=1" >> "$RESULTS"
		return
	fi
	local f="$RAW/udp-$sys-$size-$kind-$run" via=() c0=- c1=- cpu=- rc=0
	[ "$sys" != direct ] && via=(-x "127.0.0.1:${PORT[$sys]}")
	[ "$sys" != direct ] && c0=$(cpu_ns "$sys")
	echo "$LOADGEN" -m udp "${via[@]}" -t "127.0.0.1:$P_ECHO" -c "$UDP_ASSOCS" -l "$size" -d "$DURATION" "$@" > "$f.cmd"
	timeout -k 3 $((${DURATION%.*} + 60)) "$LOADGEN" -m udp "${via[@]}" -t "127.0.0.1:$P_ECHO" \
		-c "$UDP_ASSOCS" -l "$size" -d "$DURATION" "$@" >"$f.out" 2>"$f.err" &
	wait $! || rc=$?
	[ "$sys" != direct ] && c1=$(cpu_ns "$sys") && cpu=$((c1 - c0))
	kill -0 "${PID[echo]}" 2>/dev/null || die "the echo target exited (see $RAW/udp-echo.err)"
	if [ "$sys" != direct ] && ! kill -0 "${PID[$sys]}" 2>/dev/null; then
		NA[$sys]="exited during the $kind run at $size bytes (see build/bench/raw/udp-$sys.err)"
		log "$sys: ${NA[$sys]}"
	fi
	local out
	out=$(tail -n 1 "$f.out")
	echo "wl=udp sys=$sys size=$size kind=$kind run=$run rc=$rc cpu_ns=$cpu $out" >> "$RESULTS"
	log "$sys $size B $kind #$run: ${out:-no output (rc $rc)} cpu_ns=$cpu"
	LAST_RECV_RATE=$(sed -n 's/.*recv_rate=\([0-9]*\).*/\1/p' "$f.out")
}

{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "command: ${BENCH_CMD:-bench/udp.sh} (DURATION=$DURATION RUNS=$RUNS UDP_ASSOCS=$UDP_ASSOCS UDP_WINDOW=$UDP_WINDOW)"
	echo "cpus: $(nproc) ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo))"
	echo "kernel: $(uname -sr)"
	echo "socks5d: $("$SOCKS5D" --version 2>&1 | head -n 1) ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ', work tree modified'))"
	echo "dante: $(/usr/sbin/danted -v 2>&1 | awk '{ print $1, $2; exit }' | sed 's/\.$//') (Debian $(dpkg-query -W -f '${Version}' dante-server 2>/dev/null))"
	echo "socket buffers: rmem_default $(sysctl -n net.core.rmem_default), rmem_max $(sysctl -n net.core.rmem_max)"
} > "$OUT/udp-meta.txt"
cat "$OUT/udp-meta.txt" >&2

for run in $(seq "$RUNS"); do
	proxies="dante socks5d"
	[ $((run % 2)) = 0 ] && proxies="socks5d dante"
	for size in $UDP_SIZES; do
		run_udp direct "$size" window "$run" -w "$UDP_WINDOW"
		rate=${LAST_RECV_RATE:-0}
		[ "$rate" -gt 0 ] || die "direct path carried nothing at $size bytes (see $RAW/udp-direct-$size-window-$run.err)"
		for s in $proxies; do run_udp "$s" "$size" window "$run" -w "$UDP_WINDOW"; done
		run_udp direct "$size" paced "$run" -R "$rate"
		for s in $proxies; do run_udp "$s" "$size" paced "$run" -R "$rate"; done
		for s in $proxies; do run_udp "$s" "$size" half "$run" -R $((rate / 2)); done
	done
done
echo "took: $SECONDS s" >> "$OUT/udp-meta.txt"

for s in "${!NA[@]}"; do echo "$s: ${NA[$s]}"; done > "$OUT/udp-na.txt"
report_args=(udp "$RESULTS" "$OUT")
[ "$UPDATE_DOCS" = 1 ] && report_args+=(--doc "$ROOT/docs/performance.md")
/usr/bin/python3 bench/report.py "${report_args[@]}"
cat "$OUT/udp-tables.md"
