"""BIND (RFC 1928 section 6), on loopback.

Raw sockets check the exact bytes of both replies: the first carries the
listening socket, on the address the client reached the proxy at (the
proxy listens on 0.0.0.0 and the client comes in through 127.0.0.2, so
that address can only be the control connection's local one); the second
carries the peer.  Peers connect from chosen 127.x source addresses to tell
the expected one from the others.  Then two clients this project did not
write: the Node `socks` package (SocksClient, command 'bind', run by node
from build/node, installed by make deps) and Dante's socksify (Debian
dante-client) under tnftp doing an active-mode transfer against vsftpd.
Every socks5d gets a loopback --dns-server.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from admin_lib import ADMIN_PASS, ADMIN_USER, admin_server, run_client  # noqa: F401 (a fixture)
from s5lib import (REPO, closed_port, connect, count_fds, deadline_loop, eof_within, handshake,
                   read_reply, read_until_eof, recv_exact, request)

BIND = 2
MET_BINDS_STARTED, MET_BINDS_ACCEPTED, MET_BIND_TIMEOUTS, MET_BIND_WRONG_PEER = 46, 47, 48, 49
MET_REPLY_0 = 100

NODE_MODULES = REPO / "build" / "node" / "node_modules"


def dns_args():
    # nothing here should resolve through DNS; a lookup that tried would
    # meet a closed local port
    return ["--dns-server", "127.0.0.1:%d" % closed_port()]


def v4(addr):
    return socket.inet_pton(socket.AF_INET, addr)


def bind_open(proxy_port, dst="0.0.0.0", proxy_host="127.0.0.1", dport=0, atyp=None,
              user=None, password=None):
    """Control connection with a BIND request sent; returns (sock, first reply)."""
    c = connect(proxy_host, proxy_port)
    handshake(c, user, password)
    c.sendall(request(dst, dport, cmd=BIND, atyp=atyp))
    return c, read_reply(c)


def peer_connect(host, port, src):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    p = socket.socket(fam, socket.SOCK_STREAM)
    p.settimeout(5)
    p.bind((src, 0))
    p.connect((host, port))
    return p


def refused(host, port):
    """True when nothing listens on host:port any more."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect((host, port))
        except ConnectionRefusedError:
            return True
    return False


def nothing_within(sock, timeout):
    sock.settimeout(timeout)
    try:
        d = sock.recv(1)
    except socket.timeout:
        return True
    raise AssertionError("unexpected bytes or EOF: %r" % d)


# ---------------------------------------------------------------- raw sockets

def test_replies_carry_the_local_address_then_the_peer_and_the_relay_runs(socks5d):
    p = socks5d(*dns_args(), listen=("0.0.0.0",), workers=1)
    c, r1 = bind_open(p.port, "127.0.0.3", proxy_host="127.0.0.2")
    with c:
        # first reply: succeeded, IPv4, the address the client connected to
        assert r1.raw[:8] == b"\x05\x00\x00\x01" + v4("127.0.0.2"), r1
        assert len(r1.raw) == 10 and r1.port != 0
        assert r1.port != p.port
        peer = peer_connect("127.0.0.2", r1.port, "127.0.0.3")
        pport = peer.getsockname()[1]
        with peer:
            r2 = read_reply(c)
            # second reply: the peer's address and its source port, exactly
            assert r2.raw == b"\x05\x00\x00\x01" + v4("127.0.0.3") + \
                peer.getsockname()[1].to_bytes(2, "big"), r2
            # the listening socket is gone once the peer is accepted
            assert refused("127.0.0.2", r1.port)
            c.sendall(b"from the client")
            assert recv_exact(peer, 15) == b"from the client"
            big = os.urandom(300000)  # enough to go bulk (and splice)
            peer.sendall(big)
            assert recv_exact(c, len(big), timeout=10) == big
            peer.shutdown(socket.SHUT_WR)
            assert read_until_eof(c) == b""
            c.shutdown(socket.SHUT_WR)
            assert read_until_eof(peer) == b""
        sport = str(c.getsockname()[1])
    rec = p.wait_log(lambda f: f[2] == "A" and f[4] == sport)[0]
    # date user A source sport destination dport reply up down ms
    assert rec[1] == "anonymous"
    assert rec[5:10] == ["127.0.0.3", str(pport), "0", "15", str(len(big))], rec


def test_ipv6_control_connection_gets_an_ipv6_bind_address(socks5d):
    p = socks5d(*dns_args(), listen=("::1",), workers=1)
    c, r1 = bind_open(p.port, "::", proxy_host="::1")
    with c:
        assert r1.raw[:20] == b"\x05\x00\x00\x04" + socket.inet_pton(socket.AF_INET6, "::1"), r1
        assert len(r1.raw) == 22 and r1.port != 0
        peer = peer_connect("::1", r1.port, "::1")
        with peer:
            r2 = read_reply(c)
            assert r2.raw == b"\x05\x00\x00\x04" + socket.inet_pton(socket.AF_INET6, "::1") + \
                peer.getsockname()[1].to_bytes(2, "big"), r2
            peer.sendall(b"six")
            assert recv_exact(c, 3) == b"six"


def test_no_peer_within_the_bind_timeout_gets_06_and_the_port_closes(socks5d):
    p = socks5d(*dns_args(), "--bind-timeout", "1", workers=1)
    c, r1 = bind_open(p.port)
    with c:
        assert r1.rep == 0 and r1.addr == "127.0.0.1"
        t0 = time.monotonic()
        r2 = read_reply(c, timeout=10)
        assert r2.raw == b"\x05\x06\x00\x01\x00\x00\x00\x00\x00\x00", r2
        assert time.monotonic() - t0 > 0.5
        got_eof, data, _ = eof_within(c, 5)
        assert got_eof and data == b""
        assert refused("127.0.0.1", r1.port)


def test_wrong_address_is_refused_and_the_right_one_accepted_later(socks5d):
    p = socks5d(*dns_args(), workers=1)
    c, r1 = bind_open(p.port, "127.0.0.5")
    with c:
        wrong = peer_connect("127.0.0.1", r1.port, "127.0.0.4")
        with wrong:
            # closed by the proxy, and the client hears nothing of it
            assert read_until_eof(wrong) == b""
        nothing_within(c, 0.5)
        peer = peer_connect("127.0.0.1", r1.port, "127.0.0.5")
        with peer:
            r2 = read_reply(c)
            assert r2.rep == 0 and r2.addr == "127.0.0.5" and r2.port == peer.getsockname()[1]
            peer.sendall(b"right")
            assert recv_exact(c, 5) == b"right"


def test_expected_peer_given_as_a_name_is_resolved(socks5d):
    # localhost comes from the hosts file: no DNS query
    p = socks5d(*dns_args(), workers=1)
    c, r1 = bind_open(p.port, "localhost", atyp=3)
    with c:
        assert r1.rep == 0, r1
        with peer_connect("127.0.0.1", r1.port, "127.0.0.9") as wrong:
            assert read_until_eof(wrong) == b""
        with peer_connect("127.0.0.1", r1.port, "127.0.0.1") as peer:
            r2 = read_reply(c)
            assert r2.rep == 0 and r2.addr == "127.0.0.1"


def test_bytes_sent_between_the_replies_reach_the_peer_first(socks5d):
    p = socks5d(*dns_args(), workers=1)
    c, r1 = bind_open(p.port)
    with c:
        c.sendall(b"early ")
        time.sleep(0.2)
        with peer_connect("127.0.0.1", r1.port, "127.0.0.1") as peer:
            assert read_reply(c).rep == 0
            c.sendall(b"late")
            assert recv_exact(peer, 10) == b"early late"


def free_run(n, low=20000, high=32000):
    """n consecutive ports free on 127.0.0.1, below 32768."""
    for base in range(low, high, 7 * n):
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of %d free ports" % n)


def test_bind_ports_range_is_honoured_and_a_full_range_answers_01(socks5d):
    low = free_run(3)
    p = socks5d(*dns_args(), "--bind-ports", "%d-%d" % (low, low + 2), workers=1)
    held = [bind_open(p.port) for _ in range(3)]
    try:
        ports = sorted(r.port for _, r in held)
        assert all(r.rep == 0 for _, r in held), held
        assert ports == [low, low + 1, low + 2]
        # every port of the range taken: the first reply is a failure
        c, r = bind_open(p.port)
        with c:
            assert r.raw == b"\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00", r
        p.wait_stderr(r"BIND: cannot listen on 127\.0\.0\.1 in bind-ports: every port is taken")
    finally:
        for c, _ in held:
            c.close()
    # the ports come back when their binds end
    for _ in deadline_loop(5):
        c, r = bind_open(p.port)
        c.close()
        if r.rep == 0:
            break
    assert r.rep == 0 and low <= r.port <= low + 2, r


def test_client_closing_during_the_wait_closes_the_listener(socks5d):
    p = socks5d(*dns_args(), workers=1)
    worker = p.workers()[0]
    base = count_fds(worker)
    c, r1 = bind_open(p.port)
    assert r1.rep == 0
    assert count_fds(worker) == base + 2  # the control connection and the listener
    c.close()
    for _ in deadline_loop(5):
        if count_fds(worker) == base:
            break
    assert count_fds(worker) == base
    assert refused("127.0.0.1", r1.port)


def test_counters_in_metrics_and_pipoclient(admin_server):
    srv = admin_server("--bind-timeout", "1", workers=1)
    login = dict(user=ADMIN_USER, password=ADMIN_PASS)
    c, r1 = bind_open(srv.port, "127.0.0.7", **login)
    with c:
        with peer_connect("127.0.0.1", r1.port, "127.0.0.8") as wrong:
            assert read_until_eof(wrong) == b""
        with peer_connect("127.0.0.1", r1.port, "127.0.0.7"):
            assert read_reply(c).rep == 0
    c, _ = bind_open(srv.port, **login)
    with c:
        assert read_reply(c, timeout=10).rep == 6
    with srv.login() as a:
        m = a.metrics()
    assert m[MET_BINDS_STARTED] == 2
    assert m[MET_BINDS_ACCEPTED] == 1
    assert m[MET_BIND_TIMEOUTS] == 1
    assert m[MET_BIND_WRONG_PEER] == 1
    # the first reply is not counted: one outcome per request
    assert m[MET_REPLY_0] == 1 and m[MET_REPLY_0 + 6] == 1
    r = run_client("--json", "stats", server=srv)
    assert r.returncode == 0, r.err
    got = json.loads(r.out)["metrics"]
    assert (got["binds_started"], got["binds_accepted"], got["bind_timeouts"],
            got["bind_wrong_peer"]) == (2, 1, 1, 1), got
    r = run_client("stats", server=srv)
    assert "bind_wrong_peer" in r.out, r.out


# ---------------------------------------------------------------- real clients

def node_modules():
    if not (NODE_MODULES / "socks" / "package.json").exists():
        pytest.fail("the Node package socks is missing from %s: run make deps" % NODE_MODULES)
    node = shutil.which("node")
    if not node:
        pytest.fail("node is missing: run make deps")
    return node


def test_node_socks_package_bind(socks5d):
    node = node_modules()
    p = socks5d(*dns_args(), workers=1)
    env = dict(os.environ, NODE_PATH=str(NODE_MODULES))
    proc = subprocess.Popen([node, str(REPO / "tests" / "integration" / "bind_client.js"),
                             "127.0.0.1", str(p.port), "127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        bound = json.loads(proc.stdout.readline() or b"null")
        assert bound and bound["event"] == "bound", (bound, proc.stderr.read1(4096))
        assert bound["host"] == "127.0.0.1" and bound["port"] > 0
        with peer_connect("127.0.0.1", bound["port"], "127.0.0.1") as peer:
            est = json.loads(proc.stdout.readline())
            assert est == {"event": "established", "host": "127.0.0.1",
                           "port": peer.getsockname()[1]}, est
            assert recv_exact(peer, 15) == b"ping from node\n"
            peer.sendall(b"pong from the peer\n")
            peer.shutdown(socket.SHUT_WR)
            data = json.loads(proc.stdout.readline())
            assert data == {"event": "data", "data": "pong from the peer\n"}, data
            assert read_until_eof(peer) == b""
        assert proc.wait(timeout=20) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    rec = p.wait_log(lambda f: f[2] == "A")[0]
    assert rec[5] == "127.0.0.1" and rec[7] == "0" and rec[8:10] == ["15", "19"], rec


@pytest.fixture
def ftpd():
    from mail_servers import Vsftpd
    v = Vsftpd()
    yield v
    v.close()


def test_socksify_tnftp_active_mode_transfer(socks5d, ftpd):
    from mail_servers import USERS
    for tool in ("socksify", "tnftp"):
        if not shutil.which(tool):
            pytest.fail("%s is missing: run make deps" % tool)
    p = socks5d(*dns_args(), workers=1)
    d = Path(tempfile.mkdtemp(prefix="s5it-socksify-"))
    try:
        conf = d / "socks.conf"
        # one option a line: Dante's parser refuses some on one line
        conf.write_text("route {\n"
                        " from: 0.0.0.0/0 to: 0.0.0.0/0 via: 127.0.0.1 port = %d\n"
                        " proxyprotocol: socks_v5\n"
                        " protocol: tcp\n"
                        " command: connect bind\n"
                        " method: none\n"
                        "}\n" % p.port)
        # without SOCKS_AUTOADD_LANROUTES=no loopback would bypass the proxy
        env = dict(os.environ, SOCKS_CONF=str(conf), SOCKS_AUTOADD_LANROUTES="no")
        out = d / "got.txt"
        cmds = "user alice %s\nbinary\nget hello.txt %s\nquit\n" % (USERS["alice"], out)
        # -A: active mode (the server connects back: PORT/EPRT)
        r = subprocess.run(["socksify", "tnftp", "-A", "-n", "-v", "127.0.0.1", str(ftpd.port)],
                           input=cmds.encode(), env=env, capture_output=True, timeout=60, cwd=d)
        text = r.stdout.decode(errors="replace")
        assert out.exists() and out.read_text() == "hello over ftp\n", (text, r.stderr)
        assert "EPRT command successful" in text or "PORT command successful" in text, text
        assert "PASV" not in text and "Entering Passive Mode" not in text, text
    finally:
        shutil.rmtree(d, ignore_errors=True)
    # the proxy carried both: the control connection (CONNECT to vsftpd) and
    # the data connection (a BIND whose peer is vsftpd, 15 bytes down)
    recs = p.wait_log(lambda f: f[2] == "A", count=2)
    ctrl = [f for f in recs if f[6] == str(ftpd.port)]
    data = [f for f in recs if f[6] != str(ftpd.port)]
    assert len(ctrl) == 1 and ctrl[0][7] == "0", recs
    assert len(data) == 1 and data[0][5] == "127.0.0.1" and data[0][7] == "0", recs
    assert data[0][9] == "15", data
