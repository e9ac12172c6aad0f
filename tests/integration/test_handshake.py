"""Greeting/auth/request parsing under hostile or unusual input."""

import socket
import time

from s5lib import (auth_msg, connect, eof_within, greeting, http_body, read_reply,
                   read_until_eof, recv_exact, request)

USER, PASS = "alice", "pw1"


def test_greeting_version_4_closed_without_reply(proxy):
    s = connect("127.0.0.1", proxy.port)
    with s:
        s.sendall(b"\x04\x01\x00")
        got_eof, data, _ = eof_within(s, 3)
        assert data == b""
        assert got_eof


def test_socks4_connect_request_closed_without_reply(proxy, nginx):
    s = connect("127.0.0.1", proxy.port)
    with s:
        s.sendall(b"\x04\x01" + nginx.port.to_bytes(2, "big") + b"\x7f\x00\x00\x01user\x00")
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"" and got_eof


def test_nmethods_zero_gets_ff_then_eof(proxy):
    s = connect("127.0.0.1", proxy.port)
    with s:
        s.sendall(b"\x05\x00")
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"\x05\xff"
        assert got_eof


def test_no_acceptable_method_gets_ff_then_eof(proxy):
    s = connect("127.0.0.1", proxy.port)
    with s:
        s.sendall(greeting((0x01, 0x03, 0x80, 0xfe)))
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"\x05\xff"
        assert got_eof


def test_all_255_methods_offered(proxy):
    s = connect("127.0.0.1", proxy.port)
    with s:
        s.sendall(bytes([5, 255]) + bytes(range(1, 256)))
        # 0x00 is not in 1..255 but 0x02 is; without users 0x02 is not usable
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"\x05\xff" and got_eof


def _send_bytewise(s, data, delay=0.005):
    for b in data:
        s.send(bytes([b]))
        time.sleep(delay)


def test_byte_by_byte_greeting_auth_request(socks5d, nginx):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s = connect("127.0.0.1", p.port)
    with s:
        _send_bytewise(s, greeting((0x02,)))
        assert recv_exact(s, 2) == b"\x05\x02"
        _send_bytewise(s, auth_msg(USER, PASS))
        assert recv_exact(s, 2) == b"\x01\x00"
        _send_bytewise(s, request("localhost", nginx.port, atyp=3))
        r = read_reply(s)
        assert r.rep == 0
        _send_bytewise(s, b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0.001)
        resp = read_until_eof(s, 10)
    assert http_body(resp)[1] == nginx.index_body


def test_byte_by_byte_without_waiting_for_replies(proxy, nginx):
    s = connect("127.0.0.1", proxy.port)
    with s:
        _send_bytewise(s, greeting((0x00,)) + request("127.0.0.1", nginx.port))
        assert recv_exact(s, 2) == b"\x05\x00"
        assert read_reply(s).rep == 0


def test_everything_pipelined_in_one_send_with_auth(socks5d, nginx):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s = connect("127.0.0.1", p.port)
    http = b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with s:
        s.sendall(greeting((0x02,)) + auth_msg(USER, PASS) + request("127.0.0.1", nginx.port) + http)
        assert recv_exact(s, 2) == b"\x05\x02"
        assert recv_exact(s, 2) == b"\x01\x00"
        r = read_reply(s)
        assert r.rep == 0
        resp = read_until_eof(s, 10)
    head, body = http_body(resp)
    assert head.startswith(b"HTTP/1.1 200"), resp[:200]
    assert body == nginx.index_body


def test_everything_pipelined_in_one_send_anonymous_domain(proxy, nginx):
    s = connect("127.0.0.1", proxy.port)
    http = b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with s:
        s.sendall(greeting((0x00,)) + request("localhost", nginx.port, atyp=3) + http)
        assert recv_exact(s, 2) == b"\x05\x00"
        assert read_reply(s).rep == 0
        resp = read_until_eof(s, 10)
    assert http_body(resp)[1] == nginx.index_body


def test_large_early_data_after_request_is_relayed(proxy, echo_server):
    # 200 KB sent together with the request, before the reply arrives
    payload = bytes(range(256)) * 800
    s = connect("127.0.0.1", proxy.port)
    with s:
        s.sendall(greeting((0x00,)) + request("127.0.0.1", echo_server.port) + payload)
        assert recv_exact(s, 2) == b"\x05\x00"
        assert read_reply(s).rep == 0
        assert recv_exact(s, len(payload), 10) == payload


def test_garbage_after_failed_greeting_does_not_crash(proxy, nginx):
    for junk in (b"\x05\x00" + b"\xff" * 4096, b"\x04" * 10000, bytes(range(256)) * 16):
        s = connect("127.0.0.1", proxy.port)
        with s:
            try:
                s.sendall(junk)
            except OSError:
                pass
            eof_within(s, 3)
    # still serving
    s = connect("127.0.0.1", proxy.port)
    with s:
        s.sendall(greeting((0x00,)) + request("127.0.0.1", nginx.port))
        assert recv_exact(s, 2) == b"\x05\x00"
        assert read_reply(s).rep == 0


def test_client_closing_mid_handshake_does_not_disturb_server(proxy, nginx):
    for cut in range(1, 10):
        msg = greeting((0x00,)) + request("127.0.0.1", nginx.port)
        s = connect("127.0.0.1", proxy.port)
        s.sendall(msg[:cut])
        s.close()
    s = connect("127.0.0.1", proxy.port)
    with s:
        s.sendall(greeting((0x00,)) + request("127.0.0.1", nginx.port))
        assert recv_exact(s, 2) == b"\x05\x00"
        assert read_reply(s).rep == 0


def test_client_silent_after_connecting_is_served_when_it_speaks(proxy, nginx):
    # A client that says nothing for a while after connecting is served
    # once it speaks; one that connects and closes at once leaves nothing
    # behind.
    quiet = connect("127.0.0.1", proxy.port)
    gone = connect("127.0.0.1", proxy.port)
    gone.close()
    with quiet:
        time.sleep(2.5)
        quiet.sendall(greeting((0x00,)))
        assert recv_exact(quiet, 2) == b"\x05\x00"
        quiet.sendall(request("127.0.0.1", nginx.port))
        assert read_reply(quiet).rep == 0
        quiet.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        assert http_body(read_until_eof(quiet, 10))[1] == nginx.index_body


def test_client_reset_mid_handshake_does_not_disturb_server(proxy, nginx):
    import struct
    for _ in range(5):
        s = connect("127.0.0.1", proxy.port)
        s.sendall(b"\x05\x01")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST
    s = connect("127.0.0.1", proxy.port)
    with s:
        s.sendall(greeting((0x00,)) + request("127.0.0.1", nginx.port))
        assert recv_exact(s, 2) == b"\x05\x00"
        assert read_reply(s).rep == 0


def test_failed_auth_with_pipelined_request_gets_no_request_reply(socks5d, nginx):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x02,)) + auth_msg(USER, "wrong") + request("127.0.0.1", nginx.port)
                  + b"GET / HTTP/1.0\r\n\r\n")
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"\x05\x02\x01\x01" and got_eof


def test_ff_reply_with_pipelined_request_gets_nothing_more(socks5d, nginx):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x00,)) + request("127.0.0.1", nginx.port))
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"\x05\xff" and got_eof
