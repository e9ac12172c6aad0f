#!/bin/sh
# Dante (client library + socksify, and the sockd server) WITH GSS-API, built
# from Debian's own source package with Debian's patches.  Debian's binary
# packages are configured --without-gssapi, so neither its socksify nor its
# danted can speak SOCKS5 GSS-API (RFC 1961); the GSS-API integration tests
# need both.
#
#   scripts/build-dante-gssapi.sh [OUTDIR]      (default build/dante-gss)
#
# Produces OUTDIR/bin/socksify, OUTDIR/lib/libdsocksd.so*, OUTDIR/sbin/sockd.
# Does nothing when they exist.  The source comes through apt from the
# mirror the system already uses: a deb-src entry is derived from the
# system's own sources into a private apt state under OUTDIR/apt, so the
# system's apt configuration is left untouched.  Build dependencies are the
# Debian packages of scripts/deps.sh.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/build/dante-gss}
case "$OUT" in /*) ;; *) OUT=$(pwd)/$OUT ;; esac

have_outputs() {
	[ -x "$OUT/bin/socksify" ] && [ -x "$OUT/sbin/sockd" ] &&
		ls "$OUT"/lib/libdsocksd.so* >/dev/null 2>&1
}
have_outputs && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
start=$(date +%s)
APT="$OUT/apt"
SRC="$OUT/src"
LOG="$OUT/log"
mkdir -p "$APT/sourceparts" "$APT/lists/partial" "$SRC" "$LOG"

# deb-src twins of the system's deb entries, one-line and deb822 formats.
: >"$APT/sources.list"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
	[ -f "$f" ] || continue
	sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' "$f" >>"$APT/sources.list"
done
for f in /etc/apt/sources.list.d/*.sources; do
	[ -f "$f" ] || continue
	sed 's/^Types:.*$/Types: deb-src/' "$f" >"$APT/sourceparts/$(basename "$f")"
done

# A private list state: apt-get update here fetches only the Sources indexes.
# (No name under build/ may end in .d: the Makefile includes those.)
set -- -o Dir::Etc::SourceList="$APT/sources.list" \
	-o Dir::Etc::SourceParts="$APT/sourceparts" \
	-o Dir::State::Lists="$APT/lists" \
	-o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache="" \
	-o APT::Sandbox::User=root -o Acquire::Languages=none
if [ -z "$(apt-cache "$@" showsrc dante 2>/dev/null)" ]; then
	echo "build-dante-gssapi: fetching Debian's source indexes" >&2
	$SUDO apt-get "$@" update -qq >"$LOG/apt-update.log" 2>&1 ||
		{ cat "$LOG/apt-update.log" >&2; exit 1; }
fi

cd "$SRC"
dir=$(find . -maxdepth 1 -type d -name 'dante-*' | head -n 1)
if [ -z "$dir" ]; then
	echo "build-dante-gssapi: apt-get source dante" >&2
	# Unpacks with debian/patches applied (dpkg-source -x).
	apt-get "$@" source -qq dante >"$LOG/apt-source.log" 2>&1 ||
		{ cat "$LOG/apt-source.log" >&2; exit 1; }
	dir=$(find . -maxdepth 1 -type d -name 'dante-*' | head -n 1)
fi
cd "$dir"

echo "build-dante-gssapi: building $(basename "$dir") with GSS-API into $OUT" >&2
run() { # LOGNAME CMD...: quiet unless it fails
	l="$LOG/$1.log"; shift
	"$@" >"$l" 2>&1 || { tail -n 40 "$l" >&2; echo "build-dante-gssapi: failed: $*" >&2; exit 1; }
}
# Debian's patches touch configure.ac and the Makefile.am files.
run autoreconf nice autoreconf -fi
run configure nice ./configure --prefix="$OUT" \
	--with-sockd-conf="$OUT/etc/sockd.conf" --with-socks-conf="$OUT/etc/socks.conf" \
	--with-pidfile="$OUT/sockd.pid" --without-upnp --without-pam --without-bsdauth \
	--without-libwrap --disable-static
if ! grep -q '^GSSAPI:[[:space:]]*Enabled' "$LOG/configure.log"; then
	grep -i gssapi "$LOG/configure.log" >&2 || true
	echo "build-dante-gssapi: configure did not enable GSS-API (libkrb5-dev missing?)" >&2
	exit 1
fi
# The client library (dlib, for socksify) and the server only; lib/ (the
# libsocks of explicitly socksified programs) is not needed.
run make nice make -j2 -C dlib
run make-sockd nice make -j2 -C sockd
run install-dlib make -C dlib install
run install-sockd make -C sockd install
run install-bin make -C bin install
# socksify preloads "libdsocksd.so.0" by bare name unless SOCKS_USEFULLPATH
# is set, which finds Debian's library (built without GSS-API) when
# dante-client is installed: this socksify uses its own library by default.
sed -i 's/^SOCKS_USEFULLPATH="${SOCKS_USEFULLPATH:-}"/SOCKS_USEFULLPATH="${SOCKS_USEFULLPATH:-1}"/' \
	"$OUT/bin/socksify"
grep -q '^SOCKS_USEFULLPATH="${SOCKS_USEFULLPATH:-1}"' "$OUT/bin/socksify" ||
	{ echo "build-dante-gssapi: could not make socksify use $OUT/lib" >&2; exit 1; }

"$OUT/sbin/sockd" -vv 2>&1 | grep -q 'gssapi' ||
	{ echo "build-dante-gssapi: $OUT/sbin/sockd lacks GSS-API" >&2; exit 1; }
have_outputs || { echo "build-dante-gssapi: outputs missing under $OUT" >&2; exit 1; }
echo "build-dante-gssapi: done in $(($(date +%s) - start)) s" >&2
