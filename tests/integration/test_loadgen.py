"""Smoke test of the benchmark load generator (bench/loadgen.c): each mode
runs briefly through socks5d against nginx and reports what it did; the UDP
mode against its own echo target, directly and through a minimal relay."""

import os
import re
import select
import signal
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest

import s5lib

LOADGEN = os.environ.get("LOADGEN", str(Path(__file__).resolve().parents[2] / "build" / "loadgen"))


def loadgen(*args):
    r = subprocess.run([LOADGEN, *map(str, args)], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    return dict(kv.split("=") for kv in r.stdout.decode().split())


@pytest.fixture
def proxy_with_user(socks5d):
    return socks5d("-u", "bench:pw")


def test_rate_mode_counts_connections_and_latency(proxy_with_user, nginx):
    out = loadgen("-m", "rate", "-x", "127.0.0.1:%d" % proxy_with_user.port,
                  "-t", "127.0.0.1:%d" % nginx.port, "-u", "bench:pw", "-c", 8, "-d", 5,
                  "-n", 200, "-p", "/index.html")
    assert int(out["conns"]) >= 200 and int(out["failed"]) == 0
    assert 0 < float(out["p50_us"]) <= float(out["p99_us"])
    # its own CPU time: 200 connections cannot take no time, nor more than
    # the run's wall-clock time on its one thread
    assert 0 < float(out["cpu_us"]) <= float(out["seconds"]) * 1e6 + 20000
    # every connection is one access-log line of user bench with reply 0
    lines = proxy_with_user.wait_log(lambda f: f[1] == "bench" and f[7] == "0", count=200)
    assert len(lines) >= 200


def test_bulk_mode_moves_the_bytes(proxy_with_user, nginx):
    size = os.path.getsize(nginx.big_path)
    out = loadgen("-m", "bulk", "-x", "127.0.0.1:%d" % proxy_with_user.port,
                  "-t", "127.0.0.1:%d" % nginx.port, "-u", "bench:pw", "-c", 1, "-d", 1,
                  "-p", "/" + os.path.basename(nginx.big_path))
    assert int(out["failed"]) == 0
    assert int(out["bytes"]) >= min(size, 1 << 20)
    assert 0 < float(out["cpu_us"]) <= float(out["seconds"]) * 1e6 + 20000


def test_hold_mode_holds_sessions_and_direct_mode_works(proxy_with_user, nginx):
    out = loadgen("-m", "hold", "-x", "127.0.0.1:%d" % proxy_with_user.port,
                  "-t", "127.0.0.1:%d" % nginx.port, "-u", "bench:pw", "-c", 50, "-d", 2,
                  "-s", "127.0.0.2,127.0.0.3")
    assert out["established"] == "50" and out["held"] == "50" and out["failed"] == "0"
    direct = loadgen("-m", "rate", "-t", "127.0.0.1:%d" % nginx.port, "-c", 2, "-d", 5, "-n", 20,
                     "-p", "/index.html")
    assert int(direct["conns"]) >= 20 and direct["failed"] == "0"


def test_step_mode_and_target_list_round_robin(proxy_with_user, nginx):
    # -W: greeting, credentials and request each wait for the server's answer;
    # -t A,B: connections alternate between the targets (B refuses: each of its
    # CONNECTs fails with a SOCKS error reply)
    closed = s5lib.closed_port()
    out = loadgen("-m", "rate", "-W", "-x", "127.0.0.1:%d" % proxy_with_user.port,
                  "-t", "127.0.0.1:%d,127.0.0.1:%d" % (nginx.port, closed), "-u", "bench:pw",
                  "-c", 1, "-d", 10, "-n", 40, "-p", "/index.html")
    assert out["conns"] == "20" and out["failed"] == "20"


def test_hold_mode_paces_and_stops_on_sigterm(proxy_with_user, nginx):
    p = subprocess.Popen([LOADGEN, "-m", "hold", "-W", "-x", "127.0.0.1:%d" % proxy_with_user.port,
                          "-t", "127.0.0.1:%d" % nginx.port, "-u", "bench:pw", "-c", "200", "-k", "4",
                          "-d", "60", "-s", "127.0.0.2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = p.stderr.readline().decode()   # printed once every session is open
        assert "ramp done established=200 failed=0 pending=0" in line, line
        p.send_signal(signal.SIGTERM)
        stdout, _ = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0
    out = dict(kv.split("=") for kv in stdout.decode().split())
    assert out["established"] == "200" and out["held"] == "200"
    assert out["failed"] == "0" and out["dropped"] == "0"
    assert float(out["seconds"]) < 30 and float(out["ramp_seconds"]) <= float(out["seconds"])


# ---------------------------------------------------------------- udp mode

def run_loadgen(*args, timeout=30):
    r = subprocess.run([LOADGEN, *map(str, args)], capture_output=True, timeout=timeout)
    out = dict(kv.split("=", 1) for kv in r.stdout.decode().split() if "=" in kv)
    return r.returncode, out, r.stderr.decode()


class UdpEcho:
    """loadgen's own UDP echo target on 127.0.0.1, on a port the kernel picks."""

    def __init__(self):
        self.p = subprocess.Popen([LOADGEN, "udp-echo", "127.0.0.1:0", "60"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.p.stdout.readline().decode()
        m = re.match(r"udp-echo 127\.0\.0\.1:(\d+)$", line.strip())
        assert m, line
        self.port = int(m.group(1))

    def stop(self):
        """SIGTERM; returns the counters it reports on the way out."""
        self.p.send_signal(signal.SIGTERM)
        out, _ = self.p.communicate(timeout=10)
        assert self.p.returncode == 0
        return dict(kv.split("=", 1) for kv in out.decode().split())

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


@pytest.fixture
def udp_echo():
    e = UdpEcho()
    try:
        yield e
    finally:
        e.kill()


@pytest.mark.parametrize("size", [64, 1400])
def test_udp_direct_paced_counts_every_echo_at_a_low_rate(udp_echo, size):
    rc, out, err = run_loadgen("-m", "udp", "-t", "127.0.0.1:%d" % udp_echo.port, "-c", 4, "-l", size,
                               "-R", 2000, "-n", 3000, "-d", 20)
    assert rc == 0, err
    assert out["established"] == "4" and out["size"] == str(size) and out["offered_rate"] == "2000"
    assert out["sent"] == "3000" and out["received"] == "3000"
    assert out["bad"] == out["dup"] == out["late"] == "0"
    assert float(out["loss_pct"]) == 0
    # 3,000 at 2,000 a second: paced, not sent in one burst
    assert float(out["seconds"]) >= 1.4
    echo = udp_echo.stop()
    assert echo["received"] == "3000" and echo["echoed"] == "3000" and echo["dropped"] == "0"


def test_udp_direct_window_mode_gets_every_datagram_back(udp_echo):
    rc, out, err = run_loadgen("-m", "udp", "-t", "127.0.0.1:%d" % udp_echo.port, "-c", 3, "-w", 8,
                               "-n", 6000, "-d", 20)
    assert rc == 0, err
    assert out["window"] == "8" and out["offered_rate"] == "0"
    assert out["sent"] == "6000" and out["received"] == "6000"
    assert out["bad"] == out["dup"] == out["late"] == "0"


def test_udp_window_mode_writes_off_what_never_comes_back():
    # a target that never answers: each association sends its window, then
    # one more window after each 200 ms of silence, and the loss is all of it
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        rc, out, err = run_loadgen("-m", "udp", "-t", "127.0.0.1:%d" % sink.getsockname()[1],
                                   "-c", 2, "-w", 4, "-d", 1)
    assert rc == 1
    assert out["received"] == "0" and float(out["loss_pct"]) == 100
    assert 16 <= int(out["sent"]) <= 2 * 4 * 6


class FakeUdpRelay:
    """A minimal SOCKS5 UDP relay on loopback: one control connection, an
    ASSOCIATE answered with BND.ADDR 0.0.0.0 (loadgen must then use the
    proxy's address) or with the reply code `refuse`.  It forwards the
    client's datagrams, header stripped, to DST and wraps the answers.  Its
    first answer goes to the client twice, preceded by one datagram that is
    not a reply to anything."""

    def __init__(self, refuse=0):
        self.refuse = refuse
        # on 127.0.0.2: a datagram sent to 0.0.0.0 would reach 127.0.0.1
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.2", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.requests = []
        self.headers = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop.is_set():
            self.lsock.settimeout(0.2)
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self.session, args=(c,), daemon=True).start()

    def session(self, c):
        with c:
            assert s5lib.recv_exact(c, 3) == b"\x05\x01\x00"
            c.sendall(b"\x05\x00")
            req = s5lib.recv_exact(c, 10)
            self.requests.append(req)
            if self.refuse:
                c.sendall(bytes([5, self.refuse, 0, 1, 0, 0, 0, 0, 0, 0]))
                return
            relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            relay.bind(("127.0.0.2", 0))
            out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            out.bind(("127.0.0.1", 0))
            c.sendall(b"\x05\x00\x00\x01\x00\x00\x00\x00" + struct.pack("!H", relay.getsockname()[1]))
            client = None
            first = True
            with relay, out:
                while not self.stop.is_set():
                    r, _, _ = select.select([relay, out, c], [], [], 0.2)
                    if c in r and not c.recv(1):
                        return
                    if relay in r:
                        d, client = relay.recvfrom(70000)
                        self.headers.add(d[:10])
                        out.sendto(d[10:], (socket.inet_ntoa(d[4:8]), struct.unpack("!H", d[8:10])[0]))
                    if out in r:
                        d, src = out.recvfrom(70000)
                        wrapped = (b"\x00\x00\x00\x01" + socket.inet_aton(src[0])
                                   + struct.pack("!H", src[1]) + d)
                        if first:
                            relay.sendto(b"\x00\x00\x00\x01garbage", client)
                            relay.sendto(wrapped, client)
                            first = False
                        relay.sendto(wrapped, client)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.lsock.close()


def test_udp_through_a_relay_headers_counts_and_zero_bnd_addr(udp_echo):
    port = udp_echo.port
    relay = FakeUdpRelay()
    try:
        rc, out, err = run_loadgen("-m", "udp", "-x", "127.0.0.2:%d" % relay.port,
                                   "-t", "127.0.0.1:%d" % port, "-c", 2, "-l", 100,
                                   "-R", 400, "-n", 400, "-d", 20)
    finally:
        relay.close()
    assert rc == 0, err
    assert out["established"] == "2" and out["sent"] == "400" and out["received"] == "400"
    # one stray datagram and one repeated echo per association, neither counted
    assert out["bad"] == "2" and out["dup"] == "2" and out["late"] == "0"
    # every datagram carried RSV RSV FRAG=0 ATYP=1 and the echo target's address
    assert relay.headers == {b"\x00\x00\x00\x01\x7f\x00\x00\x01" + struct.pack("!H", port)}
    # each request was UDP ASSOCIATE naming the client's own UDP address and port
    assert len(relay.requests) == 2
    for req in relay.requests:
        assert req[:4] == b"\x05\x03\x00\x01" and req[4:8] == b"\x7f\x00\x00\x01"
        assert struct.unpack("!H", req[8:10])[0] != 0


def test_udp_refused_association_names_the_reply_code(udp_echo):
    port = udp_echo.port
    relay = FakeUdpRelay(refuse=7)
    try:
        rc, out, err = run_loadgen("-m", "udp", "-x", "127.0.0.2:%d" % relay.port,
                                   "-t", "127.0.0.1:%d" % port, "-c", 3, "-d", 5)
    finally:
        relay.close()
    assert rc == 1
    assert out["established"] == "0" and out["failed"] == "3" and out["rep"] == "7"
    assert err.splitlines() == ["loadgen: UDP ASSOCIATE refused: reply 0x07 (command not supported)"]


@pytest.mark.parametrize("args,names", [
    (["-m", "udp", "-t", "127.0.0.1:9", "-l", "8"], "-l 8"),
    (["-m", "udp", "-t", "127.0.0.1:9", "-l", "70000"], "-l 70000"),
    (["-m", "udp", "-t", "127.0.0.1:9", "-R", "fast"], "-R fast"),
    (["-m", "udp", "-t", "127.0.0.1:9", "-R", "100", "-w", "4"], "-R"),
    (["-m", "udp", "-t", "127.0.0.1:9", "-w", "0"], "-w 0"),
    (["-m", "udp", "-t", "127.0.0.1:9", "-c", "5000"], "-c 5000"),
    (["-m", "udp", "-t", "127.0.0.1:9", "-l"], "-l"),
    (["-m", "udp", "-t", "127.0.0.1"], "-t 127.0.0.1"),
    (["-m", "udp", "-t", "localhost:9"], "-t localhost:9"),
    (["-m", "udp", "-t", "127.0.0.1:99999"], "-t 127.0.0.1:99999"),
    (["-m", "udp", "-x", "127.0.0.1:0", "-t", "127.0.0.1:9"], "-x 127.0.0.1:0"),
    (["-m", "udp"], "-t"),
    (["-m", "quic", "-t", "127.0.0.1:9"], "-m quic"),
    (["-m", "rate", "-t", "127.0.0.1:9", "-l", "64"], "-l"),
    (["-m", "udp", "-t", "127.0.0.1:9", "-Z"], "-Z"),
    (["-m", "udp", "-t", "127.0.0.1:9", "extra"], "extra"),
    (["udp-echo"], "udp-echo"),
    (["udp-echo", "127.0.0.1"], "udp-echo 127.0.0.1"),
    (["udp-echo", "127.0.0.1:0", "soon"], "soon"),
])
def test_udp_argument_errors_are_one_line_naming_the_argument(args, names):
    rc, out, err = run_loadgen(*args, timeout=10)
    assert rc == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("loadgen: ") and names in lines[0], err
    assert out == {}
