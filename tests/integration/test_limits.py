"""Bounded resources: no descriptor leaks, many silent clients, many pending handshakes."""

import socket
import struct
import time

from s5lib import (closed_port, connect, count_fds, echo_roundtrip, eof_within, greeting,
                   read_reply, recv_exact, request, socks_connect_ok, socks_open)


def _wait_fds(pid, want_max, timeout=5.0):
    end = time.monotonic() + timeout
    n = count_fds(pid)
    while n > want_max and time.monotonic() < end:
        time.sleep(0.05)
        n = count_fds(pid)
    return n


def test_no_descriptor_leak_after_mixed_sessions(socks5d, nginx, echo_server):
    p = socks5d("--handshake-timeout", "1", workers=1)
    (w,) = p.workers()
    # warm up once (lazy initialisation may open descriptors)
    s, r = socks_connect_ok(p.port, "localhost", nginx.port, atyp=3)
    s.close()
    time.sleep(0.2)
    base = count_fds(w)
    cp = closed_port()
    for i in range(30):
        s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)     # success
        echo_roundtrip(s, b"x")
        s.close()
        s, r = socks_open(p.port, "127.0.0.1", cp)                          # refused
        assert r.rep == 5
        s.close()
        s, r = socks_connect_ok(p.port, "localhost", nginx.port, atyp=3)    # by name
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        s.close()
        s = connect("127.0.0.1", p.port)                                    # bad greeting
        s.sendall(b"\x04\x01")
        s.close()
        s = connect("127.0.0.1", p.port)                                    # reset mid-request
        s.sendall(greeting((0,)) + b"\x05\x01")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        s = connect("127.0.0.1", p.port)                                    # unsupported command
        s.sendall(greeting((0,)) + request("127.0.0.1", 1, cmd=9))
        s.close()
        s = connect("127.0.0.1", p.port)                                    # BIND abandoned
        s.sendall(greeting((0,)) + request("127.0.0.1", 1, cmd=2))
        recv_exact(s, 2 + 10)                                               # its listener open
        s.close()
    silent = connect("127.0.0.1", p.port)                                    # handshake timeout
    eof_within(silent, 3)
    silent.close()
    n = _wait_fds(w, base)
    assert n <= base, "worker descriptors: %d before, %d after (leak)" % (base, n)


def test_many_silent_connections_all_closed_by_handshake_timeout(socks5d, echo_server):
    # 300 silent connections from one address: no cap on unauthenticated ones
    p = socks5d("--handshake-timeout", "1", "--max-unauth-per-source", "0", workers=2)
    conns = [connect("127.0.0.1", p.port) for _ in range(300)]
    try:
        # meanwhile a real session is served
        s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
        with s:
            echo_roundtrip(s, b"busy but fine")
        t0 = time.monotonic()
        for c in conns:
            left = max(0.1, 4.0 - (time.monotonic() - t0))
            got_eof, data, _ = eof_within(c, left)
            assert got_eof and data == b"", "silent connection not closed"
        assert time.monotonic() - t0 < 4.0
    finally:
        for c in conns:
            c.close()


def test_many_concurrent_handshakes_pipelined_by_name(socks5d, nginx):
    p = socks5d("--max-unauth-per-source", "0", workers=2)  # all at once from one address
    conns = []
    try:
        for i in range(200):
            c = connect("127.0.0.1", p.port, timeout=10)
            c.sendall(greeting((0,)) + request("localhost", nginx.port, atyp=3)
                      + b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            conns.append(c)
        from s5lib import read_until_eof
        for c in conns:
            assert recv_exact(c, 2, 10) == b"\x05\x00"
            assert read_reply(c, 10).rep == 0
            resp = read_until_eof(c, 10)
            assert resp.split(b"\r\n\r\n", 1)[1] == nginx.index_body
    finally:
        for c in conns:
            c.close()
