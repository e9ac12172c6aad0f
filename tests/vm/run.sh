#!/bin/bash
# make check-vm: socks5d's SCTP administration endpoint tested for real.
# This host's kernel has no SCTP, so one qemu VM (TCG) boots a Debian
# kernel with the sctp module and runs tests/vm/init.sh against the release
# socks5d and pipoClient.  When the VM cannot run, the reason is printed and
# the test is skipped, except under CI=true where that is a failure.
set -u
cd "$(dirname "$0")/../.."
VM=build/vm
T0=$(date +%s)

skip() {
	echo "check-vm: cannot run the SCTP VM test: $*"
	if [ "${CI:-}" = "true" ]; then
		echo "check-vm: FAIL (CI=true: the SCTP test must run)"
		exit 1
	fi
	echo "check-vm: SKIPPED"
	exit 0
}
fail() {
	echo "check-vm: FAIL: $*"
	exit 1
}

scripts/vm-deps.sh "$VM" || skip "scripts/vm-deps.sh could not install qemu/busybox or fetch the kernel"
QEMU=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 not found"
[ -x /bin/busybox ] || skip "/bin/busybox not found"
file_is_static=$(ldd /bin/busybox 2>&1 | grep -c "not a dynamic" || true)
[ "$file_is_static" -ge 1 ] || skip "/bin/busybox is not the static build (install busybox-static)"

make -s build/socks5d build/pipoClient || fail "build"
CC=${CC:-cc}
$CC -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O2 -o "$VM/sctp_check" tests/vm/sctp_check.c \
	admin/pipo.c shared/rfc1929.c || fail "build sctp_check"
$CC -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O2 -o "$VM/pipo1_check" tests/vm/pipo1_check.c \
	|| fail "build pipo1_check"

mods=()
for m in udp_tunnel ip6_udp_tunnel crc32c_generic libcrc32c sctp; do
	mods+=(--file "$VM/kernel/modules/$m.ko:/modules/$m.ko")
done
python3 tests/vm/mkinitramfs.py "$VM/initramfs.cpio" --init tests/vm/init.sh \
	--file /bin/busybox:/bin/busybox "${mods[@]}" \
	--bin build/socks5d:/bin/socks5d --bin build/pipoClient:/bin/pipoClient \
	--bin "$VM/sctp_check:/bin/sctp_check" --bin "$VM/pipo1_check:/bin/pipo1_check" \
	|| fail "initramfs"

# PVH boot of the uncompressed kernel; one vCPU (TCG is faster with one).
timeout 150 "$QEMU" -M pc -cpu max -m 512 -smp 1 -nodefaults -no-user-config \
	-display none -serial stdio -no-reboot \
	-kernel "$VM/kernel/vmlinux" -initrd "$VM/initramfs.cpio" \
	-append "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off tsc=reliable" \
	</dev/null >"$VM/console.log" 2>&1
rc=$?
grep -E '^vm:|^VM-' "$VM/console.log" | tr -d '\r'
T1=$(date +%s)
if [ $rc -eq 124 ]; then
	tail -n 30 "$VM/console.log"
	fail "the VM did not finish within 150 s (log: $VM/console.log)"
fi
if ! grep -q VM-BOOTED "$VM/console.log"; then
	tail -n 30 "$VM/console.log"
	skip "the VM did not boot (qemu exit $rc; log: $VM/console.log)"
fi
grep -q "VM-RESULT=PASS" "$VM/console.log" || fail "SCTP checks failed in the VM ($((T1 - T0)) s)"
echo "check-vm: PASS ($((T1 - T0)) s)"
