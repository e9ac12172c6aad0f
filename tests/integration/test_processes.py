"""Master/worker processes: worker count, crash isolation and respawn,
descriptor exhaustion, graceful stop."""

import os
import signal
import socket
import threading
import time

from s5lib import (connect, cpu_seconds, echo_roundtrip, eof_within, owner_worker,
                   socks_connect_ok)


def wait_workers(p, n, timeout=5.0):
    end = time.monotonic() + timeout
    while True:
        w = p.workers()
        if len(w) == n:
            return w
        if time.monotonic() > end:
            raise AssertionError("expected %d workers, have %r" % (n, w))
        time.sleep(0.02)


def test_master_forks_requested_number_of_workers(socks5d):
    p = socks5d(workers=3)
    w = wait_workers(p, 3)
    for pid in w:
        with open("/proc/%d/stat" % pid) as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        assert ppid == p.pid


def test_killed_worker_is_logged_and_replaced_while_others_keep_relaying(socks5d, echo_server):
    p = socks5d(workers=2)
    workers = wait_workers(p, 2)
    sessions = []
    for i in range(16):
        s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
        sessions.append(s)
    owners = {}
    for s in sessions:
        owners[s] = owner_worker(workers, p.port, s)
    assert all(o in workers for o in owners.values()), owners
    per = {w: [s for s in sessions if owners[s] == w] for w in workers}
    # kill the worker with fewer sessions; the other's sessions must survive
    victim = min(workers, key=lambda w: len(per[w]))
    survivor = [w for w in workers if w != victim][0]
    assert per[survivor], "no sessions on any worker?"

    # continuous traffic on every session while the kill happens
    stop = threading.Event()
    errors = {}
    counts = {s: 0 for s in sessions}

    def pump(s):
        try:
            while not stop.is_set():
                echo_roundtrip(s, b"traffic %d\n" % counts[s], timeout=3)
                counts[s] += 1
        except Exception as e:
            errors[s] = e
    threads = [threading.Thread(target=pump, args=(s,), daemon=True) for s in sessions]
    for t in threads:
        t.start()
    time.sleep(0.3)
    n_err = p.n_err()
    os.kill(victim, signal.SIGKILL)
    t_kill = time.monotonic()
    # replaced within about a second
    new = None
    while time.monotonic() - t_kill < 2.0:
        w = p.workers()
        if len(w) == 2 and victim not in w:
            new = [x for x in w if x not in workers]
            break
        time.sleep(0.02)
    assert new, "worker %d not replaced within 2s (workers now %r)" % (victim, p.workers())
    replaced_after = time.monotonic() - t_kill
    before = {s: counts[s] for s in per[survivor]}
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(5)
    for s in per[survivor]:
        assert s not in errors, "session on surviving worker failed: %r" % errors[s]
        assert counts[s] > before[s], "session on surviving worker stalled"
    for s in per[victim]:
        assert s in errors, "session on the killed worker should have died"
    # crash logged on stderr
    p.wait_stderr(r"worker .*pid %d.*(signal 9|SIGKILL)" % victim, timeout=3, start=n_err)
    assert replaced_after <= 1.5, replaced_after
    # new sessions work (on any worker)
    for i in range(10):
        s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
        with s:
            echo_roundtrip(s, b"after respawn %d\n" % i)
    for s in sessions:
        s.close()


def test_descriptor_exhaustion_does_not_spin_and_recovers(socks5d, echo_server):
    p = socks5d("--handshake-timeout", "30", workers=1,
                prefix=["prlimit", "--nofile=64:64", "--"])
    (worker,) = wait_workers(p, 1)
    live, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    echo_roundtrip(live, b"before\n")
    n_err = p.n_err()
    idle = []
    try:
        for _ in range(100):  # more than the worker can hold
            idle.append(connect("127.0.0.1", p.port))
        # wait for the worker to reach its limit
        end = time.monotonic() + 3
        while time.monotonic() < end:
            from s5lib import count_fds
            if count_fds(worker) >= 60:
                break
            time.sleep(0.05)
        time.sleep(0.3)
        # not spinning on the unaccepted backlog
        c0 = cpu_seconds(worker)
        time.sleep(1.0)
        used = cpu_seconds(worker) - c0
        assert used < 0.3, "worker used %.2fs CPU in 1s while out of descriptors" % used
        # the established session is still served
        echo_roundtrip(live, b"during EMFILE\n")
        p.wait_stderr(r" warn: ", timeout=3, start=n_err)
        # warnings at most once per second
        n_w = p.n_err()
        time.sleep(1.5)
        new_warn = [l for l in p.err_lines[n_w:] if " warn: " in l]
        assert len(new_warn) <= 2, new_warn
    finally:
        for s in idle:
            s.close()
    # after the idle connections are gone, new sessions are accepted again
    ok = False
    end = time.monotonic() + 10
    while time.monotonic() < end and not ok:
        try:
            s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port, timeout=3)
            with s:
                echo_roundtrip(s, b"after\n")
            ok = True
        except (AssertionError, OSError, EOFError, TimeoutError):
            time.sleep(0.2)
    assert ok, "no new session accepted after descriptors were freed"
    echo_roundtrip(live, b"still alive\n")
    live.close()


def test_sigterm_with_idle_session_exits_0_within_grace(socks5d, echo_server):
    p = socks5d(grace=1)
    s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    with s:
        echo_roundtrip(s, b"hi\n")
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rc = p.proc.wait(10)
        elapsed = time.monotonic() - t0
        assert rc == 0
        # grace 1 s, plus slack for a loaded 2-core machine and the sanitizer's exit checks
        assert elapsed <= 5.0, elapsed
        got_eof, _, _ = eof_within(s, 2)
        assert got_eof, "idle session not closed at shutdown"
    p.stop()  # collects stderr; the fixture checks sanitizer output


def test_sigterm_lets_active_session_finish_within_grace(socks5d, nginx):
    p = socks5d(grace=3)
    s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port)
    with s:
        p.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        from s5lib import read_until_eof
        resp = read_until_eof(s, 5)
        assert resp.split(b"\r\n\r\n", 1)[1] == nginx.index_body
    rc = p.proc.wait(6)
    assert rc == 0
    p.stop()


def test_sigterm_stops_accepting(socks5d, echo_server):
    p = socks5d(grace=2)
    s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)  # keeps it draining
    p.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    refused = False
    try:
        c = socket.create_connection(("127.0.0.1", p.port), timeout=2)
        c.settimeout(2)
        c.sendall(b"\x05\x01\x00")
        got_eof, data, _ = eof_within(c, 2)
        refused = data != b"\x05\x00"
        c.close()
    except OSError:
        refused = True
    assert refused, "new session served after SIGTERM"
    s.close()
    assert p.proc.wait(6) == 0
    p.stop()


def test_sigint_exits_0(socks5d):
    p = socks5d()
    p.send_signal(signal.SIGINT)
    assert p.proc.wait(5) == 0
    p.stop()


def test_sigpipe_ignored_when_client_vanishes(socks5d, nginx):
    p = socks5d(workers=1)
    workers = wait_workers(p, 1)
    for _ in range(5):
        s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port)
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s.recv(1000)
        s.close()
    time.sleep(0.5)
    assert p.workers() == workers, "worker died (SIGPIPE?)"
    s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port)
    s.close()


def test_default_worker_count_is_online_cpus(socks5d):
    p = socks5d(workers=None)
    n = os.sysconf("SC_NPROCESSORS_ONLN")
    assert "ready: %d workers" % n in p.stderr_text() or ("ready: 1 worker" in p.stderr_text() and n == 1)
    wait_workers(p, n)


def test_all_workers_killed_are_all_replaced(socks5d, echo_server):
    p = socks5d(workers=2)
    old = wait_workers(p, 2)
    for w in old:
        os.kill(w, signal.SIGKILL)
    end = time.monotonic() + 3
    while time.monotonic() < end:
        w = p.workers()
        if len(w) == 2 and not set(w) & set(old):
            break
        time.sleep(0.02)
    assert len(p.workers()) == 2 and not set(p.workers()) & set(old), p.workers()
    for i in range(4):
        s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
        with s:
            echo_roundtrip(s, b"x%d" % i)
    for w in old:
        p.wait_stderr(r"pid %d\b.*signal 9" % w, timeout=3)


def test_worker_crash_from_sigabrt_logged_and_replaced(socks5d, echo_server):
    p = socks5d(workers=1)
    (w,) = wait_workers(p, 1)
    os.kill(w, signal.SIGABRT)  # (SIGSEGV would be caught by ASan)
    end = time.monotonic() + 3
    while time.monotonic() < end and (p.workers() in ([], [w])):
        time.sleep(0.02)
    new = p.workers()
    assert len(new) == 1 and new[0] != w, new
    p.wait_stderr(r"pid %d\b" % w, timeout=3)
    s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    with s:
        echo_roundtrip(s, b"ok")


def test_grace_expiry_closes_busy_session_and_exits_0(socks5d, nginx):
    p = socks5d(grace=1)
    s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port)
    with s:
        # a transfer that cannot finish: we never read
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(0.3)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rc = p.proc.wait(10)
        assert rc == 0
        assert time.monotonic() - t0 <= 5.0
    p.stop()


def test_master_stderr_lines_have_date_pid_level(socks5d, echo_server, tmp_path):
    import re
    conf = tmp_path / "c.conf"
    conf.write_text("workers = 2\n")
    p = socks5d("-f", conf)
    (w0, w1) = wait_workers(p, 2)
    conf.write_text("workers = nope\n")
    p.send_signal(signal.SIGHUP)
    p.wait_stderr(r"c\.conf:1:", timeout=3)
    os.kill(w0, signal.SIGKILL)
    p.wait_stderr(r"pid %d\b" % w0, timeout=3)
    p.stop()
    rx = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ socks5d\[\d+\] (error|warn|info|debug): \S")
    # "==PID==..." lines are the sanitizer runtime's own (checked elsewhere)
    bad = [l for l in p.err_lines if not rx.match(l) and not re.match(r"^==\d+==", l)]
    assert not bad, bad


def test_descriptor_limit_stops_accepting_before_outbound_sockets_fail(socks5d, echo_server):
    """A worker takes no more sessions than its descriptor limit can give
    two descriptors each (keeping a reserve): the sessions it took all get
    their outbound socket, and the next client waits in the queue instead
    of getting a failure reply."""
    from s5lib import socks_open
    p = socks5d(workers=1, prefix=["prlimit", "--nofile=64:64", "--"])
    sessions = []
    outcome = None
    try:
        for i in range(40):  # 2 descriptors per session: the limit is hit before 32
            try:
                s, r = socks_open(p.port, "127.0.0.1", echo_server.port, timeout=2)
            except (TimeoutError, EOFError, OSError) as e:
                outcome = ("no reply", repr(e))
                break
            if r.rep != 0:
                outcome = ("rep", r.rep)
                s.close()
                break
            sessions.append(s)
        assert outcome is not None, "descriptor limit never reached"
        assert outcome[0] == "no reply", outcome
        assert len(sessions) >= 20, len(sessions)
        # established sessions still relay
        for i, s in enumerate(sessions):
            echo_roundtrip(s, b"s%d" % i)
        assert p.alive() and len(p.workers()) == 1
    finally:
        for s in sessions[:10]:
            s.close()
    time.sleep(0.3)
    end = time.monotonic() + 10
    ok = False
    last = None
    while time.monotonic() < end and not ok:
        try:
            s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port, timeout=2)
            with s:
                echo_roundtrip(s, b"again")
            ok = True
        except (AssertionError, OSError, EOFError, TimeoutError) as e:
            last = e
            time.sleep(0.1)
    from s5lib import count_fds
    assert ok, "no new session after 10 of %d sessions were closed (outcome %r, last error %r, " \
        "worker fds %d); stderr:\n%s" % (len(sessions), outcome, last,
                                        count_fds(p.workers()[0]) if p.workers() else -1,
                                        "\n".join(p.err_lines[-15:]))
    for s in sessions[10:]:
        s.close()


def test_respawned_worker_exits_without_sanitizer_thread_warning(socks5d, echo_server):
    # A worker forked while the master runs another thread inherits a broken
    # thread list: LeakSanitizer then warns "Running thread N was not
    # suspended. False leaks are possible." when that worker exits.
    p = socks5d(workers=1)
    (w,) = wait_workers(p, 1)
    os.kill(w, signal.SIGKILL)
    end = time.monotonic() + 3
    while time.monotonic() < end and p.workers() in ([], [w]):
        time.sleep(0.02)
    s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    with s:
        echo_roundtrip(s, b"x")
    p.stop()
    notes = [l for l in p.err_lines if "was not suspended" in l or "False leaks" in l]
    assert not notes, notes


def test_single_worker_serves_right_after_ready_every_time(socks5d):
    # "ready" means all workers run. Repeated cold starts catch a worker that
    # hangs during its start-up (e.g. forked while another master thread held
    # a lock) and never serves although "ready" was printed.
    from s5lib import recv_exact
    hung = []
    for i in range(25):
        p = socks5d(workers=1)
        try:
            s = connect("127.0.0.1", p.port, timeout=3)
            with s:
                s.sendall(b"\x05\x01\x00")
                assert recv_exact(s, 2, 3) == b"\x05\x00"
        except (TimeoutError, EOFError, OSError) as e:
            w = p.workers()
            wchan = ""
            if w:
                try:
                    wchan = open("/proc/%d/wchan" % w[0]).read()
                except OSError:
                    pass
            hung.append((i, repr(e), w, wchan))
        p.stop(timeout=20)
        if hung:
            break
    assert not hung, "worker never served after 'ready' (start %r, worker %r blocked in %r)" % (
        hung[0][0], hung[0][2], hung[0][3])


def test_descriptor_budget_counts_the_splice_pipes(socks5d, nginx, echo_server):
    """Sessions whose downloads wait in a full pipe hold two more
    descriptors each: the worker counts them, so under a 64-descriptor
    limit a new session is either served or left waiting, never answered
    with a failure for lack of a descriptor, and the worker never runs
    into EMFILE."""
    from s5lib import socks_open
    p = socks5d(workers=1, prefix=["prlimit", "--nofile=64:64", "--"])
    (worker,) = wait_workers(p, 1)
    stalled = []
    try:
        for _ in range(10):  # downloads that nobody reads: their pipes stay full
            s, r = socks_open(p.port, "127.0.0.1", nginx.port, timeout=3)
            assert r.rep == 0
            s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(s)
        time.sleep(1.0)
        pipes = sum(1 for fd in os.listdir("/proc/%d/fd" % worker)
                    if os.readlink("/proc/%d/fd/%s" % (worker, fd)).startswith("pipe:"))
        assert pipes >= 10, "expected the stalled downloads to hold pipes, saw %d" % pipes
        served = 0
        for i in range(20):
            try:
                s, r = socks_open(p.port, "127.0.0.1", echo_server.port, timeout=1)
            except (TimeoutError, EOFError, OSError):
                break  # waiting in the queue: the worker is at its budget
            assert r.rep == 0, "session %d refused with %d" % (i, r.rep)
            echo_roundtrip(s, b"x%d" % i)
            stalled.append(s)
            served += 1
        assert served < 20, "the budget never stopped accepting"
        assert not any("Too many open files" in line for line in p.err_lines), p.err_lines[-5:]
    finally:
        for s in stalled:
            s.close()
