#!/bin/sh
# Install the Debian packages that building and testing socks5d need, when
# any is missing.  Idempotent; prints nothing when everything is present.
set -eu

PKGS="make gcc clang libclang-rt-14-dev pkg-config libc-ares-dev libcurl4-openssl-dev libssl-dev
libcrypt-dev libsctp-dev lksctp-tools libcmocka-dev libedit-dev
dovecot-pop3d dovecot-imapd dovecot-submissiond vsftpd libpam-pwdfile apache2-utils openssl
nginx-light dnsmasq-base dnsdist unbound knot-resolver knot-resolver-module-http curl python3 python3-pytest python3-socks iproute2 util-linux"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

echo "socks5d: installing missing Debian packages:$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
