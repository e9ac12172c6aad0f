#!/usr/bin/env bash
# Side-by-side benchmark on loopback: direct (no proxy), socks5d, Dante 1.4.2
# (danted) and microsocks 1.0.3, all against one nginx, driven by
# bench/loadgen.  Run as root (`make bench`, or bench/run.sh); about five
# minutes, then bench/udp.sh (UDP=0 skips it), bench/rules.sh (RULES=0
# skips it), bench/conn.sh with STRACE=1 (the connection cost and its system
# calls; CONN=0 skips it) and bench/flat.sh (connection cost with 100,000
# idle sessions held, login cost with 1,000 users; FLAT=0 skips it), about
# twelve more, bench/sockmap.sh (copy, splice and the kernel relay side
# by side; SOCKMAP=0 skips it), about three, and bench/congestion.sh (the
# relay under the machine's TCP congestion control and under cubic, each in
# a network namespace of its own; CONGESTION=0 skips it), about three.  It
# writes:
#   build/bench/results.txt   one line per loadgen run (raw loadgen output
#                             plus the proxy's CPU, memory and descriptors)
#   build/bench/raw/          every loadgen's stdout/stderr, the proxies' logs
#   build/bench/tables.md     the tables (also printed on stdout)
#   docs/bench.png            the plot
#   docs/performance.md       the section between <!-- bench:begin --> and
#                             <!-- bench:end --> (the rest is left alone)
#
# Workloads (each RUNS times, default 3, reported as the median; the second
# round runs the systems in reverse order):
#   a  bulk, 1 stream:     loadgen -m bulk -c 1  -p /big.bin   (1 GiB file)
#   b  bulk, 32 streams:   loadgen -m bulk -c 32 -p /big.bin
#   c  connection rate:    loadgen -m rate -c 64 -p /small     (100 bytes)
#   d  as c with RFC 1929 username/password (not for direct)
#   e  HOLD_N idle sessions held through each proxy: memory and descriptors
#   f  BIG_N (100,000) idle sessions held through socks5d -w BIG_WORKERS
#   g  worker scaling: socks5d -w 1, 2, 4 on b and c
#   h  accept strategy: socks5d -w 2 --accept exclusive vs reuseport on c
# Proxy CPU comes from a cgroup v1 cpuacct group per proxy (the proxy and
# every process it forks), nginx's likewise and the client's from loadgen
# (its own user + system time), so that every run shows the cost of each
# end of the path: a proxy hosts a server's end and a client's end of two
# connections, and direct's nginx + client is that pair's cost.  Memory is the sum of Private_Clean+Private_Dirty
# (smaps_rollup) over the group's processes, descriptors the sum of their
# /proc/PID/fd entries.
#
# Environment (defaults in brackets):
#   SOCKS5D [build/socks5d]  LOADGEN [build/loadgen]
#   DURATION [5] seconds per bulk/rate run      RUNS [3]
#   HOLD_N [2000] sessions in e                 BIG_N [100000] sessions in f (0 skips f)
#   BIG_WORKERS [16] socks5d workers in f       BIG_RAMP [120] seconds to open them at most
#   BIG_HOLD [10] seconds to hold them           BIG_ACCEPT [exclusive] socks5d --accept in f
#   BIG_FILE_MB [1024] size of /big.bin
#   STEPS [abcdef] which of a-f to run (g and h come with b and c)
#   PORT_BASE [21080] first of the ports used (all below 32768, on 127.0.0.1)
#   UPDATE_DOCS [1] 0 leaves docs/ alone
#   NO_CGROUP [0] 1 measures CPU from /proc even where cgroups work
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ -n "${MAKELEVEL:-}" ]; then BENCH_CMD="make bench"; else BENCH_CMD="bench/run.sh"; fi
T_START=$SECONDS

SOCKS5D=${SOCKS5D:-build/socks5d}
LOADGEN=${LOADGEN:-build/loadgen}
DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
HOLD_N=${HOLD_N:-2000}
BIG_N=${BIG_N:-100000}
BIG_WORKERS=${BIG_WORKERS:-16}
BIG_RAMP=${BIG_RAMP:-120}
BIG_HOLD=${BIG_HOLD:-10}
BIG_ACCEPT=${BIG_ACCEPT:-exclusive}
BIG_FILE_MB=${BIG_FILE_MB:-1024}
STEPS=${STEPS:-abcdef}
PORT_BASE=${PORT_BASE:-21080}
UPDATE_DOCS=${UPDATE_DOCS:-1}

OUT=$ROOT/build/bench
DATA=$ROOT/build/bench-data
RESULTS=$OUT/results.txt
RAW=$OUT/raw
PNG=$ROOT/docs/bench.png
DOC=$ROOT/docs/performance.md

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
has_step() { [[ $STEPS == *"$1"* ]]; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get, cgroups, a system user for Dante)"
case $SOCKS5D in /*) ;; *) SOCKS5D=$ROOT/$SOCKS5D ;; esac
case $LOADGEN in /*) ;; *) LOADGEN=$ROOT/$LOADGEN ;; esac
[ -x "$LOADGEN" ] || make -s build/loadgen
[ -x "$SOCKS5D" ] || make -s build/socks5d
[ -x "$SOCKS5D" ] && [ -x "$LOADGEN" ] || die "need $SOCKS5D and $LOADGEN"

# ------------------------------------------------------------------ packages
# Only what is missing, from the Debian mirror.  Services that a package
# would start (danted) are kept from starting with a policy-rc.d that says
# 101 for the length of the install.
need_pkgs=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx)
[ -x /usr/sbin/danted ] || need_pkgs+=(dante-server)
[ -x /usr/bin/microsocks ] || need_pkgs+=(microsocks)
command -v gnuplot >/dev/null || need_pkgs+=(gnuplot-nox)
if [ ${#need_pkgs[@]} -gt 0 ]; then
	log "installing ${need_pkgs[*]}"
	made_policy=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		made_policy=1
	fi
	export DEBIAN_FRONTEND=noninteractive
	mkdir -p "$ROOT/build"
	timeout 600 apt-get install -y -q "${need_pkgs[@]}" >"$ROOT/build/bench-apt.log" 2>&1 ||
		{ timeout 300 apt-get update -q >>"$ROOT/build/bench-apt.log" 2>&1 &&
		  timeout 600 apt-get install -y -q "${need_pkgs[@]}" >>"$ROOT/build/bench-apt.log" 2>&1; } ||
		{ [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d; die "apt-get install failed, see build/bench-apt.log"; }
	if [ $made_policy = 1 ]; then
		rm -f /usr/sbin/policy-rc.d
		trap - EXIT
	fi
fi
v=$(dpkg-query -W -f '${Version}' dante-server 2>/dev/null || true)
[[ $v == 1.4.2* ]] || log "warning: dante-server is $v, not 1.4.2"
v=$(dpkg-query -W -f '${Version}' microsocks 2>/dev/null || true)
[[ $v == 1.0.3* ]] || log "warning: microsocks is $v, not 1.0.3"
# No system danted may run beside ours (it would listen on 1080 and hold
# CPU): stop the service if one was started anyway.
if [ -d /run/systemd/system ] && systemctl is-active --quiet danted 2>/dev/null; then
	systemctl stop danted || true
fi
for pf in /run/danted.pid /var/run/danted.pid; do
	if [ -s "$pf" ] && kill -0 "$(cat "$pf")" 2>/dev/null; then
		log "stopping the system danted (pid $(cat "$pf"))"
		/etc/init.d/danted stop >/dev/null 2>&1 || kill "$(cat "$pf")" || true
	fi
done

# ------------------------------------------------------------------ set-up
mkdir -p "$OUT" "$RAW" "$DATA/www"
rm -f "$RAW"/* "$RESULTS"
T=$(mktemp -d /tmp/s5bench.XXXXXX)
chmod 755 "$T"

CG_BASE=/sys/fs/cgroup/cpuacct
USE_CG=0
if [ "${NO_CGROUP:-0}" = 0 ] && [ -d "$CG_BASE" ] && mkdir "$CG_BASE/s5bench-probe.$$" 2>/dev/null; then
	rmdir "$CG_BASE/s5bench-probe.$$"
	USE_CG=1
else
	log "no cgroup v1 cpuacct: proxy CPU from /proc utime+stime of the process tree"
fi
CLK_TCK=$(getconf CLK_TCK)
if [ $USE_CG = 1 ]; then
	# groups left over from a run that was killed (SIGKILL: no clean-up)
	for cg in "$CG_BASE"/s5bench-*; do
		[ -d "$cg" ] || continue
		log "stopping the processes left in $cg"
		for p in $(cat "$cg/cgroup.procs"); do kill -KILL "$p" 2>/dev/null || true; done
		for i in $(seq 30); do rmdir "$cg" 2>/dev/null && break; sleep 0.1; done
	done
fi

declare -A GROUP_ROOT=()   # group name -> pid of its first process
declare -a BG_PIDS=()      # loadgens in the background

# bg CMD...: runs CMD in the background and waits for it: unlike a command in
# the foreground, the wait returns at once on Ctrl-C or SIGTERM, so the trap
# below runs (and stops CMD) without waiting for CMD to end.
bg() {
	"$@" &
	local p=$! rc=0
	BG_PIDS+=("$p")
	wait "$p" || rc=$?
	local keep=() q
	for q in "${BG_PIDS[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
	BG_PIDS=(${keep[@]+"${keep[@]}"})
	return $rc
}

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	for p in ${BG_PIDS[@]+"${BG_PIDS[@]}"}; do kill -TERM "$p" 2>/dev/null; done
	for name in "${!GROUP_ROOT[@]}"; do group_stop "$name"; done
	for p in ${BG_PIDS[@]+"${BG_PIDS[@]}"}; do wait "$p" 2>/dev/null; done
	cp -f "$T"/*.log "$T"/*.err "$T"/*.conf "$RAW"/ 2>/dev/null
	rm -rf "$T"
	exit $rc
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log terminated; exit 143' TERM

# --- process groups: a cgroup per proxy (fallback: the process tree)
cg_dir() { echo "$CG_BASE/s5bench-$1"; }
tree_pids() {
	local p=$1 c
	[ -d "/proc/$p" ] || return 0
	echo "$p"
	for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do tree_pids "$c"; done
}
group_pids() {
	if [ $USE_CG = 1 ]; then
		cat "$(cg_dir "$1")/cgroup.procs" 2>/dev/null || true
	elif [ -n "${GROUP_ROOT[$1]:-}" ]; then
		tree_pids "${GROUP_ROOT[$1]}"
	fi
}
# group_start NAME CMD...: runs CMD in the background in its own group; its
# stderr goes to $T/NAME.err, its stdout (socks5d's access log) nowhere.  In
# a session of its own (setsid): a Ctrl-C in the terminal reaches this
# script, whose clean-up stops the servers, not the servers themselves.
group_start() {
	local name=$1
	shift
	if [ $USE_CG = 1 ]; then
		local cg
		cg=$(cg_dir "$name")
		[ -d "$cg" ] || mkdir "$cg"
		# the wrapper joins the group before it becomes the proxy, so every
		# process the proxy forks is in it too
		setsid sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" "$@" >/dev/null 2>"$T/$name.err" </dev/null &
	else
		setsid "$@" >/dev/null 2>"$T/$name.err" </dev/null &
	fi
	GROUP_ROOT[$name]=$!
}
group_alive() { [ -n "${GROUP_ROOT[$1]:-}" ] && kill -0 "${GROUP_ROOT[$1]}" 2>/dev/null; }
group_stop() {
	local name=$1 root=${GROUP_ROOT[$1]:-} i pids
	[ -n "$root" ] || return 0
	kill -TERM "$root" 2>/dev/null || true
	for i in $(seq 50); do
		pids=$(group_pids "$name")
		[ -z "$pids" ] && break
		[ $USE_CG = 0 ] && ! kill -0 "$root" 2>/dev/null && break
		sleep 0.1
	done
	for p in $(group_pids "$name"); do kill -KILL "$p" 2>/dev/null || true; done
	wait "$root" 2>/dev/null || true
	if [ $USE_CG = 1 ]; then
		for i in $(seq 20); do rmdir "$(cg_dir "$name")" 2>/dev/null && break; sleep 0.1; done
	fi
	unset "GROUP_ROOT[$name]"
}
group_cpu_ns() {
	if [ $USE_CG = 1 ]; then
		cat "$(cg_dir "$1")/cpuacct.usage"
	else
		local files=() p
		for p in $(group_pids "$1"); do files+=("/proc/$p/stat"); done
		# utime stime of each process, plus cutime cstime (reaped children)
		{ cat "${files[@]}" 2>/dev/null || true; } | sed 's/.*) //' |
			awk -v hz="$CLK_TCK" '{ t += $12 + $13 + $14 + $15 } END { printf "%.0f\n", t * 1e9 / hz }'
	fi
}
group_mem_kib() { # private (unshared) memory of all processes in the group
	local files=() p
	for p in $(group_pids "$1"); do files+=("/proc/$p/smaps_rollup"); done
	[ ${#files[@]} -gt 0 ] || { echo 0; return; }
	{ cat "${files[@]}" 2>/dev/null || true; } | awk '/^Private_(Clean|Dirty):/ { s += $2 } END { print s + 0 }'
}
# descriptors of one process (0 once it is gone)
nfds() { { ls -U "/proc/$1/fd" 2>/dev/null || true; } | wc -l; }
group_fds() {
	local n=0 p
	for p in $(group_pids "$1"); do n=$((n + $(nfds "$p"))); done
	echo $n
}
group_nprocs() { { group_pids "$1" || true; } | wc -l; }
group_max() { # largest VmRSS (KiB) and descriptor count of one process
	local best_rss=0 best_fds=0 p r f
	for p in $(group_pids "$1"); do
		r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
		f=$(nfds "$p")
		[ "${r:-0}" -gt $best_rss ] && best_rss=$r
		[ "$f" -gt $best_fds ] && best_fds=$f
		:
	done
	echo "$best_rss $best_fds"
}

# the kernel's memory (slab, which holds the sockets), for the whole machine
kernel_kib() { awk '/^(Slab|KernelStack|PageTables):/ { s += $2 } END { print s }' /proc/meminfo; }
port_free() { ! ss -Htln "sport = :$1" | grep -q .; }
wait_port() { # wait_port PORT SECONDS
	local end=$((SECONDS + $2))
	while [ $SECONDS -lt $end ]; do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# ------------------------------------------------------------------ data
big=$DATA/www/big.bin
want=$((BIG_FILE_MB * 1024 * 1024))
if [ "$(stat -c %s "$big" 2>/dev/null || echo 0)" != "$want" ]; then
	log "creating $big ($BIG_FILE_MB MiB from /dev/urandom, once)"
	bg head -c "$want" /dev/urandom > "$big.tmp"
	mv "$big.tmp" "$big"
fi
head -c 100 /dev/zero | tr '\0' 'x' > "$DATA/www/small"
chmod 755 "$DATA" "$DATA/www"
chmod 644 "$big" "$DATA/www/small"

# ------------------------------------------------------------------ ports
P_NGINX=$PORT_BASE
declare -A PORT=(
	[socks5d]=$((PORT_BASE + 1)) [socks5d-auth]=$((PORT_BASE + 2)) [socks5d-w1]=$((PORT_BASE + 3))
	[socks5d-w4]=$((PORT_BASE + 4)) [socks5d-reuseport]=$((PORT_BASE + 5)) [socks5d-big]=$((PORT_BASE + 6))
	[dante]=$((PORT_BASE + 7)) [dante-auth]=$((PORT_BASE + 8))
	[microsocks]=$((PORT_BASE + 9)) [microsocks-auth]=$((PORT_BASE + 10))
)
for p in "$P_NGINX" "${PORT[@]}"; do
	port_free "$p" || die "port $p is in use (set PORT_BASE)"
	port_free $((p + 100)) || die "port $((p + 100)) is in use (set PORT_BASE)"  # socks5d -P
done
[ $((PORT_BASE + 111)) -lt 32768 ] || die "PORT_BASE must stay below the ephemeral range"
NTARGETS=8
TARGETS=$(for i in $(seq $NTARGETS); do printf '127.0.1.%d:%d,' "$i" "$P_NGINX"; done)
TARGETS=${TARGETS%,}
SOURCES=$(for i in $(seq 2 9); do printf '127.0.0.%d,' "$i"; done)
SOURCES=${SOURCES%,}

# ------------------------------------------------------------------ nginx
# Eight workers, each with its own SO_REUSEPORT socket on 127.0.1.1-8 (the
# many-target addresses of the hold test) and on 127.0.0.1, room for 19,000
# connections each; idle connections that have sent no request are kept for
# 10 minutes (client_header_timeout).
NG=$T/nginx
mkdir -p "$NG/logs" "$NG/tmp"
{
	echo "daemon off; master_process on; worker_processes 8; user root;"
	echo "pid $NG/nginx.pid; error_log $NG/logs/error.log warn;"
	echo "worker_rlimit_nofile 20000;"
	echo "events { worker_connections 19000; use epoll; }"
	echo "http {"
	echo "  access_log off; sendfile on; tcp_nopush on; default_type application/octet-stream;"
	echo "  keepalive_timeout 600s; keepalive_requests 1000000; client_header_timeout 600s; send_timeout 600s;"
	echo "  client_body_temp_path $NG/tmp/body; proxy_temp_path $NG/tmp/proxy; fastcgi_temp_path $NG/tmp/fcgi;"
	echo "  uwsgi_temp_path $NG/tmp/uwsgi; scgi_temp_path $NG/tmp/scgi;"
	echo "  server {"
	echo "    listen 127.0.0.1:$P_NGINX reuseport backlog=4096;"
	for i in $(seq $NTARGETS); do echo "    listen 127.0.1.$i:$P_NGINX reuseport backlog=4096;"; done
	echo "    root $DATA/www;"
	echo "  }"
	echo "}"
} > "$NG/nginx.conf"
group_start nginx /usr/sbin/nginx -p "$NG" -c "$NG/nginx.conf" -e "$NG/logs/error.log"
wait_port "$P_NGINX" 10 || die "nginx did not start: $(cat "$NG/logs/error.log" "$T/nginx.err" 2>/dev/null)"

# ------------------------------------------------------------------ proxies
# Dante's username method checks the system's accounts: the auth run uses a
# dedicated system user s5bench (no home, no login shell) with the password
# benchpass, created here with useradd and chpasswd only if it is absent.
DANTE_USER=s5bench
DANTE_AUTH_NA=""
if ! id "$DANTE_USER" >/dev/null 2>&1; then
	if useradd --system --no-create-home --shell /usr/sbin/nologin "$DANTE_USER" 2>>"$T/useradd.err" &&
		echo "$DANTE_USER:benchpass" | chpasswd 2>>"$T/useradd.err"; then
		log "created system user $DANTE_USER for Dante's username method"
	else
		DANTE_AUTH_NA="could not create the system user $DANTE_USER"
	fi
fi

declare -A LG_AUTH=([socks5d-auth]="bench:benchpass" [dante-auth]="$DANTE_USER:benchpass" [microsocks-auth]="bench:benchpass")
declare -A NA=()   # system -> why it has no numbers

socks5d_cmd() { # socks5d_cmd NAME OPTIONS...
	local name=$1
	shift
	echo "$SOCKS5D" -l 127.0.0.1 -p "${PORT[$name]}" --dns-server 127.0.0.1:9 \
		--admin-socket "$T/$name.sock" -P $((PORT[$name] + 100)) --grace 1 "$@"
}
dante_conf() { # dante_conf NAME METHOD
	cat > "$T/$1.conf" <<EOF
logoutput: $T/$1-danted.log
internal: 127.0.0.1 port = ${PORT[$1]}
external: 127.0.0.1
clientmethod: none
socksmethod: $2
user.privileged: root
user.unprivileged: nobody
timeout.negotiate: 30
timeout.io: 0
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8 command: connect }
EOF
}

start_proxy() { # start_proxy NAME: start it and check one SOCKS request through it
	local name=$1 cmd=()
	case $name in
	socks5d) read -ra cmd <<<"$(socks5d_cmd "$name" -w 2 --anonymous always)" ;;
	socks5d-w1) read -ra cmd <<<"$(socks5d_cmd "$name" -w 1 --anonymous always)" ;;
	socks5d-w4) read -ra cmd <<<"$(socks5d_cmd "$name" -w 4 --anonymous always)" ;;
	socks5d-reuseport) read -ra cmd <<<"$(socks5d_cmd "$name" -w 2 --anonymous always --accept reuseport)" ;;
	socks5d-auth) read -ra cmd <<<"$(socks5d_cmd "$name" -w 2 -u bench:benchpass --anonymous never)" ;;
	socks5d-big) read -ra cmd <<<"$(socks5d_cmd "$name" -w "$BIG_WORKERS" --anonymous always --accept "$BIG_ACCEPT")" ;;
	dante) dante_conf "$name" none; cmd=(/usr/sbin/danted -f "$T/$name.conf") ;;
	dante-auth)
		if [ -n "$DANTE_AUTH_NA" ]; then NA[$name]=$DANTE_AUTH_NA; return; fi
		dante_conf "$name" username; cmd=(/usr/sbin/danted -f "$T/$name.conf") ;;
	microsocks) cmd=(/usr/bin/microsocks -i 127.0.0.1 -p "${PORT[$name]}") ;;
	microsocks-auth) cmd=(/usr/bin/microsocks -i 127.0.0.1 -p "${PORT[$name]}" -u bench -P benchpass) ;;
	*) die "unknown system $name" ;;
	esac
	echo "$name: ${cmd[*]}" >> "$OUT/commands.txt"
	group_start "$name" "${cmd[@]}"
	local auth=() end=$((SECONDS + 20)) ok=0
	[ -n "${LG_AUTH[$name]:-}" ] && auth=(-u "${LG_AUTH[$name]}")
	while [ $SECONDS -lt $end ]; do
		if ! group_alive "$name"; then
			NA[$name]="did not start: $(tail -n 2 "$T/$name.err" | tr '\n' ' ')"
			break
		fi
		if "$LOADGEN" -m rate -x "127.0.0.1:${PORT[$name]}" -t "127.0.1.1:$P_NGINX" "${auth[@]}" -W \
			-c 1 -n 1 -d 2 -p /small >/dev/null 2>&1; then
			ok=1
			break
		fi
		sleep 0.2
	done
	if [ $ok = 0 ] && [ -z "${NA[$name]:-}" ]; then
		NA[$name]="no SOCKS5 CONNECT through it within 20 s"
	fi
	if [ $name = socks5d-reuseport ] && [ -z "${NA[$name]:-}" ] && ! grep -qi reuseport "$T/$name.err"; then
		NA[$name]="--accept reuseport not reported by socks5d (ignored?)"
	fi
	if [ -n "${NA[$name]:-}" ]; then
		log "$name: n/a (${NA[$name]})"
		group_stop "$name"
	fi
}

# Every client waits for each SOCKS answer before its next message (-W), as
# most clients do: microsocks reads one message at a time and would lose a
# pipelined request.
lg_args() { # loadgen arguments that route through SYSTEM
	local sys=$1
	if [ "$sys" != direct ]; then
		echo "-W -x 127.0.0.1:${PORT[$sys]}"
		[ -n "${LG_AUTH[$sys]:-}" ] && echo "-u ${LG_AUTH[$sys]}"
	fi
	return 0
}

# one bulk or rate run: run_load WL SYS RUN LOADGEN-ARGS...
run_load() {
	local wl=$1 sys=$2 run=$3
	shift 3
	if [ -n "${NA[$sys]:-}" ]; then
		echo "wl=$wl sys=$sys run=$run na=1" >> "$RESULTS"
		return
	fi
	local c0=- c1=- n0 n1 out rc=0 f="$RAW/$wl-$sys-$run"
	[ "$sys" != direct ] && c0=$(group_cpu_ns "$sys")
	n0=$(group_cpu_ns nginx)
	echo "$LOADGEN" "$@" -t "$TARGETS" $(lg_args "$sys") > "$f.cmd"
	# shellcheck disable=SC2046
	bg timeout -k 3 $((${DURATION%.*} + 30)) "$LOADGEN" "$@" -t "$TARGETS" $(lg_args "$sys") >"$f.out" 2>"$f.err" || rc=$?
	[ "$sys" != direct ] && c1=$(group_cpu_ns "$sys")
	n1=$(group_cpu_ns nginx)
	out=$(tail -n 1 "$f.out")
	group_alive nginx || die "nginx exited during $wl $sys (see $RAW/nginx.err)"
	if [ "$sys" != direct ] && ! group_alive "$sys"; then
		NA[$sys]="exited during workload $wl (see build/bench/raw/$sys.err)"
		log "$sys: ${NA[$sys]}"
		cp -f "$T/$sys.err" "$RAW/" 2>/dev/null || true
	fi
	local cpu=-
	[ "$c0" != - ] && cpu=$((c1 - c0))
	echo "wl=$wl sys=$sys run=$run rc=$rc cpu_ns=$cpu nginx_cpu_ns=$((n1 - n0)) $out" >> "$RESULTS"
	log "$wl $sys #$run: ${out:-no output (rc $rc)} cpu_ns=$cpu nginx_cpu_ns=$((n1 - n0))"
}

# HOLD_N sessions held through SYS: run_hold SYS RUN.  The proxy is started
# afresh for each run, so its growth counts what the sessions cost, not
# what an earlier workload left (caches, spare buffers, idle children).
run_hold() {
	local sys=$1 run=$2
	if [ -z "${NA[$sys]:-}" ]; then
		group_stop "$sys"
		start_proxy "$sys"
	fi
	if [ -n "${NA[$sys]:-}" ]; then
		echo "wl=e sys=$sys run=$run na=1" >> "$RESULTS"
		return
	fi
	local f="$RAW/e-$sys-$run" m0 fd0 m1 fd1 np rc=0 end
	sleep 1
	m0=$(group_mem_kib "$sys")
	fd0=$(group_fds "$sys")
	# shellcheck disable=SC2046
	timeout -k 30 180 "$LOADGEN" -m hold -c "$HOLD_N" -k 128 -r 60 -d 120 -t "$TARGETS" -s "$SOURCES" \
		$(lg_args "$sys") >"$f.out" 2>"$f.err" &
	local lg=$!
	BG_PIDS+=("$lg")
	end=$((SECONDS + 70))
	while [ $SECONDS -lt $end ] && ! grep -qs "ramp done" "$f.err" && kill -0 $lg 2>/dev/null; do sleep 0.2; done
	sleep 2
	m1=$(group_mem_kib "$sys")
	fd1=$(group_fds "$sys")
	np=$(group_nprocs "$sys")
	kill -TERM $lg 2>/dev/null || true
	wait $lg || rc=$?
	BG_PIDS=()
	echo "wl=e sys=$sys run=$run rc=$rc sessions=$HOLD_N mem0_kib=$m0 mem1_kib=$m1 fd0=$fd0 fd1=$fd1 procs=$np $(tail -n 1 "$f.out")" >> "$RESULTS"
	log "e $sys #$run: $(tail -n 1 "$f.out") mem ${m0}->${m1} KiB fds ${fd0}->${fd1} procs $np"
}

# ------------------------------------------------------------------ facts
{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "command: $BENCH_CMD (DURATION=$DURATION RUNS=$RUNS HOLD_N=$HOLD_N BIG_N=$BIG_N BIG_WORKERS=$BIG_WORKERS STEPS=$STEPS)"
	echo "cpus: $(nproc) ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo))"
	echo "kernel: $(uname -sr)"
	echo "os: $(. /etc/os-release; echo "$PRETTY_NAME")"
	echo "socks5d: $("$SOCKS5D" --version 2>&1 | head -n 1) ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ', work tree modified'))"
	echo "nginx: $(/usr/sbin/nginx -v 2>&1 | sed 's/.*: //')"
	echo "dante: $(/usr/sbin/danted -v 2>&1 | awk '{ print $1, $2; exit }' | sed 's/\.$//') (Debian $(dpkg-query -W -f '${Version}' dante-server 2>/dev/null))"
	echo "microsocks: $(dpkg-query -W -f '${Version}' microsocks 2>/dev/null)"
	echo "fd limit: $(ulimit -Hn) per process; fs.file-max $(sysctl -n fs.file-max); somaxconn $(sysctl -n net.core.somaxconn); ports $(sysctl -n net.ipv4.ip_local_port_range | tr '\t' '-')"
	echo "tcp: congestion control $(sysctl -n net.ipv4.tcp_congestion_control), loopback qdisc $(tc qdisc show dev lo 2>/dev/null | awk 'NR == 1 { print $2 }'), TIME_WAIT at start $(awk '/^TCP:/ { for (i = 1; i < NF; i++) if ($i == "tw") print $(i + 1) }' /proc/net/sockstat) (max $(sysctl -n net.ipv4.tcp_max_tw_buckets))"
	echo "cpu accounting: $([ $USE_CG = 1 ] && echo 'cgroup v1 cpuacct' || echo '/proc utime+stime')"
	scheme=$(awk -F: -v u="$DANTE_USER" '$1 == u { split($2, f, "$"); print f[2] }' /etc/shadow 2>/dev/null)
	case $scheme in y) scheme="yescrypt" ;; 6) scheme="sha512crypt" ;; 5) scheme="sha256crypt" ;; 2*) scheme="bcrypt" ;; esac
	echo "dante auth: system account $DANTE_USER, password hash ${scheme:-?}, checked by danted on every connection"
} > "$OUT/meta.txt"
: > "$OUT/commands.txt"
echo "nginx: /usr/sbin/nginx -c $NG/nginx.conf (8 workers, reuseport)" >> "$OUT/commands.txt"
cat "$OUT/meta.txt" >&2

# ------------------------------------------------------------------ a-e, g, h
SYS_A="direct socks5d dante microsocks"
SYS_B="direct socks5d socks5d-w1 socks5d-w4 dante microsocks"
SYS_C="direct socks5d socks5d-w1 socks5d-w4 socks5d-reuseport dante microsocks"
SYS_D="socks5d-auth dante-auth microsocks-auth"
SYS_E="socks5d dante microsocks"
if [[ $STEPS =~ [a-e] ]]; then
	for s in socks5d socks5d-w1 socks5d-w4 socks5d-reuseport socks5d-auth dante dante-auth microsocks microsocks-auth; do
		start_proxy "$s"
	done
	log "proxies up: ${!GROUP_ROOT[*]}"
fi
order() { # the systems in order on odd runs, reversed on even ones
	local run=$1
	shift
	if [ $((run % 2)) = 1 ]; then echo "$@"; else echo "$@" | tr ' ' '\n' | tac | tr '\n' ' '; fi
}
for run in $(seq "$RUNS"); do
	if has_step a; then for s in $(order "$run" $SYS_A); do run_load a "$s" "$run" -m bulk -c 1 -d "$DURATION" -p /big.bin; done; fi
	if has_step b; then for s in $(order "$run" $SYS_B); do run_load b "$s" "$run" -m bulk -c 32 -d "$DURATION" -p /big.bin; done; fi
	if has_step c; then for s in $(order "$run" $SYS_C); do run_load c "$s" "$run" -m rate -c 64 -d "$DURATION" -p /small -s "$SOURCES"; done; fi
	if has_step d; then for s in $(order "$run" $SYS_D); do run_load d "$s" "$run" -m rate -c 64 -d "$DURATION" -p /small -s "$SOURCES"; done; fi
done
if has_step e; then
	for run in $(seq "$RUNS"); do for s in $(order "$run" $SYS_E); do run_hold "$s" "$run"; done; done
fi
for name in "${!GROUP_ROOT[@]}"; do [ "$name" = nginx ] || group_stop "$name"; done

# ------------------------------------------------------------------ f
# BIG_N idle sessions through socks5d.  A session costs socks5d two
# descriptors and a process may have 20,000, so BIG_WORKERS workers share
# them (--accept exclusive: a worker out of descriptors pauses accepting and
# the others take over; BIG_ACCEPT=reuseport tries the other strategy).  Loadgen processes of at most 12,500 sessions each
# (one process cannot hold more than ~19,900 sockets), each from its own
# source address 127.0.0.N (bound with IP_BIND_ADDRESS_NO_PORT), and the
# proxy's outbound connections spread over 8 nginx addresses 127.0.1.1-8:
# every (source, destination) address pair stays well below the 28,232
# ports of the ephemeral range.  Opening is paced (64 handshakes in flight
# per loadgen) and bounded by BIG_RAMP seconds.
if has_step f && [ "$BIG_N" -gt 0 ]; then
	per=12500
	lim=$(ulimit -Hn)
	[ "$lim" != unlimited ] && [ $((lim - 200)) -lt $per ] && per=$((lim - 200))
	procs=$(((BIG_N + per - 1) / per))
	[ "$procs" -le 200 ] || die "BIG_N too large"
	per=$(((BIG_N + procs - 1) / procs))
	need=$((BIG_N * 8 + 100000))
	[ "$(sysctl -n fs.file-max)" -ge $need ] || log "warning: fs.file-max below $need"
	start_proxy socks5d-big
	if [ -z "${NA[socks5d-big]:-}" ]; then
		sleep 1
		m0=$(group_mem_kib socks5d-big)
		fd0=$(group_fds socks5d-big)
		k0=$(kernel_kib)
		log "f: $BIG_N sessions through socks5d -w $BIG_WORKERS --accept $BIG_ACCEPT from $procs loadgens"
		lgs=()
		t0=$SECONDS
		for i in $(seq 0 $((procs - 1))); do
			n=$per
			[ $(((i + 1) * per)) -gt "$BIG_N" ] && n=$((BIG_N - i * per))
			src="127.0.$((2 + i / 250)).$((2 + i % 250))"
			timeout -k 60 $((BIG_RAMP + BIG_HOLD + 120)) "$LOADGEN" -m hold -W -x "127.0.0.1:${PORT[socks5d-big]}" \
				-t "$TARGETS" -s "$src" -c "$n" -k 64 -r "$BIG_RAMP" -d 600 \
				>"$RAW/f-$i.out" 2>"$RAW/f-$i.err" &
			lgs+=($!)
			BG_PIDS+=($!)
		done
		end=$((SECONDS + BIG_RAMP + 15))
		while [ $SECONDS -lt $end ]; do
			done_n=$(cat "$RAW"/f-*.err 2>/dev/null | grep -c "ramp done" || true)
			[ "$done_n" -ge "$procs" ] && break
			sleep 1
		done
		ramp_s=$((SECONDS - t0))
		log "f: ramp over after ${ramp_s} s ($(cat "$RAW"/f-*.err | grep -c "ramp done" || true)/$procs loadgens done); holding $BIG_HOLD s"
		bg sleep "$BIG_HOLD"
		m1=$(group_mem_kib socks5d-big)
		fd1=$(group_fds socks5d-big)
		read -r maxrss maxfds <<<"$(group_max socks5d-big)"
		np=$(group_nprocs socks5d-big)
		for p in $(group_pids socks5d-big); do
			echo "$p $(nfds "$p") fds $(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true) KiB"
		done > "$RAW/f-socks5d-processes.txt"
		# descriptors of the least and the most loaded worker (not the master)
		read -r minw maxw <<<"$(awk -v m="${GROUP_ROOT[socks5d-big]}" '$1 != m { if (min == "" || $2 < min) min = $2; if ($2 > max) max = $2 } END { print min + 0, max + 0 }' "$RAW/f-socks5d-processes.txt")"
		tcp_est=$(ss -Htn state established "( sport = :${PORT[socks5d-big]} )" | wc -l)
		k1=$(kernel_kib)
		for p in "${lgs[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
		for p in "${lgs[@]}"; do wait "$p" 2>/dev/null || true; done
		BG_PIDS=()
		sum=$(cat "$RAW"/f-*.out | awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] != "mode") s[kv[1]] += kv[2] } }
			END { printf "established=%d held=%d failed=%d dropped=%d", s["established"], s["held"], s["failed"], s["dropped"] }')
		max_ramp=$(cat "$RAW"/f-*.out | sed -n 's/.*ramp_seconds=\([0-9.]*\).*/\1/p' | sort -n | tail -n 1)
		echo "wl=f sys=socks5d run=1 hold_s=$BIG_HOLD sessions=$BIG_N workers=$BIG_WORKERS accept=$BIG_ACCEPT loadgens=$procs mem0_kib=$m0 mem1_kib=$m1 fd0=$fd0 fd1=$fd1 procs=$np max_rss_kib=$maxrss max_fds=$maxfds worker_fds_min=$minw worker_fds_max=$maxw proxy_established=$tcp_est ramp_seconds=${max_ramp:-$ramp_s} kernel0_kib=$k0 kernel1_kib=$k1 $sum" >> "$RESULTS"
		log "f: $sum mem ${m0}->${m1} KiB fds ${fd0}->${fd1} largest worker ${maxrss} KiB/${maxfds} fds"
		grep -h "warn\|error" "$T/socks5d-big.err" | sort | uniq -c | sort -rn | head -n 5 >&2 || true
		group_stop socks5d-big
	else
		echo "wl=f sys=socks5d run=1 na=1" >> "$RESULTS"
	fi
fi
group_stop nginx
echo "took: $((SECONDS - T_START)) s" >> "$OUT/meta.txt"

# ------------------------------------------------------------------ report
for s in "${!NA[@]}"; do echo "$s: ${NA[$s]}"; done > "$OUT/na.txt"
report_args=("$RESULTS" "$OUT")
[ "$UPDATE_DOCS" = 1 ] && report_args+=(--doc "$DOC" --png docs/bench.png)
/usr/bin/python3 bench/report.py "${report_args[@]}"
if [ "$UPDATE_DOCS" = 1 ]; then
	gnuplot -e "datadir='$OUT'; outfile='$PNG'" bench/plot.gp 2>"$OUT/gnuplot.err" ||
		log "gnuplot failed: $(head -n 3 "$OUT/gnuplot.err")"
fi
cat "$OUT/tables.md"
[ "${UDP:-1}" = 0 ] || BENCH_CMD=$BENCH_CMD SOCKS5D=$SOCKS5D LOADGEN=$LOADGEN DURATION=$DURATION RUNS=$RUNS UPDATE_DOCS=$UPDATE_DOCS bench/udp.sh
[ "${RULES:-1}" = 0 ] || bench/rules.sh
[ "${CONN:-1}" = 0 ] || SOCKS5D=$SOCKS5D DURATION=$DURATION STRACE=1 bench/conn.sh
[ "${FLAT:-1}" = 0 ] || SOCKS5D=$SOCKS5D DURATION=$DURATION bench/flat.sh
# The relays side by side (copy, splice, sockmap), machine CPU per GB.
[ "${SOCKMAP:-1}" = 0 ] || [ "$(id -u)" != 0 ] || UPDATE_DOCS=$UPDATE_DOCS bench/sockmap.sh
# The relay's cost under the machine's congestion control and under cubic.
[ "${CONGESTION:-1}" = 0 ] || [ "$(id -u)" != 0 ] || UPDATE_DOCS=$UPDATE_DOCS RUNS=$RUNS DURATION=$DURATION bench/congestion.sh
