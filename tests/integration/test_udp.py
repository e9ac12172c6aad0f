"""UDP ASSOCIATE (RFC 1928 section 7) through socks5d: PySocks (a client this
project did not write) and raw sockets for the exact bytes; IPv4, IPv6 and
domain targets; DNS over UDP to unbound; client-source checks; FRAG; the
reply filter; the association's end with its control connection; idle
timeout; access record, metrics and pipoClient sessions.  Loopback only;
every name is resolved by the test's own unbound (--dns-server)."""

import json
import shutil
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

import pytest
import socks  # Debian python3-socks (PySocks)

import doh_servers as ds
from admin_lib import ADMIN_PASS, ADMIN_USER, admin_server, run_client  # noqa: F401
from s5lib import (connect, deadline_loop, encode_addr, handshake, hash_password, read_reply,
                   request)

M_UP, M_DOWN, M_SOURCE, M_FRAG, M_MALFORMED, M_FILTER, M_LOOKUP = 36, 37, 38, 39, 40, 41, 42


class UdpEcho:
    """Echoes every datagram to its sender; remembers who sent what."""

    def __init__(self, host="127.0.0.1"):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.addr = self.sock.getsockname()[:2]
        self.seen = []  # (payload, source)
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopping:
            try:
                d, a = self.sock.recvfrom(70000)
            except socket.timeout:
                continue
            except OSError:
                return
            self.seen.append((d, a[:2]))
            try:
                self.sock.sendto(d, a)
            except OSError:
                pass

    def close(self):
        self.stopping = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def echo4():
    e = UdpEcho("127.0.0.1")
    yield e
    e.close()


@pytest.fixture
def echo6():
    e = UdpEcho("::1")
    yield e
    e.close()


@pytest.fixture(scope="module")
def unbound():
    d = Path(tempfile.mkdtemp(prefix="s5it-udp-"))
    stack = ds.DnsdistStack(d / "dns")
    try:
        stack.unbound.start()
        ds.wait_until(lambda: udp_dns(stack.classic, "health.test") is not None, 20, "unbound")
        yield stack
    finally:
        stack.unbound.stop()
        shutil.rmtree(d, ignore_errors=True)


def udp_dns(server, name):
    """A direct A query to host:port; the answer or None."""
    host, port = server.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        try:
            s.sendto(ds.dns_query(name), (host, int(port)))
            return s.recv(4096)
        except OSError:
            return None


def server(admin_server, *extra):
    return admin_server("--anonymous", "always", *extra, workers=1)


def pysocks_udp(port, host="127.0.0.1"):
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, host, port)
    s.settimeout(5)
    return s


def associate(port, proxy_host="127.0.0.1", dst=("0.0.0.0", 0), local=None):
    """A raw association: (control socket, reply, client UDP socket)."""
    fam = socket.AF_INET6 if ":" in proxy_host else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.bind((local or proxy_host, 0))
    u.settimeout(5)
    c = connect(proxy_host, port)
    handshake(c)
    host, p = dst
    if p == "mine":
        p = u.getsockname()[1]
    c.sendall(request(host, p, cmd=3))
    return c, read_reply(c), u


def hdr(host, port, frag=0, atyp=None):
    return b"\0\0" + bytes([frag]) + encode_addr(host, atyp) + struct.pack("!H", port)


def metrics(srv):
    with srv.login() as c:
        return c.metrics()


def wait_metric(srv, mid, pred, timeout=5):
    m = None
    for _ in deadline_loop(timeout):
        m = metrics(srv)
        if pred(m.get(mid, 0)):
            return m
    raise AssertionError("metric %d never matched: %r" % (mid, m))


def nothing_arrives(sock, secs=0.5):
    sock.settimeout(secs)
    try:
        d = sock.recv(70000)
    except socket.timeout:
        return True
    return not d


# ---------------------------------------------------------------- PySocks

def test_pysocks_echo_ipv4_and_ipv6_in_one_association(admin_server, echo4, echo6):
    srv = server(admin_server)
    s = pysocks_udp(srv.port)
    with s:
        s.sendto(b"hello v4", echo4.addr)
        assert s.recvfrom(100) == (b"hello v4", echo4.addr)
        s.sendto(b"hello v6", echo6.addr)
        d, a = s.recvfrom(100)
        assert d == b"hello v6" and a == echo6.addr
        big = bytes(range(256)) * 255  # 65,280 bytes
        s.sendto(big, echo4.addr)
        assert s.recvfrom(70000)[0] == big
    m = wait_metric(srv, M_UP, lambda v: v == 3)
    assert m[M_DOWN] == 3


def test_domain_destinations_and_dns_over_udp(admin_server, unbound, echo4):
    srv = server(admin_server, "--dns-server", unbound.classic)
    s = pysocks_udp(srv.port)
    with s:
        # v4.test is 127.0.0.1 in the test zone: sent as a name (rdns).
        s.sendto(b"by name", ("v4.test", echo4.addr[1]))
        d, a = s.recvfrom(100)
        assert d == b"by name" and a == echo4.addr
        for i in range(3):  # the second and third use the association's answer
            s.sendto(b"again %d" % i, ("v4.test", echo4.addr[1]))
            assert s.recvfrom(100)[0] == b"again %d" % i
        # A DNS query over UDP to unbound, through the proxy.
        host, port = unbound.classic.rsplit(":", 1)
        s.sendto(ds.dns_query("dual.test"), (host, int(port)))
        ans, a = s.recvfrom(4096)
        assert a == (host, int(port)) and ds.rcode(ans) == 0
        assert socket.inet_aton("127.0.0.1") in ans
        # An unknown name: the datagram is dropped and counted.
        s.sendto(b"lost", ("nowhere.test", echo4.addr[1]))
        wait_metric(srv, M_LOOKUP, lambda v: v == 1)
    assert [d for d, _ in echo4.seen if d == b"lost"] == []


def test_ten_thousand_datagrams_none_lost(admin_server, echo4):
    srv = server(admin_server)
    s = pysocks_udp(srv.port)
    got = set()
    with s:
        # At most 64 in flight: a moderate rate that socket buffers never
        # overflow, so any loss is the proxy's.
        window = 64
        sent = 0
        while len(got) < 10000:
            while sent < 10000 and sent - len(got) < window:
                s.sendto(struct.pack("!I", sent) + b"x" * 60, echo4.addr)
                sent += 1
            d, _ = s.recvfrom(100)
            got.add(struct.unpack("!I", d[:4])[0])
    assert got == set(range(10000))
    m = wait_metric(srv, M_DOWN, lambda v: v == 10000)
    assert m[M_UP] == 10000


# ---------------------------------------------------------------- exact bytes

def test_reply_and_datagram_bytes_ipv4(admin_server, echo4):
    srv = server(admin_server)
    c, r, u = associate(srv.port)
    with c, u:
        # BND.ADDR: the address the client reached, never 0.0.0.0.
        assert r.raw[:4] == b"\x05\x00\x00\x01" and r.addr == "127.0.0.1" and r.port != 0
        u.sendto(hdr("127.0.0.1", echo4.addr[1]) + b"ping", ("127.0.0.1", r.port))
        d, a = u.recvfrom(100)
        assert a == ("127.0.0.1", r.port)
        assert d == b"\0\0\0\x01\x7f\0\0\x01" + struct.pack("!H", echo4.addr[1]) + b"ping"


def test_reply_and_datagram_bytes_ipv6(socks5d, echo4, echo6):
    p = socks5d(listen=("::1",), workers=1)
    c, r, u = associate(p.port, proxy_host="::1")
    with c, u:
        assert r.raw[:4] == b"\x05\x00\x00\x04" and r.addr == "::1" and r.port != 0
        u.sendto(hdr("::1", echo6.addr[1]) + b"six", ("::1", r.port))
        d = u.recv(100)
        assert d == b"\0\0\0\x04" + socket.inet_pton(socket.AF_INET6, "::1") + \
            struct.pack("!H", echo6.addr[1]) + b"six"
        # An IPv4 target from an IPv6 client: the reply header says IPv4.
        u.sendto(hdr("127.0.0.1", echo4.addr[1]) + b"four", ("::1", r.port))
        assert u.recv(100) == b"\0\0\0\x01\x7f\0\0\x01" + struct.pack("!H", echo4.addr[1]) + \
            b"four"


# ---------------------------------------------------------------- client source

def test_datagrams_from_another_port_or_address_dropped(admin_server, echo4):
    srv = server(admin_server)
    # DST.PORT names the client's port: only that port may send.
    c, r, u = associate(srv.port, dst=("127.0.0.1", "mine"))
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.2", 0))
    with c, u, other, far:
        other.sendto(hdr("127.0.0.1", echo4.addr[1]) + b"wrong port", ("127.0.0.1", r.port))
        far.sendto(hdr("127.0.0.1", echo4.addr[1]) + b"wrong addr", ("127.0.0.1", r.port))
        wait_metric(srv, M_SOURCE, lambda v: v == 2)
        assert nothing_arrives(other) and nothing_arrives(far)
        u.sendto(hdr("127.0.0.1", echo4.addr[1]) + b"right", ("127.0.0.1", r.port))
        assert u.recv(100).endswith(b"right")
    assert [d for d, _ in echo4.seen] == [b"right"]


def test_first_datagram_fixes_the_port(admin_server, echo4):
    srv = server(admin_server)
    # A name as DST.ADDR (as PySocks sends "0"): the first datagram decides.
    c, r, u = associate(srv.port, dst=("0", 4321))
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    with c, u, other:
        u.sendto(hdr("127.0.0.1", echo4.addr[1]) + b"first", ("127.0.0.1", r.port))
        assert u.recv(100).endswith(b"first")
        other.sendto(hdr("127.0.0.1", echo4.addr[1]) + b"second", ("127.0.0.1", r.port))
        wait_metric(srv, M_SOURCE, lambda v: v == 1)
        assert nothing_arrives(other)
    assert [d for d, _ in echo4.seen] == [b"first"]


def test_fragments_and_malformed_headers_dropped(admin_server, echo4):
    srv = server(admin_server)
    c, r, u = associate(srv.port)
    with c, u:
        relay = ("127.0.0.1", r.port)
        u.sendto(hdr("127.0.0.1", echo4.addr[1], frag=1) + b"frag", relay)
        u.sendto(hdr("127.0.0.1", echo4.addr[1], frag=0x81) + b"last frag", relay)
        u.sendto(b"\0\0\0\x01\x7f\0", relay)            # short
        u.sendto(b"\0\0\0\x09" + b"x" * 20, relay)      # bad ATYP
        u.sendto(hdr("127.0.0.1", 0) + b"port 0", relay)
        m = wait_metric(srv, M_FRAG, lambda v: v == 2)
        wait_metric(srv, M_MALFORMED, lambda v: v == 3)
        assert nothing_arrives(u)
        u.sendto(hdr("127.0.0.1", echo4.addr[1]) + b"whole", relay)
        assert u.recv(100).endswith(b"whole")
    assert [d for d, _ in echo4.seen] == [b"whole"]
    assert m[M_UP] == 0


# ---------------------------------------------------------------- reply filter

def relay_source(echo, payload):
    for _ in deadline_loop(5):
        for d, a in echo.seen:
            if d == payload:
                return a
    raise AssertionError("not relayed")


@pytest.mark.parametrize("mode,from_addr,same_port,delivered", [
    ("address", "127.0.0.2", False, False),       # default: another address
    ("address", "127.0.0.1", False, True),        # same address, another port
    ("address-port", "127.0.0.1", False, False),
    ("address-port", "127.0.0.1", True, True),
    ("any", "127.0.0.2", False, True),
])
def test_reply_filter_modes(admin_server, echo4, mode, from_addr, same_port, delivered):
    extra = () if mode == "address" else ("--udp-filter", mode)
    srv = server(admin_server, *extra)
    c, r, u = associate(srv.port)
    with c, u:
        u.sendto(hdr("127.0.0.1", echo4.addr[1]) + b"open", ("127.0.0.1", r.port))
        assert u.recv(100).endswith(b"open")
        out = relay_source(echo4, b"open")   # the association's outbound socket
        if same_port:
            injector = echo4.sock              # the remote the client sent to
        else:
            injector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            injector.bind((from_addr, 0))
        injector.sendto(b"injected", out)
        src = injector.getsockname()
        if delivered:
            d = u.recv(100)
            assert d == b"\0\0\0\x01" + socket.inet_aton(src[0]) + struct.pack("!H", src[1]) + \
                b"injected"
        else:
            wait_metric(srv, M_FILTER, lambda v: v == 1)
            assert nothing_arrives(u)
        if not same_port:
            injector.close()


# ---------------------------------------------------------------- lifetime

def test_association_ends_with_its_control_connection(admin_server, echo4):
    srv = server(admin_server)
    c, r, u = associate(srv.port)
    with u:
        u.sendto(hdr("127.0.0.1", echo4.addr[1]) + b"one", ("127.0.0.1", r.port))
        assert u.recv(100).endswith(b"one")
        cport = c.getsockname()[1]
        c.close()
        f = srv.proc.wait_log(lambda f: len(f) > 11 and f[4] == str(cport))[0]
        # The relay socket is closed: nothing more is relayed.
        u.sendto(hdr("127.0.0.1", echo4.addr[1]) + b"two", ("127.0.0.1", r.port))
        assert nothing_arrives(u)
    assert [d for d, _ in echo4.seen] == [b"one"]
    # One access record: command udp, bytes and datagrams each way.
    assert f[11] == "udp" and f[7] == "0"
    assert (f[8], f[9], f[12], f[13]) == ("3", "3", "1", "1")


def test_idle_association_closed_and_traffic_keeps_it(admin_server, echo4):
    srv = server(admin_server, "--udp-idle-timeout", "2", "--idle-timeout", "1")
    c, r, u = associate(srv.port)
    with c, u:
        # Datagrams every 0.5 s for 3.5 s: longer than either timeout.
        for i in range(7):
            u.sendto(hdr("127.0.0.1", echo4.addr[1]) + b"k%d" % i, ("127.0.0.1", r.port))
            assert u.recv(100).endswith(b"k%d" % i)
            time.sleep(0.5)
        c.settimeout(0.05)
        with pytest.raises(socket.timeout):
            c.recv(1)                       # still open
        # Silence: the association ends within the timeout plus a margin.
        c.settimeout(6)
        t0 = time.monotonic()
        assert c.recv(1) == b""
        assert time.monotonic() - t0 >= 1.0


def test_pipoclient_sessions_shows_udp_and_counters(admin_server, echo4):
    srv = server(admin_server)
    c, r, u = associate(srv.port)
    with c, u:
        for i in range(3):
            u.sendto(hdr("127.0.0.1", echo4.addr[1]) + b"n", ("127.0.0.1", r.port))
            u.recv(100)
        doc = json.loads(run_client("sessions", "--json", server=srv).out)
        x = [s for s in doc["sessions"] if s["client_port"] == c.getsockname()[1]][0]
        assert x["command"] == "udp" and x["state"] == "relay"
        assert (x["datagrams_up"], x["datagrams_down"]) == (3, 3)
        assert (x["bytes_up"], x["bytes_down"]) == (3, 3)
        out = run_client("sessions", server=srv).out
        line = [l for l in out.splitlines() if ":%d " % c.getsockname()[1] in l][0]
        assert " udp " in line and line.rstrip().endswith("3/3")


# ---------------------------------------------------------------- access rules

M_DENIED = 45


def test_rules_decide_each_datagram_destination(admin_server, unbound, echo4, tmp_path):
    other = UdpEcho("127.0.0.1")
    try:
        conf = tmp_path / "rules.conf"
        conf.write_text("admin = %s:%s\n" % (ADMIN_USER, hash_password(ADMIN_PASS)) +
                        "block to 127.0.0.1 port %d command udp\n" % other.addr[1] +
                        "block to dual.test command udp\n"
                        "pass\n")
        srv = admin_server("--anonymous", "always", "--dns-server", unbound.classic,
                           config=conf, workers=1)
        s = pysocks_udp(srv.port)
        with s:
            s.sendto(b"ok", echo4.addr)
            assert s.recvfrom(100)[0] == b"ok"
            for _ in range(3):  # the decision is remembered: counted per datagram
                s.sendto(b"no", other.addr)
            wait_metric(srv, M_DENIED, lambda v: v == 3)
            s.sendto(b"by name", ("v4.test", echo4.addr[1]))
            assert s.recvfrom(100)[0] == b"by name"
            # a name rule decides before the lookup
            s.sendto(b"named", ("dual.test", echo4.addr[1]))
            wait_metric(srv, M_DENIED, lambda v: v == 4)
        assert other.seen == []
        assert b"named" not in [d for d, _ in echo4.seen]
    finally:
        other.close()


def test_a_rule_blocking_udp_refuses_the_association(admin_server, echo4, tmp_path):
    conf = tmp_path / "rules.conf"
    conf.write_text("block command udp log\npass\n")
    srv = admin_server("--anonymous", "always", config=conf, workers=1)
    c, rep, u = associate(srv.port)
    assert rep.rep == 2, rep
    c.close()
    u.close()
    # CONNECT is another command: rule 2
    c = connect("127.0.0.1", srv.port)
    handshake(c)
    c.sendall(request("127.0.0.1", echo4.addr[1]))
    assert read_reply(c).rep != 2
    c.close()


# ---------------------------------------------------------------- hostile clients

def test_association_ends_with_its_control_connection_after_junk_on_it(admin_server, echo4):
    srv = server(admin_server)
    c, r, u = associate(srv.port)
    with u:
        u.sendto(hdr("127.0.0.1", echo4.addr[1]) + b"one", ("127.0.0.1", r.port))
        assert u.recv(100).endswith(b"one")
        # Far more than one event's read: the close behind it must be seen.
        c.settimeout(10)
        c.sendall(b"J" * 400000)
        cport = c.getsockname()[1]
        c.close()
        srv.proc.wait_log(lambda f: len(f) > 11 and f[4] == str(cport), timeout=10)
        u.sendto(hdr("127.0.0.1", echo4.addr[1]) + b"two", ("127.0.0.1", r.port))
        assert nothing_arrives(u)
    assert [d for d, _ in echo4.seen] == [b"one"]


def test_datagrams_leave_from_the_external_address(admin_server, echo4, tmp_path):
    conf = tmp_path / "ext.conf"
    # `via` is not used by UDP: the association's socket serves every
    # destination and is bound to `external`.
    conf.write_text("admin = %s:%s\n" % (ADMIN_USER, hash_password(ADMIN_PASS)) +
                    "external = 127.0.0.2\npass via 127.0.0.3 to 127.0.0.1/32\n")
    srv = admin_server("--anonymous", "always", config=conf, workers=1)
    s = pysocks_udp(srv.port)
    with s:
        s.sendto(b"from where", echo4.addr)
        assert s.recvfrom(100) == (b"from where", echo4.addr)
    assert echo4.seen[0][0] == b"from where"
    assert echo4.seen[0][1][0] == "127.0.0.2"


def test_blocked_destinations_logged_a_few_times_per_association(admin_server, tmp_path):
    conf = tmp_path / "log.conf"
    conf.write_text("admin = %s:%s\n" % (ADMIN_USER, hash_password(ADMIN_PASS)) +
                    "block to .blocked.test log\nblock to 192.0.2.0/24 log\npass\n")
    srv = admin_server("--anonymous", "always", "--log-level", "info", config=conf, workers=1)
    c, r, u = associate(srv.port)
    n = 0
    with c, u:
        for i in range(60):
            u.sendto(hdr("x.blocked.test", 9) + b"x", ("127.0.0.1", r.port))
            # 20 blocked addresses in turn: more than the decision cache holds
            u.sendto(hdr("192.0.2.%d" % (i % 20 + 1), 9) + b"x", ("127.0.0.1", r.port))
            n += 2
            if i % 10 == 9:
                time.sleep(0.02)
        wait_metric(srv, M_DENIED, lambda v: v == n)
        cport = c.getsockname()[1]
    srv.proc.wait_log(lambda f: len(f) > 11 and f[4] == str(cport))
    srv.proc.wait_stderr(r"more blocked datagram destinations, not logged one by one")
    lines = [l for l in srv.proc.stderr_text().splitlines() if "datagram to" in l]
    assert 1 <= len(lines) <= 4, lines
    # the name was decided once: one line for it
    assert len([l for l in lines if "blocked.test" in l]) == 1


def spoof_udp(src, dst, payload):
    """One UDP datagram with a forged source (raw socket; root)."""
    def csum(b):
        if len(b) % 2:
            b += b"\0"
        s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
        while s >> 16:
            s = (s & 0xffff) + (s >> 16)
        return ~s & 0xffff
    (sip, sport), (dip, dport) = src, dst
    ulen = 8 + len(payload)
    pseudo = socket.inet_aton(sip) + socket.inet_aton(dip) + struct.pack("!BBH", 0, 17, ulen)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0)
    udp = struct.pack("!HHHH", sport, dport, ulen, csum(pseudo + udp + payload) or 0xffff)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0, 64, 17, 0,
                     socket.inet_aton(sip), socket.inet_aton(dip))
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as r:
        r.sendto(ip + udp + payload, (dip, 0))


def test_own_sockets_are_neither_client_nor_destination(admin_server, echo4):
    srv = server(admin_server)
    c, r, u = associate(srv.port)  # port 0: the first datagram fixes it
    relay = ("127.0.0.1", r.port)
    with c, u:
        # A datagram forged from the relay socket itself is not the client.
        spoof_udp(relay, relay, hdr("127.0.0.1", echo4.addr[1]) + b"forged")
        wait_metric(srv, M_SOURCE, lambda v: v == 1)
        u.sendto(hdr("127.0.0.1", echo4.addr[1]) + b"real", relay)
        assert u.recv(100).endswith(b"real")
        assert [d for d, _ in echo4.seen] == [b"real"]
        out = echo4.seen[0][1]
        # Datagrams to the association's own sockets are not sent.
        for own in (relay, out, ("127.0.0.2", out[1])):
            u.sendto(hdr(own[0], own[1]) + b"self", relay)
        wait_metric(srv, M_DENIED, lambda v: v == 3)
        assert nothing_arrives(u)
        m = metrics(srv)
        assert m[M_UP] == 1 and m[M_DOWN] == 1


def test_dual_stack_name_sent_to_the_clients_family(admin_server, unbound, echo4):
    srv = server(admin_server, "--dns-server", unbound.classic)
    s = pysocks_udp(srv.port)
    with s:
        # dual.test has ::1 and 127.0.0.1; the echo listens on 127.0.0.1 only.
        s.sendto(b"dual", ("dual.test", echo4.addr[1]))
        assert s.recvfrom(100) == (b"dual", echo4.addr)


def test_dual_stack_name_falls_back_when_a_family_cannot_send(admin_server, unbound, echo4,
                                                              tmp_path):
    conf = tmp_path / "ext6.conf"
    # An IPv6 source address this host does not have: no IPv6 socket can be had.
    conf.write_text("admin = %s:%s\n" % (ADMIN_USER, hash_password(ADMIN_PASS)) +
                    "external = fd00:5d::99\npass\n")
    srv = admin_server("--anonymous", "always", "-l", "::1", "--dns-server", unbound.classic,
                       config=conf, workers=1)
    c, r, u = associate(srv.port, proxy_host="::1")
    with c, u:
        assert r.addr == "::1"  # the client's family is IPv6: tried first
        for i in range(2):
            u.sendto(hdr("dual.test", echo4.addr[1]) + b"d%d" % i, ("::1", r.port))
            assert u.recv(100).endswith(b"d%d" % i)
    assert [d for d, _ in echo4.seen] == [b"d0", b"d1"]


M_RATE = 54


def test_user_rate_limits_datagrams(admin_server, echo4, tmp_path):
    conf = tmp_path / "rate.conf"
    conf.write_text("admin = %s:%s\n" % (ADMIN_USER, hash_password(ADMIN_PASS)) +
                    "user = alice:%s\n" % hash_password("pw") +
                    "limit = alice rate 16K\n")
    srv = admin_server(config=conf, workers=1)
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, "127.0.0.1", srv.port, username="alice", password="pw")
    s.settimeout(0.2)
    with s:
        s.sendto(b"x", echo4.addr)  # sets the association up
        s.recvfrom(100)
        t0 = time.monotonic()
        sent = 0
        while time.monotonic() - t0 < 2.0:
            s.sendto(b"y" * 1000, echo4.addr)
            sent += 1
            time.sleep(0.001)
        got = 0
        try:
            while True:
                got += len(s.recvfrom(2000)[0])
        except socket.timeout:
            pass
    arrived = sum(len(d) for d, _ in echo4.seen if d[:1] == b"y")
    # 16 KiB/s for about 2.2 s, plus a burst of 4 KiB: far below what was sent
    assert sent > 500 and 0 < arrived <= 16384 * 2.5 + 4096, (sent, arrived)
    assert got <= arrived
    wait_metric(srv, M_RATE, lambda v: v > 0)
