"""Access log on stdout: one tab-separated line per SOCKS request."""

import re
import socket
import subprocess
import time

import pytest

from s5lib import (LOG_DATE_RE, connect, closed_port, greeting, read_reply, read_until_eof,
                   recv_exact, request, socks_connect_ok, socks_open)

HTTP_REQ = b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def check_fields(f):
    assert len(f) == 15, "expected 15 tab-separated fields: %r" % (f,)
    assert LOG_DATE_RE.match(f[0]), f[0]
    assert f[2] == "A", f
    for i in (4, 6, 7, 8, 9, 10, 12, 13):
        assert re.fullmatch(r"\d+", f[i]), (i, f)
    assert f[11] in ("connect", "bind", "udp", "-"), f
    assert f[14] in ("none", "password") or f[14].startswith("gssapi/"), f
    # the date is "now" (UTC)
    t = time.strptime(f[0], "%Y-%m-%dT%H:%M:%SZ")
    ts = time.mktime(t) - time.timezone
    assert abs(ts - time.time()) < 120, f[0]


def test_success_line_fields_and_byte_counts(proxy, nginx):
    s, r = socks_connect_ok(proxy.port, "127.0.0.1", nginx.port)
    src_port = s.getsockname()[1]
    with s:
        s.sendall(HTTP_REQ)
        resp = read_until_eof(s, 10)
    f = proxy.wait_log(lambda f: len(f) > 4 and f[4] == str(src_port))[0]
    check_fields(f)
    assert f[1] == "anonymous"
    assert f[3] == "127.0.0.1"
    assert f[5] == "127.0.0.1"
    assert f[6] == str(nginx.port)
    assert f[7] == "0"
    assert int(f[8]) == len(HTTP_REQ)
    assert int(f[9]) == len(resp)
    assert int(f[10]) >= 0
    assert f[11:] == ["connect", "0", "0", "none"]  # no datagrams on a CONNECT; no login


def test_username_and_domain_destination_logged(socks5d, nginx):
    p = socks5d("-u", "alice:pw")
    s, r = socks_connect_ok(p.port, "localhost", nginx.port, atyp=3, user="alice", password="pw")
    src_port = s.getsockname()[1]
    with s:
        s.sendall(HTTP_REQ)
        resp = read_until_eof(s, 10)
    f = p.wait_log(lambda f: len(f) > 4 and f[4] == str(src_port))[0]
    check_fields(f)
    assert f[1] == "alice"
    assert f[5] == "localhost"
    assert f[7] == "0"
    assert (int(f[8]), int(f[9])) == (len(HTTP_REQ), len(resp))


def test_ipv6_destination_logged_without_brackets(proxy, nginx):
    s, r = socks_connect_ok(proxy.port, "::1", nginx.port)
    src_port = s.getsockname()[1]
    with s:
        s.sendall(HTTP_REQ)
        read_until_eof(s, 10)
    f = proxy.wait_log(lambda f: len(f) > 4 and f[4] == str(src_port))[0]
    check_fields(f)
    assert f[5] == "::1"


def test_ipv6_client_address_logged(socks5d, nginx):
    p = socks5d(listen=("::1",))
    s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port, proxy_host="::1")
    src_port = s.getsockname()[1]
    s.close()
    f = p.wait_log(lambda f: len(f) > 4 and f[4] == str(src_port))[0]
    check_fields(f)
    assert f[3] == "::1"


def test_refused_request_logged_with_rep_5(proxy):
    cp = closed_port()
    s, r = socks_open(proxy.port, "127.0.0.1", cp)
    src_port = s.getsockname()[1]
    assert r.rep == 5
    s.close()
    f = proxy.wait_log(lambda f: len(f) > 4 and f[4] == str(src_port))[0]
    check_fields(f)
    assert f[5] == "127.0.0.1" and f[6] == str(cp)
    assert f[7] == "5"
    assert f[8] == "0" and f[9] == "0"


def test_unsupported_command_logged_with_rep_7(proxy):
    s = connect("127.0.0.1", proxy.port)
    src_port = s.getsockname()[1]
    with s:
        s.sendall(greeting((0,)) + request("127.0.0.1", 9, cmd=9))
        assert recv_exact(s, 2) == b"\x05\x00"
        assert read_reply(s).rep == 7
    f = proxy.wait_log(lambda f: len(f) > 4 and f[4] == str(src_port))[0]
    check_fields(f)
    assert f[7] == "7"


def test_early_data_counted_in_bytes_up(proxy, echo_server):
    payload = b"z" * 5000
    s = connect("127.0.0.1", proxy.port)
    src_port = s.getsockname()[1]
    with s:
        s.sendall(greeting((0,)) + request("127.0.0.1", echo_server.port) + payload)
        assert recv_exact(s, 2) == b"\x05\x00"
        assert read_reply(s).rep == 0
        assert recv_exact(s, len(payload)) == payload
        s.shutdown(socket.SHUT_WR)
        assert read_until_eof(s, 5) == b""
    f = proxy.wait_log(lambda f: len(f) > 4 and f[4] == str(src_port))[0]
    assert (int(f[8]), int(f[9])) == (5000, 5000)


def test_duration_reflects_session_length(proxy, echo_server):
    s, r = socks_connect_ok(proxy.port, "127.0.0.1", echo_server.port)
    src_port = s.getsockname()[1]
    time.sleep(0.6)
    s.close()
    f = proxy.wait_log(lambda f: len(f) > 4 and f[4] == str(src_port))[0]
    assert 500 <= int(f[10]) <= 5000, f


def test_one_line_per_request_written_at_session_end(proxy, echo_server):
    s, r = socks_connect_ok(proxy.port, "127.0.0.1", echo_server.port)
    src_port = s.getsockname()[1]
    s.sendall(b"x")
    assert recv_exact(s, 1) == b"x"
    time.sleep(0.3)
    assert not [l for l in proxy.log_lines() if l.split("\t")[4:5] == [str(src_port)]], \
        "line written before the session ended"
    s.close()
    proxy.wait_log(lambda f: len(f) > 4 and f[4] == str(src_port))
    time.sleep(0.2)
    assert len([l for l in proxy.log_lines() if l.split("\t")[4:5] == [str(src_port)]]) == 1


def test_paused_stdout_reader_does_not_stall_sessions(socks5d, nginx):
    # stdout is a 4 KiB pipe nobody reads while 100 sessions (10 at a time,
    # on both workers) run; ~100 lines of ~90 bytes do not fit in it.
    import threading
    p = socks5d(read_stdout=False, pipe_size=4096, workers=2)
    ports = []
    errors = []
    lock = threading.Lock()

    def client(k):
        try:
            for i in range(10):
                s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port, timeout=5)
                with lock:
                    ports.append(s.getsockname()[1])
                with s:
                    s.sendall(HTTP_REQ)
                    resp = read_until_eof(s, 5)
                assert resp.split(b"\r\n\r\n", 1)[1] == nginx.index_body
        except Exception as e:
            errors.append(e)
    t0 = time.monotonic()
    ts = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(10)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors[:3]
    assert len(ports) == 100
    assert time.monotonic() - t0 < 30
    # the proxy still answers while the log pipe is still full
    s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port, timeout=5)
    s.close()
    # now read: all 100 lines arrive (or a drop count is reported), none garbled
    p.resume_stdout()
    want = set(str(x) for x in ports)
    try:
        p.wait_log(lambda f: len(f) > 4 and f[4] in want, count=100, timeout=10)
    except AssertionError:
        got = len(p.wait_log(lambda f: len(f) > 4 and f[4] in want, count=0, timeout=0))
        err = p.stderr_text()
        assert re.search(r"drop", err, re.I), \
            "only %d of 100 log lines arrived and no drop count reported" % got
    time.sleep(0.3)
    for line in p.log_lines():
        check_fields(line.split("\t"))


def test_100mb_download_byte_counts_logged(proxy, nginx):
    s, r = socks_connect_ok(proxy.port, "127.0.0.1", nginx.port)
    src_port = s.getsockname()[1]
    with s:
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        n = 0
        s.settimeout(30)
        while True:
            d = s.recv(1 << 20)
            if not d:
                break
            n += len(d)
    assert n > nginx.big_size
    f = proxy.wait_log(lambda f: len(f) > 4 and f[4] == str(src_port))[0]
    assert int(f[9]) == n
    assert int(f[8]) == len(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")


def test_sessions_served_when_log_reader_went_away(socks5d, nginx):
    import os
    r_fd, w_fd = os.pipe()
    os.close(r_fd)  # nobody will ever read: writes get EPIPE (SIGPIPE must be ignored)
    try:
        p = socks5d(stdout=w_fd)
    finally:
        os.close(w_fd)
    for i in range(5):
        s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port)
        with s:
            s.sendall(HTTP_REQ)
            assert read_until_eof(s, 5).split(b"\r\n\r\n", 1)[1] == nginx.index_body
    time.sleep(0.2)
    assert p.alive() and len(p.workers()) == 2


def test_sessions_served_when_log_device_is_full(socks5d, nginx):
    with open("/dev/full", "wb") as full:
        p = socks5d(stdout=full)
    for i in range(5):
        s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port)
        with s:
            s.sendall(HTTP_REQ)
            assert read_until_eof(s, 5).split(b"\r\n\r\n", 1)[1] == nginx.index_body
    time.sleep(0.2)
    assert p.alive() and len(p.workers()) == 2


def test_concurrent_sessions_each_logged_once(socks5d, echo_server):
    p = socks5d(workers=2)
    socks_ = []
    ports = set()
    for i in range(50):
        s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
        socks_.append(s)
        ports.add(str(s.getsockname()[1]))
    for s in socks_:
        s.sendall(b"abc")
    for s in socks_:
        assert recv_exact(s, 3) == b"abc"
        s.close()
    lines = p.wait_log(lambda f: len(f) > 4 and f[4] in ports, count=50)
    time.sleep(0.2)
    lines = p.wait_log(lambda f: len(f) > 4 and f[4] in ports, count=50)
    assert len(lines) == 50
    for f in lines:
        check_fields(f)
        assert (f[8], f[9]) == ("3", "3")


def test_no_line_for_connection_without_request(socks5d):
    p = socks5d("--handshake-timeout", "1")
    ports = set()
    s = connect("127.0.0.1", p.port)          # bad greeting
    ports.add(str(s.getsockname()[1]))
    s.sendall(b"\x04\x01\x00")
    from s5lib import eof_within
    eof_within(s, 3)
    s.close()
    s = connect("127.0.0.1", p.port)          # silent until the handshake timeout
    ports.add(str(s.getsockname()[1]))
    eof_within(s, 3)
    s.close()
    time.sleep(0.5)
    assert not [l for l in p.log_lines() if l.split("\t")[4:5] and l.split("\t")[4] in ports]


RAW_REQ = """
import socket, sys
name = bytes.fromhex(sys.argv[1]); port = int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), timeout=5)
s.sendall(bytes([5, 1, 0, 5, 1, 0, 3, len(name)]) + name + bytes([0, 80]))
print(s.makefile("rb").read().hex())
"""


@pytest.fixture(scope="module")
def ns_env_log(netns):
    """socks5d inside a network namespace whose DNS answers NXDOMAIN locally."""
    from s5lib import Socks5d
    netns.start_helper("serve")
    port = 2081
    srv = Socks5d(["-l", "127.0.0.1", "-p", str(port), "-w", "1", "--grace", "1"],
                  prefix=netns.prefix())
    try:
        srv.wait_ready()
    except AssertionError:
        srv.stop()
        raise

    def run_raw(name):
        r = subprocess.run(netns.prefix() + ["/usr/bin/python3", "-c", RAW_REQ, name.hex(), str(port)],
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr.decode()
        return bytes.fromhex(r.stdout.decode().strip())
    try:
        yield srv, run_raw
    finally:
        srv.stop()
        srv.assert_clean()


def test_control_characters_in_domain_do_not_break_log_lines(ns_env_log):
    """A requested name containing TAB/LF must not split or forge log lines."""
    srv, run_raw = ns_env_log
    for name in (b"evil\tname.invalid", b"evil\nforged\tA\t1.2.3.4.invalid", b"cr\rname.invalid"):
        out = run_raw(name)
        assert out[:2] == b"\x05\x00" and out[2] == 5 and out[3] != 0, out.hex()
    time.sleep(0.5)
    lines = srv.log_lines()
    assert lines, "no access-log lines"
    for line in lines:
        f = line.split("\t")
        check_fields(f)


# ---------------------------------------------------------------- user names in logs

def esc(raw):
    """The server's escaping: bytes outside printable ASCII, the space and
    the backslash as \\xHH."""
    return "".join(chr(b) if 0x20 < b < 0x7f and b != 0x5c else "\\x%02x" % b for b in raw)


ODD_USER = 'q"u\\ot\u00e9 x'  # a quote, a backslash, two high bytes, an inner space


def fake_pop3(srv):
    """Accept one client and say +OK to its USER and PASS: a P record."""
    c, _ = srv.accept()
    with c, c.makefile("rb") as lines:
        c.settimeout(10)
        c.sendall(b"+OK fake\r\n")
        while lines.readline().split(b" ")[0] in (b"USER", b"PASS"):
            c.sendall(b"+OK\r\n")


def test_user_name_escaped_in_access_and_credential_records(socks5d):
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(10)
    port = srv.getsockname()[1]
    t = threading.Thread(target=fake_pop3, args=(srv,), daemon=True)
    t.start()
    p = socks5d("-u", ODD_USER + ":pw")
    s, _ = socks_connect_ok(p.port, "127.0.0.1", port, user=ODD_USER, password="pw")
    with s:
        assert recv_exact(s, 10, 10) == b"+OK fake\r\n"
        for line in (b"USER bob\r\n", b"PASS pw\r\n"):
            s.sendall(line)
            assert recv_exact(s, 5, 10) == b"+OK\r\n"
    t.join(10)
    srv.close()
    a = p.wait_log(lambda f: len(f) > 6 and f[2] == "A" and f[6] == str(port))[0]
    check_fields(a)
    want = esc(ODD_USER.encode())
    assert a[1] == want, a
    recs = [f for f in (l.split("\t") for l in p.log_lines()) if len(f) > 2 and f[2] == "P"]
    assert len(recs) == 1 and len(recs[0]) == 8, recs
    assert recs[0][1] == want, recs[0]
    for line in p.log_lines():
        assert not any(ord(c) > 0x7e or ord(c) < 0x20 and c != "\t" for c in line), line


@pytest.mark.parametrize("name", [b"ev\nil", b"\x1b[31mred", b'q"x\\y'])
def test_failed_login_name_escaped_on_stderr(socks5d, name):
    p = socks5d("-u", "alice:pw")
    with connect("127.0.0.1", p.port) as s:
        s.sendall(greeting((0x02,)))
        assert recv_exact(s, 2) == b"\x05\x02"
        s.sendall(bytes([1, len(name)]) + name + b"\x02pw")
        assert recv_exact(s, 2) == b"\x01\x01"
    p.wait_stderr(r"authentication failed for user")
    err = p.stderr_text()
    assert "authentication failed for user '%s'" % esc(name) in err, err[-2000:]
    assert "\x1b" not in err and not any(l.startswith("il'") for l in err.splitlines()), err[-2000:]
