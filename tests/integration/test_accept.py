"""The accept strategy (--accept exclusive|reuseport): which listening
sockets each worker holds, how connections spread, respawn onto the same
sockets, reloads that change the strategy or the worker count, descriptor
exhaustion, a second instance on the same port."""

import os
import signal
import socket
import time

import pytest

from s5lib import (Socks5d, connect, count_fds, cpu_seconds, echo_roundtrip, free_port,
                   owner_worker, recv_exact, socket_inodes, socks_connect_ok)

# Every socks5d here resolves nothing (targets are literal addresses), and
# must never fall back to the system resolver.
DNS = ("--dns-server", "127.0.0.1:9")


# ---------------------------------------------------------------- helpers

def listen_inodes(port):
    """Inodes of the TCP sockets listening on `port` (IPv4 and IPv6)."""
    out = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if p[3] == "0A" and int(p[1].rsplit(":", 1)[1], 16) == port:
                        out.add(int(p[9]))
        except FileNotFoundError:
            pass
    return out


def held(pid, port):
    """The listening sockets on `port` that process `pid` holds."""
    return socket_inodes(pid) & listen_inodes(port)


def wait_for(pred, what, timeout=5.0, step=0.02):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(step)


def wait_workers(p, n, timeout=5.0):
    return wait_for(lambda: (lambda w: w if len(w) == n else None)(p.workers()),
                    "%d workers (have %r)" % (n, p.workers()), timeout)


def open_sessions(port, target, n):
    """n SOCKS CONNECT sessions to the echo target, each checked once."""
    out = []
    try:
        for i in range(n):
            s, _ = socks_connect_ok(port, "127.0.0.1", target)
            out.append(s)
            echo_roundtrip(s, b"session %d\n" % i)
    except BaseException:
        for s in out:
            s.close()
        raise
    return out


def per_worker(workers, port, sessions):
    counts = {w: 0 for w in workers}
    for s in sessions:
        o = owner_worker(workers, port, s)
        assert o in counts, "session %r owned by %r, not one of the workers %r" % (
            s.getsockname(), o, workers)
        counts[o] += 1
    return counts


def write_conf(path, lines):
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- sockets per worker

def test_reuseport_gives_each_worker_its_own_sockets(socks5d, echo_server):
    p = socks5d("--accept", "reuseport", *DNS, workers=2, listen=("127.0.0.1", "::1"))
    workers = wait_workers(p, 2)
    every = listen_inodes(p.port)
    # one socket per address and worker: two workers, two addresses
    assert len(every) == 4, every
    mine = {w: held(w, p.port) for w in workers}
    for w, socks in mine.items():
        assert len(socks) == 2, (w, socks)  # its own, one per address, no other's
    assert not (mine[workers[0]] & mine[workers[1]]), mine
    # the master keeps every one (for respawns)
    assert held(p.pid, p.port) == every
    assert "SO_REUSEPORT" in p.stderr_text()
    for host in ("127.0.0.1", "::1"):
        s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port, proxy_host=host)
        with s:
            echo_roundtrip(s, b"over %s\n" % host.encode())


def test_exclusive_is_the_default_and_shares_one_socket(socks5d, echo_server):
    for args in ((), ("--accept", "exclusive")):
        p = socks5d(*args, *DNS, workers=2)
        workers = wait_workers(p, 2)
        every = listen_inodes(p.port)
        assert len(every) == 1, every
        for w in workers:
            assert held(w, p.port) == every
        sessions = open_sessions(p.port, echo_server.port, 30)
        for s in sessions:
            s.close()
        p.stop()


def test_reuseport_200_connects_all_succeed_and_both_workers_serve(socks5d, echo_server):
    p = socks5d("--accept", "reuseport", *DNS, workers=2)
    workers = wait_workers(p, 2)
    sessions = open_sessions(p.port, echo_server.port, 200)
    try:
        counts = per_worker(workers, p.port, sessions)
        # the kernel hashes each connection (4-tuple) to one socket: about
        # half each; 20 of 200 is far below any plausible spread
        assert all(c >= 20 for c in counts.values()), counts
        for s in sessions[::7]:
            echo_roundtrip(s, b"still relaying\n")
    finally:
        for s in sessions:
            s.close()


# ---------------------------------------------------------------- respawn

def test_reuseport_killed_worker_respawns_on_the_same_sockets(socks5d, echo_server):
    p = socks5d("--accept", "reuseport", *DNS, workers=2)
    workers = wait_workers(p, 2)
    victim, survivor = workers
    victim_socks = held(victim, p.port)
    survivor_socks = held(survivor, p.port)
    assert len(victim_socks) == 1 and victim_socks != survivor_socks
    n_err = p.n_err()
    os.kill(victim, signal.SIGKILL)
    # connections made at once: the ones hashed to the dead worker's socket
    # wait in its queue for the respawn (the master holds the socket)
    early = []
    try:
        for _ in range(20):
            early.append(connect("127.0.0.1", p.port))
        new = wait_for(lambda: [w for w in p.workers() if w not in workers] if len(p.workers()) == 2
                       else None, "the respawn of worker %d" % victim, timeout=3)
        (fresh,) = new
        p.wait_stderr(r"worker .*pid %d.*signal 9" % victim, timeout=3, start=n_err)
        assert held(fresh, p.port) == victim_socks, "respawned worker got other sockets"
        assert held(survivor, p.port) == survivor_socks
        assert listen_inodes(p.port) == victim_socks | survivor_socks
        for s in early:
            s.sendall(b"\x05\x01\x00")
            assert recv_exact(s, 2, timeout=5) == b"\x05\x00"
    finally:
        for s in early:
            s.close()
    # the respawned worker serves again
    sessions = open_sessions(p.port, echo_server.port, 60)
    try:
        counts = per_worker([fresh, survivor], p.port, sessions)
        assert counts[fresh] > 0 and counts[survivor] > 0, counts
    finally:
        for s in sessions:
            s.close()


# ---------------------------------------------------------------- reload

def test_sighup_changing_accept_warns_and_keeps_the_sockets(socks5d, tmp_path, echo_server):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["accept = reuseport"])
    p = socks5d("-f", conf, *DNS, workers=2)
    wait_workers(p, 2)
    before = listen_inodes(p.port)
    assert len(before) == 2, before
    n = p.n_err()
    write_conf(conf, ["accept = exclusive"])
    p.send_signal(signal.SIGHUP)
    p.wait_stderr(r"warn: accept strategy changed to exclusive: it takes effect at the next start",
                  timeout=3, start=n)
    p.wait_stderr(r"configuration .* reloaded", timeout=3, start=n)
    assert listen_inodes(p.port) == before
    sessions = open_sessions(p.port, echo_server.port, 20)
    for s in sessions:
        s.close()
    # a reload that does not change it does not warn again
    n = p.n_err()
    write_conf(conf, ["accept = reuseport", "idle-timeout = 300"])
    p.send_signal(signal.SIGHUP)
    p.wait_stderr(r"configuration .* reloaded", timeout=3, start=n)
    assert not [l for l in p.err_lines[n:] if "accept strategy" in l], p.err_lines[n:]


def test_sighup_exclusive_to_reuseport_warns(socks5d, tmp_path, echo_server):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["accept = exclusive"])
    p = socks5d("-f", conf, *DNS, workers=2)
    wait_workers(p, 2)
    n = p.n_err()
    write_conf(conf, ["accept = reuseport"])
    p.send_signal(signal.SIGHUP)
    p.wait_stderr(r"warn: accept strategy changed to reuseport: it takes effect at the next start",
                  timeout=3, start=n)
    assert len(listen_inodes(p.port)) == 1
    s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    with s:
        echo_roundtrip(s, b"after reload\n")


def test_reuseport_worker_count_change_opens_and_closes_sockets(socks5d, tmp_path, echo_server):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["accept = reuseport", "workers = 2"])
    p = socks5d("-f", conf, *DNS, workers=None)
    wait_workers(p, 2)
    write_conf(conf, ["accept = reuseport", "workers = 3"])
    p.send_signal(signal.SIGHUP)
    workers = wait_workers(p, 3)
    wait_for(lambda: len(listen_inodes(p.port)) == 3, "3 listening sockets")
    mine = [held(w, p.port) for w in workers]
    assert all(len(m) == 1 for m in mine), mine
    assert len(set().union(*mine)) == 3, mine
    sessions = open_sessions(p.port, echo_server.port, 60)
    for s in sessions:
        s.close()
    # down to one: the drained workers' sockets leave the group (a socket
    # left open by anyone would swallow the connections hashed to it)
    write_conf(conf, ["accept = reuseport", "workers = 1"])
    p.send_signal(signal.SIGHUP)
    (last,) = wait_workers(p, 1)
    wait_for(lambda: len(listen_inodes(p.port)) == 1, "1 listening socket")
    assert held(last, p.port) == listen_inodes(p.port)
    assert held(p.pid, p.port) == listen_inodes(p.port)
    t0 = time.monotonic()
    sessions = open_sessions(p.port, echo_server.port, 60)
    for s in sessions:
        s.close()
    assert time.monotonic() - t0 < 10
    # and back to two: a new socket for the new worker
    write_conf(conf, ["accept = reuseport", "workers = 2"])
    p.send_signal(signal.SIGHUP)
    workers = wait_workers(p, 2)
    wait_for(lambda: len(listen_inodes(p.port)) == 2, "2 listening sockets")
    sessions = open_sessions(p.port, echo_server.port, 60)
    try:
        counts = per_worker(workers, p.port, sessions)
        assert all(c > 0 for c in counts.values()), counts
    finally:
        for s in sessions:
            s.close()


# ---------------------------------------------------------------- limits and errors

def test_reuseport_descriptor_exhaustion_pauses_and_recovers(socks5d, echo_server):
    p = socks5d("--accept", "reuseport", "--handshake-timeout", "30", *DNS, workers=2,
                prefix=["prlimit", "--nofile=64:64", "--"])
    workers = wait_workers(p, 2)
    live, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    echo_roundtrip(live, b"before\n")
    n_err = p.n_err()
    idle = []
    try:
        for _ in range(200):  # more than both workers can hold
            idle.append(connect("127.0.0.1", p.port))
        # each worker stops accepting while its limit leaves no room for the
        # sessions' outbound sockets: (64 - 16 reserved) / 2 = 24 sessions,
        # one descriptor each while they wait for their greeting
        wait_for(lambda: all(count_fds(w) >= 30 for w in workers), "both workers at their limit",
                 timeout=5)
        time.sleep(0.3)
        # neither spins on the connections left in its own socket's queue
        c0 = {w: cpu_seconds(w) for w in workers}
        time.sleep(1.0)
        for w in workers:
            used = cpu_seconds(w) - c0[w]
            assert used < 0.3, "worker %d used %.2fs CPU in 1s while out of descriptors" % (w, used)
        echo_roundtrip(live, b"during EMFILE\n")
        p.wait_stderr(r"warn: .*pausing accepts", timeout=3, start=n_err)
    finally:
        for s in idle:
            s.close()
    ok = 0
    end = time.monotonic() + 15
    while time.monotonic() < end and ok < 10:
        try:
            s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port, timeout=3)
            with s:
                echo_roundtrip(s, b"after\n")
            ok += 1
        except (AssertionError, OSError, EOFError, TimeoutError):
            time.sleep(0.2)
    assert ok == 10, "only %d new sessions after descriptors were freed" % ok
    echo_roundtrip(live, b"still alive\n")
    live.close()


def test_reuseport_does_not_join_another_instance_on_the_same_port(socks5d):
    a = socks5d("--accept", "reuseport", *DNS, workers=1)
    b = Socks5d(["-l", "127.0.0.1", "-p", str(a.port), "-w", "1", "--accept", "reuseport",
                 *DNS])
    try:
        rc = b.proc.wait(15)
    finally:
        b.stop()
    assert rc != 0
    err = b.stderr_text()
    assert "cannot listen on 127.0.0.1 port %d" % a.port in err, err
    assert "in use" in err.lower(), err
    for m in ("AddressSanitizer", "LeakSanitizer", "runtime error"):
        assert m not in err
    assert len(listen_inodes(a.port)) == 1


def test_reuseport_sigterm_closes_the_sockets_at_once(socks5d, echo_server):
    p = socks5d("--accept", "reuseport", *DNS, workers=2, grace=3)
    s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)  # keeps a worker draining
    with s:
        p.send_signal(signal.SIGTERM)
        wait_for(lambda: not listen_inodes(p.port), "the listening sockets to close", timeout=2)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", p.port), timeout=2).close()
        echo_roundtrip(s, b"draining\n")
    assert p.proc.wait(10) == 0


def test_bad_accept_value_is_a_usage_error(socks5d_bin):
    p = Socks5d(["-l", "127.0.0.1", "-p", str(free_port()), "--accept", "roundrobin", *DNS])
    try:
        rc = p.proc.wait(10)
    finally:
        p.stop()
    assert rc == 64
    err = p.stderr_text()
    assert "roundrobin" in err and "exclusive|reuseport" in err, err
