"""Handshake timeout, relay idle timeout and -D (no idle clean-up)."""

import time

from s5lib import (connect, echo_roundtrip, eof_within, greeting, recv_exact,
                   request, socks_connect_ok)


def test_silent_client_closed_by_handshake_timeout(socks5d):
    p = socks5d("--handshake-timeout", "1")
    s = connect("127.0.0.1", p.port)
    with s:
        got_eof, data, elapsed = eof_within(s, 5)
        assert got_eof and data == b"", "no reply expected on handshake timeout"
        assert 0.8 <= elapsed <= 3.0, elapsed


def test_client_sending_one_byte_per_second_closed_by_handshake_timeout(socks5d, nginx):
    # The timeout runs from accept to the reply; trickling bytes does not extend it.
    p = socks5d("--handshake-timeout", "2")
    msg = greeting((0x00,)) + request("127.0.0.1", nginx.port)
    s = connect("127.0.0.1", p.port)
    with s:
        t0 = time.monotonic()
        got = b""
        closed = False
        for b in msg:  # bounded: len(msg) == 13
            try:
                s.send(bytes([b]))
            except OSError:
                closed = True
                break
            got_eof, data, _ = eof_within(s, 1.0)
            got += data
            if got_eof:
                closed = True
                break
        elapsed = time.monotonic() - t0
        assert closed, "slow client was not closed"
        assert 1.5 <= elapsed <= 4.0, elapsed
        # the method reply may have been sent, never the request reply
        assert got in (b"", b"\x05\x00"), got


def test_handshake_timeout_after_greeting_without_request(socks5d):
    p = socks5d("--handshake-timeout", "1")
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x00,)))
        assert recv_exact(s, 2) == b"\x05\x00"
        got_eof, data, elapsed = eof_within(s, 5)
        assert got_eof and data == b""
        assert elapsed <= 3.0


def test_handshake_timeout_does_not_hit_relaying_session(socks5d, echo_server):
    p = socks5d("--handshake-timeout", "1")
    s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    with s:
        for i in range(4):  # 2 s of relaying, past the handshake timeout
            echo_roundtrip(s, b"tick %d\n" % i)
            time.sleep(0.5)
        echo_roundtrip(s, b"still here\n")


def test_idle_timeout_closes_silent_relaying_session(socks5d, echo_server):
    p = socks5d("--idle-timeout", "1")
    s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    with s:
        echo_roundtrip(s, b"hello\n")
        got_eof, data, elapsed = eof_within(s, 5)
        assert got_eof and data == b""
        assert 0.7 <= elapsed <= 3.0, elapsed


def test_traffic_keeps_session_alive_past_idle_timeout(socks5d, echo_server):
    p = socks5d("--idle-timeout", "1")
    s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    with s:
        for i in range(8):  # 2.4 s with traffic every 0.3 s
            echo_roundtrip(s, b"keepalive %d\n" % i)
            time.sleep(0.3)
        echo_roundtrip(s, b"alive\n")


def test_no_idle_cleanup_keeps_silent_session_open(socks5d, echo_server):
    p = socks5d("--idle-timeout", "1", "-D")
    s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    with s:
        echo_roundtrip(s, b"hello\n")
        got_eof, data, _ = eof_within(s, 2.5)
        assert not got_eof, "session closed despite -D"
        echo_roundtrip(s, b"still open\n")


def test_idle_timeout_counts_both_directions(socks5d, nginx):
    # a long download without client->target traffic is not idle
    p = socks5d("--idle-timeout", "1")
    s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port)
    with s:
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        n = 0
        t0 = time.monotonic()
        s.settimeout(5)
        # read slowly for ~2.5 s: the session sees traffic target->client only
        while time.monotonic() - t0 < 2.5:
            d = s.recv(65536)
            assert d, "closed while data was flowing (after %d bytes)" % n
            n += len(d)
            time.sleep(0.05)
        assert n > 0


def test_idle_timeout_closes_half_closed_session(socks5d):
    # client half-closed, target silent and never closes: still idle -> closed
    import socket
    from s5lib import ThreadedTarget
    import threading
    release = threading.Event()

    def handler(c, a):
        c.settimeout(10)
        while c.recv(100):
            pass
        release.wait(10)  # keep our side open, say nothing
    target = ThreadedTarget(handler)
    try:
        p = socks5d("--idle-timeout", "1")
        s, r = socks_connect_ok(p.port, "127.0.0.1", target.port)
        with s:
            s.sendall(b"hello")
            s.shutdown(socket.SHUT_WR)
            got_eof, data, elapsed = eof_within(s, 5)
            assert got_eof and elapsed <= 3.0, elapsed
    finally:
        release.set()
        target.close()


def _session_with_config(socks5d, echo_server, tmp_path, text):
    """A session to the echo server through socks5d started with a
    configuration file of text."""
    conf = tmp_path / "c.conf"
    conf.write_text(text)
    p = socks5d("-f", conf)
    s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    return s


def test_idle_cleanup_no_in_config_file_keeps_silent_session(socks5d, echo_server, tmp_path):
    s = _session_with_config(socks5d, echo_server, tmp_path, "idle-timeout = 1\nidle-cleanup = no\n")
    with s:
        got_eof, data, _ = eof_within(s, 2.0)
        assert not got_eof, "session closed despite idle-cleanup = no"
        echo_roundtrip(s, b"still open\n")


def test_idle_timeout_from_config_file(socks5d, echo_server, tmp_path):
    s = _session_with_config(socks5d, echo_server, tmp_path, "idle-timeout = 1\n")
    with s:
        got_eof, data, elapsed = eof_within(s, 4)
        assert got_eof and elapsed <= 3.0


def test_idle_timeout_closes_only_silent_sessions_among_many(socks5d, echo_server):
    p = socks5d("--idle-timeout", "1", workers=2)
    active, silent = [], []
    try:
        for i in range(40):
            s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
            (active if i % 2 else silent).append(s)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.2:  # about 7 rounds
            for i, s in enumerate(active):
                echo_roundtrip(s, b"a%d" % i)
            time.sleep(0.3)
        for s in silent:
            got_eof, data, _ = eof_within(s, 0.5)
            assert got_eof, "a silent session outlived the idle timeout"
        for i, s in enumerate(active):
            echo_roundtrip(s, b"still %d" % i)
    finally:
        for s in active + silent:
            s.close()
