#!/bin/sh
# What `make check-vm` needs, installed or fetched when missing (idempotent,
# quiet when everything is there): qemu (TCG emulation is enough),
# busybox-static, and a Debian 6.1 kernel with SCTP as a module, unpacked
# into VMDIR/kernel: vmlinux (uncompressed: a PVH boot skips emulating the
# decompressor) and the five modules SCTP needs.
#   scripts/vm-deps.sh [VMDIR]     (default build/vm)
set -eu
VM=${1:-build/vm}
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

missing=""
for p in qemu-system-x86 busybox-static xz-utils; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "vm-deps: installing$missing" >&2
	$SUDO apt-get update -qq >/dev/null
	# shellcheck disable=SC2086
	$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

[ -f "$VM/kernel/vmlinux" ] && [ -f "$VM/kernel/modules/sctp.ko" ] && exit 0

mkdir -p "$VM"
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
	$SUDO apt-get update -qq >/dev/null
	pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$pkg" ] || { echo "vm-deps: no linux-image-6.x package known to apt" >&2; exit 1; }
deb=$(ls -t "$VM/${pkg}"_*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
	echo "vm-deps: downloading $pkg" >&2
	# A stale package list may name a version the mirror no longer has:
	# refresh it once and retry.
	(cd "$VM" && apt-get download -o APT::Sandbox::User=root "$pkg" >/dev/null 2>&1) ||
		{ $SUDO apt-get update -qq >/dev/null &&
		  (cd "$VM" && apt-get download -o APT::Sandbox::User=root "$pkg" >/dev/null); }
	deb=$(ls -t "$VM/${pkg}"_*.deb | head -n 1)
fi

tmp="$VM/kernel.tmp"
rm -rf "$tmp"
mkdir -p "$tmp/modules"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*' \
	'./lib/modules/*/kernel/net/sctp/sctp.ko*' './lib/modules/*/kernel/net/ipv4/udp_tunnel.ko*' \
	'./lib/modules/*/kernel/net/ipv6/ip6_udp_tunnel.ko*' './lib/modules/*/kernel/lib/libcrc32c.ko*' \
	'./lib/modules/*/kernel/crypto/crc32c_generic.ko*'
for ko in $(find "$tmp/lib" -name '*.ko*'); do
	base=$(basename "$ko")
	case "$base" in
	*.ko.xz) xz -dc "$ko" >"$tmp/modules/${base%.xz}" ;;
	*.ko.zst) zstd -qdc "$ko" >"$tmp/modules/${base%.zst}" ;;
	*.ko.gz) gzip -dc "$ko" >"$tmp/modules/${base%.gz}" ;;
	*) cp "$ko" "$tmp/modules/$base" ;;
	esac
done
# vmlinux = the xz stream inside the bzImage, decompressed.
python3 - "$tmp"/boot/vmlinuz-* "$tmp/vmlinux" <<'PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
off = data.find(b"\xfd7zXZ\x00")
if off < 0:
    sys.exit("vm-deps: no xz stream in " + sys.argv[1])
elf = lzma.LZMADecompressor().decompress(data[off:])
if elf[:4] != b"\x7fELF":
    sys.exit("vm-deps: the decompressed kernel is not an ELF image")
open(sys.argv[2], "wb").write(elf)
PY
rm -rf "$tmp/lib"
rm -rf "$VM/kernel"
mv "$tmp" "$VM/kernel"
echo "vm-deps: kernel $pkg ready in $VM/kernel" >&2
