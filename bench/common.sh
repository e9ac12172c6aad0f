# Sourced by the single-purpose bench scripts (bufsize.sh, congestion.sh,
# conn.sh, dissect.sh, flat.sh, rules.sh, sockmap.sh, splice.sh): strict
# mode, the repository root as working directory, a scratch directory $T
# (with $T/www for nginx to serve) that is removed, and every background
# job killed, when the script exits.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
T=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$T"' EXIT
mkdir -p "$T/www"
chmod 755 "$T" "$T/www"

# start_nginx PORT CONNECTIONS [HTTP_DIRECTIVES] [PROBE_PATH]: one nginx
# worker (sendfile, no access log) serving $T/www on 127.0.0.1:PORT in the
# background; returns once it answers PROBE_PATH, fails after 10 s.
start_nginx() {
	cat > "$T/nginx.conf" <<NGX
worker_processes 1;
daemon off;
error_log $T/error.log;
pid $T/nginx.pid;
events { worker_connections $2; }
http { access_log off; sendfile on; ${3:-}
       server { listen 127.0.0.1:$1; root $T/www; } }
NGX
	/usr/sbin/nginx -c "$T/nginx.conf" -p "$T" &
	for _ in $(seq 100); do
		curl -s -o /dev/null "http://127.0.0.1:$1/${4:-}" && return 0
		sleep 0.1
	done
	echo "bench: nginx did not answer on 127.0.0.1:$1" >&2
	return 1
}

# A TCP port of 127.0.0.1 that is free now.
free_port() { /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_socks5d NAME BINARY USER:PASS|"" WEB OPTIONS...: a socks5d on a free
# port of 127.0.0.1 (PORT[NAME], its master MASTER[NAME]; the caller
# declares both arrays), ready once a request through it to nginx on
# 127.0.0.1:WEB succeeds (with that login when given); exits the script
# when it does not start.
start_socks5d() {
	local name=$1 bin=$2 login=$3 web=$4 auth=()
	shift 4
	PORT[$name]=$(free_port)
	"$bin" -l 127.0.0.1 -p "${PORT[$name]}" --dns-server 127.0.0.1:9 "$@" \
		>/dev/null 2>"$T/$name.err" &
	MASTER[$name]=$!
	[ -n "$login" ] && auth=(-u "$login")
	for _ in $(seq 100); do
		./build/loadgen -m rate -c 1 -n 1 -d 2 -W -x "127.0.0.1:${PORT[$name]}" \
			-t "127.0.0.1:$web" -p /small "${auth[@]}" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "$(basename "$0"): $name did not start: $(tail -n 2 "$T/$name.err")" >&2
	exit 1
}

# Time on CPU (ns) of a process, its children and all their threads.
tree_cpu_ns() {
	local p f t=0
	for p in "$1" $(cat "/proc/$1/task/"*/children); do
		for f in /proc/"$p"/task/*/schedstat; do
			t=$((t + $(cut -d' ' -f1 "$f" 2>/dev/null || echo 0)))
		done
	done
	echo "$t"
}

# doc_block NAME HEADING TABLE: replace what lies between <!-- NAME:begin -->
# and <!-- NAME:end --> in docs/performance.md with HEADING, a blank line
# and the file TABLE; fails, naming the marker, where the file has none.
doc_block() {
	/usr/bin/python3 - "$1" "$2" "$3" docs/performance.md <<'PY'
import sys
name, heading, table, path = sys.argv[1:]
begin, end = "<!-- %s:begin -->" % name, "<!-- %s:end -->" % name
doc = open(path).read()
if begin not in doc or end not in doc:
    sys.exit("%s has no %s ... %s markers" % (path, begin, end))
block = "%s\n%s\n\n%s\n%s" % (begin, heading, open(table).read().rstrip("\n"), end)
doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
open(path, "w").write(doc)
PY
}
