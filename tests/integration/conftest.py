"""Fixtures for the socks5d black-box integration suite.

Real peers: nginx (session-wide, 127.0.0.1 and ::1), Python target servers,
curl and PySocks as clients. The proxy under test is $SOCKS5D (default
build/test/socks5d, the ASan/UBSan build) started per test.
"""

import hashlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import s5lib  # noqa: E402
from s5lib import Socks5d, free_port, free_port_both  # noqa: E402
from krb5_realm import krb5_realm  # noqa: E402,F401  (session fixture)

BIG_SIZE = 100 * 1024 * 1024
INDEX_BODY = b"<html><body>hello from nginx behind socks5d</body></html>\n"


def pytest_configure(config):
    # 1000 concurrent sessions need ~2000 descriptors in this process.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 16384) if hard != resource.RLIM_INFINITY else 16384
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@pytest.fixture(scope="session")
def socks5d_bin():
    b = s5lib.socks5d_binary()
    if not os.access(b, os.X_OK):
        pytest.fail("socks5d binary not found at %s (set SOCKS5D)" % b)
    return b


# ---------------------------------------------------------------- nginx

class Nginx:
    def __init__(self, root):
        self.root = Path(root)
        self.www = self.root / "www"
        self.www.mkdir()
        (self.www / "index.html").write_bytes(INDEX_BODY)
        self.index_body = INDEX_BODY
        # 100 MB random file, generated once per session.
        self.big_path = self.www / "big.bin"
        h = hashlib.sha256()
        with open(self.big_path, "wb") as f:
            left = BIG_SIZE
            while left:
                chunk = os.urandom(min(left, 4 << 20))
                h.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        self.big_size = BIG_SIZE
        self.big_sha = h.hexdigest()
        self.port = free_port_both()
        self.access_log = self.root / "access.log"
        for d in ("tmp", "logs"):
            (self.root / d).mkdir()
        t = self.root / "tmp"
        conf = """
daemon off;
master_process on;
worker_processes 1;
user root;
pid {root}/nginx.pid;
error_log {root}/logs/error.log warn;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
    log_format tst '$remote_addr $remote_port "$request" $status $body_bytes_sent';
    access_log {root}/access.log tst;
    client_body_temp_path {t}/body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        listen [::1]:{port};
        root {www};
    }}
}}
""".format(root=self.root, t=t, port=self.port, www=self.www)
        self.conf = self.root / "nginx.conf"
        self.conf.write_text(conf)
        self.proc = subprocess.Popen(
            ["/usr/sbin/nginx", "-p", str(self.root), "-c", str(self.conf),
             "-e", str(self.root / "logs" / "error.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        end = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                with socket.create_connection(("::1", self.port), timeout=1):
                    pass
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    err = self.proc.stderr.read().decode() if self.proc.poll() is not None else ""
                    raise RuntimeError("nginx did not start: %s" % err)
                time.sleep(0.05)

    def access_entries(self):
        try:
            return self.access_log.read_text().splitlines()
        except FileNotFoundError:
            return []

    def wait_access(self, needle, timeout=5.0):
        end = time.monotonic() + timeout
        while True:
            for line in self.access_entries():
                if needle in line:
                    return line
            if time.monotonic() > end:
                raise AssertionError("nginx access log has no line with %r" % needle)
            time.sleep(0.05)

    def close(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="session")
def nginx():
    root = tempfile.mkdtemp(prefix="s5it-nginx-")
    n = Nginx(root)
    try:
        yield n
    finally:
        n.close()
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- socks5d

class Launcher:
    def __init__(self):
        self.started = []

    def __call__(self, *args, workers=2, listen=("127.0.0.1",), port=None, grace=1,
                 prefix=(), read_stdout=True, pipe_size=None, wait_ready=True, env=None,
                 stdout=None):
        port = port or free_port()
        argv = []
        for a in listen:
            argv += ["-l", a]
        argv += ["-p", str(port)]
        if workers is not None:
            argv += ["-w", str(workers)]
        if grace is not None:
            argv += ["--grace", str(grace)]
        argv += [str(a) for a in args]
        s = Socks5d(argv, prefix=prefix, read_stdout=read_stdout, pipe_size=pipe_size, env=env,
                    stdout=stdout)
        s.port = port
        self.started.append(s)
        if wait_ready:
            try:
                s.wait_ready()
            except AssertionError:
                # reported here; the teardown need not report the same failure again
                self.started.remove(s)
                s.stop(timeout=5)
                raise
        return s


@pytest.fixture
def socks5d(socks5d_bin):
    """Factory: socks5d(*extra_args, workers=2, ...) -> running, ready Socks5d.
    Every instance is stopped with SIGTERM at teardown and must exit 0 with no
    sanitizer report."""
    launcher = Launcher()
    yield launcher
    failures = []
    for s in launcher.started:
        s.stop()
        try:
            s.assert_clean()
        except AssertionError as e:
            failures.append(str(e))
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


@pytest.fixture
def proxy(socks5d):
    """A default anonymous socks5d: -l 127.0.0.1 -p PORT -w 2."""
    return socks5d()


@pytest.fixture
def echo_server():
    e = s5lib.EchoServer("127.0.0.1")
    yield e
    e.close()


# ---------------------------------------------------------------- network namespace

NS_HOSTS = """127.0.0.1 localhost
::1 dual-v4only.test
127.0.0.1 dual-v4only.test
::1 dual-v6only.test
127.0.0.1 dual-v6only.test
127.0.0.5 netunreach.test
127.0.0.6 hostunreach.test
127.0.0.7 prohibited.test
127.0.0.5 mix-net-host.test
127.0.0.6 mix-net-host.test
127.0.0.7 mix-prohibit-net.test
127.0.0.5 mix-prohibit-net.test
::1 mix-refused-host.test
127.0.0.6 mix-refused-host.test
127.0.0.7 mix-prohibit-timeout.test
127.0.0.1 mix-prohibit-timeout.test
::1 he.test
127.0.0.1 he.test
"""


class NetNS:
    def __init__(self):
        self.name = "s5it%d" % os.getpid()
        self.etc = Path("/etc/netns") / self.name
        self.helpers = []
        self.ok = False

    def run(self, *cmd, check=True):
        return subprocess.run(list(cmd), capture_output=True, timeout=20, check=check)

    @staticmethod
    def remove_stale():
        """Namespaces left by an earlier run that was killed."""
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10)
        for line in r.stdout.decode().splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith("s5it") and name[4:].isdigit() and not os.path.exists("/proc/" + name[4:]):
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
                shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)

    def setup(self):
        if os.geteuid() != 0:
            pytest.skip("network namespace tests need root")
        self.remove_stale()
        r = self.run("ip", "netns", "add", self.name, check=False)
        if r.returncode != 0:
            pytest.skip("cannot create network namespace: %s" % r.stderr.decode().strip())
        self.ok = True
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "hosts").write_text(NS_HOSTS)
        (self.etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:3 attempts:1\n")
        n = self.name
        self.run("ip", "-n", n, "link", "set", "lo", "up")
        # Only 127.0.0.1 stays local: 127.0.0.5 -> ENETUNREACH.
        self.run("ip", "-n", n, "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local")
        self.run("ip", "-n", n, "route", "add", "unreachable", "127.0.0.6/32")   # EHOSTUNREACH
        self.run("ip", "-n", n, "route", "add", "prohibit", "127.0.0.7/32")      # EACCES

    def prefix(self):
        return ["ip", "netns", "exec", self.name]

    def python(self, *args, timeout=30, input=None):
        r = subprocess.run(self.prefix() + ["/usr/bin/python3", str(Path(__file__).parent / "nshelper.py")]
                           + [str(a) for a in args], capture_output=True, timeout=timeout, input=input)
        return r

    def start_helper(self, *args):
        p = subprocess.Popen(self.prefix() + ["/usr/bin/python3", str(Path(__file__).parent / "nshelper.py")]
                             + [str(a) for a in args],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.helpers.append(p)
        line = p.stdout.readline().decode()
        if not line.startswith("ready"):
            p.kill()
            raise RuntimeError("ns helper failed: %r %s" % (line, p.stderr.read().decode()))
        return p, line.split()[1:]

    def teardown(self):
        for p in self.helpers:
            try:
                p.stdin.close()
            except OSError:
                pass
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(3)
        if self.ok:
            self.run("ip", "netns", "del", self.name, check=False)
        shutil.rmtree(self.etc, ignore_errors=True)
        try:
            self.etc.parent.rmdir()  # only if empty
        except OSError:
            pass


@pytest.fixture(scope="module")
def netns():
    ns = NetNS()
    try:
        ns.setup()
        yield ns
    finally:
        ns.teardown()
