"""Data relay: integrity of large transfers both ways, half-close, many sessions."""

import hashlib
import socket
import subprocess
import threading
import time

from admin_lib import M_PASSWORD, admin_server, s8  # noqa: F401 (admin_server: a fixture)
from s5lib import (ThreadedTarget, connect, echo_roundtrip, eof_within, greeting,
                   hash_sink_handler, read_reply, read_until_eof, recv_exact, request,
                   sha256_until_eof, socks_connect_ok)


def test_100mb_download_intact_via_curl_socks5_hostname(proxy, nginx):
    p = subprocess.Popen(["curl", "-sS", "--max-time", "120", "--socks5-hostname",
                          "127.0.0.1:%d" % proxy.port,
                          "http://localhost:%d/big.bin" % nginx.port, "-o", "-"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    h = hashlib.sha256()
    n = 0
    for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
        h.update(chunk)
        n += len(chunk)
    rc = p.wait(130)
    assert rc == 0, p.stderr.read()
    assert n == nginx.big_size
    assert h.hexdigest() == nginx.big_sha


def _send_file(sock, path, shut=True):
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            sock.sendall(b)
    if shut:
        sock.shutdown(socket.SHUT_WR)


def test_100mb_upload_intact(proxy, nginx):
    sink = ThreadedTarget(hash_sink_handler)
    try:
        s, r = socks_connect_ok(proxy.port, "127.0.0.1", sink.port)
        with s:
            s.settimeout(60)
            _send_file(s, nginx.big_path)
            resp = read_until_eof(s, 60)
        digest, count = resp.decode().split()
        assert int(count) == nginx.big_size
        assert digest == nginx.big_sha
        assert not sink.errors
    finally:
        sink.close()


def _digest_head_until_eof(s, size):
    """Read s until EOF; returns (sha256 of the first size bytes, the count
    of all bytes, the bytes past the first size)."""
    h = hashlib.sha256()
    n = 0
    tail = b""
    while True:
        d = s.recv(1 << 20)
        if not d:
            return h, n, tail
        k = max(0, min(len(d), size - n))
        h.update(d[:k])
        tail += d[k:]
        n += len(d)


def duplex_handler(path, size):
    """Send the file while receiving the client's upload; after both, send
    sha256(upload) (32 bytes) + 8-byte count and close."""
    def handler(c, a):
        c.settimeout(60)
        up = {}

        def reader():
            h, n = sha256_until_eof(c)
            up["digest"], up["n"] = h.digest(), n
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        with open(path, "rb") as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                c.sendall(b)
        t.join(90)
        c.sendall(up["digest"] + up["n"].to_bytes(8, "big"))
        c.shutdown(socket.SHUT_WR)
    return handler


def test_100mb_both_ways_simultaneously_intact(proxy, nginx):
    target = ThreadedTarget(duplex_handler(nginx.big_path, nginx.big_size))
    try:
        s, r = socks_connect_ok(proxy.port, "127.0.0.1", target.port)
        with s:
            s.settimeout(60)
            errs = []

            def upload():
                try:
                    _send_file(s, nginx.big_path)
                except Exception as e:
                    errs.append(e)
            t = threading.Thread(target=upload, daemon=True)
            t.start()
            h, n, tail = _digest_head_until_eof(s, nginx.big_size)
            t.join(60)
            assert not errs, errs
        assert n == nginx.big_size + 40
        assert h.hexdigest() == nginx.big_sha, "download corrupted"
        assert tail[:32].hex() == nginx.big_sha, "upload corrupted"
        assert int.from_bytes(tail[32:], "big") == nginx.big_size
        assert not target.errors, target.errors
    finally:
        target.close()


def test_client_half_close_target_sees_eof_and_reply_arrives(proxy):
    sink = ThreadedTarget(hash_sink_handler)
    try:
        s, r = socks_connect_ok(proxy.port, "127.0.0.1", sink.port)
        with s:
            payload = b"half-close me\n" * 1000
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            resp = read_until_eof(s, 10)
        assert resp.decode() == "%s %d\n" % (hashlib.sha256(payload).hexdigest(), len(payload))
    finally:
        sink.close()


def test_target_half_close_client_can_still_send(proxy):
    received = {}
    done = threading.Event()

    def handler(c, a):
        c.sendall(b"bye from target\n")
        c.shutdown(socket.SHUT_WR)
        received["data"] = read_until_eof(c, 30)
        done.set()

    target = ThreadedTarget(handler)
    try:
        s, r = socks_connect_ok(proxy.port, "127.0.0.1", target.port)
        with s:
            assert recv_exact(s, 16) == b"bye from target\n"
            s.settimeout(5)
            assert s.recv(10) == b"", "expected EOF from the target's half-close"
            late = b"sent after the target's EOF\n" * 100
            s.sendall(late)
            s.shutdown(socket.SHUT_WR)
            assert done.wait(10), "target never saw the client's EOF"
            assert received["data"] == late
            assert read_until_eof(s, 5) == b""
    finally:
        target.close()


def test_http_request_with_client_shut_wr_gets_full_response(proxy, nginx):
    s, r = socks_connect_ok(proxy.port, "127.0.0.1", nginx.port)
    with s:
        s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        resp = read_until_eof(s, 10)
    assert resp.split(b"\r\n\r\n", 1)[1] == nginx.index_body


def test_keepalive_http_requests_on_one_session(proxy, nginx):
    s, r = socks_connect_ok(proxy.port, "127.0.0.1", nginx.port)
    with s:
        for i in range(20):
            s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += recv_exact(s, 1)
            ln = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
            body = recv_exact(s, int(ln.split(b":")[1]))
            assert body == nginx.index_body


def test_1000_concurrent_relaying_sessions(socks5d, echo_server):
    p = socks5d("--max-unauth-per-source", "0", workers=2)  # all at once from one address
    N = 1000
    socks_ = []
    try:
        t0 = time.monotonic()
        for i in range(N):
            s = connect("127.0.0.1", p.port, timeout=10)
            socks_.append(s)
            s.sendall(greeting((0x00,)) + request("127.0.0.1", echo_server.port))
        for s in socks_:
            assert recv_exact(s, 2, 15) == b"\x05\x00"
            r = read_reply(s, 15)
            assert r.rep == 0, r
        # all sessions are established at the same time now
        for i, s in enumerate(socks_):
            s.sendall(b"session %05d payload " % i + bytes([i % 256]) * 1000)
        for i, s in enumerate(socks_):
            want = b"session %05d payload " % i + bytes([i % 256]) * 1000
            assert recv_exact(s, len(want), 15) == want, "session %d got wrong data" % i
        # second round while all are still open
        for i, s in enumerate(socks_):
            s.sendall(b"round2 %d\n" % i)
        for i, s in enumerate(socks_):
            want = b"round2 %d\n" % i
            assert recv_exact(s, len(want), 15) == want
        assert echo_server.accepted >= N
        assert time.monotonic() - t0 < 90
    finally:
        for s in socks_:
            s.close()


def test_smallest_buffer_size_relays_100mb_both_ways_intact(socks5d, nginx):
    p = socks5d("--buffer-size", "4096")
    target = ThreadedTarget(duplex_handler(nginx.big_path, nginx.big_size))
    try:
        s, r = socks_connect_ok(p.port, "127.0.0.1", target.port)
        with s:
            s.settimeout(60)
            t = threading.Thread(target=_send_file, args=(s, nginx.big_path), daemon=True)
            t.start()
            h, data_n, tail = _digest_head_until_eof(s, nginx.big_size)
            t.join(60)
        assert data_n == nginx.big_size + 40
        assert h.hexdigest() == nginx.big_sha
        assert tail[:32].hex() == nginx.big_sha
    finally:
        target.close()


def test_target_reset_closes_client_session(proxy):
    import struct

    def handler(c, a):
        c.recv(100)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()  # RST
    target = ThreadedTarget(handler)
    try:
        s, r = socks_connect_ok(proxy.port, "127.0.0.1", target.port)
        with s:
            s.sendall(b"trigger")
            from s5lib import eof_within
            got_eof, data, _ = eof_within(s, 3)
            assert got_eof and data == b""
    finally:
        target.close()


def test_client_reset_closes_target_side(proxy):
    import struct
    seen = threading.Event()

    def handler(c, a):
        c.settimeout(5)
        try:
            while c.recv(65536):
                pass
        except OSError:
            pass
        seen.set()
    target = ThreadedTarget(handler)
    try:
        s, r = socks_connect_ok(proxy.port, "127.0.0.1", target.port)
        s.sendall(b"x" * 1000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        assert seen.wait(3), "target side not closed after client reset"
    finally:
        target.close()


def test_slow_reader_gets_everything_backpressure(proxy, nginx):
    # a client that reads slowly: the proxy must not drop or buffer unboundedly
    s, r = socks_connect_ok(proxy.port, "127.0.0.1", nginx.port)
    with s:
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(1.0)  # let buffers fill up
        resp = read_until_eof(s, 60)
    head, _, body = resp.partition(b"\r\n\r\n")
    assert len(body) == nginx.big_size
    assert hashlib.sha256(body).hexdigest() == nginx.big_sha


def test_request_data_and_eof_pipelined_before_reply(proxy):
    # greeting + request + payload + FIN all before the server answered anything
    sink = ThreadedTarget(hash_sink_handler)
    try:
        payload = b"early bird " * 5000
        s = connect("127.0.0.1", proxy.port)
        with s:
            s.sendall(greeting((0,)) + request("127.0.0.1", sink.port) + payload)
            s.shutdown(socket.SHUT_WR)
            assert recv_exact(s, 2) == b"\x05\x00"
            assert read_reply(s).rep == 0
            resp = read_until_eof(s, 10)
        assert resp.decode() == "%s %d\n" % (hashlib.sha256(payload).hexdigest(), len(payload))
    finally:
        sink.close()


def test_client_closing_before_reply_does_not_disturb_server(proxy, nginx, echo_server):
    for _ in range(10):
        s = connect("127.0.0.1", proxy.port)
        s.sendall(greeting((0,)) + request("localhost", nginx.port, atyp=3))
        s.close()
    s, r = socks_connect_ok(proxy.port, "127.0.0.1", echo_server.port)
    with s:
        echo_roundtrip(s, b"fine")


def test_target_banner_and_close_right_after_connect(proxy):
    # like an SMTP/POP3 greeting: data + FIN from the target at once
    def handler(c, a):
        c.sendall(b"220 banner from target\r\n")
        c.shutdown(socket.SHUT_WR)
        c.settimeout(5)
        try:
            while c.recv(100):
                pass
        except OSError:
            pass
    target = ThreadedTarget(handler)
    try:
        s = connect("127.0.0.1", proxy.port)
        with s:
            s.sendall(greeting((0,)) + request("127.0.0.1", target.port))
            assert recv_exact(s, 2) == b"\x05\x00"
            assert read_reply(s).rep == 0
            assert read_until_eof(s, 5) == b"220 banner from target\r\n"
    finally:
        target.close()


def test_half_close_delivers_buffered_data_to_slow_target(proxy, nginx):
    # client sends 20 MB and shuts down at once; the target starts reading only
    # after a second: every byte must arrive before the EOF
    def slow_sink(c, a):
        time.sleep(1.0)
        return hash_sink_handler(c, a)
    sink = ThreadedTarget(slow_sink)
    try:
        data = open(nginx.big_path, "rb").read(20 * 1024 * 1024)
        s, r = socks_connect_ok(proxy.port, "127.0.0.1", sink.port)
        with s:
            s.settimeout(30)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            resp = read_until_eof(s, 30)
        assert resp.decode() == "%s %d\n" % (hashlib.sha256(data).hexdigest(), len(data))
    finally:
        sink.close()


# ---------------------------------------------------------------- credentials changing under a session

def test_password_change_closes_the_users_running_sessions(admin_server, echo_server):
    srv = admin_server(users=["bob:bob-pass"])
    with srv.login() as c:
        c.add_user("carol", "old-pass")
    carol, _r = socks_connect_ok(srv.port, "127.0.0.1", echo_server.port, user="carol",
                                 password="old-pass")
    bob, _r = socks_connect_ok(srv.port, "127.0.0.1", echo_server.port, user="bob",
                               password="bob-pass")
    with carol, bob:
        for s in (carol, bob):
            s.sendall(b"ping")
            assert recv_exact(s, 4, 3) == b"ping"
        with srv.login() as c:
            c.m(M_PASSWORD, s8("carol") + s8("new-pass"))
        got, _d, _t = eof_within(carol, 3)
        assert got, "carol's session still open after her password changed"
        bob.sendall(b"still here")
        assert recv_exact(bob, 10, 3) == b"still here"
    again, _r = socks_connect_ok(srv.port, "127.0.0.1", echo_server.port, user="carol",
                                 password="new-pass")
    again.close()
