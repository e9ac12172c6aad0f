"""Running under systemd: the notification protocol ($NOTIFY_SOCKET) against
a listener of the test's own, the watchdog, and the unit file in dist/."""

import os
import re
import shutil
import struct
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from s5lib import _proc_tcp_entries, echo_roundtrip, free_port, socks_connect_ok

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "dist" / "socks5d.service"


class NotifyListener:
    """A unix datagram socket standing in for the service manager: every
    datagram is kept as (monotonic time, {key: value}, raw text)."""

    def __init__(self, tmp_path, abstract=False, on_message=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # the sender's pid, as the service manager checks it
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.on_message = on_message
        if abstract:
            name = "s5it-notify-" + uuid.uuid4().hex
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            path = str(tmp_path / "notify")
            self.sock.bind(path)
            self.address = path
        self.sock.settimeout(0.2)
        self.msgs = []
        self.cond = threading.Condition()
        self.closing = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.closing:
            try:
                raw, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                continue
            except OSError:
                return
            text = raw.decode("utf-8", "replace")
            fields = dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    fields["_PID"] = str(struct.unpack("iII", data[:12])[0])
            if self.on_message:
                self.on_message(fields)
            with self.cond:
                self.msgs.append((time.monotonic(), fields, text))
                self.cond.notify_all()

    def wait_for(self, key, value=None, start=0, timeout=20.0):
        """Index of the first message (index >= start) carrying key (=value)."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.msgs)):
                    f = self.msgs[i][1]
                    if key in f and (value is None or f[key] == value):
                        return i
                left = end - time.monotonic()
                assert left > 0, "no %s%s from socks5d within %.0f s; got %r" % (
                    key, "=" + value if value else "", timeout, [m[2] for m in self.msgs])
                self.cond.wait(left)

    def times_of(self, key, since=0.0):
        with self.cond:
            return [t for t, f, _ in self.msgs if key in f and t >= since]

    def snapshot(self):
        with self.cond:
            return list(self.msgs)

    def close(self):
        self.closing = True
        self.sock.close()
        self.thread.join(2)


@pytest.fixture
def notify(tmp_path):
    n = NotifyListener(tmp_path)
    yield n
    n.close()


def start(socks5d, notify, *args, env=None, **kw):
    e = {"NOTIFY_SOCKET": notify.address}
    e.update(env or {})
    return socks5d(*args, env=e, **kw)


def listening_inodes(port):
    return {ino for lport, rport, ino in _proc_tcp_entries() if lport == port and rport == 0}


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def watches_listener(pid, inodes):
    """Does process pid have a socket of `inodes` in one of its epoll sets?"""
    fds = {}
    epolls = []
    d = "/proc/%d/fd" % pid
    try:
        for n in os.listdir(d):
            try:
                t = os.readlink(os.path.join(d, n))
            except OSError:
                continue
            if t.startswith("socket:["):
                fds[int(n)] = int(t[8:-1])
            elif t == "anon_inode:[eventpoll]":
                epolls.append(n)
    except FileNotFoundError:
        return False
    for e in epolls:
        try:
            with open("/proc/%d/fdinfo/%s" % (pid, e)) as f:
                for line in f:
                    m = re.match(r"tfd:\s+(\d+)", line)
                    if m and fds.get(int(m.group(1))) in inodes:
                        return True
        except FileNotFoundError:
            pass
    return False


def test_ready_sent_once_a_worker_serves(socks5d, tmp_path, echo_server):
    port = free_port()
    seen = {}

    def at_ready(fields):
        # checked as the datagram arrives: a worker must already watch the
        # listening socket in its epoll set
        if fields.get("READY") == "1" and "served" not in seen:
            master = int(fields["_PID"])
            inodes = listening_inodes(port)
            seen["master"] = master
            seen["served"] = any(watches_listener(w, inodes) for w in children(master))

    n = NotifyListener(tmp_path, on_message=at_ready)
    try:
        p = start(socks5d, n, port=port, wait_ready=False)
        i = n.wait_for("READY", "1")
        assert seen["master"] == p.pid, "READY=1 from another process than the master"
        assert seen["served"], "READY=1 before any worker watched the listening socket"
        s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
        with s:
            echo_roundtrip(s, b"ready")
        first = n.snapshot()[i][1]
        assert re.match(r"serving: [12] of 2 workers", first.get("STATUS", "")), first
        assert len(n.times_of("READY")) == 1
        # every message comes from the master
        assert {f["_PID"] for _, f, _ in n.snapshot()} == {str(p.pid)}
    finally:
        n.close()


class FifoFeeder:
    """A FIFO that blocks each reader until released, then hands it `text`."""

    def __init__(self, path, text):
        self.path = str(path)
        os.mkfifo(self.path)
        self.text = text.encode()
        self.released = threading.Event()
        self.done = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.released.wait()
        while not self.done:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader now
                time.sleep(0.01)
                continue
            try:
                os.write(fd, self.text)
            except OSError:
                pass
            os.close(fd)
            # let that reader see the end of the file and go before the
            # next open (a writer that stays would hold its EOF back)
            time.sleep(0.2)

    def close(self):
        self.released.set()
        self.done = True
        self.thread.join(2)


def test_no_ready_while_the_worker_is_still_starting(socks5d, tmp_path, echo_server):
    """The worker reads /etc/resolv.conf as it starts (its resolver): in a
    mount namespace of its own that file is a FIFO the test holds, so the
    worker is stuck in its setup until the test lets it go."""
    fifo = FifoFeeder(tmp_path / "resolv.conf", "nameserver 127.0.0.1\n")
    n = NotifyListener(tmp_path)
    try:
        wrap = ("unshare", "-m", "--", "sh", "-c",
                'mount --bind "$0" /etc/resolv.conf && exec "$@"', fifo.path)
        p = start(socks5d, n, prefix=wrap, workers=1, wait_ready=False)
        p.wait_stderr(r"listening on 127\.0\.0\.1")
        end = time.monotonic() + 10
        while time.monotonic() < end and not children(p.pid):
            time.sleep(0.01)
        assert children(p.pid), "no worker forked"
        # a reload meanwhile must not end in a READY=1 either
        p.send_signal(signal.SIGHUP)
        p.wait_stderr(r"reload: no configuration file")
        time.sleep(1.0)
        ws = children(p.pid)
        assert ws and not any(watches_listener(w, listening_inodes(p.port)) for w in ws), \
            "the worker got past its setup: the test's hold on it does not work"
        assert n.times_of("READY") == [], "READY=1 while the only worker was in its setup"
        fifo.released.set()
        n.wait_for("READY", "1")
        s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
        s.close()
    finally:
        fifo.close()
        n.close()


def test_ready_over_an_abstract_socket_name(socks5d, tmp_path, echo_server):
    n = NotifyListener(tmp_path, abstract=True)
    try:
        p = start(socks5d, n)
        n.wait_for("READY", "1")
        s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
        s.close()
    finally:
        n.close()


def test_sighup_gives_reloading_then_ready(socks5d, notify, tmp_path):
    conf = tmp_path / "s.conf"
    conf.write_text("log-level = info\n")
    conf.chmod(0o600)
    p = start(socks5d, notify, "-f", conf)
    first = notify.wait_for("READY", "1")
    p.send_signal(signal.SIGHUP)
    r = notify.wait_for("RELOADING", "1", start=first + 1)
    fields = notify.snapshot()[r][1]
    # MONOTONIC_USEC: CLOCK_MONOTONIC in microseconds, as systemd >= 253 wants
    usec = int(fields["MONOTONIC_USEC"])
    assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 60
    again = notify.wait_for("READY", "1", start=r + 1)
    assert again > r
    p.wait_stderr(r"configuration .* reloaded")


def test_sighup_with_invalid_file_still_ends_the_reload(socks5d, notify, tmp_path):
    conf = tmp_path / "s.conf"
    conf.write_text("log-level = info\n")
    conf.chmod(0o600)
    p = start(socks5d, notify, "-f", conf)
    first = notify.wait_for("READY", "1")
    conf.write_text("no-such-key = 1\n")
    p.send_signal(signal.SIGHUP)
    r = notify.wait_for("RELOADING", "1", start=first + 1)
    again = notify.wait_for("READY", "1", start=r + 1)
    assert "refused" in notify.snapshot()[again][1].get("STATUS", "")


def test_status_follows_the_serving_workers(socks5d, notify):
    p = start(socks5d, notify, workers=2)
    i = notify.wait_for("READY", "1")
    notify.wait_for("STATUS", "serving: 2 of 2 workers", start=i)
    w = wait_worker(p)
    os.kill(w, signal.SIGSTOP)  # not reaped: still counted
    os.kill(w, signal.SIGKILL)
    j = notify.wait_for("STATUS", "serving: 1 of 2 workers", start=i + 1, timeout=10)
    notify.wait_for("STATUS", "serving: 2 of 2 workers", start=j + 1, timeout=10)


def test_sigterm_gives_stopping(socks5d, notify):
    p = start(socks5d, notify)
    notify.wait_for("READY", "1")
    p.stop()
    i = notify.wait_for("STOPPING", "1", timeout=5)
    assert "draining" in notify.snapshot()[i][1].get("STATUS", "")
    assert p.returncode == 0


def test_watchdog_pets_stop_while_master_stopped_and_resume(socks5d, notify):
    p = start(socks5d, notify, env={"WATCHDOG_USEC": "200000"})
    notify.wait_for("READY", "1")
    # every 100 ms: several within 1.5 s (a generous window)
    t0 = time.monotonic()
    time.sleep(1.5)
    assert len(notify.times_of("WATCHDOG", since=t0)) >= 4
    os.kill(p.pid, signal.SIGSTOP)
    try:
        time.sleep(0.3)  # one already in flight may still arrive
        stopped_at = time.monotonic()
        time.sleep(1.0)  # five periods, more than three watchdog intervals
        assert notify.times_of("WATCHDOG", since=stopped_at) == []
    finally:
        os.kill(p.pid, signal.SIGCONT)
    resumed = time.monotonic()
    end = resumed + 5
    while time.monotonic() < end and len(notify.times_of("WATCHDOG", since=resumed)) < 3:
        time.sleep(0.05)
    assert len(notify.times_of("WATCHDOG", since=resumed)) >= 3


def test_watchdog_for_another_pid_is_not_ours(socks5d, notify):
    p = start(socks5d, notify, env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    notify.wait_for("READY", "1")
    time.sleep(1.0)
    assert notify.times_of("WATCHDOG") == []
    assert p.alive()


def test_watchdog_silent_while_no_worker_serves(socks5d, notify):
    """A worker that keeps dying is respawned with a growing back-off; while
    none serves, the master does not pet the watchdog."""
    p = start(socks5d, notify, workers=1, env={"WATCHDOG_USEC": "200000"})
    notify.wait_for("READY", "1")
    notify.wait_for("WATCHDOG", "1")
    # quick deaths: respawned at once, then after 250 ms, 500 ms, 1 s, 2 s
    pos = len(p.err_lines)
    for _ in range(5):
        w = wait_worker(p)
        os.kill(w, signal.SIGKILL)
        wait_gone(w)
    p.wait_stderr(r"keeps dying: restarting it in 2000 ms", start=pos)
    down = time.monotonic()
    time.sleep(1.0)
    assert notify.times_of("WATCHDOG", since=down + 0.15) == [], \
        "WATCHDOG=1 while the only worker was down"
    wait_worker(p)
    back = time.monotonic()
    end = back + 5
    while time.monotonic() < end and not notify.times_of("WATCHDOG", since=back):
        time.sleep(0.05)
    assert notify.times_of("WATCHDOG", since=back), "WATCHDOG=1 did not resume"


def wait_worker(p, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ws = [w for w in p.workers() if pid_alive(w)]
        if ws:
            return ws[0]
        time.sleep(0.01)
    raise AssertionError("no worker within %.0f s" % timeout)


def wait_gone(pid, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and pid_alive(pid):
        time.sleep(0.01)


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(") ", 1)[1][0] not in "ZX"
    except (FileNotFoundError, IndexError):
        return False


def test_without_notify_socket_nothing_changes(socks5d, echo_server):
    p = socks5d(prefix=("env", "-u", "NOTIFY_SOCKET"), env={"WATCHDOG_USEC": "200000"})
    s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    with s:
        echo_roundtrip(s, b"plain")
    assert "NOTIFY_SOCKET" not in p.stderr_text()


def test_empty_notify_socket_is_no_socket(socks5d, echo_server):
    p = socks5d(env={"NOTIFY_SOCKET": ""})
    s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    s.close()
    assert "NOTIFY_SOCKET" not in p.stderr_text()


def test_relative_notify_socket_refused_with_a_message(socks5d, echo_server):
    p = socks5d(env={"NOTIFY_SOCKET": "relative/notify"})
    assert "NOTIFY_SOCKET" in p.stderr_text()
    s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    s.close()


def test_notify_socket_with_no_listener_does_not_stop_the_server(socks5d, tmp_path, echo_server):
    p = socks5d(env={"NOTIFY_SOCKET": str(tmp_path / "nobody"), "WATCHDOG_USEC": "200000"})
    time.sleep(0.5)
    s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    s.close()
    assert p.alive()


# ---------------------------------------------------------------- the unit file

def unit_directives():
    out = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def test_unit_file_passes_systemd_analyze_verify(tmp_path, socks5d_bin):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: run make deps"
    # verify wants ExecStart's binary to exist and man:socks5d(8) to open
    text = UNIT.read_text()
    assert "\nExecStart=/usr/sbin/socks5d " in text
    unit = tmp_path / "socks5d.service"
    unit.write_text(text.replace("\nExecStart=/usr/sbin/socks5d ",
                                 "\nExecStart=%s " % Path(socks5d_bin).resolve()))
    (tmp_path / "man" / "man8").mkdir(parents=True)
    shutil.copy(ROOT / "man" / "socks5d.8", tmp_path / "man" / "man8" / "socks5d.8")
    env = dict(os.environ, MANPATH=str(tmp_path / "man"))
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                       env=env, timeout=60)
    # verify exits 0 on a value it ignores: any word about our unit fails
    said = [l for l in (r.stdout + r.stderr).splitlines() if "socks5d" in l]
    assert r.returncode == 0 and not said, r.stdout + r.stderr


def test_unit_file_runs_unprivileged_and_notifies():
    d = unit_directives()
    assert d["Type"] == ["notify"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["User"] == ["socks5d"] and d["Group"] == ["socks5d"]
    assert d["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert d["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert "run-as" not in d["ExecStart"][0]
    for k, v in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                 ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                 ("RuntimeDirectory", "socks5d")):
        assert d[k] == [v], k
    assert d["WatchdogSec"] and d["LimitNOFILE"]
    fams = d["RestrictAddressFamilies"][0].split()
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= set(fams)
    # the options on the command line exist
    subprocess.run([str(socks5d_binary_path()), "--help"], check=True, capture_output=True)


def socks5d_binary_path():
    from s5lib import socks5d_binary
    return socks5d_binary()


# ---------------------------------------------------------------- as the unit runs it

def free_low_port():
    for port in range(1023, 900, -1):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise AssertionError("no free port below 1024")


def caps(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    raise AssertionError("no %s for pid %d" % (field, pid))


CAP_NET_BIND_SERVICE = 1 << 10


def test_unprivileged_start_with_bind_capability_workers_keep_none(socks5d, tmp_path,
                                                                    echo_server):
    """As the unit starts it: an unprivileged user with CAP_NET_BIND_SERVICE
    as an ambient capability binds a port below 1024; its workers hold no
    capability."""
    assert os.geteuid() == 0, "this test needs root to start a process as nobody"
    notify = NotifyListener(tmp_path, abstract=True)  # no directory to open to nobody
    try:
        port = free_low_port()
        wrap = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                "--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service", "--")
        p = start(socks5d, notify, prefix=wrap, port=port, workers=2, wait_ready=False)
        notify.wait_for("READY", "1")
        # both past their setup (and so past giving up their capabilities)
        notify.wait_for("STATUS", "serving: 2 of 2 workers")
        s, _ = socks_connect_ok(port, "127.0.0.1", echo_server.port)
        with s:
            echo_roundtrip(s, b"low port")
        assert caps(p.pid, "CapEff") & CAP_NET_BIND_SERVICE
        ws = children(p.pid)
        assert len(ws) == 2
        for w in ws:
            for field in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
                assert caps(w, field) == 0, "worker %d keeps %s" % (w, field)
    finally:
        notify.close()
