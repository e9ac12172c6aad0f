# Sourced by the single-purpose bench scripts (bufsize.sh, dissect.sh,
# splice.sh): strict mode, the repository root as working directory, a
# scratch directory $T (with $T/www for nginx to serve) that is removed, and
# every background job killed, when the script exits.
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
