"""Real DoH servers for the DoH tests (see /work/shared/notes/doh-test-servers.md).

- DnsdistStack: unbound (holds the zone, keeps record order, logs every query)
  behind dnsdist's DoH listener: cleartext HTTP/1.1 (+h2c) and HTTPS (ALPN
  h2/http1.1) with a self-signed certificate.  unbound's plain DNS port
  (127.0.0.153) doubles as the classic DNS server for fallback tests.
- NginxTlsFront: nginx terminating TLS with HTTP/1.1 only (no h2 in ALPN),
  proxying to dnsdist's cleartext port: the "HTTPS HTTP/1.1" mode.
- Kresd: knot-resolver, strict RFC 8484: doh_legacy (cleartext h1) and doh2
  (TLS, HTTP/2 only).
- ConnCounter: a TCP relay that counts the connections made through it.
- SilentUdp: a UDP socket that must receive nothing (a --dns-server trap).

Only loopback addresses; every wait is bounded.  Ports are below 32768
(the ephemeral range is busy on this machine).
"""

import base64
import os
import random
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

UNBOUND_IP = "127.0.0.153"

# name -> list of (type, value); order matters for multi.test
ZONE = [
    ("health.test", "A", "127.0.0.1", 3600),
    ("v4.test", "A", "127.0.0.1", 3600),
    ("v6.test", "AAAA", "::1", 3600),
    ("dual.test", "A", "127.0.0.1", 3600),
    ("dual.test", "AAAA", "::1", 3600),
    ("multi.test", "A", "127.0.0.2", 3600),
    ("multi.test", "A", "127.0.0.3", 3600),
    ("multi.test", "A", "127.0.0.1", 3600),
    ("ttl.test", "A", "127.0.0.1", 1),
    ("race.test", "A", "127.0.0.4", 3600),
    ("race.test", "A", "127.0.0.1", 3600),
] + [("big.test", "A", "127.0.1.%d" % i, 3600) for i in range(1, 33)]
# a second copy of each name for a second, uncached lookup in the same test
TEST_NAMES = {"v4.test": 4, "v6.test": 6, "dual.test": 46}
NEG_TTL = 10  # the SOA MINIMUM of test.


def _bindable(port, hosts=("127.0.0.1",), udp=False):
    for h in hosts:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((h, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def low_port(hosts=("127.0.0.1",), udp_too=False, taken=()):
    """A free port in 20000..32000 (bounded tries)."""
    for _ in range(200):
        p = random.randint(20000, 32000)
        if p in taken or p in (2024, 11081, 11082, 11083, 18080):
            continue
        if _bindable(p, hosts) and (not udp_too or _bindable(p, hosts, udp=True)):
            return p
    raise RuntimeError("no free port below 32768")


def dns_query(name, qtype=1):
    q = struct.pack(">HHHHHH", 0, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", qtype, 1)


def doh_get(url, name, qtype=1, cafile=None, timeout=2.0):
    """One GET; returns (status, content-type, body)."""
    b64 = base64.urlsafe_b64encode(dns_query(name, qtype)).rstrip(b"=").decode()
    req = urllib.request.Request(url + ("&" if "?" in url else "?") + "dns=" + b64,
                                 headers={"accept": "application/dns-message"})
    ctx = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
    handler = urllib.request.HTTPSHandler(context=ctx) if ctx else urllib.request.HTTPHandler()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), handler)
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.headers.get("content-type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), e.read()


def rcode(msg):
    return msg[3] & 0x0F


def make_cert(d):
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30)
    return cert, key


class Daemon:
    """A child process with its output in a file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, argv, log, cwd=None):
        self.argv = argv
        self.log = log
        self.cwd = cwd
        self.proc = None

    def start(self):
        f = open(self.log, "ab")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                     cwd=self.cwd, start_new_session=True)
        f.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def wait_until(pred, timeout, what, step=0.05):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            if pred():
                return
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(step)
    raise RuntimeError("%s not ready within %.0f s (%r)" % (what, timeout, last))


def _assert_port_free(port, host="127.0.0.1"):
    # SO_REUSEPORT would let a stale instance share the port silently.
    s = socket.socket()
    s.settimeout(0.5)
    try:
        if s.connect_ex((host, port)) == 0:
            raise RuntimeError("something already accepts on %s:%d" % (host, port))
    finally:
        s.close()


class DnsdistStack:
    def __init__(self, root):
        self.dir = Path(root)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = make_cert(self.dir)
        taken = set()
        self.dns_port = low_port((UNBOUND_IP,), udp_too=True)
        taken.add(self.dns_port)
        self.http_port = low_port(taken=taken)
        taken.add(self.http_port)
        self.tls_port = low_port(taken=taken)
        self.unbound_log = self.dir / "unbound.log"
        self._write_unbound()
        self._write_dnsdist()
        self.unbound = Daemon(["unbound", "-d", "-c", str(self.dir / "unbound.conf")],
                              self.dir / "unbound.out")
        self.dnsdist = Daemon(["dnsdist", "--supervised", "--disable-syslog", "-C",
                               str(self.dir / "dnsdist.conf")], self.dir / "dnsdist.out")

    @property
    def url(self):
        return "http://127.0.0.1:%d/dns-query" % self.http_port

    @property
    def tls_url(self):
        return "https://127.0.0.1:%d/dns-query" % self.tls_port

    @property
    def classic(self):
        return "%s:%d" % (UNBOUND_IP, self.dns_port)

    def _write_unbound(self):
        lines = [
            "server:",
            "  do-daemonize: no", '  username: ""', '  chroot: ""', '  directory: "%s"' % self.dir,
            '  pidfile: ""', "  so-reuseport: no", '  module-config: "iterator"',
            "  rrset-roundrobin: no", "  use-syslog: no", '  logfile: "%s"' % self.unbound_log,
            "  log-queries: yes", "  verbosity: 0", "  num-threads: 1",
            # dnsdist talks TCP to unbound: room for many parallel queries
            "  incoming-num-tcp: 1000", "  tcp-idle-timeout: 30000",
            "  interface: %s@%d" % (UNBOUND_IP, self.dns_port),
            "  access-control: 127.0.0.0/8 allow", "  access-control: ::1/128 allow",
            "  do-ip6: no", '  local-zone: "." refuse',
            '  local-zone: "test." static',
            '  local-data: "test. 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 %d"' % NEG_TTL,
            '  local-zone: "bulk.test." redirect',
            '  local-data: "bulk.test. 3600 IN A 127.0.0.1"',
        ]
        for name, t, v, ttl in ZONE:
            lines.append('  local-data: "%s. %d IN %s %s"' % (name, ttl, t, v))
        lines += ["remote-control:", "  control-enable: no"]
        (self.dir / "unbound.conf").write_text("\n".join(lines) + "\n")

    def _write_dnsdist(self):
        conf = """
setSecurityPollSuffix("")
setACL({{"127.0.0.0/8", "::1/128"}})
addDOHLocal("127.0.0.1:{http}", nil, nil, "/dns-query")
addDOHLocal("127.0.0.1:{tls}", "{cert}", "{key}", "/dns-query")
newServer({{address="{ub}:{dns}", tcpOnly=true, checkName="health.test.", checkInterval=1, mustResolve=true, maxCheckFailures=20, checkTimeout=3000}})
setServFailWhenNoServer(true)
addAction(QNameRule("servfail.test."), RCodeAction(DNSRCode.SERVFAIL))
function http500(dq)
  dq:setHTTPResponse(500, "internal error", "text/plain")
  return DNSAction.HeaderModify
end
function html200(dq)
  dq:setHTTPResponse(200, "<html></html>", "text/html")
  return DNSAction.HeaderModify
end
addAction(QNameRule("http500.test."), LuaAction(http500))
addAction(QNameRule("html.test."), LuaAction(html200))
""".format(http=self.http_port, tls=self.tls_port, cert=self.cert, key=self.key, ub=UNBOUND_IP,
           dns=self.dns_port)
        (self.dir / "dnsdist.conf").write_text(conf)

    def start(self):
        for p in (self.http_port, self.tls_port):
            _assert_port_free(p)
        _assert_port_free(self.dns_port, UNBOUND_IP)
        if not self.unbound.alive():
            self.unbound.start()
        self.start_dnsdist()

    def start_dnsdist(self):
        self.dnsdist.start()

        def ok():
            st, ct, body = doh_get(self.url, "health.test", timeout=1)
            return st == 200 and rcode(body) == 0
        try:
            wait_until(ok, 20, "dnsdist+unbound")
            wait_until(lambda: doh_get(self.tls_url, "health.test", cafile=str(self.cert),
                                       timeout=1)[0] == 200, 10, "dnsdist TLS")
        except RuntimeError:
            raise RuntimeError("DoH stack did not start:\n%s\n%s" % (
                (self.dir / "dnsdist.out").read_text(errors="replace")[-2000:],
                (self.dir / "unbound.out").read_text(errors="replace")[-2000:]))

    def stop_dnsdist(self):
        self.dnsdist.stop()

    def queries(self, name):
        """How many queries for name (any type) unbound has logged."""
        try:
            text = self.unbound_log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        needle = " %s. " % name
        return sum(1 for line in text.splitlines() if needle in line)

    def stop(self):
        self.dnsdist.stop()
        self.unbound.stop()


class NginxTlsFront:
    """HTTPS with ALPN http/1.1 only, proxying to a cleartext DoH port."""

    def __init__(self, root, backend_port, cert, key):
        self.dir = Path(root)
        self.dir.mkdir(parents=True, exist_ok=True)
        for d in ("tmp", "logs"):
            (self.dir / d).mkdir(exist_ok=True)
        self.port = low_port()
        conf = """
daemon off;
master_process on;
worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/logs/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    keepalive_requests 100000;
    upstream doh {{ server 127.0.0.1:{b}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{p} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://doh;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""".format(d=self.dir, b=backend_port, p=self.port, cert=cert, key=key)
        (self.dir / "nginx.conf").write_text(conf)
        self.cafile = cert
        self.daemon = Daemon(["/usr/sbin/nginx", "-p", str(self.dir), "-c",
                              str(self.dir / "nginx.conf"), "-e", str(self.dir / "logs" / "error.log")],
                             self.dir / "nginx.out")

    @property
    def url(self):
        return "https://127.0.0.1:%d/dns-query" % self.port

    def start(self):
        _assert_port_free(self.port)
        self.daemon.start()
        wait_until(lambda: doh_get(self.url, "health.test", cafile=str(self.cafile),
                                   timeout=1)[0] == 200, 10, "nginx TLS front")

    def stop(self):
        self.daemon.stop()


class Kresd:
    """knot-resolver 5.6 with the same names: doh_legacy cleartext, doh2 TLS."""

    def __init__(self, root, cert, key):
        self.dir = Path(root)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.http_port = low_port()
        self.tls_port = low_port(taken=(self.http_port,))
        self.cafile = cert
        answers = {}
        for name, t, v, ttl in ZONE:
            answers.setdefault((name, t), []).append((v, ttl))
        rules = []
        for (name, t), vals in answers.items():
            rdata = ", ".join("kres.str2ip('%s')" % v for v, _ in vals)
            rules.append(
                "policy.add(policy.domains(policy.ANSWER({[kres.type.%s] = {rdata = {%s}, ttl = %d}}, true), "
                "{todname('%s')}))" % (t, rdata, vals[0][1], name))
        conf = """
modules.unload('ta_update')
modules.unload('priming')
modules.unload('detect_time_skew')
modules.unload('detect_time_jump')
trust_anchors.remove('.')
modules.load('http')
net.listen('127.0.0.1', {http}, {{ kind = 'doh_legacy' }})
net.tls('{cert}', '{key}')
net.listen('127.0.0.1', {tls}, {{ kind = 'doh2' }})
{rules}
policy.add(policy.domains(policy.ANSWER({{}}, true), {{todname('health.test')}}))
policy.add(policy.suffix(policy.DENY, {{todname('test')}}))
policy.add(policy.all(policy.REFUSE))
""".format(http=self.http_port, tls=self.tls_port, cert=cert, key=key, rules="\n".join(rules))
        (self.dir / "kresd.conf").write_text(conf)
        self.daemon = Daemon(["kresd", "-n", "-c", str(self.dir / "kresd.conf"), str(self.dir)],
                             self.dir / "kresd.out", cwd=str(self.dir))

    @property
    def url(self):
        return "http://127.0.0.1:%d/dns-query" % self.http_port

    @property
    def tls_url(self):
        return "https://127.0.0.1:%d/dns-query" % self.tls_port

    def start(self):
        for p in (self.http_port, self.tls_port):
            _assert_port_free(p)
        self.daemon.start()
        try:
            wait_until(lambda: doh_get(self.url, "v4.test", timeout=1)[0] == 200, 20, "kresd")
        except RuntimeError:
            raise RuntimeError("kresd did not start:\n%s" % (
                (self.dir / "kresd.out").read_text(errors="replace")[-3000:]))

    def stop(self):
        self.daemon.stop()


class ConnCounter:
    """A TCP relay 127.0.0.1:port -> backend that counts accepted connections."""

    def __init__(self, backend_port):
        self.backend = ("127.0.0.1", backend_port)
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.port = low_port()
        self.ls.bind(("127.0.0.1", self.port))
        self.ls.listen(512)
        self.ls.settimeout(0.2)
        self.accepted = 0
        self.open = 0
        self.max_open = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    @property
    def url(self):
        return "http://127.0.0.1:%d/dns-query" % self.port

    def _pipe(self, a, b):
        try:
            while not self.stopping:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _conn(self, c):
        try:
            u = socket.create_connection(self.backend, timeout=5)
            u.settimeout(None)
            c.settimeout(None)
        except OSError:
            c.close()
            return
        t = threading.Thread(target=self._pipe, args=(u, c), daemon=True)
        t.start()
        self._pipe(c, u)
        t.join(10)
        c.close()
        u.close()
        with self.lock:
            self.open -= 1

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.open += 1
                self.max_open = max(self.max_open, self.open)
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def close(self):
        self.stopping = True
        self.ls.close()


class SilentUdp:
    """A UDP 'DNS server' on loopback that must receive nothing."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.tcp = socket.socket()
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.tcp.bind(("127.0.0.1", self.port))
            self.tcp.listen(8)
            self.tcp.setblocking(False)
        except OSError:
            self.tcp.close()
            self.tcp = None

    @property
    def server(self):
        return "127.0.0.1:%d" % self.port

    def received(self):
        n = 0
        while True:
            try:
                self.sock.recvfrom(4096)
                n += 1
            except BlockingIOError:
                break
        if self.tcp is not None:
            while True:
                try:
                    c, _ = self.tcp.accept()
                    c.close()
                    n += 1
                except BlockingIOError:
                    break
        return n

    def close(self):
        self.sock.close()
        if self.tcp is not None:
            self.tcp.close()


def cleanup_dir(d):
    shutil.rmtree(d, ignore_errors=True)


def have(binary):
    return shutil.which(binary) is not None or os.path.exists(binary)


# ---------------------------------------------------------------- benchmark
#
#   python3 tests/integration/doh_servers.py bench [SOCKS5D_BINARY]
#
# Starts the dnsdist+unbound stack and socks5d (-w 1, default build/socks5d),
# and measures the time from a SOCKS request to its reply for a literal
# address (no lookup), cold names (distinct, each a DoH round trip), and a
# cached name; then counts the DoH connections used by 1,000 lookups.  The
# target is a listening socket that never accepts (the kernel completes the
# handshake), so the connect step costs the same in every row.

def _bench(binary):
    import statistics
    import sys
    import tempfile
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from s5lib import Socks5d, connect, free_port, greeting, read_reply, recv_exact, request

    os.environ["SOCKS5D"] = str(Path(binary).resolve())
    root = Path(tempfile.mkdtemp(prefix="doh-bench-"))
    stack = DnsdistStack(root / "dd")
    stack.start()
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(4096)
    tport = target.getsockname()[1]
    trap = SilentUdp()
    results = []

    def one(port, host, atyp):
        s = connect("127.0.0.1", port, 10)
        try:
            s.sendall(greeting((0,)))
            recv_exact(s, 2, 10)
            t0 = time.perf_counter()
            s.sendall(request(host, tport, atyp=atyp))
            rep = read_reply(s, 10).rep
            dt = (time.perf_counter() - t0) * 1000
        finally:
            s.close()
        assert rep == 0, (host, rep)
        return dt

    def row(label, samples):
        q = statistics.quantiles(samples, n=100)
        results.append("| %s | %d | %.2f | %.2f | %.2f |" % (label, len(samples), q[49], q[98],
                                                             max(samples)))

    try:
        for mode, url, extra in (("cleartext HTTP/1.1 GET", stack.url, []),
                                 ("HTTPS HTTP/2 GET", stack.tls_url,
                                  ["--doh-ca-file", str(stack.cert)])):
            port = free_port()
            p = Socks5d(["-l", "127.0.0.1", "-p", str(port), "-w", "1", "--grace", "1",
                         "--doh-url", url, "--no-dns-fallback", "--dns-server", trap.server]
                        + extra)
            p.wait_ready()
            try:
                one(port, "warm-up.bulk.test", 3)  # the first connection (and TLS handshake)
                row("%s: literal 127.0.0.1 (no lookup)" % mode,
                    [one(port, "127.0.0.1", 1) for _ in range(300)])
                row("%s: cold (distinct names)" % mode,
                    [one(port, "cold%d-%d.bulk.test" % (i, port), 3) for i in range(300)])
                one(port, "hot.bulk.test", 3)
                row("%s: cached (same name)" % mode,
                    [one(port, "hot.bulk.test", 3) for _ in range(300)])
            finally:
                p.stop()
        relay = ConnCounter(stack.http_port)
        port = free_port()
        p = Socks5d(["-l", "127.0.0.1", "-p", str(port), "-w", "2", "--grace", "1",
                     "--doh-url", relay.url, "--no-dns-fallback", "--dns-server", trap.server])
        p.wait_ready()
        t0 = time.perf_counter()
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(32) as ex:
            list(ex.map(lambda i: one(port, "pool%d.bulk.test" % i, 3), range(1000)))
        el = time.perf_counter() - t0
        p.stop()
        relay.close()
        print("| lookup | n | p50 ms | p99 ms | max ms |")
        print("|---|---|---|---|---|")
        print("\n".join(results))
        print()
        print("1000 lookups of distinct names, 32 clients, -w 2, doh-connections 4: %.2f s, "
              "%d DoH connections (at most %d open at once)" % (el, relay.accepted, relay.max_open))
        if trap.received():
            print("WARNING: the classic DNS trap received %d packets" % trap.received())
    finally:
        stack.stop()
        target.close()
        trap.close()
        cleanup_dir(root)


if __name__ == "__main__":
    import sys
    if len(sys.argv) >= 2 and sys.argv[1] == "bench":
        _bench(sys.argv[2] if len(sys.argv) > 2 else "build/socks5d")
    else:
        print("usage: doh_servers.py bench [SOCKS5D_BINARY]")
