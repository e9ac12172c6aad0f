#!/bin/sh
# Install the Debian packages that building and testing socks5d need, when
# any is missing, and the Node packages of the tests into build/node (never
# system-wide).  Idempotent; prints nothing when everything is present.
set -eu

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

PKGS="make gcc clang libclang-rt-14-dev pkg-config libc-ares-dev libcurl4-openssl-dev libssl-dev
libcrypt-dev libsctp-dev lksctp-tools libcmocka-dev libedit-dev
dovecot-pop3d dovecot-imapd dovecot-submissiond vsftpd libpam-pwdfile apache2-utils openssl
nginx-light dnsmasq-base dnsdist unbound knot-resolver knot-resolver-module-http curl python3 python3-pytest python3-socks iproute2 util-linux
dante-client tnftp nodejs prometheus python3-prometheus-client
haproxy dpkg-dev lintian adduser"

# systemd-analyze (the unit file's check) and man (its Documentation= check).
PKGS="$PKGS systemd man-db"
# GSS-API (RFC 1961): the Kerberos library and headers socks5d builds
# against, an MIT KDC for the tests (kdb5_util, krb5kdc; kadmin.local comes
# with the admin server package), kinit, python3-gssapi for the tests' own
# client, and what building Dante with GSS-API from Debian's source package
# takes (scripts/build-dante-gssapi.sh: apt-get source needs dpkg-dev);
# the tests run nc (netcat-openbsd: -N) under Dante's socksify.
PKGS="$PKGS libkrb5-dev krb5-kdc krb5-admin-server krb5-user python3-gssapi
dpkg-dev autoconf automake libtool libtool-bin flex bison netcat-openbsd"
# The kernel relay (sockmap = yes): libbpf and bpftool, which embeds the
# BPF program that clang's BPF target builds as a skeleton.
PKGS="$PKGS libbpf-dev bpftool"
missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing="$missing $p"
	fi
done
# Debian's nodejs comes without npm (other builds of nodejs bring their own).
command -v npm >/dev/null 2>&1 || missing="$missing npm"

if [ -n "$missing" ]; then
	echo "socks5d: installing missing Debian packages:$missing" >&2
	$SUDO apt-get update -qq >/dev/null
	# shellcheck disable=SC2086
	$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The Node SOCKS client the BIND tests drive (tests/integration/bind_client.js),
# pinned, in a directory of the build tree.
NODE_DIR="$(cd "$(dirname "$0")/.." && pwd)/build/node"
if [ ! -f "$NODE_DIR/node_modules/socks/package.json" ]; then
	echo "socks5d: installing the Node package socks into $NODE_DIR" >&2
	mkdir -p "$NODE_DIR"
	npm install --prefix "$NODE_DIR" --no-audit --no-fund --no-save --silent socks@2.8.11 >/dev/null
fi
