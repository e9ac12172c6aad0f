#!/bin/busybox sh
# /init of the SCTP test VM: load SCTP, bring up loopback, start socks5d
# (release build) with an administrator, check its SCTP administration
# endpoint with pipoClient, sctp_check (version 2) and pipo1_check (the
# original protocol, version 1), print VM-RESULT=PASS|FAIL and
# power off.  Every wait is bounded.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/shm /dev/pts
mount -t tmpfs shm /dev/shm
echo VM-BOOTED

fails=0
step() {	# step NAME COMMAND...: run, report, count failures
	name=$1
	shift
	if "$@" >/tmp/step.out 2>&1; then
		echo "vm: ok   $name"
	else
		echo "vm: FAIL $name (exit $?)"
		sed 's/^/vm:      | /' /tmp/step.out
		fails=$((fails + 1))
	fi
}

for m in udp_tunnel ip6_udp_tunnel crc32c_generic libcrc32c sctp; do
	insmod /modules/$m.ko || echo "vm: insmod $m failed"
done
ip link set lo up

PASS=vm-admin-pass
export PIPO_PASSWORD=$PASS
/bin/socks5d -l 127.0.0.1 -p 1080 -w 1 -a admin:$PASS --admin-socket /tmp/admin.sock \
	--dns-server 127.0.0.1:9 >/tmp/access.log 2>/tmp/socks5d.err &
ready=0
for i in $(seq 1 300); do
	if grep -q "ready" /tmp/socks5d.err 2>/dev/null; then
		ready=1
		break
	fi
	sleep 0.1
done
if [ $ready = 0 ]; then
	echo "vm: FAIL socks5d did not start"
	fails=$((fails + 1))
fi
sed 's/^/vm: socks5d| /' /tmp/socks5d.err

has() {	# has PATTERN COMMAND...: the command succeeds and prints PATTERN
	pat=$1
	shift
	"$@" >/tmp/has.out 2>&1 || { cat /tmp/has.out; return 1; }
	grep -q -- "$pat" /tmp/has.out || { cat /tmp/has.out; return 1; }
}

C="/bin/pipoClient -u admin"
step "SCTP login + stats (pipelined: 2 messages)" has connections_total $C stats
step "SCTP explicit -L 127.0.0.1 -P 8080 server" has "workers:" $C -L 127.0.0.1 -P 8080 server
step "SCTP get (8 queries, one sendmmsg)" has "doh-url" $C get
step "SCTP user add (modification)" env PIPO_NEW_PASSWORD=vm-user-pw $C user add vmuser
step "SCTP users --json lists the new user" has '"vmuser"' $C --json users
step "SCTP top --iterations 2" has "RATE" $C top --iterations 2 --interval 0.2
step "SCTP wrong password exits 4" sh -c "PIPO_PASSWORD=nope $C stats; test \$? = 4"
step "SCTP message boundaries (sctp_check)" /bin/sctp_check 127.0.0.1 8080 admin $PASS
sed 's/^/vm:      | /' /tmp/step.out
step "SCTP pipo version 1 (pipo1_check)" /bin/pipo1_check 127.0.0.1 8080 admin $PASS 1080
sed 's/^/vm:      | /' /tmp/step.out

# IPv6: a second server with its SCTP endpoint on ::1.
ip -6 addr add ::1/128 dev lo 2>/dev/null
/bin/socks5d -l 127.0.0.1 -p 1081 -w 1 -a admin:$PASS --admin-socket /tmp/admin6.sock \
	-L ::1 -P 8081 --dns-server 127.0.0.1:9 >/dev/null 2>/tmp/socks5d6.err &
for i in $(seq 1 300); do
	grep -q "ready" /tmp/socks5d6.err 2>/dev/null && break
	sleep 0.1
done
step "SCTP over IPv6 (-L ::1)" has "workers:" $C -L ::1 -P 8081 server
step "SCTP over IPv6 (-L [::1]) stats" has "connections_total" $C -L [::1] -P 8081 stats
step "SCTP over IPv6 message boundaries" /bin/sctp_check ::1 8081 admin $PASS
step "SCTP over IPv6 pipo version 1" /bin/pipo1_check ::1 8081 admin $PASS 1081

kill %1 %2 2>/dev/null
if [ $fails = 0 ]; then
	echo VM-RESULT=PASS
else
	echo "VM-RESULT=FAIL ($fails failed)"
fi
sync
poweroff -f
