"""Helpers and fixtures for the administration tests (pipo protocol v2).

Imported by test_admin.py (raw protocol bytes) and test_pipoclient.py (the
real pipoClient binary from $PIPOCLIENT).  Everything talks to loopback or
to a unix socket in a private temporary directory, and every blocking
operation has a deadline.
"""

import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from s5lib import REPO, SANITIZER_MARKERS, closed_port, free_port

ADMIN_USER, ADMIN_PASS = "admin", "adm1n-Secret"

VERSION = 0x02
QUERY, MODIFY = 0x00, 0x01

# Queries
Q_USERS, Q_HISTORIC, Q_CURRENT, Q_MAX, Q_BYTES_UP, Q_BYTES_DOWN = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
Q_USERS_CONNECTED, Q_USER_COUNT, Q_BUFFER_SIZE, Q_HANDSHAKE_TIMEOUT = 0x06, 0x07, 0x08, 0x09
Q_IDLE_TIMEOUT, Q_USER_CONNS, Q_METRICS, Q_SESSIONS, Q_ANONYMOUS = 0x0a, 0x0b, 0x0c, 0x0d, 0x0e
Q_DOH, Q_DISSECTORS, Q_IDLE_CLEANUP, Q_CONNECT_TIMEOUT, Q_SERVER, Q_USER_STATS = (
    0x0f, 0x10, 0x11, 0x12, 0x13, 0x14)
Q_SPLICE, Q_PIPE_SIZE = 0x15, 0x16
# Modifications
M_ADD_USER, M_DEL_USER, M_DISSECTORS, M_IDLE_CLEANUP, M_BUFFER_SIZE = 0x00, 0x01, 0x02, 0x03, 0x04
M_HANDSHAKE_TIMEOUT, M_IDLE_TIMEOUT, M_PASSWORD, M_CLOSE_SESSION = 0x05, 0x06, 0x07, 0x08
M_ANONYMOUS, M_DOH, M_RELOAD, M_CONNECT_TIMEOUT = 0x09, 0x0a, 0x0b, 0x0c
M_SPLICE, M_PIPE_SIZE = 0x0d, 0x0e
# Statuses
OK, NOT_FOUND, EXISTS, INVALID, UNKNOWN, MALFORMED = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
TOO_BIG, BAD_VERSION, FULL, BUSY, FIXED, SERVER_ERROR = 0x06, 0x07, 0x08, 0x09, 0x0a, 0xff

MAX_REQUEST = 65536


# ---------------------------------------------------------------- encoding

def s8(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    assert len(b) <= 255
    return bytes([len(b)]) + b


def auth_msg(user, password, ver=VERSION):
    u = user.encode() if isinstance(user, str) else user
    p = password.encode() if isinstance(password, str) else password
    return bytes([ver, len(u)]) + u + bytes([len(p)]) + p


def frame(type_, cmd, payload=b"", status=0, ver=VERSION, length=None):
    n = len(payload) if length is None else length
    return struct.pack("!BBBBI", ver, type_, cmd, status, n) + payload


class Cursor:
    """Strict payload reader: every read checks the bounds."""

    def __init__(self, data):
        self.d, self.pos = data, 0

    def take(self, n):
        assert self.pos + n <= len(self.d), "payload too short: %r" % self.d
        b = self.d[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack("!H", self.take(2))[0]

    def u32(self):
        return struct.unpack("!I", self.take(4))[0]

    def u64(self):
        return struct.unpack("!Q", self.take(8))[0]

    def str8(self):
        return self.take(self.u8()).decode()

    def str16(self):
        return self.take(self.u16()).decode()

    def done(self):
        assert self.pos == len(self.d), "%d trailing bytes in %r" % (len(self.d) - self.pos, self.d)


def parse_session(c):
    s = {"id": c.u64(), "state": c.u8(), "family": c.u8()}
    assert s["family"] in (4, 6), s
    raw = c.take(16 if s["family"] == 6 else 4)
    s["addr"] = socket.inet_ntop(socket.AF_INET6 if s["family"] == 6 else socket.AF_INET, raw)
    s["sport"] = c.u16()
    s["user"] = c.str8()
    s["dest"] = c.str8()
    s["dport"] = c.u16()
    s["up"], s["down"], s["age_ms"] = c.u64(), c.u64(), c.u64()
    return s


def parse_users(payload, detailed=False):
    c = Cursor(payload)
    out = []
    for _ in range(c.u32()):
        u = {"name": c.str8(), "admin": c.u8()}
        if detailed:
            u["conns"], u["up"], u["down"] = c.u32(), c.u64(), c.u64()
        out.append(u)
    c.done()
    return out


def parse_metrics(payload):
    c = Cursor(payload)
    out = {}
    for _ in range(c.u16()):
        i = c.u16()
        out[i] = c.u64()
    c.done()
    return out


def parse_sessions(payload):
    c = Cursor(payload)
    n, more = c.u16(), c.u8()
    sessions = [parse_session(c) for _ in range(n)]
    c.done()
    return sessions, more


def parse_server(payload):
    c = Cursor(payload)
    s = {"proto": c.u8(), "pid": c.u32(), "uptime_ms": c.u64(), "workers": c.u32(),
         "version": c.str8()}
    c.done()
    return s


# ---------------------------------------------------------------- raw connection

class Frame:
    def __init__(self, ver, type_, cmd, status, payload):
        self.ver, self.type, self.cmd, self.status, self.payload = ver, type_, cmd, status, payload

    def __repr__(self):
        return "Frame(ver=%d type=%d cmd=0x%02x status=0x%02x len=%d)" % (
            self.ver, self.type, self.cmd, self.status, len(self.payload))


class PipoConn:
    """A raw pipo session over the unix socket."""

    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        # a full listen backlog (a burst of connections) answers EAGAIN at once
        end = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(str(path))
                break
            except BlockingIOError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.02)
        self.timeout = timeout

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n, timeout=None):
        buf = bytearray()
        end = time.monotonic() + (timeout or self.timeout)
        while len(buf) < n:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("timeout after %d of %d bytes" % (len(buf), n))
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except socket.timeout:
                raise TimeoutError("timeout after %d of %d bytes" % (len(buf), n))
            if not chunk:
                raise EOFError("EOF after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return bytes(buf)

    def auth(self, user=ADMIN_USER, password=ADMIN_PASS):
        self.send(auth_msg(user, password))
        return self.recv_exact(2, timeout=5)

    def login(self, user=ADMIN_USER, password=ADMIN_PASS):
        ans = self.auth(user, password)
        assert ans == b"\x02\x00", "admin login refused: %r" % ans
        return self

    def read_frame(self, timeout=None):
        h = self.recv_exact(8, timeout)
        ver, t, c, st, n = struct.unpack("!BBBBI", h)
        assert n <= 1 << 20, "response LEN %d over the 1 MiB bound" % n
        return Frame(ver, t, c, st, self.recv_exact(n, timeout) if n else b"")

    def request(self, type_, cmd, payload=b"", expect=OK):
        """One request; asserts the echo and (unless expect is None) the status."""
        self.send(frame(type_, cmd, payload))
        f = self.read_frame()
        assert f.ver == VERSION and f.type == type_ and f.cmd == cmd, f
        if expect is not None:
            assert f.status == expect, "%r: status 0x%02x, expected 0x%02x" % (f, f.status, expect)
            if expect != OK:
                assert f.payload == b"", "error response with a payload: %r" % f
        return f

    def q(self, cmd, payload=b"", expect=OK):
        return self.request(QUERY, cmd, payload, expect)

    def m(self, cmd, payload=b"", expect=OK):
        return self.request(MODIFY, cmd, payload, expect)

    def eof_within(self, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                d = self.sock.recv(4096)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not d:
                return True
        return False

    # typed helpers
    def u32_query(self, cmd):
        c = Cursor(self.q(cmd).payload)
        v = c.u32()
        c.done()
        return v

    def add_user(self, name, password, admin=0, expect=OK):
        f = self.m(M_ADD_USER, s8(name) + s8(password) + bytes([admin]), expect)
        return f.payload[0] if expect == OK else None

    def users(self):
        return parse_users(self.q(Q_USERS).payload)

    def sessions(self, after=0, maxn=256):
        return parse_sessions(self.q(Q_SESSIONS, struct.pack("!QH", after, maxn)).payload)

    def metrics(self):
        return parse_metrics(self.q(Q_METRICS).payload)


# ---------------------------------------------------------------- server fixture

class AdminServer:
    """socks5d with a private admin socket; .path, .proc (Socks5d), .port."""

    def __init__(self, launcher, *extra, users=(), config=None, workers=2, tmpdir=None):
        self.dir = Path(tmpdir or tempfile.mkdtemp(prefix="pipo-"))
        self.path = self.dir / "admin.sock"
        self.config = config
        self.launcher = launcher
        self.extra = list(extra)
        self.users = list(users)
        self.workers = workers
        self.sctp_port = free_port()
        self.dns_port = closed_port()
        self.start()

    def argv(self):
        a = ["--admin-socket", str(self.path), "-L", "127.0.0.1", "-P", str(self.sctp_port),
             "--dns-server", "127.0.0.1:%d" % self.dns_port]
        if self.config:
            a += ["-f", str(self.config)]
        else:
            a += ["-a", "%s:%s" % (ADMIN_USER, ADMIN_PASS)]
        for u in self.users:
            a += ["-u", u]
        return a + self.extra

    def start(self):
        self.proc = self.launcher(*self.argv(), workers=self.workers)
        self.port = self.proc.port
        end = time.monotonic() + 10
        while not self.path.exists():
            if time.monotonic() > end:
                raise AssertionError("admin socket %s not created; stderr:\n%s"
                                     % (self.path, self.proc.stderr_text()))
            time.sleep(0.02)
        return self

    def stop(self):
        return self.proc.stop()

    def conn(self, timeout=5.0):
        return PipoConn(self.path, timeout)

    def login(self, user=ADMIN_USER, password=ADMIN_PASS):
        return self.conn().login(user, password)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def admin_server(socks5d):
    """Factory: admin_server(*extra_args, users=("bob:pw",), config=None)."""
    made = []

    def make(*extra, **kw):
        s = AdminServer(socks5d, *extra, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.cleanup()


# ---------------------------------------------------------------- pipoClient

def pipoclient_binary():
    p = Path(os.environ.get("PIPOCLIENT", "build/test/pipoClient"))
    if not p.is_absolute():
        p = REPO / p
    return str(p)


def client_env(password=ADMIN_PASS, new_password=None, extra=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("PIPO_")}
    e["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:max_malloc_fill_size=1048576"
    e["UBSAN_OPTIONS"] = "print_stacktrace=1"
    if password is not None:
        e["PIPO_PASSWORD"] = password
    if new_password is not None:
        e["PIPO_NEW_PASSWORD"] = new_password
    if extra:
        e.update(extra)
    return e


def check_no_sanitizer(text):
    for m in SANITIZER_MARKERS:
        assert m not in text, "sanitizer report from pipoClient:\n" + text[-4000:]


def run_client(*args, server=None, user=ADMIN_USER, password=ADMIN_PASS, new_password=None,
               input=None, timeout=30, env_extra=None):
    argv = [pipoclient_binary()]
    if server is not None:
        argv += ["-S", str(server.path)]
    if user is not None:
        argv += ["-u", user]
    argv += [str(a) for a in args]
    r = subprocess.run(argv, capture_output=True, timeout=timeout, input=input,
                       env=client_env(password, new_password, env_extra),
                       stdin=None if input is not None else subprocess.DEVNULL,
                       start_new_session=True)  # no controlling terminal: no prompt
    r.out = r.stdout.decode("utf-8", "replace")
    r.err = r.stderr.decode("utf-8", "replace")
    check_no_sanitizer(r.err)
    return r


ANSI_RE = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>]|\r|\x07")


class PtyClient:
    """pipoClient on a pseudo-terminal (its controlling terminal)."""

    def __init__(self, args, env):
        import pty
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child: exec at once
            try:
                os.execve(args[0], args, env)
            finally:
                os._exit(127)
        self.buf = b""
        self.status = None

    def read_until(self, pattern, timeout=10.0):
        """Wait until the output (escape sequences removed) matches; returns
        the clean text seen so far and consumes it."""
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        end = time.monotonic() + timeout
        while True:
            clean = ANSI_RE.sub(b"", self.buf)
            m = rx.search(clean)
            if m:
                self.buf = b""
                # libedit switches the terminal to raw mode around printing
                # the prompt and may flush input typed before that: let it
                # settle before the test types.
                time.sleep(0.2)
                return clean.decode("utf-8", "replace")
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("no %r in pipoClient output within %.1fs:\n%r"
                                     % (pattern, timeout, clean.decode("utf-8", "replace")))
            r, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if r:
                try:
                    d = os.read(self.fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    d = b""
                if not d:
                    if self.wait(0.5) is not None:
                        clean = ANSI_RE.sub(b"", self.buf)
                        if rx.search(clean):
                            continue
                        raise AssertionError("pipoClient exited (%r) without %r:\n%r"
                                             % (self.status, pattern, clean.decode("utf-8", "replace")))
                self.buf += d

    def write(self, text):
        os.write(self.fd, text.encode() if isinstance(text, str) else text)

    def wait(self, timeout=10.0):
        end = time.monotonic() + timeout
        while self.status is None:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(st)
                break
            if time.monotonic() > end:
                return None
            # drain so the child never blocks on a full terminal
            r, _, _ = select.select([self.fd], [], [], 0.05)
            if r:
                try:
                    self.buf += os.read(self.fd, 65536)
                except OSError:
                    pass
        return self.status

    def close(self):
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait(5)
        try:
            os.close(self.fd)
        except OSError:
            pass
