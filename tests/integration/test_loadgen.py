"""Smoke test of the benchmark load generator (bench/loadgen.c): each mode
runs briefly through socks5d against nginx and reports what it did."""

import os
import re
import signal
import subprocess
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
