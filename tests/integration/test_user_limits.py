"""Per-user limits (limit = lines): concurrent sessions counted across the
workers, a bandwidth shared by a user's sessions in every worker, places
freed by a worker's death, and reload."""

import os
import signal
import socket
import threading
import time

import pytest

from s5lib import (ThreadedTarget, echo_roundtrip, free_port, hash_password, owner_worker,
                   recv_exact, socks_open)

RATE = 1 << 20  # "1M": 1024-based, as the sizes of the settings


@pytest.fixture(scope="module")
def hashes():
    return {u: hash_password("pw-" + u) for u in ("alice", "bob", "carol")}


def write_conf(path, hashes, limits, extra=()):
    lines = ["user = %s:%s" % (u, h) for u, h in sorted(hashes.items())]
    lines += ["limit = " + l for l in limits] + list(extra)
    path.write_text("\n".join(lines) + "\n")


def start(socks5d, tmp_path, hashes, limits, extra=(), **kw):
    conf = tmp_path / "limits.conf"
    write_conf(conf, hashes, limits, extra)
    # Nothing here resolves a name; a loopback DNS server all the same.
    p = socks5d("-f", conf, "--dns-server", "127.0.0.1:53", **kw)
    return p, conf


def open_as(p, user, port, expect_rep=0):
    s, r = socks_open(p.port, "127.0.0.1", port, user=user, password="pw-" + user)
    if r.rep != expect_rep:
        s.close()
        raise AssertionError("%s: wanted reply %d, got %r" % (user, expect_rep, r))
    return s


def wait_workers(p, n, timeout=10.0):
    end = time.monotonic() + timeout
    while True:
        w = p.workers()
        if len(w) == n:
            return w
        assert time.monotonic() < end, "expected %d workers, have %r" % (n, w)
        time.sleep(0.02)


def open_until_ok(p, user, port, timeout=5.0):
    """A place is freed a moment after its session ends: retry until the
    request is granted (0x02 meanwhile)."""
    end = time.monotonic() + timeout
    while True:
        s, r = socks_open(p.port, "127.0.0.1", port, user=user, password="pw-" + user)
        if r.rep == 0:
            return s
        s.close()
        assert r.rep == 2, r
        assert time.monotonic() < end, "no place freed within %.0f s" % timeout
        time.sleep(0.05)


# ---------------------------------------------------------------- sessions

def test_fourth_session_refused_with_0x02_until_one_closes(socks5d, tmp_path, hashes, echo_server):
    p, _ = start(socks5d, tmp_path, hashes, ["carol max-sessions 3"])
    held = [open_as(p, "carol", echo_server.port) for _ in range(3)]
    for s in held:
        echo_roundtrip(s, b"still here\n")
    over = open_as(p, "carol", echo_server.port, expect_rep=2)
    over.close()
    # The refusal is logged as a request answered 2.
    p.wait_log(lambda f: len(f) > 7 and f[1] == "carol" and f[7] == "2")
    # Another user is not limited by carol's line.
    others = [open_as(p, "bob", echo_server.port) for _ in range(5)]
    held.pop().close()
    held.append(open_until_ok(p, "carol", echo_server.port))
    open_as(p, "carol", echo_server.port, expect_rep=2).close()
    for s in held + others:
        s.close()


def test_default_line_limits_each_user_separately(socks5d, tmp_path, hashes, echo_server):
    p, _ = start(socks5d, tmp_path, hashes, ["* max-sessions 1", "bob max-sessions 2"])
    a = open_as(p, "alice", echo_server.port)
    c = open_as(p, "carol", echo_server.port)
    open_as(p, "alice", echo_server.port, expect_rep=2).close()
    b = [open_as(p, "bob", echo_server.port) for _ in range(2)]
    open_as(p, "bob", echo_server.port, expect_rep=2).close()
    for s in [a, c] + b:
        s.close()


def test_places_are_counted_across_workers(socks5d, tmp_path, hashes, echo_server):
    p, _ = start(socks5d, tmp_path, hashes, ["carol max-sessions 4"], workers=2)
    workers = wait_workers(p, 2)
    # Keep opening and closing until the 4 held sessions sit in both workers.
    held = []
    for _ in range(200):
        while len(held) < 4:
            held.append(open_until_ok(p, "carol", echo_server.port))
        owners = {owner_worker(workers, p.port, s) for s in held}
        if len(owners) == 2:
            break
        held.pop(0).close()
    assert len({owner_worker(workers, p.port, s) for s in held}) == 2
    for _ in range(4):
        open_as(p, "carol", echo_server.port, expect_rep=2).close()
    for s in held:
        s.close()


def test_killed_worker_frees_its_sessions_places(socks5d, tmp_path, hashes, echo_server):
    p, _ = start(socks5d, tmp_path, hashes, ["carol max-sessions 3"], workers=2)
    workers = wait_workers(p, 2)
    held = [open_as(p, "carol", echo_server.port) for _ in range(3)]
    owners = {s: owner_worker(workers, p.port, s) for s in held}
    victim = max(workers, key=lambda w: sum(1 for o in owners.values() if o == w))
    lost = [s for s in held if owners[s] == victim]
    kept = [s for s in held if owners[s] != victim]
    assert lost
    os.kill(victim, signal.SIGKILL)
    p.wait_stderr(r"killed by signal 9", timeout=10)
    wait_workers(p, 2)
    # Exactly the dead worker's places come back.
    fresh = [open_until_ok(p, "carol", echo_server.port) for _ in lost]
    open_as(p, "carol", echo_server.port, expect_rep=2).close()
    for s in kept:
        echo_roundtrip(s, b"survivor\n")
    for s in held + fresh:
        s.close()


def test_reload_changes_the_limit_and_a_bad_line_keeps_it(socks5d, tmp_path, hashes,
                                                         echo_server):
    p, conf = start(socks5d, tmp_path, hashes, ["carol max-sessions 3"])
    held = [open_as(p, "carol", echo_server.port) for _ in range(3)]
    open_as(p, "carol", echo_server.port, expect_rep=2).close()
    n = p.n_err()
    write_conf(conf, hashes, ["carol max-sessions 5"])
    p.send_signal(signal.SIGHUP)
    p.wait_stderr(r"reloaded", start=n)
    held += [open_as(p, "carol", echo_server.port) for _ in range(2)]
    open_as(p, "carol", echo_server.port, expect_rep=2).close()
    n = p.n_err()
    write_conf(conf, hashes, ["carol max-sessions 1", "carol rate 1M"])
    p.send_signal(signal.SIGHUP)
    p.wait_stderr(r"second limit line for 'carol'", start=n)
    p.wait_stderr(r"not reloaded", start=n)
    held.pop().close()
    held.append(open_until_ok(p, "carol", echo_server.port))  # still 5
    for s in held:
        s.close()
    # Removing the line lifts the limit.
    n = p.n_err()
    write_conf(conf, hashes, [])
    p.send_signal(signal.SIGHUP)
    p.wait_stderr(r"reloaded", start=n)
    more = [open_as(p, "carol", echo_server.port) for _ in range(8)]
    for s in more:
        s.close()


def test_invalid_limit_line_refuses_to_start(socks5d_bin, tmp_path, hashes):
    import subprocess
    conf = tmp_path / "bad.conf"
    write_conf(conf, hashes, ["alice max-sessions zero"])
    r = subprocess.run([socks5d_bin, "-f", str(conf), "-l", "127.0.0.1", "-p", str(free_port()),
                        "--dns-server", "127.0.0.1:53"], capture_output=True, timeout=20)
    assert r.returncode != 0
    assert b"bad.conf:4: limit: max-sessions 'zero'" in r.stderr, r.stderr


# ---------------------------------------------------------------- rate

def source_handler(c, a):
    """Wait for one byte, then send until the peer goes away."""
    c.settimeout(30)
    if not c.recv(1):
        return 0
    block = b"\xa5" * 65536
    sent = 0
    try:
        while True:
            sent += c.send(block)
    except OSError:
        return sent


def drain_for(s, seconds, counts, i, start_evt):
    start_evt.wait(10)
    s.sendall(b"g")
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        s.settimeout(left)
        try:
            d = s.recv(1 << 20)
        except (socket.timeout, TimeoutError):
            return
        if not d:
            return
        counts[i] += len(d)


def spread_sessions(p, user, port, per_worker=2):
    workers = wait_workers(p, 2)
    by = {w: [] for w in workers}
    extra = []
    for _ in range(64):
        if all(len(v) >= per_worker for v in by.values()):
            break
        s = open_as(p, user, port)
        w = owner_worker(workers, p.port, s)
        if w in by and len(by[w]) < per_worker:
            by[w].append(s)
        else:
            extra.append(s)
    for s in extra:
        s.close()
    assert all(len(v) == per_worker for v in by.values()), {w: len(v) for w, v in by.items()}
    return [s for v in by.values() for s in v]


def test_rate_is_shared_by_sessions_in_both_workers(socks5d, tmp_path, hashes):
    target = ThreadedTarget(source_handler)
    try:
        # reuseport: the kernel spreads connections opened one after the
        # other over the workers (exclusive wakes the same idle worker).
        p, _ = start(socks5d, tmp_path, hashes, ["alice rate 1M"], workers=2,
                     extra=["accept = reuseport"])
        sessions = spread_sessions(p, "alice", target.port)
        counts = [0] * len(sessions)
        go = threading.Event()
        threads = [threading.Thread(target=drain_for, args=(s, 10.0, counts, i, go))
                   for i, s in enumerate(sessions)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        go.set()
        for t in threads:
            t.join(30)
        elapsed = time.monotonic() - t0
        total = sum(counts)
        rate = total / elapsed
        assert 0.9 * RATE <= rate <= 1.1 * RATE, (rate, counts)
        # Every session moved data: the allowance is shared, not hoarded.
        assert all(c > 0.1 * total / len(counts) for c in counts), counts
        for s in sessions:
            s.close()
    finally:
        target.close()


def test_unlimited_user_is_not_slowed(socks5d, tmp_path, hashes):
    target = ThreadedTarget(source_handler)
    try:
        p, _ = start(socks5d, tmp_path, hashes, ["alice rate 1M"])
        s = open_as(p, "bob", target.port)
        s.sendall(b"g")
        want = 32 << 20
        got = 0
        # 32 MiB at alice's rate would take 32 s: bob is done far sooner.
        end = time.monotonic() + 15
        while got < want:
            assert time.monotonic() < end, "bob moved only %d bytes" % got
            s.settimeout(5)
            d = s.recv(1 << 20)
            assert d
            got += len(d)
        s.close()
    finally:
        target.close()


def test_rate_limited_upload_slows_and_never_errors(socks5d, tmp_path, hashes):
    """OUT (client -> target) is limited on its own: 256K/s up for 2 s of
    data, every byte arrives intact."""
    sink = ThreadedTarget(lambda c, a: _count_until_eof(c))
    try:
        p, _ = start(socks5d, tmp_path, hashes, ["alice rate 0/256K"])
        s = open_as(p, "alice", sink.port)
        payload = os.urandom(512 << 10)
        t0 = time.monotonic()
        s.settimeout(30)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        reply = recv_exact(s, 16, timeout=30)
        elapsed = time.monotonic() - t0
        assert int(reply.split()[0]) == len(payload)
        # 512 KiB at 256 KiB/s: not before about 2 s (minus one burst).
        assert elapsed >= 1.5, elapsed
        s.close()
    finally:
        sink.close()


def _count_until_eof(c):
    n = 0
    while True:
        d = c.recv(1 << 20)
        if not d:
            break
        n += len(d)
    c.sendall(b"%15d\n" % n)
    return n
