"""A fleet as operators run it: three socks5d instances behind a real
HAProxy (TCP mode, send-proxy-v2, health checks on the SOCKS port), each
serving --metrics on its own loopback port, and one real Prometheus
scraping all three.  What Prometheus' HTTP API shows must match the traffic
sent through HAProxy, and a killed instance must show as down there while
the others keep serving."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.parse
import urllib.request
import time

import pytest

from s5lib import free_port
from test_metrics_http import PROMETHEUS
from test_proxyproto import HAProxy, logged_ports, open_sessions

JOB = "socks5d-fleet"


class Prometheus:
    """The Debian prometheus on loopback, its own data directory, scraping
    `targets` (HOST:PORT) every second as one job."""

    def __init__(self, targets):
        if not os.access(PROMETHEUS, os.X_OK):
            pytest.fail("prometheus not installed (make deps installs Debian's prometheus)")
        self.data = tempfile.mkdtemp(prefix="s5it-prom-")
        self.port = free_port()
        self.config = ("global:\n"
                       "  scrape_interval: 1s\n"
                       "  scrape_timeout: 1s\n"
                       "scrape_configs:\n"
                       "  - job_name: %s\n"
                       "    static_configs:\n"
                       "      - targets: [%s]\n"
                       % (JOB, ", ".join("'%s'" % t for t in targets)))
        cfg = os.path.join(self.data, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(self.config)
        self.log = open(os.path.join(self.data, "log"), "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + cfg, "--storage.tsdb.path=" + self.data,
             "--web.listen-address=127.0.0.1:%d" % self.port],
            stdout=subprocess.DEVNULL, stderr=self.log)

    def query(self, q):
        """An instant query: {instance label: value} (one entry, key None,
        for an aggregate without labels)."""
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (self.port,
                                                        urllib.parse.urlencode({"query": q}))
        with urllib.request.urlopen(url, timeout=5) as r:
            d = json.load(r)
        assert d["status"] == "success", d
        return {x["metric"].get("instance"): float(x["value"][1]) for x in d["data"]["result"]}

    def wait(self, q, pred, timeout=60.0):
        """Query until pred(result) holds; the result."""
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError("prometheus exited: %s" % self.log_text())
            try:
                last = self.query(q)
                if pred(last):
                    return last
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError("%s: %r after %.0f s" % (q, last, timeout))

    def log_text(self):
        with open(os.path.join(self.data, "log")) as f:
            return f.read()[-3000:]

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.data, ignore_errors=True)


def send_sessions(port, target, n):
    """n SOCKS sessions through HAProxy, each echoing once, then closed."""
    for s in open_sessions(port, target, n):
        s.close()


def test_one_prometheus_scrapes_a_fleet_behind_haproxy(socks5d, echo_server, tmp_path):
    mports = [free_port() for _ in range(3)]
    backends = [socks5d("--proxy-protocol", "127.0.0.1", "--dns-server", "127.0.0.1",
                        "--metrics", "127.0.0.1:%d" % m, workers=1) for m in mports]
    inst = ["127.0.0.1:%d" % m for m in mports]
    ha = HAProxy(str(tmp_path), [b.port for b in backends])
    prom = Prometheus(inst)
    target = (echo_server.host, echo_server.port)
    try:
        ha.wait_up(["s0", "s1", "s2"])
        prom.wait('up{job="%s"}' % JOB, lambda v: v == {i: 1.0 for i in inst})
        # Nothing sent yet but the probe that saw HAProxy listening (a
        # client connection, forwarded).  HAProxy's health checks (a
        # connection to the SOCKS port with a LOCAL header, every 300 ms on
        # each instance) are no client session: the count stays put while
        # they go on.
        prom.wait("socks5d_requests_total", lambda v: v == {i: 0.0 for i in inst})
        base = prom.wait("sum(socks5d_sessions_total)", lambda v: None in v)[None]
        assert base <= 1, base
        time.sleep(3)
        assert prom.query("sum(socks5d_sessions_total)") == {None: base}

        n = 30
        send_sessions(ha.port, target, n)
        # Every session sent is one session, one request and one success
        # reply, summed over the fleet by Prometheus; round robin spread
        # them over all three.
        prom.wait("sum(socks5d_sessions_total)", lambda v: v == {None: base + n})
        prom.wait("sum(socks5d_requests_total)", lambda v: v == {None: float(n)})
        prom.wait('sum(socks5d_replies_total{code="0"})', lambda v: v == {None: float(n)})
        per = prom.query("socks5d_requests_total")
        assert set(per) == set(inst) and all(v >= 1 for v in per.values()), per
        # The sessions seen by Prometheus are the ones the access logs hold.
        for b, i in zip(backends, inst):
            end = time.monotonic() + 10
            while len(logged_ports(b)) < per[i] and time.monotonic() < end:
                time.sleep(0.1)
            assert len(logged_ports(b)) == per[i], (i, len(logged_ports(b)), per)

        # One instance dies at once, master and workers.
        victim = backends.pop(1)
        dead = inst[1]
        for pid in [victim.pid] + list(victim.workers()):
            os.kill(pid, signal.SIGKILL)
        victim.proc.wait(10)
        victim.stopped = True
        socks5d.started.remove(victim)
        # Prometheus sees its target down, the others up; HAProxy's checks
        # take it out of the rotation.
        prom.wait('up{job="%s"}' % JOB,
                  lambda v: v == {i: (0.0 if i == dead else 1.0) for i in inst})
        ha.wait_up(["s0", "s2"])
        live = '{instance!="%s"}' % dead
        before = prom.query("sum(socks5d_sessions_total%s)" % live)[None]
        # Traffic still succeeds, served by the two left.
        send_sessions(ha.port, target, n)
        prom.wait("sum(socks5d_sessions_total%s)" % live,
                  lambda v: v == {None: before + n})
        per = prom.query("socks5d_sessions_total%s" % live)
        assert set(per) == set(inst) - {dead}, per
        assert prom.query('up{instance="%s"}' % dead) == {dead: 0.0}
    finally:
        prom.close()
        ha.close()
