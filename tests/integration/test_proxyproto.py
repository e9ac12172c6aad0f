"""PROXY protocol v1 and v2 from trusted load balancers (--proxy-protocol).

The test's own sockets on 127.0.0.1 play the balancer: they send a header
carrying a made-up client address, then speak SOCKS.  That address must be
the one socks5d uses: access log, anonymous policy, client rules, the
per-source cap.  Connections from anyone else are plain SOCKS."""

import os
import signal
import socket
import struct
import subprocess
import time

import pytest

from s5lib import (connect, eof_within, free_port, greeting, read_reply, recv_exact, request)

TRUST = ("--proxy-protocol", "127.0.0.0/8", "--dns-server", "127.0.0.1")
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, sport, dst="127.0.0.1", dport=1080):
    fam = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(src, sport, dst="127.0.0.1", dport=1080, cmd=1, tlvs=b""):
    if ":" in src:
        fam = 0x21
        addrs = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    else:
        fam = 0x11
        addrs = socket.inet_aton(src) + socket.inet_aton(dst)
    body = addrs + struct.pack("!HH", sport, dport) + tlvs
    return V2_SIG + bytes([0x20 | cmd, fam]) + struct.pack("!H", len(body)) + body


def v2_local():
    return V2_SIG + b"\x20\x00\x00\x00"


@pytest.fixture
def balanced(socks5d, tmp_path):
    """Factory: a socks5d trusting 127.0.0.0/8 as its balancer, anonymous
    clients allowed and, since the header's clients are not on loopback,
    a rule that lets them reach the test's servers there."""
    def start(conf="anonymous = always\npass to 127.0.0.0/8\n", *args, **kw):
        path = tmp_path / ("socks5d-%d.conf" % len(socks5d.started))
        path.write_text(conf)
        return socks5d("-f", str(path), *TRUST, *args, **kw)
    return start


def send_slowly(s, data):
    for i in range(len(data)):
        s.sendall(data[i:i + 1])
        time.sleep(0.002)


def connect_through(port, header, target, slowly=False):
    """Header, greeting, CONNECT to target; returns (sock, reply)."""
    s = connect("127.0.0.1", port)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = header + greeting((0x00,))
    if slowly:
        send_slowly(s, msg)
    else:
        s.sendall(msg)
    assert recv_exact(s, 2) == b"\x05\x00"
    req = request(target[0], target[1])
    if slowly:
        send_slowly(s, req)
    else:
        s.sendall(req)
    return s, read_reply(s)


def echo_once(s):
    s.sendall(b"ping")
    assert recv_exact(s, 4) == b"ping"
    s.close()


def assert_closed_silently(s, timeout=5.0):
    got_eof, data, _ = eof_within(s, timeout)
    assert got_eof, "connection still open"
    assert data == b"", data


def test_v1_header_gives_the_client_address_in_the_access_log(balanced, echo_server):
    p = balanced()
    s, r = connect_through(p.port, v1("203.0.113.7", 40123), (echo_server.host, echo_server.port))
    assert r.rep == 0
    echo_once(s)
    f = p.wait_log(lambda f: len(f) > 4 and f[3] == "203.0.113.7")[0]
    assert f[4] == "40123"
    assert f[6] == str(echo_server.port)


def test_v2_header_with_ipv6_client_and_tlv(balanced, echo_server):
    p = balanced()
    tlv = b"\x05\x00\x04abcd"  # PP2_TYPE_UNIQUE_ID: skipped
    s, r = connect_through(p.port, v2("2001:db8::7", 5555, "::1", 1080, tlvs=tlv),
                           (echo_server.host, echo_server.port))
    assert r.rep == 0
    echo_once(s)
    f = p.wait_log(lambda f: len(f) > 4 and f[3] == "2001:db8::7")[0]
    assert f[4] == "5555"


def test_header_and_greeting_split_byte_by_byte(balanced, echo_server):
    p = balanced()
    for header, src, sport in ((v2("198.51.100.20", 2020), "198.51.100.20", 2020),
                               (v1("198.51.100.21", 2121), "198.51.100.21", 2121)):
        s, r = connect_through(p.port, header, (echo_server.host, echo_server.port),
                               slowly=True)
        assert r.rep == 0
        echo_once(s)
        f = p.wait_log(lambda f, src=src: len(f) > 4 and f[3] == src)[0]
        assert f[4] == str(sport)


def test_header_coalesced_with_the_whole_handshake(balanced, echo_server):
    # Header, greeting and request in one segment: nothing is lost between states.
    p = balanced()
    s = connect("127.0.0.1", p.port)
    s.sendall(v1("198.51.100.30", 3030) + greeting((0x00,)) +
              request(echo_server.host, echo_server.port))
    assert recv_exact(s, 2) == b"\x05\x00"
    assert read_reply(s).rep == 0
    echo_once(s)
    p.wait_log(lambda f: len(f) > 4 and f[3] == "198.51.100.30" and f[4] == "3030")


def test_missing_header_from_a_trusted_balancer_closes(balanced):
    p = balanced()
    s = connect("127.0.0.1", p.port)
    s.sendall(greeting((0x00,)))
    assert_closed_silently(s)
    p.wait_stderr(r"connection from balancer 127\.0\.0\.1 port \d+: not a PROXY protocol header")
    # a malformed header closes too
    s = connect("127.0.0.1", p.port)
    s.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 99999 1080\r\n" + greeting((0x00,)))
    assert_closed_silently(s)


def test_header_from_an_untrusted_address_closes(socks5d, echo_server):
    # Only 10.99.0.0/16 is trusted: a loopback client is a plain SOCKS client.
    p = socks5d("--proxy-protocol", "10.99.0.0/16,2001:db8::/32", "--anonymous", "always",
                "--dns-server", "127.0.0.1")  # loopback clients reach loopback
    for header in (v1("203.0.113.7", 40123), v2("203.0.113.7", 40123)):
        s = connect("127.0.0.1", p.port)
        s.sendall(header + greeting((0x00,)))
        assert_closed_silently(s)
    s = connect("127.0.0.1", p.port)
    s.sendall(greeting((0x00,)))
    assert recv_exact(s, 2) == b"\x05\x00"
    s.sendall(request(echo_server.host, echo_server.port))
    assert read_reply(s).rep == 0
    port = s.getsockname()[1]
    echo_once(s)
    p.wait_log(lambda f: len(f) > 4 and f[3] == "127.0.0.1" and f[4] == str(port))


def test_default_policy_sees_the_header_address(socks5d, echo_server):
    # Without rules a client off loopback may not reach loopback: the
    # header's client is off loopback even though its balancer is not.
    p = socks5d(*TRUST, "--anonymous", "always")
    s, r = connect_through(p.port, v1("203.0.113.7", 40123), (echo_server.host, echo_server.port))
    assert r.rep == 2
    s.close()
    s, r = connect_through(p.port, v1("127.0.0.9", 40123), (echo_server.host, echo_server.port))
    assert r.rep == 0
    echo_once(s)


def test_anonymous_policy_sees_the_header_address(socks5d):
    # anonymous auto: only loopback clients, and the client is the header's.
    p = socks5d(*TRUST)
    s = connect("127.0.0.1", p.port)
    s.sendall(v2("203.0.113.7", 40000) + greeting((0x00,)))
    assert recv_exact(s, 2) == b"\x05\xff"
    s.close()
    s = connect("127.0.0.1", p.port)
    s.sendall(v2("127.0.0.9", 40000) + greeting((0x00,)))
    assert recv_exact(s, 2) == b"\x05\x00"
    s.close()


GREET_FROM = r"""
import socket, sys
src, port, header = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
s = socket.socket()
s.settimeout(10)
s.bind((src, 0))
s.connect((src, port))
s.sendall(header + b"\x05\x01\x00")
print(s.recv(2).hex())
"""


def test_a_loopback_client_of_a_remote_balancer_is_not_ours(netns, socks5d):
    """A balancer on another host that names a loopback client speaks of
    its own host's loopback: that client must not pass this instance's
    loopback policies (anonymous auto, the default rules)."""
    balancer = "10.77.9.1"
    netns.run("ip", "-n", netns.name, "addr", "add", balancer + "/32", "dev", "lo")
    p = socks5d("--proxy-protocol", "127.0.0.1/32,%s/32" % balancer, "--dns-server", "127.0.0.1",
                listen=("127.0.0.1", balancer), prefix=netns.prefix())

    def greet(src, header):
        r = subprocess.run(netns.prefix() + ["/usr/bin/python3", "-c", GREET_FROM, src,
                                             str(p.port), header.hex()],
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout.decode().strip()

    for header in (v1("127.0.0.1", 40000), v2("127.0.0.1", 40000), v2("::1", 40000, dst="::1"),
                   v1("::ffff:127.0.0.1", 40000, dst="::1")):
        # anonymous auto: no method for a client that is not on loopback
        assert greet(balancer, header) == "05ff", header
        # from a balancer on this host's loopback, its loopback client is ours
        assert greet("127.0.0.1", header) == "0500", header
    f = p.wait_log(lambda f: len(f) > 7 and f[7] == "no-method")[0]
    assert f[3] == balancer and f[4] == "40000", f


def test_headers_without_a_client_close_the_connection(balanced, echo_server):
    """The balancer's own (loopback) address must not stand in for an
    unknown client: it would pass the anonymous and default policies."""
    p = balanced()
    for header in (v2_local(), b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN 10.0.0.1 x y z\r\n"):
        s = connect("127.0.0.1", p.port)
        s.sendall(header + greeting((0x00,)))
        assert eof_within(s, 5)[0], header
        s.close()


def scrape_value(mport, name):
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("%s not in the scrape" % name)


def test_a_connection_is_an_open_session_once_its_header_names_a_client(balanced, echo_server):
    """Open sessions agree with sessions_total: a balancer's connection
    still waiting for its header, or a health check, is neither."""
    mport = free_port()
    p = balanced("anonymous = always\npass to 127.0.0.0/8\nworkers = 1\n",
                 "--metrics", "127.0.0.1:%d" % mport, workers=None)
    waiting = connect("127.0.0.1", p.port)          # no header yet
    checks = []
    for _ in range(3):                              # health checks, left open
        c = connect("127.0.0.1", p.port)
        c.sendall(v2_local())
        checks.append(c)
    try:
        # accepted in order by the one worker: the session below is served
        # after the connections above were accepted
        s, r = connect_through(p.port, v1("203.0.113.7", 40123),
                               (echo_server.host, echo_server.port))
        assert r.rep == 0
        assert scrape_value(mport, "socks5d_sessions_total") == 1
        assert scrape_value(mport, "socks5d_sessions_open") == 1
        assert scrape_value(mport, "socks5d_sessions_open_max") == 1
        echo_once(s)
    finally:
        waiting.close()
        for c in checks:
            c.close()
    deadline = time.monotonic() + 10
    while scrape_value(mport, "socks5d_sessions_open") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scrape_value(mport, "socks5d_sessions_open") == 0


def test_client_rules_are_decided_on_the_header_address(socks5d, echo_server, tmp_path):
    conf = tmp_path / "socks5d.conf"
    conf.write_text("proxy-protocol = 127.0.0.0/8\nanonymous = always\n"
                    "client block from 203.0.113.0/24 log\npass to 127.0.0.0/8\n")
    p = socks5d("-f", str(conf), "--dns-server", "127.0.0.1")
    s = connect("127.0.0.1", p.port)
    s.sendall(v1("203.0.113.7", 40123) + greeting((0x00,)))
    assert_closed_silently(s)
    p.wait_stderr(r"client 203\.0\.113\.7 port 40123 blocked by rule 1 \(line 3\)")
    s, r = connect_through(p.port, v1("198.51.100.7", 40124), (echo_server.host, echo_server.port))
    assert r.rep == 0
    echo_once(s)
    p.wait_log(lambda f: len(f) > 4 and f[3] == "198.51.100.7")


def test_per_source_cap_counts_the_header_address(balanced):
    # Every connection comes from the balancer's address; the cap on sessions
    # not yet authenticated must count each client apart.
    p = balanced("", "-u", "alice:pw", "--max-unauth-per-source", "2", workers=1)
    held = []
    for _ in range(2):
        s = connect("127.0.0.1", p.port)
        s.sendall(v1("203.0.113.7", 1000 + len(held)) + greeting((0x02,)))
        assert recv_exact(s, 2) == b"\x05\x02"
        held.append(s)
    s = connect("127.0.0.1", p.port)
    s.sendall(v1("203.0.113.7", 1003) + greeting((0x02,)))
    assert_closed_silently(s)
    s = connect("127.0.0.1", p.port)
    s.sendall(v1("203.0.113.8", 1004) + greeting((0x02,)))
    assert recv_exact(s, 2) == b"\x05\x02"
    s.close()
    for h in held:
        h.close()


def test_a_stalled_header_ends_at_the_handshake_timeout(balanced):
    p = balanced("anonymous = always\n", "--handshake-timeout", "1")
    s = connect("127.0.0.1", p.port)
    s.sendall(b"PROXY TCP4 203.0.113.7")
    got_eof, data, _ = eof_within(s, 10)
    assert got_eof and data == b""


@pytest.mark.parametrize("value", ["10.0.0.0/33", "10.0.0.0/8,", "host.example", "::/129"])
def test_bad_trust_list_is_refused_at_start(socks5d_bin, value):
    r = subprocess.run([socks5d_bin, "--proxy-protocol", value, "-p", "1"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "--proxy-protocol: '%s' is not a list of ADDR or ADDR/LEN" % value in r.stderr


# ---------------------------------------------------------------- real HAProxy

HAPROXY = "/usr/sbin/haproxy"


class HAProxy:
    """HAProxy in TCP mode on loopback in front of socks5d instances, sending
    a v2 header on every connection and on its health checks."""

    def __init__(self, root, backends):
        if not os.access(HAPROXY, os.X_OK):
            pytest.fail("haproxy not installed (make deps installs Debian's haproxy)")
        self.port = free_port()
        self.stats = os.path.join(root, "haproxy.sock")
        self.names = {"s%d" % i for i in range(len(backends))}
        servers = "\n".join(
            "    server s%d 127.0.0.1:%d send-proxy-v2 check check-send-proxy inter 300ms "
            "fall 2 rise 1" % (i, p) for i, p in enumerate(backends))
        conf = os.path.join(root, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write("""global
    maxconn 512
    stats socket %s mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend socks
    bind 127.0.0.1:%d
    default_backend fleet
backend fleet
    balance roundrobin
%s
""" % (self.stats, self.port, servers))
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        end = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    out = self.proc.stdout.read().decode() if self.proc.poll() is not None else ""
                    raise AssertionError("haproxy did not start: %s" % out)
                time.sleep(0.05)

    def status(self):
        """Server name -> its status in HAProxy's stats ("UP", "UP 1/2"
        going down and still given sessions, "DOWN"...)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(self.stats)
        s.sendall(b"show stat\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return {f[1]: f[17] for f in (line.split(",") for line in data.decode().splitlines())
                if len(f) > 17 and f[0] == "fleet" and f[1] in self.names}

    def servers_up(self):
        return {n for n, st in self.status().items() if st == "UP"}

    def servers_down(self):
        """Servers fully DOWN ("DOWN 1/2" is going up, not given sessions yet)."""
        return {n for n, st in self.status().items() if st.startswith("DOWN")}

    def wait_up(self, names, timeout=10.0):
        """Wait until exactly these servers are UP and every other one DOWN."""
        end = time.monotonic() + timeout
        while self.servers_up() != set(names) or self.servers_down() != self.names - set(names):
            if time.monotonic() > end:
                raise AssertionError("HAProxy holds %s up, not %s" % (self.servers_up(), names))
            time.sleep(0.1)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def curl_through(port, url, source="127.0.0.2"):
    """curl from `source` through the SOCKS proxy at port; (body, curl's own port)."""
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "--interface", source,
                        "--socks5", "127.0.0.1:%d" % port, "-o", "-",
                        "-w", "\n%{local_port}", url],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    body, _, local_port = r.stdout.rpartition(b"\n")
    return body, int(local_port)


def test_behind_haproxy_the_log_shows_curls_address_and_port(socks5d, nginx, tmp_path):
    # Only HAProxy's address (127.0.0.1) is trusted; curl speaks from 127.0.0.2.
    backends = [socks5d("--proxy-protocol", "127.0.0.1", "--dns-server", "127.0.0.1")
                for _ in range(2)]
    ha = HAProxy(str(tmp_path), [b.port for b in backends])
    try:
        ha.wait_up(["s0", "s1"])
        url = "http://127.0.0.1:%d/index.html" % nginx.port
        seen = []
        for _ in range(4):
            body, port = curl_through(ha.port, url)
            assert body == nginx.index_body
            seen.append(port)
        # Round robin: each instance served two of them, and logged curl's
        # address and port, not HAProxy's.
        for b in backends:
            lines = b.wait_log(lambda f: len(f) > 4 and f[3] == "127.0.0.2", count=2)
            for f in lines:
                assert int(f[4]) in seen, (f, seen)
                assert f[5] == "127.0.0.1" and f[6] == str(nginx.port)
        logged = sorted(int(f[4]) for b in backends
                        for f in (l.split("\t") for l in b.log_lines())
                        if len(f) > 4 and f[3] == "127.0.0.2")
        assert logged == sorted(seen)
        # HAProxy's own connections (health checks, LOCAL headers) make no
        # access record and no complaint.
        for b in backends:
            assert "balancer" not in b.stderr_text()
    finally:
        ha.close()


def open_sessions(port, target, n, source="127.0.0.2"):
    """n SOCKS sessions through the proxy at port, all held open, each having
    echoed once; returns the sockets (their own ports are the clients')."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.settimeout(10)
            s.bind((source, 0))
            s.connect(("127.0.0.1", port))
            s.sendall(greeting((0x00,)) + request(target[0], target[1]))
            assert recv_exact(s, 2) == b"\x05\x00"
            r = read_reply(s)
            assert r.rep == 0, r
            s.sendall(b"ping")
            assert recv_exact(s, 4) == b"ping"
    except BaseException as e:
        for s in socks:
            s.close()
        raise AssertionError("session %d of %d: %r" % (len(socks), n, e)) from e
    return socks


def logged_ports(b, source="127.0.0.2"):
    return [int(f[4]) for f in (l.split("\t") for l in b.log_lines())
            if len(f) > 4 and f[3] == source]


def wait_logged(backends, total, timeout=20.0):
    """Wait until the instances have logged `total` sessions of the client."""
    end = time.monotonic() + timeout
    while sum(len(logged_ports(b)) for b in backends) < total:
        if time.monotonic() > end:
            raise AssertionError("%d of %d sessions logged" % (
                sum(len(logged_ports(b)) for b in backends), total))
        time.sleep(0.1)


def test_fleet_behind_haproxy_outlives_a_killed_instance(socks5d, echo_server, tmp_path):
    backends = [socks5d("--proxy-protocol", "127.0.0.1", "--dns-server", "127.0.0.1", workers=1)
                for _ in range(3)]
    ha = HAProxy(str(tmp_path), [b.port for b in backends])
    target = (echo_server.host, echo_server.port)
    try:
        ha.wait_up(["s0", "s1", "s2"])
        # 300 concurrent clients are spread over the three.
        socks = open_sessions(ha.port, target, 300)
        ports = sorted(s.getsockname()[1] for s in socks)
        for s in socks:
            s.close()
        wait_logged(backends, 300)
        assert sorted(p for b in backends for p in logged_ports(b)) == ports
        for b in backends:
            assert len(logged_ports(b)) >= 50, [len(logged_ports(x)) for x in backends]
        # One instance dies at once, master and workers.
        victim = backends.pop(1)
        pids = [victim.pid] + list(victim.workers())
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        victim.proc.wait(10)
        victim.stopped = True
        socks5d.started.remove(victim)
        # HAProxy's checks mark it down; from then on no client sees an error.
        ha.wait_up(["s0", "s2"])
        before = {id(b): len(logged_ports(b)) for b in backends}
        socks = open_sessions(ha.port, target, 300)
        ports = sorted(s.getsockname()[1] for s in socks)
        for s in socks:
            s.close()
        wait_logged(backends, sum(before.values()) + 300)
        assert sorted(p for b in backends for p in logged_ports(b)[before[id(b)]:]) == ports
    finally:
        ha.close()
