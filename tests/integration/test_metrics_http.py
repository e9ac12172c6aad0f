"""Prometheus metrics over HTTP (--metrics ADDR:PORT, master/metrics.c).

A scrape is checked with promtool; counters rise after traffic through the
proxy; hostile requests (garbage, huge heads, slowloris, too many
connections) get their 4xx/503 and a close while the endpoint keeps
serving; a real Prometheus scrapes socks5d and sees up == 1.
"""

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

from s5lib import (_proc_tcp_entries, closed_port, connect, count_fds, cpu_seconds, echo_roundtrip,
                   eof_within, free_port, hash_password, read_until_eof, socket_inodes,
                   socks_open)

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def exchange(port, data, timeout=10.0):
    """Send data, read the whole answer until the server closes."""
    s = connect("127.0.0.1", port)
    try:
        s.sendall(data)
        return read_until_eof(s, timeout)
    finally:
        s.close()


def split(resp):
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        fields[k.strip().lower()] = v.strip()
    return status, fields, body


def scrape(port):
    status, fields, body = split(exchange(port, SCRAPE))
    assert status == 200
    assert fields["content-type"].startswith("text/plain; version=0.0.4")
    assert int(fields["content-length"]) == len(body)
    assert fields["connection"] == "close"
    return body.decode()


def sample(text, name, labels=None):
    """The value of one series, or None."""
    want = name if not labels else "%s{%s}" % (
        name, ",".join('%s="%s"' % kv for kv in labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        if key == want:
            return float(val)
    return None


@pytest.fixture
def mport():
    return free_port()


@pytest.fixture
def served(socks5d, mport):
    return socks5d("--metrics", "127.0.0.1:%d" % mport, "--dns-server", "127.0.0.1:53")


def test_scrape_passes_promtool_check(served, mport):
    text = scrape(mport)
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    for name in ("socks5d_sessions_total", "socks5d_bytes_total", "socks5d_replies_total",
                 "socks5d_dns_lookup_seconds", "socks5d_sessions_open", "socks5d_workers"):
        assert "# TYPE %s " % name in text
    assert sample(text, "socks5d_workers") == 2
    assert sample(text, "socks5d_dns_lookup_seconds_bucket", {"le": "+Inf"}) == 0
    assert sample(text, "socks5d_dns_lookup_seconds_count") == 0


def promtool_check(text):
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def series(text, name):
    """{frozenset of label pairs: value} for every sample of name."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        base, _, labels = key.partition("{")
        if base != name:
            continue
        pairs = re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels)
        out[frozenset(pairs)] = float(val)
    return out


def wait_sample(port, name, labels, pred, timeout=10.0):
    """Scrape until the sample satisfies pred (the workers record when a
    session closes, a moment after the client's close); the last text."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape(port)
        if pred(sample(text, name, labels)) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_histograms_are_empty_at_the_start(served, mport):
    text = scrape(mport)
    promtool_check(text)
    for name in ("socks5d_connect_seconds", "socks5d_session_duration_seconds"):
        assert "# TYPE %s histogram\n" % name in text
        assert sample(text, name + "_count") == 0
        assert sample(text, name + "_bucket", {"le": "+Inf"}) == 0
        assert sample(text, name + "_sum") == 0
    # the session buckets span a click to an hour
    les = [k for k in series(text, "socks5d_session_duration_seconds_bucket")]
    bounds = sorted(float(dict(k)["le"]) for k in les)
    assert bounds[0] == 0.01 and bounds[-2] == 3600 and bounds[-1] == float("inf")


def test_a_held_session_is_observed_in_the_duration_histogram(served, mport, echo_server):
    name = "socks5d_session_duration_seconds"
    # a connection that never reaches the relay is not a relayed session
    c = connect("127.0.0.1", served.port)
    c.sendall(b"\x05\x01\x00")
    assert c.recv(2) == b"\x05\x00"
    c.close()
    s, r = socks_open(served.port, "127.0.0.1", echo_server.port)
    assert r.rep == 0
    echo_roundtrip(s, b"held")
    time.sleep(0.3)
    echo_roundtrip(s, b"held")
    s.close()
    text = wait_sample(mport, name + "_count", None, lambda v: v >= 1)
    assert sample(text, name + "_count") == 1
    # from accept to close: at least the 0.3 s it was held
    assert sample(text, name + "_bucket", {"le": "0.25"}) == 0
    assert sample(text, name + "_bucket", {"le": "+Inf"}) == 1
    assert sample(text, name + "_sum") >= 0.3
    # both sessions are closed by now: only the relayed one was observed
    deadline = time.monotonic() + 10
    while sample(text, "socks5d_sessions_open") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        text = scrape(mport)
    assert sample(text, "socks5d_sessions_open") == 0
    assert sample(text, "socks5d_sessions_total") == 2
    assert sample(text, name + "_count") == 1
    promtool_check(text)


def test_connect_latency_counts_successful_connects_only(served, mport, echo_server):
    name = "socks5d_connect_seconds"
    s, r = socks_open(served.port, "127.0.0.1", closed_port())
    s.close()
    assert r.rep == 5  # connection refused: not observed
    text = scrape(mport)
    assert sample(text, name + "_count") == 0
    assert sample(text, "socks5d_replies_total", {"code": "5"}) == 1
    s, r = socks_open(served.port, "127.0.0.1", echo_server.port)
    assert r.rep == 0
    # observed when the target connected, before the success reply
    text = scrape(mport)
    s.close()
    assert sample(text, name + "_count") == 1
    assert sample(text, name + "_bucket", {"le": "+Inf"}) == 1
    # a loopback connect takes well under the connect timeout (10 s)
    assert sample(text, name + "_bucket", {"le": "10"}) == 1
    assert 0 < sample(text, name + "_sum") < 10
    promtool_check(text)


def test_per_worker_series_add_up_to_the_totals(served, mport, echo_server):
    held = []
    for i in range(6):
        s, r = socks_open(served.port, "127.0.0.1", echo_server.port)
        assert r.rep == 0
        echo_roundtrip(s, b"y" * (1000 * (i + 1)))
        held.append(s)
    text = scrape(mport)
    promtool_check(text)
    workers = sorted(served.workers())
    info = series(text, "socks5d_worker_info")
    assert sorted(int(dict(k)["pid"]) for k in info) == workers
    assert sorted(dict(k)["worker"] for k in info) == ["0", "1"]
    assert set(info.values()) == {1.0}
    opened = series(text, "socks5d_worker_sessions_open")
    assert len(opened) == 2 and sum(opened.values()) == sample(text, "socks5d_sessions_open") == 6
    for s in held:
        s.close()
    # once every session is closed, the byte counters are final
    text = wait_sample(mport, "socks5d_sessions_open", None, lambda v: v == 0)
    totals = series(text, "socks5d_worker_sessions_total")
    assert len(totals) == 2 and sum(totals.values()) == sample(text, "socks5d_sessions_total") == 6
    for d in ("up", "down"):
        per = {k: v for k, v in series(text, "socks5d_worker_bytes_total").items()
               if ("direction", d) in k}
        assert len(per) == 2
        total = sample(text, "socks5d_bytes_total", {"direction": d})
        assert total >= 21000
        assert sum(per.values()) == total
    assert sum(series(text, "socks5d_worker_sessions_open").values()) == 0


def test_a_restarted_worker_counts_again_from_zero_and_the_totals_keep(socks5d, mport,
                                                                        echo_server):
    p = socks5d("--metrics", "127.0.0.1:%d" % mport, workers=1)
    for i in range(3):
        s, r = socks_open(p.port, "127.0.0.1", echo_server.port)
        assert r.rep == 0
        echo_roundtrip(s, b"z" * 100)
        s.close()
    text = wait_sample(mport, "socks5d_session_duration_seconds_count", None, lambda v: v == 3)
    assert series(text, "socks5d_worker_sessions_total") == {frozenset({("worker", "0")}): 3}
    [old] = p.workers()
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = scrape(mport)
        pids = [int(dict(k)["pid"]) for k in series(text, "socks5d_worker_info")]
        if pids and old not in pids:
            break
        time.sleep(0.05)
    assert [dict(k)["worker"] for k in series(text, "socks5d_worker_info")] == ["0"]
    assert pids == p.workers() and old not in pids
    assert sample(text, "socks5d_worker_restarts_total") == 1
    # the new worker's series start again; the totals and histograms keep the exited one's
    assert sample(text, "socks5d_worker_sessions_total", {"worker": "0"}) == 0
    assert sample(text, "socks5d_worker_bytes_total", {"worker": "0", "direction": "up"}) == 0
    assert sample(text, "socks5d_sessions_total") == 3
    assert sample(text, "socks5d_bytes_total", {"direction": "up"}) == 300
    assert sample(text, "socks5d_session_duration_seconds_count") == 3
    assert sample(text, "socks5d_connect_seconds_count") == 3
    promtool_check(text)


def test_openmetrics_when_the_scraper_asks_for_it(served, mport):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    accept = (b"Accept: application/openmetrics-text;version=1.0.0,"
              b"application/openmetrics-text;version=0.0.1;q=0.75,"
              b"text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n")
    resp = exchange(mport, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + accept + b"\r\n")
    status, fields, body = split(resp)
    assert status == 200
    assert fields["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.endswith("# EOF\n")
    assert "# TYPE socks5d_sessions counter\n" in text
    # the reference parser is strict: it raises on anything out of the format
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["socks5d_sessions"].type == "counter"
    assert families["socks5d_dns_lookup_seconds"].type == "histogram"
    assert families["socks5d_sessions_open"].type == "gauge"
    assert families["socks5d_connect_seconds"].type == "histogram"
    assert families["socks5d_session_duration_seconds"].type == "histogram"
    assert families["socks5d_worker_sessions"].type == "counter"
    assert families["socks5d_worker_sessions_open"].type == "gauge"
    assert families["socks5d_worker_info"].type == "gauge"


def test_head_answers_the_head_only(served, mport):
    status, fields, body = split(exchange(mport, b"HEAD /metrics HTTP/1.0\r\n\r\n"))
    assert status == 200 and body == b""
    assert int(fields["content-length"]) > 1000


def test_counters_rise_after_traffic_through_the_proxy(socks5d, tmp_path, mport, echo_server):
    conf = tmp_path / "m.conf"
    conf.write_text('user = alice:%s\nuser = bo"b\\x:%s\nmetrics = 127.0.0.1:%d\n' % (
        hash_password("pw-a"), hash_password("pw-b"), mport))
    p = socks5d("-f", conf, "--dns-server", "127.0.0.1:53")
    before = scrape(mport)
    assert sample(before, "socks5d_sessions_total") == 0
    assert sample(before, "socks5d_user_bytes_total", {"user": "alice", "direction": "up"}) == 0
    s, r = socks_open(p.port, "127.0.0.1", echo_server.port, user="alice", password="pw-a")
    assert r.rep == 0
    echo_roundtrip(s, b"x" * 5000)
    text = scrape(mport)
    assert sample(text, "socks5d_sessions_open") >= 1
    assert sample(text, "socks5d_user_sessions", {"user": "alice"}) == 1
    s.close()
    # the relay's counters are added as the bytes move; wait for the last of them
    deadline = time.monotonic() + 10
    while True:
        text = scrape(mport)
        up = sample(text, "socks5d_bytes_total", {"direction": "up"})
        down = sample(text, "socks5d_bytes_total", {"direction": "down"})
        if (up >= 5000 and down >= 5000) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sample(text, "socks5d_sessions_total") >= 1
    assert up >= 5000 and down >= 5000
    assert sample(text, "socks5d_replies_total", {"code": "0"}) == 1
    assert sample(text, "socks5d_user_bytes_total", {"user": "alice", "direction": "up"}) >= 5000
    assert sample(text, "socks5d_user_bytes_total", {"user": "alice", "direction": "down"}) >= 5000
    # a name with a quote and a backslash: the backslash as the logs show it
    # (\x5c), then escaped as the format says
    assert sample(text, "socks5d_user_bytes_total",
                  {"user": 'bo\\"b\\\\x5cx', "direction": "up"}) == 0
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_user_names_that_are_not_utf8_stay_apart(socks5d, tmp_path, mport):
    # Two Latin-1 names, a backslash: each its own series, none mistaken for
    # another (a scrape with two equal series loses one of them).
    conf = tmp_path / "u.conf"
    h = hash_password("pw").encode()
    conf.write_bytes(b"user = caf\xe9:" + h + b"\nuser = caf\xe8:" + h +
                     b"\nuser = caf\\xe9:" + h + b"\nuser = caf\xef\xbf\xbd:" + h +
                     b"\nmetrics = 127.0.0.1:%d\n" % mport)
    socks5d("-f", conf, "--dns-server", "127.0.0.1:53")
    text = scrape(mport)
    promtool_check(text)
    users = [dict(k)["user"] for k in series(text, "socks5d_user_sessions")]
    assert sorted(users) == sorted(["caf\\\\xe9", "caf\\\\xe8", "caf\\\\x5cxe9", "caf\ufffd"]), users


@pytest.mark.parametrize("request_,status", [
    (b"GET / HTTP/1.1\r\n\r\n", 404),
    (b"GET /metrics/../admin HTTP/1.1\r\n\r\n", 404),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
    (b"GET /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 400),
    (b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(64)) + b"\r\n", 400),
    (b"\x05\x01\x00", 400),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\n folded\r\n\r\n", 400),
    (b"GET /metrics?" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /metrics HTTP/1.1\r\nX: " + b"b" * 9000 + b"\r\n\r\n", 431),
    (b"GET /metrics HTTP/1.1\r\n" + b"A: b\r\n" * 2000 + b"\r\n", 431),
], ids=["root", "other-path", "post", "http2", "body", "chunked", "tls", "socks", "garbage",
        "nul", "folded", "long-target", "long-field", "many-fields"])
def test_hostile_requests_get_their_status_and_a_close(served, mport, request_, status):
    resp = exchange(mport, request_)
    got, fields, body = split(resp)
    assert got == status, resp[:200]
    assert fields["connection"] == "close"
    assert body.startswith(b"%d " % status)
    if status == 405:
        assert fields["allow"] == "GET, HEAD"
    scrape(mport)  # the endpoint still serves
    assert served.alive()


def test_only_the_master_holds_the_metrics_socket(served, mport):
    # a worker holding it would keep the port after the master is gone
    inodes = {ino for lport, rport, ino in _proc_tcp_entries() if lport == mport and rport == 0}
    assert len(inodes) == 1
    assert inodes <= socket_inodes(served.pid)
    workers = served.workers()
    assert len(workers) == 2
    for w in workers:
        assert not inodes & socket_inodes(w), "worker %d holds the metrics socket" % w


def test_slowloris_is_closed_after_the_timeout(served, mport):
    s = connect("127.0.0.1", mport)
    t0 = time.monotonic()
    s.sendall(b"GET /metrics HTTP/1.1\r\n")
    closed = False
    # one byte a second: never a complete head; the server ends it (5 s)
    for _ in range(30):
        try:
            s.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        got, data, _ = eof_within(s, 1.0)
        if got:
            closed = True
            assert data == b""
            break
        # meanwhile the master serves others
        scrape(mport)
    s.close()
    assert closed, "a slow request was never closed"
    assert time.monotonic() - t0 < 20


def test_idle_connections_cannot_keep_a_scraper_out(served, mport):
    """16 connections that never send a request hold every slot; a
    scrape still gets its answer, and the oldest idle connection gives its
    place (it is closed), not a newer one."""
    idle = []
    for _ in range(16):
        idle.append(connect("127.0.0.1", mport))
        time.sleep(0.01)
    try:
        time.sleep(0.3)
        status, _, body = split(exchange(mport, SCRAPE))
        assert status == 200 and b"socks5d_sessions_total" in body
        # The first is gone, the others still open.
        for i, s in enumerate(idle):
            s.settimeout(1.0 if i == 0 else 0.05)
            try:
                data = s.recv(1)
            except socket.timeout:
                data = None
            assert (data == b"") == (i == 0), (i, data)
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 10
    while True:
        status, _, _ = split(exchange(mport, SCRAPE))
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200


def test_no_descriptor_left_pauses_accepting_without_spinning(served, mport):
    pid = served.pid
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    n = count_fds(pid)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (n, old[1]))
    waiting = []
    try:
        waiting.append(connect("127.0.0.1", mport))  # completed by the kernel, not accepted
        time.sleep(0.3)
        t0 = cpu_seconds(pid)
        time.sleep(2.0)
        used = cpu_seconds(pid) - t0
        assert used < 0.5, "the master spun: %.2f s of CPU in 2 s" % used
        assert served.wait_stderr(r"metrics: cannot accept", timeout=5)
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
    # with descriptors back, the waiting connection and new ones are served
    waiting[0].sendall(SCRAPE)
    status, _, _ = split(read_until_eof(waiting[0], 10))
    waiting[0].close()
    assert status == 200
    scrape(mport)


def test_an_idle_connection_is_closed_after_the_timeout(served, mport):
    s = connect("127.0.0.1", mport)
    got, data, elapsed = eof_within(s, 15.0)
    s.close()
    assert got and data == b""
    assert elapsed >= 3.0


def test_a_busy_metrics_port_stops_the_start(socks5d, mport):
    busy = socket.socket()
    busy.bind(("127.0.0.1", mport))
    busy.listen(1)
    try:
        p = socks5d("--metrics", "127.0.0.1:%d" % mport, wait_ready=False)
        p.proc.wait(20)
        rc = p.stop()
        socks5d.started.remove(p)  # its exit status is this test's to check
        assert rc == 71  # EX_OSERR
        assert re.search(r"metrics: cannot listen on 127\.0\.0\.1:%d: Address already in use" %
                         mport, p.stderr_text())
    finally:
        busy.close()


@pytest.mark.parametrize("value", ["127.0.0.1", "::1", "[::1]", "127.0.0.1:0", "127.0.0.1:x",
                                   "localhost:9100", "127.0.0.1:70000"])
def test_a_bad_metrics_value_is_refused(socks5d_bin, value):
    r = subprocess.run([socks5d_bin, "--metrics", value, "-p", str(free_port())],
                       capture_output=True, timeout=20)
    assert r.returncode != 0
    assert ("'%s' is not ADDR:PORT or [ADDR6]:PORT" % value) in r.stderr.decode()


def test_metrics_served_on_ipv6(socks5d):
    port = free_port("::1")
    socks5d("--metrics", "[::1]:%d" % port)
    s = socket.create_connection(("::1", port), timeout=5)
    s.sendall(SCRAPE)
    status, _, body = split(read_until_eof(s))
    s.close()
    assert status == 200 and b"socks5d_sessions_total" in body


# ---------------------------------------------------------------- a real Prometheus

def prom_query(port, q):
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": q}))
    with urllib.request.urlopen(url, timeout=5) as r:
        d = json.load(r)
    assert d["status"] == "success"
    return [float(x["value"][1]) for x in d["data"]["result"]]


def wait_query(port, q, pred, timeout=60.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = prom_query(port, q)
            if pred(last):
                return last
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("%s: %r after %.0f s" % (q, last, timeout))


@pytest.fixture
def prometheus(mport):
    data = tempfile.mkdtemp(prefix="s5it-prom-")
    port = free_port()
    cfg = "%s/prometheus.yml" % data
    with open(cfg, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n  - job_name: socks5d\n    static_configs:\n"
                "      - targets: ['127.0.0.1:%d']\n" % mport)
    proc = subprocess.Popen([PROMETHEUS, "--config.file=" + cfg, "--storage.tsdb.path=" + data,
                             "--web.listen-address=127.0.0.1:%d" % port],
                            stdout=subprocess.DEVNULL, stderr=open(data + "/log", "w"))
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(data, ignore_errors=True)


def test_a_real_prometheus_scrapes_socks5d(served, mport, prometheus, echo_server):
    wait_query(prometheus, 'up{job="socks5d"}', lambda v: v == [1.0])
    wait_query(prometheus, "socks5d_sessions_total", lambda v: v == [0.0])
    s, r = socks_open(served.port, "127.0.0.1", echo_server.port)
    assert r.rep == 0
    echo_roundtrip(s, b"hello")
    s.close()
    wait_query(prometheus, "socks5d_sessions_total", lambda v: v == [1.0])
    assert prom_query(prometheus, 'up{job="socks5d"}') == [1.0]
    # Prometheus asked for OpenMetrics and parsed it without an error
    with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/targets" % prometheus,
                                timeout=5) as r:
        targets = json.load(r)["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"]
    assert targets[0]["lastError"] == ""


def test_a_client_that_keeps_sending_after_its_answer_is_cut_off(served, mport):
    s = socket.create_connection(("127.0.0.1", mport), timeout=5)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    block = b"x" * 65536
    t0 = time.monotonic()
    sent = 0
    with pytest.raises(OSError):
        while time.monotonic() - t0 < 4:
            sent += s.send(block)
    # closed after at most 64 KiB more were read, long before the 5 s timeout
    assert time.monotonic() - t0 < 4, sent
    s.close()
    assert scrape(mport)
