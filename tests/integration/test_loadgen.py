"""Smoke test of the benchmark load generator (bench/loadgen.c): each mode
runs briefly through socks5d against nginx and reports what it did."""

import os
import re
import subprocess
from pathlib import Path

import pytest

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
