"""Helpers shared by the socks5d integration tests.

Everything here talks to loopback only and every blocking operation has a
deadline, so a misbehaving server makes a test fail, never hang.
"""

import atexit
import hashlib
import ipaddress
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "LeakSanitizer", "runtime error")

F_SETPIPE_SZ = 1031

LOG_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def socks5d_binary():
    p = os.environ.get("SOCKS5D", "build/test/socks5d")
    path = Path(p)
    if not path.is_absolute():
        path = REPO / path
    return str(path)


def free_port(host="127.0.0.1"):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port_both():
    """A port that is free on both 127.0.0.1 and ::1 (bounded tries)."""
    for _ in range(50):
        p = free_port("127.0.0.1")
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", p))
            with socket.socket(socket.AF_INET) as s:
                s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
    raise RuntimeError("no port free on both 127.0.0.1 and ::1")


def closed_port(host="127.0.0.1"):
    """A port where nothing listens (connect gets RST -> ECONNREFUSED)."""
    return free_port(host)


def deadline_loop(timeout, step=0.02):
    """Yield until timeout elapsed (bounded polling loop)."""
    end = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() >= end:
            return
        time.sleep(step)


# ---------------------------------------------------------------- raw socket I/O

def connect(host, port, timeout=5.0):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect((host, port))
    return s


def recv_exact(sock, n, timeout=5.0):
    """Read exactly n bytes or raise (EOFError on early EOF, TimeoutError)."""
    buf = bytearray()
    end = time.monotonic() + timeout
    while len(buf) < n:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError("timeout after %d of %d bytes: %r" % (len(buf), n, bytes(buf)))
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(buf))
        except socket.timeout:
            raise TimeoutError("timeout after %d of %d bytes: %r" % (len(buf), n, bytes(buf)))
        if not chunk:
            raise EOFError("EOF after %d of %d bytes: %r" % (len(buf), n, bytes(buf)))
        buf += chunk
    return bytes(buf)


def read_until_eof(sock, timeout=5.0, limit=1 << 30):
    """Read until EOF (or connection reset). Returns the bytes.

    Raises TimeoutError (with the data so far in .data) if no EOF in time."""
    buf = bytearray()
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            e = TimeoutError("no EOF within %.1fs, got %d bytes: %r" % (timeout, len(buf), bytes(buf[:200])))
            e.data = bytes(buf)
            raise e
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return bytes(buf)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise AssertionError("more than %d bytes received" % limit)


def eof_within(sock, timeout):
    """(got_eof, data, elapsed): wait up to timeout for EOF/RST."""
    t0 = time.monotonic()
    try:
        data = read_until_eof(sock, timeout)
        return True, data, time.monotonic() - t0
    except TimeoutError as e:
        return False, e.data, time.monotonic() - t0


# ---------------------------------------------------------------- SOCKS5 messages

def greeting(methods=(0x00,), ver=5):
    return bytes([ver, len(methods)]) + bytes(methods)


def auth_msg(user, password, ver=1):
    u = user.encode() if isinstance(user, str) else user
    p = password.encode() if isinstance(password, str) else password
    return bytes([ver, len(u)]) + u + bytes([len(p)]) + p


def atyp_for(host):
    try:
        ip = ipaddress.ip_address(host)
        return 1 if ip.version == 4 else 4
    except ValueError:
        return 3


def encode_addr(host, atyp=None):
    if atyp is None:
        atyp = atyp_for(host)
    if atyp == 1:
        return bytes([1]) + socket.inet_pton(socket.AF_INET, host)
    if atyp == 4:
        return bytes([4]) + socket.inet_pton(socket.AF_INET6, host)
    if atyp == 3:
        b = host.encode() if isinstance(host, str) else host
        return bytes([3, len(b)]) + b
    raise ValueError(atyp)


def request(host, port, cmd=1, atyp=None, rsv=0, ver=5):
    return bytes([ver, cmd, rsv]) + encode_addr(host, atyp) + struct.pack("!H", port)


class Reply:
    def __init__(self, raw, ver, rep, rsv, atyp, addr, port):
        self.raw, self.ver, self.rep, self.rsv = raw, ver, rep, rsv
        self.atyp, self.addr, self.port = atyp, addr, port

    def __repr__(self):
        return "Reply(%s rep=%d atyp=%d addr=%s port=%d)" % (
            self.raw.hex(), self.rep, self.atyp, self.addr, self.port)


def read_reply(sock, timeout=5.0):
    head = recv_exact(sock, 4, timeout)
    ver, rep, rsv, atyp = head
    if atyp == 1:
        rest = recv_exact(sock, 6, timeout)
        addr = socket.inet_ntop(socket.AF_INET, rest[:4])
    elif atyp == 4:
        rest = recv_exact(sock, 18, timeout)
        addr = socket.inet_ntop(socket.AF_INET6, rest[:16])
    elif atyp == 3:
        ln = recv_exact(sock, 1, timeout)
        rest = ln + recv_exact(sock, ln[0] + 2, timeout)
        addr = rest[1:-2].decode("latin1")
    else:
        raise AssertionError("reply with bad ATYP: %r" % head)
    port = struct.unpack("!H", rest[-2:])[0]
    return Reply(head + rest, ver, rep, rsv, atyp, addr, port)


def handshake(sock, user=None, password=None, timeout=5.0):
    """Greeting (+RFC1929 auth). Asserts success."""
    if user is None:
        sock.sendall(greeting((0x00,)))
        assert recv_exact(sock, 2, timeout) == b"\x05\x00"
    else:
        sock.sendall(greeting((0x02,)))
        assert recv_exact(sock, 2, timeout) == b"\x05\x02"
        sock.sendall(auth_msg(user, password))
        assert recv_exact(sock, 2, timeout) == b"\x01\x00"


def socks_login_ok(port, user, password):
    """True when RFC 1929 login succeeds on a fresh connection."""
    s = connect("127.0.0.1", port)
    with s:
        s.sendall(greeting((0x02,)))
        if recv_exact(s, 2) != b"\x05\x02":
            return False
        s.sendall(auth_msg(user, password))
        return recv_exact(s, 2) == b"\x01\x00"


def socks_open(proxy_port, host, port, user=None, password=None, atyp=None,
               proxy_host="127.0.0.1", timeout=5.0):
    """Open a SOCKS5 CONNECT session; return (sock, Reply). Does not assert rep."""
    s = connect(proxy_host, proxy_port, timeout)
    try:
        handshake(s, user, password, timeout)
        s.sendall(request(host, port, atyp=atyp))
        r = read_reply(s, timeout)
    except BaseException:
        s.close()
        raise
    return s, r


def socks_connect_ok(proxy_port, host, port, **kw):
    s, r = socks_open(proxy_port, host, port, **kw)
    if r.rep != 0:
        s.close()
        raise AssertionError("CONNECT %s:%d failed: %r" % (host, port, r))
    return s, r


def http_get_raw(sock, path="/index.html", host="localhost", timeout=10.0):
    sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode())
    return read_until_eof(sock, timeout)


def http_body(resp):
    head, _, body = resp.partition(b"\r\n\r\n")
    return head, body


# ---------------------------------------------------------------- socks5d process

_LIVE = []


def _stop_leftovers():
    """Safety net: no socks5d outlives the test run, whatever a test forgot."""
    for s in _LIVE:
        if not s.stopped:
            try:
                s.stop(timeout=5)
            except Exception:
                pass


atexit.register(_stop_leftovers)


class Socks5d:
    """A running socks5d. stdout (access log) and stderr are collected by threads."""

    def __init__(self, args, prefix=(), read_stdout=True, pipe_size=None, env=None,
                 stdin=subprocess.DEVNULL, stdout=None):
        self.binary = socks5d_binary()
        self.args = list(args)
        self.cmd = list(prefix) + [self.binary] + self.args
        e = dict(os.environ)
        e["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:max_malloc_fill_size=1048576"
        e["UBSAN_OPTIONS"] = "print_stacktrace=1"
        # a private runtime directory: the default admin unix socket lands
        # there, so concurrently running instances do not collide
        self.runtime_dir = tempfile.mkdtemp(prefix="s5it-run-")
        e["RUNTIME_DIRECTORY"] = self.runtime_dir
        if env:
            e.update(env)
        # stdout=None: a pipe read by a thread; otherwise a file/fd given by the test
        self.own_stdout = stdout is None
        self.proc = subprocess.Popen(self.cmd, stdin=stdin,
                                     stdout=subprocess.PIPE if stdout is None else stdout,
                                     stderr=subprocess.PIPE, env=e)
        self.pid = self.proc.pid
        _LIVE.append(self)
        if pipe_size:
            import fcntl
            fcntl.fcntl(self.proc.stdout.fileno(), F_SETPIPE_SZ, pipe_size)
        self._lock = threading.Condition()
        self.err_lines = []
        self.out_lines = []
        self._out_partial = b""
        self._err_thread = threading.Thread(target=self._pump, args=(self.proc.stderr, self.err_lines), daemon=True)
        self._err_thread.start()
        self._out_thread = None
        if read_stdout:
            self.resume_stdout()
        self.returncode = None
        self.stopped = False

    def _pump(self, f, lines):
        for raw in iter(f.readline, b""):
            with self._lock:
                lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._lock.notify_all()
        with self._lock:
            self._lock.notify_all()

    def resume_stdout(self):
        if self._out_thread is None and self.own_stdout:
            self._out_thread = threading.Thread(target=self._pump, args=(self.proc.stdout, self.out_lines), daemon=True)
            self._out_thread.start()

    # -- stderr / stdout inspection
    def stderr_text(self):
        with self._lock:
            return "\n".join(self.err_lines)

    def wait_stderr(self, pattern, timeout=5.0, start=0):
        """Wait for a stderr line (index >= start) matching regex; return the match."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        with self._lock:
            while True:
                for line in self.err_lines[start:]:
                    m = rx.search(line)
                    if m:
                        return m
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._err_thread.is_alive()):
                    raise AssertionError("no stderr line matching %r within %.1fs; stderr:\n%s"
                                         % (pattern, timeout, "\n".join(self.err_lines[-40:])))
                self._lock.wait(min(left, 0.1))

    def n_err(self):
        with self._lock:
            return len(self.err_lines)

    def wait_ready(self, timeout=20.0):
        m = self.wait_stderr(r"\bready\b", timeout)
        self.check_workers_not_deadlocked()
        return m

    IDLE_WCHANS = ("do_epoll_wait", "ep_poll", "do_sys_poll", "do_select", "poll_schedule_timeout")

    def check_workers_not_deadlocked(self, timeout=5.0):
        """'ready' promises running workers: right after start-up every worker
        must reach its event loop (an epoll wait). One that is still elsewhere
        after `timeout` s -- seen: blocked in a futex because it was forked
        while another master thread held the allocator lock -- is reported
        plainly instead of letting a later socket operation time out."""
        end = time.monotonic() + timeout
        while True:
            states = {}
            for w in self.workers():
                try:
                    with open("/proc/%d/wchan" % w) as f:
                        states[w] = f.read().strip()
                except OSError:
                    pass
            bad = {w: st for w, st in states.items() if st not in self.IDLE_WCHANS}
            if not bad or time.monotonic() > end or self.proc.poll() is not None:
                break
            time.sleep(0.05)
        assert not bad, ("socks5d printed 'ready' but worker(s) never reached their event loop "
                         "within %.0fs (kernel wait channel %r: deadlocked during start-up?); "
                         "stderr:\n%s" % (timeout, bad, self.stderr_text()[-2000:]))

    def log_lines(self):
        with self._lock:
            return [l for l in self.out_lines if l.strip()]

    def wait_log(self, pred=lambda f: True, count=1, timeout=5.0):
        """Wait until `count` access-log lines satisfy pred(fields); return them."""
        end = time.monotonic() + timeout
        with self._lock:
            while True:
                got = [l.split("\t") for l in self.out_lines if l.strip()]
                got = [f for f in got if pred(f)]
                if len(got) >= count:
                    return got
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError("wanted %d access-log lines, have %d; stdout:\n%s"
                                         % (count, len(got), "\n".join(self.out_lines[-20:])))
                self._lock.wait(min(left, 0.1))

    # -- processes
    def workers(self):
        try:
            with open("/proc/%d/task/%d/children" % (self.pid, self.pid)) as f:
                return [int(x) for x in f.read().split()]
        except FileNotFoundError:
            return []

    def alive(self):
        return self.proc.poll() is None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=15.0, sig=signal.SIGTERM):
        if self.stopped:
            return self.returncode
        self.stopped = True
        self.resume_stdout()  # a paused log pipe must not block the shutdown
        self.last_workers = self.workers()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for w in self.workers():
                try:
                    os.kill(w, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.kill()
            self.proc.wait(5)
            self.returncode = "timeout (killed)"
        self._err_thread.join(5)
        if self._out_thread is not None:
            self._out_thread.join(5)
        # The pipes' ends in this process: left open, every instance of a
        # long test run cost two descriptors, and the run's process passed
        # the 1,024 that select() can watch.  A reader still blocked (a
        # leftover worker holds the other end) keeps its pipe.
        for f, t in ((self.proc.stderr, self._err_thread), (self.proc.stdout, self._out_thread)):
            if f is not None and (t is None or not t.is_alive()):
                f.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        return self.returncode

    def leftover_workers(self, timeout=3.0):
        """Workers of this master still running after it exited."""
        end = time.monotonic() + timeout
        while True:
            left = []
            for w in getattr(self, "last_workers", []):
                try:
                    with open("/proc/%d/stat" % w) as f:
                        st = f.read()
                    state = st[st.rindex(")") + 2]
                    ppid = int(st[st.rindex(")") + 2:].split()[1])
                    if state not in "ZX" and ppid in (self.pid, 1):
                        left.append(w)
                except (FileNotFoundError, ProcessLookupError):
                    pass
            if not left or time.monotonic() > end:
                return left
            time.sleep(0.05)

    def assert_clean(self):
        err = self.stderr_text()
        left = self.leftover_workers()
        assert not left, "workers %r still running after the master exited" % left
        for m in SANITIZER_MARKERS:
            assert m not in err, "sanitizer report in socks5d stderr:\n" + err[-6000:]
        assert self.returncode == 0, "socks5d exit status %r; stderr tail:\n%s" % (
            self.returncode, err[-4000:])


def proc_status(pid):
    """/proc/PID/status as {field: [words]}."""
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.split()
    return fields


def cpu_seconds(pid):
    """utime+stime of a process in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def hash_password(password):
    r = subprocess.run([socks5d_binary(), "--hash-password"], input=(password + "\n").encode(),
                       capture_output=True, timeout=30,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1"))
    assert r.returncode == 0, r.stderr.decode()
    for m in SANITIZER_MARKERS:
        assert m not in r.stderr.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    h = r.stdout.decode().strip()
    assert h.startswith("$y$"), h
    return h


# ---------------------------------------------------------------- target servers

class ThreadedTarget:
    """TCP server on loopback running handler(conn) in a thread per connection."""

    def __init__(self, handler, host="127.0.0.1", port=0, backlog=128):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.sock.settimeout(0.2)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.handler = handler
        self.stopping = False
        self.conns = []
        self.errors = []
        self.results = []
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.stopping:
            try:
                c, a = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(60)
            self.conns.append(c)
            threading.Thread(target=self._run, args=(c, a), daemon=True).start()

    def _run(self, c, a):
        try:
            r = self.handler(c, a)
            self.results.append(r)
        except Exception as e:  # recorded, checked by tests that care
            self.errors.append(e)
        finally:
            try:
                c.close()
            except OSError:
                pass

    def close(self):
        self.stopping = True
        self.thread.join(2)
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def sha256_until_eof(c):
    """Read c until EOF; returns (the sha256 object of the bytes, their count)."""
    h = hashlib.sha256()
    n = 0
    while True:
        d = c.recv(1 << 20)
        if not d:
            return h, n
        h.update(d)
        n += len(d)


def hash_sink_handler(c, a):
    """Read until EOF, then reply '<sha256hex> <count>\\n' and close."""
    h, n = sha256_until_eof(c)
    c.sendall(("%s %d\n" % (h.hexdigest(), n)).encode())
    c.shutdown(socket.SHUT_WR)
    return (h.hexdigest(), n)


class EchoServer:
    """Single-thread selectors echo server for many concurrent connections.
    On client EOF it flushes and half-closes its side."""

    def __init__(self, host="127.0.0.1", port=0):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.lsock = socket.socket(fam, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((host, port))
        self.lsock.listen(4096)
        self.lsock.setblocking(False)
        self.host, self.port = host, self.lsock.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.accepted = 0
        self.peers = {}  # peer (addr, port) -> local conn
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        bufs = {}
        eof = set()
        while not self.stopping:
            for key, ev in self.sel.select(0.1):
                s = key.fileobj
                if s is self.lsock:
                    for _ in range(256):
                        try:
                            c, a = self.lsock.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:
                            break
                        c.setblocking(False)
                        self.accepted += 1
                        self.peers[a[:2]] = c
                        bufs[c] = bytearray()
                        self.sel.register(c, selectors.EVENT_READ, None)
                    continue
                if ev & selectors.EVENT_READ:
                    try:
                        d = s.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        d = None
                    except OSError:
                        d = b""
                    if d:
                        bufs[s] += d
                    elif d == b"":
                        eof.add(s)
                if ev & selectors.EVENT_WRITE or bufs.get(s):
                    try:
                        if bufs[s]:
                            n = s.send(bufs[s])
                            del bufs[s][:n]
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        eof.add(s)
                        bufs[s].clear()
                if s in eof and not bufs[s]:
                    self.sel.unregister(s)
                    try:
                        s.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    s.close()
                    del bufs[s]
                    eof.discard(s)
                    continue
                want = selectors.EVENT_WRITE if bufs[s] else 0
                if s not in eof:
                    want |= selectors.EVENT_READ
                try:
                    self.sel.modify(s, want or selectors.EVENT_READ)
                except (KeyError, ValueError):
                    pass

    def close(self):
        self.stopping = True
        self.thread.join(2)
        for key in list(self.sel.get_map().values()):
            try:
                key.fileobj.close()
            except OSError:
                pass
        self.sel.close()


def echo_roundtrip(sock, payload, timeout=5.0):
    sock.sendall(payload)
    got = recv_exact(sock, len(payload), timeout)
    assert got == payload, "echo mismatch"


# ---------------------------------------------------------------- proc net helpers

def _proc_tcp_entries():
    out = []
    for path, fam in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    p = line.split()
                    lport = int(p[1].split(":")[1], 16)
                    rport = int(p[2].split(":")[1], 16)
                    out.append((lport, rport, int(p[9])))
        except FileNotFoundError:
            pass
    return out


def socket_inodes(pid):
    inodes = set()
    d = "/proc/%d/fd" % pid
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return inodes
    for n in names:
        try:
            t = os.readlink(os.path.join(d, n))
        except OSError:
            continue
        if t.startswith("socket:["):
            inodes.add(int(t[8:-1]))
    return inodes


def owner_worker(workers, proxy_port, client_sock):
    """Which worker pid holds the server side of client_sock's proxy connection."""
    cport = client_sock.getsockname()[1]
    inode = None
    for lport, rport, ino in _proc_tcp_entries():
        if lport == proxy_port and rport == cport and ino:
            inode = ino
            break
    if inode is None:
        return None
    for w in workers:
        if inode in socket_inodes(w):
            return w
    return None


def count_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except FileNotFoundError:
        return -1
