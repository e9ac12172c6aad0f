"""DNS over HTTPS through socks5d, against real DoH servers (doh_servers.py).

Servers: dnsdist in front of unbound (cleartext HTTP/1.1 and HTTPS with ALPN
h2), nginx terminating TLS with HTTP/1.1 only in front of dnsdist, and
kresd (strict RFC 8484; doh_legacy cleartext, doh2 = TLS + HTTP/2 only).
The target is conftest's nginx (127.0.0.1 and ::1).

Every socks5d here gets --dns-server on loopback: the unbound's plain DNS
port when a classic fallback is wanted, or a UDP socket owned by the test
that must receive nothing when DoH alone must answer.  Nothing leaves the
machine.
"""

import concurrent.futures
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import doh_servers as ds
from s5lib import closed_port, connect, greeting, read_reply, read_until_eof, recv_exact, request

NAMES = ["v4.test", "v6.test", "dual.test", "multi.test"]
for _b in ("dnsdist", "unbound", "kresd", "openssl", "/usr/sbin/nginx"):
    if not ds.have(_b):
        # Not a skip: the DoH tests need these packages (scripts/deps.sh).
        raise RuntimeError("%s is not installed: run scripts/deps.sh (dnsdist unbound "
                           "knot-resolver knot-resolver-module-http)" % _b)


@pytest.fixture(scope="module")
def tmpdir_doh():
    d = tempfile.mkdtemp(prefix="s5it-doh-")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(tmpdir_doh):
    s = ds.DnsdistStack(tmpdir_doh / "dnsdist")
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def kresd(tmpdir_doh, stack):
    k = ds.Kresd(tmpdir_doh / "kresd", stack.cert, stack.key)
    try:
        k.start()
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="module")
def tls_h1(tmpdir_doh, stack):
    n = ds.NginxTlsFront(tmpdir_doh / "nginx-tls", stack.http_port, stack.cert, stack.key)
    try:
        n.start()
        yield n
    finally:
        n.stop()


@pytest.fixture
def silent():
    u = ds.SilentUdp()
    yield u
    u.close()


def curl_via(proxy_port, name, port, path="/index.html", timeout=10):
    return subprocess.run(["curl", "-sS", "--max-time", str(timeout), "--noproxy", "",
                           "--socks5-hostname", "127.0.0.1:%d" % proxy_port,
                           "http://%s:%d%s" % (name, port, path)],
                          capture_output=True, timeout=timeout + 5)


def socks_rep(proxy_port, name, port, timeout=10.0):
    """The reply code for CONNECT name:port (the session is closed after)."""
    s = connect("127.0.0.1", proxy_port, timeout)
    with s:
        s.sendall(greeting((0,)))
        assert recv_exact(s, 2, timeout) == b"\x05\x00"
        s.sendall(request(name, port, atyp=3))
        return read_reply(s, timeout).rep


def mode_args(mode, stack, kresd=None, tls_h1=None):
    server, how = mode
    if server == "dnsdist":
        url = stack.tls_url if how.startswith("https") else stack.url
        ca = str(stack.cert)
    elif server == "nginx-h1":
        url, ca = tls_h1.url, str(tls_h1.cafile)
    else:
        url = kresd.tls_url if how.startswith("https") else kresd.url
        ca = str(kresd.cafile)
    args = ["--doh-url", url]
    if how.startswith("https"):
        args += ["--doh-ca-file", ca]
    if how.endswith("post"):
        args += ["--doh-method", "post"]
    return args


MODES = [
    ("dnsdist", "http-get"), ("dnsdist", "http-post"),
    ("dnsdist", "https-h2-get"), ("dnsdist", "https-h2-post"),
    ("nginx-h1", "https-h1-get"), ("nginx-h1", "https-h1-post"),
    ("kresd", "http-get"), ("kresd", "http-post"),
    ("kresd", "https-h2only-get"), ("kresd", "https-h2only-post"),
]


@pytest.mark.parametrize("mode", MODES, ids=["-".join(m) for m in MODES])
def test_every_name_resolves_in_every_mode(request_fixture_values, mode, socks5d, nginx, silent):
    stack, kresd, tls_h1 = request_fixture_values(mode)
    p = socks5d(*mode_args(mode, stack, kresd, tls_h1), "--no-dns-fallback",
                "--dns-server", silent.server, workers=1)
    for name in NAMES:
        r = curl_via(p.port, name, nginx.port)
        assert r.returncode == 0, (name, r.stderr.decode(), p.stderr_text()[-2000:])
        assert r.stdout == nginx.index_body, name
    # DoH alone answered: the classic DNS server heard nothing.
    assert silent.received() == 0


@pytest.fixture
def request_fixture_values(request):
    def get(mode):
        server = mode[0]
        stack = request.getfixturevalue("stack")
        kresd = request.getfixturevalue("kresd") if server == "kresd" else None
        tls_h1 = request.getfixturevalue("tls_h1") if server == "nginx-h1" else None
        return stack, kresd, tls_h1
    return get


@pytest.mark.parametrize("post", [False, True], ids=["get", "post"])
def test_original_flags_build_the_cleartext_endpoint(socks5d, stack, nginx, silent, post):
    args = ["--doh-ip", "127.0.0.1", "--doh-port", str(stack.http_port), "--doh-path",
            "/dns-query", "--doh-query", "?dns=", "--doh-host", "localhost"]
    if post:
        args.append("--doh-method-post")
    p = socks5d(*args, "--no-dns-fallback", "--dns-server", silent.server, workers=1)
    r = curl_via(p.port, "dual.test", nginx.port)
    assert r.returncode == 0, (r.stderr.decode(), p.stderr_text()[-2000:])
    assert silent.received() == 0


def test_python_socks_client_resolves_through_doh(socks5d, stack, nginx, silent):
    import socks
    p = socks5d("--doh-url", stack.url, "--no-dns-fallback", "--dns-server", silent.server)
    s = socks.socksocket()
    s.set_proxy(socks.SOCKS5, "127.0.0.1", p.port, rdns=True)
    s.settimeout(10)
    try:
        s.connect(("v4.test", nginx.port))
        s.sendall(b"GET /index.html HTTP/1.0\r\nHost: v4.test\r\n\r\n")
        data = read_until_eof(s, 10)
    finally:
        s.close()
    assert data.endswith(nginx.index_body)
    assert silent.received() == 0


def test_multi_address_name_reaches_the_last_address(socks5d, stack, nginx, silent):
    # multi.test: 127.0.0.2, 127.0.0.3 (refused: nginx is bound to 127.0.0.1), 127.0.0.1
    p = socks5d("--doh-url", stack.url, "--no-dns-fallback", "--dns-server", silent.server,
                "--log-level", "debug", workers=1)
    before = len(nginx.access_entries())
    assert socks_rep(p.port, "multi.test", nginx.port) == 0
    p.wait_stderr(r"connect to 127\.0\.0\.2 .*refused", timeout=5)
    p.wait_stderr(r"connect to 127\.0\.0\.3 .*refused", timeout=5)
    r = curl_via(p.port, "multi.test", nginx.port)
    assert r.stdout == nginx.index_body
    assert len(nginx.access_entries()) > before


def _stalled_listener(host, port):
    """A listener on host:port whose accept queue is full: new SYNs are dropped."""
    import select
    l = socket.socket()
    l.bind((host, port))
    l.listen(0)
    fill = []
    for _ in range(10):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect((host, port))
        except BlockingIOError:
            pass
        fill.append(s)
        if not select.select([], [s], [], 0.3)[1]:
            return l, fill
    raise AssertionError("could not fill the accept queue")


def test_stalled_first_address_loses_the_race_to_the_next(socks5d, stack, nginx, silent):
    # race.test: 127.0.0.4 (its SYNs are dropped: it never answers), then
    # 127.0.0.1 (nginx).  Attempts race (RFC 8305): the second starts 250 ms
    # after the first instead of after the 30 s connect timeout.
    l, fill = _stalled_listener("127.0.0.4", nginx.port)
    try:
        p = socks5d("--doh-url", stack.url, "--no-dns-fallback", "--dns-server", silent.server,
                    "--connect-timeout", "30", "--log-level", "debug", workers=1)
        t0 = time.monotonic()
        assert socks_rep(p.port, "race.test", nginx.port, timeout=25) == 0
        assert time.monotonic() - t0 < 15
        r = curl_via(p.port, "race.test", nginx.port)
        assert r.stdout == nginx.index_body
    finally:
        for s in fill:
            s.close()
        l.close()


@pytest.mark.parametrize("name", ["nope.test", "servfail.test", "http500.test", "html.test"])
def test_negative_and_failed_answers_reply_04(socks5d, stack, silent, name):
    p = socks5d("--doh-url", stack.url, "--no-dns-fallback", "--dns-server", silent.server,
                workers=1)
    t0 = time.monotonic()
    assert socks_rep(p.port, name, 80) == 4
    assert time.monotonic() - t0 < 3.0
    assert silent.received() == 0


def test_big_answer_gives_all_addresses(socks5d, stack, silent):
    # big.test has 32 A records (538 bytes): decoded and refused one after another
    p = socks5d("--doh-url", stack.url, "--no-dns-fallback", "--dns-server", silent.server,
                "--connect-timeout", "2", workers=1)
    assert socks_rep(p.port, "big.test", closed_port()) == 5


def test_doh_down_falls_back_to_classic_dns(socks5d, stack, nginx):
    dead = closed_port()
    p = socks5d("--doh-url", "http://127.0.0.1:%d/dns-query" % dead,
                "--dns-server", stack.classic, workers=1)
    for name in ("v4.test", "dual.test", "multi.test", "v6.test"):
        r = curl_via(p.port, name, nginx.port)
        assert r.returncode == 0, (name, r.stderr.decode(), p.stderr_text()[-2000:])
    warnings = [l for l in p.err_lines if "unusable" in l]
    assert len(warnings) == 1, warnings  # one warning per outage
    assert "classic DNS" in warnings[0]


def test_no_fallback_means_04_and_no_classic_query(socks5d, silent):
    dead = closed_port()
    p = socks5d("--doh-url", "http://127.0.0.1:%d/dns-query" % dead, "--no-dns-fallback",
                "--dns-server", silent.server, workers=1)
    for name in ("v4.test", "dual.test", "other.example"):
        assert socks_rep(p.port, name, 80) == 4
    time.sleep(0.3)
    assert silent.received() == 0


def test_without_doh_options_the_default_doh_port_gets_no_query(socks5d, stack, nginx):
    # No DoH option: a local user holding 127.0.0.1:8053 (the original
    # default endpoint) must not see, let alone answer, any lookup; names
    # resolve through --dns-server.
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        squatter.bind(("127.0.0.1", 8053))
    except OSError:
        squatter.close()
        pytest.fail("127.0.0.1:8053 is taken; this test needs to hold it")
    squatter.listen(16)
    squatter.setblocking(False)
    try:
        before = stack.queries("dual.test")
        p = socks5d("--dns-server", stack.classic, workers=1)
        for name in ("dual.test", "v4.test"):
            r = curl_via(p.port, name, nginx.port)
            assert r.returncode == 0, (r.stderr.decode(), p.stderr_text()[-2000:])
        time.sleep(0.3)
        with pytest.raises(BlockingIOError):
            squatter.accept()
        assert stack.queries("dual.test") > before
        assert "unusable" not in p.stderr_text()
    finally:
        squatter.close()


def test_one_original_flag_turns_doh_on_with_defaults_for_the_rest(socks5d, stack, nginx, silent):
    # --doh-port and --doh-path given; --doh-ip 127.0.0.1, --doh-host
    # localhost and --doh-query ?dns= keep their defaults.
    p = socks5d("--doh-port", str(stack.http_port), "--doh-path", "/dns-query",
                "--no-dns-fallback", "--dns-server", silent.server, workers=1)
    r = curl_via(p.port, "dual.test", nginx.port)
    assert r.returncode == 0, (r.stderr.decode(), p.stderr_text()[-2000:])
    assert silent.received() == 0


def test_doh_restart_recovers_without_restarting_socks5d(socks5d, nginx, silent, tmp_path):
    own = ds.DnsdistStack(tmp_path / "dd")
    try:
        own.start()
        p = socks5d("--doh-url", own.url, "--no-dns-fallback", "--dns-server", silent.server,
                    workers=1)
        assert socks_rep(p.port, "v4.test", nginx.port) == 0
        own.stop_dnsdist()
        assert socks_rep(p.port, "dual.test", nginx.port) == 4
        own.start_dnsdist()
        # dual.test was not cached (it failed); DoH is asked again at once
        assert socks_rep(p.port, "dual.test", nginx.port) == 0
        p.wait_stderr(r"answers again", timeout=5)
        assert silent.received() == 0
    finally:
        own.stop()


def _queries_settle(stack, name, want, timeout=3.0):
    end = time.monotonic() + timeout
    while True:
        n = stack.queries(name)
        if n >= want or time.monotonic() > end:
            return n
        time.sleep(0.05)


def test_second_lookup_within_ttl_sends_no_query(socks5d, stack, nginx, silent):
    name = "dual.test"
    before = stack.queries(name)
    p = socks5d("--doh-url", stack.url, "--no-dns-fallback", "--dns-server", silent.server,
                workers=1)
    assert socks_rep(p.port, name, nginx.port) == 0
    assert _queries_settle(stack, name, before + 2) == before + 2  # A + AAAA
    for _ in range(3):
        assert socks_rep(p.port, name, nginx.port) == 0
    time.sleep(0.5)
    assert stack.queries(name) == before + 2


def test_nxdomain_is_cached_per_soa_minimum(socks5d, stack, silent):
    name = "cached-nx.test"
    before = stack.queries(name)
    p = socks5d("--doh-url", stack.url, "--no-dns-fallback", "--dns-server", silent.server,
                workers=1)
    assert socks_rep(p.port, name, 80) == 4
    assert _queries_settle(stack, name, before + 2) == before + 2
    assert socks_rep(p.port, name, 80) == 4
    time.sleep(0.5)
    assert stack.queries(name) == before + 2


def test_short_ttl_expires_after_the_minimum_clamp(socks5d, stack, nginx, silent):
    # ttl.test has TTL 1; the cache keeps it for the 5 s minimum, then asks again
    name = "ttl.test"
    before = stack.queries(name)
    p = socks5d("--doh-url", stack.url, "--no-dns-fallback", "--dns-server", silent.server,
                workers=1)
    assert socks_rep(p.port, name, nginx.port) == 0
    assert _queries_settle(stack, name, before + 2) == before + 2
    time.sleep(2)
    assert socks_rep(p.port, name, nginx.port) == 0
    time.sleep(0.3)
    assert stack.queries(name) == before + 2
    time.sleep(3.5)
    assert socks_rep(p.port, name, nginx.port) == 0
    assert _queries_settle(stack, name, before + 4) == before + 4


def test_lookup_timeout_replies_04_with_a_diagnostic(socks5d, silent, tmp_path):
    # A DoH "server" that accepts and never answers.
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    try:
        conf = tmp_path / "s.conf"
        conf.write_text("dns-timeout = 1\n")
        p = socks5d("-f", str(conf), "--doh-url",
                    "http://127.0.0.1:%d/dns-query" % ls.getsockname()[1], "--no-dns-fallback",
                    "--dns-server", silent.server, workers=1)
        t0 = time.monotonic()
        assert socks_rep(p.port, "v4.test", 80) == 4
        elapsed = time.monotonic() - t0
        assert 0.8 <= elapsed < 3.0, elapsed
        p.wait_stderr(r"timed out", timeout=3)
        assert silent.received() == 0
    finally:
        ls.close()


def test_sighup_changes_the_doh_endpoint(socks5d, stack, nginx, silent, tmp_path):
    dead = closed_port()
    conf = tmp_path / "s.conf"
    conf.write_text("doh-url = http://127.0.0.1:%d/dns-query\ndns-fallback = no\n" % dead)
    p = socks5d("-f", str(conf), "--dns-server", silent.server, workers=1)
    assert socks_rep(p.port, "v4.test", nginx.port) == 4
    conf.write_text("doh-url = %s\ndns-fallback = no\n" % stack.url)
    n = p.n_err()
    p.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    end = time.monotonic() + 5
    while socks_rep(p.port, "v4.test", nginx.port) != 0:
        assert time.monotonic() < end, p.stderr_text()[-2000:]
        time.sleep(0.2)
    assert silent.received() == 0
    assert p.n_err() >= n


def _rep_for(port, name, target_port):
    try:
        return socks_rep(port, name, target_port, timeout=20)
    except Exception as e:  # noqa: BLE001 - reported by the caller
        return repr(e)


def test_1000_lookups_use_no_more_connections_than_the_pool(socks5d, stack, nginx, silent):
    relay = ds.ConnCounter(stack.http_port)
    try:
        workers, pool = 2, 4
        p = socks5d("--doh-url", relay.url, "--no-dns-fallback", "--dns-server", silent.server,
                    workers=workers)
        names = ["n%d.bulk.test" % i for i in range(1000)]
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(32) as ex:
            reps = list(ex.map(lambda n: _rep_for(p.port, n, nginx.port), names))
        elapsed = time.monotonic() - t0
        bad = [(n, r) for n, r in zip(names, reps) if r != 0]
        assert not bad, (bad[:5], [l for l in p.err_lines if "dns:" in l][:10])
        print("1000 lookups (2000 DoH requests) in %.2f s over %d connections (max open %d)"
              % (elapsed, relay.accepted, relay.max_open))
        assert 1 <= relay.accepted <= workers * pool, relay.accepted
    finally:
        relay.close()


def test_500_concurrent_sessions_all_resolve(socks5d, stack, nginx, silent):
    # 500 handshakes at once from one address: no cap on unauthenticated ones
    p = socks5d("--doh-url", stack.url, "--no-dns-fallback", "--dns-server", silent.server,
                "--max-unauth-per-source", "0", workers=2)
    socks = []
    try:
        for i in range(500):
            s = connect("127.0.0.1", p.port, 10)
            s.sendall(greeting((0,)) + request("c%d.bulk.test" % i, nginx.port, atyp=3))
            socks.append(s)
        reps = []
        for s in socks:
            assert recv_exact(s, 2, 20) == b"\x05\x00"
            reps.append(read_reply(s, 20).rep)
        assert reps.count(0) == 500, [r for r in reps if r != 0][:10]
    finally:
        for s in socks:
            s.close()


def test_tls_is_verified_by_default(socks5d, stack, silent):
    # the stack's certificate is self-signed: without --doh-ca-file it must fail
    p = socks5d("--doh-url", stack.tls_url, "--no-dns-fallback", "--dns-server", silent.server,
                workers=1)
    assert socks_rep(p.port, "v4.test", 80) == 4
    p.wait_stderr(r"unusable \(transport failure: .*(SSL|certificate)", timeout=5)
    assert silent.received() == 0


N_H2 = 40


def test_https_lookups_multiplex_over_few_connections(socks5d, stack, nginx, silent):
    relay = ds.ConnCounter(stack.tls_port)
    try:
        workers = 2
        # the certificate names 127.0.0.1: the relay listens there too
        p = socks5d("--doh-url", "https://127.0.0.1:%d/dns-query" % relay.port,
                    "--doh-ca-file", str(stack.cert), "--no-dns-fallback",
                    "--dns-server", silent.server, workers=workers)
        socks = []
        try:
            for i in range(N_H2):
                s = connect("127.0.0.1", p.port, 10)
                s.sendall(greeting((0,)) + request("h2-%d.bulk.test" % i, nginx.port, atyp=3))
                socks.append(s)
            reps = []
            for s in socks:
                assert recv_exact(s, 2, 20) == b"\x05\x00"
                reps.append(read_reply(s, 20).rep)
        finally:
            for s in socks:
                s.close()
        assert reps.count(0) == N_H2, [r for r in reps if r != 0][:10]
        print("%d concurrent HTTPS lookups: %d connections" % (N_H2, relay.accepted))
        # HTTP/2: the requests of a worker share one connection (dnsdist allows
        # 100 concurrent streams; 40 lookups are at most 80 requests in one worker)
        assert 1 <= relay.accepted <= workers, relay.accepted
    finally:
        relay.close()
