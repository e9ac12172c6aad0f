"""Method selection, RFC 1929 username/password and the anonymous policy."""

import socket
import subprocess

import pytest

import socks

from s5lib import (auth_msg, connect, eof_within, greeting, http_body, http_get_raw,
                   read_reply, recv_exact, request, socks_connect_ok)

USER, PASS = "alice", "s3cret-pass"


def connect_from(src, port, timeout=5.0):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, timeout=40)


def test_curl_proxy_user_authenticates(socks5d, nginx):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    r = curl("--socks5-hostname", "127.0.0.1:%d" % p.port, "-U", "%s:%s" % (USER, PASS),
             "http://localhost:%d/index.html" % nginx.port)
    assert r.returncode == 0, r.stderr
    assert r.stdout == nginx.index_body


def test_curl_wrong_password_fails(socks5d, nginx):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    r = curl("--socks5", "127.0.0.1:%d" % p.port, "--proxy-user", "%s:wrong" % USER,
             "http://127.0.0.1:%d/index.html" % nginx.port)
    assert r.returncode != 0
    assert r.stdout == b""


def test_pysocks_username_password(socks5d, nginx):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s = socks.socksocket()
    s.set_proxy(socks.SOCKS5, "127.0.0.1", p.port, rdns=True, username=USER, password=PASS)
    s.settimeout(10)
    try:
        s.connect(("localhost", nginx.port))
        assert http_body(http_get_raw(s))[1] == nginx.index_body
    finally:
        s.close()


def test_raw_auth_success_bytes(socks5d, nginx):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x02,)))
        assert recv_exact(s, 2) == b"\x05\x02"
        s.sendall(auth_msg(USER, PASS))
        assert recv_exact(s, 2) == b"\x01\x00"
        s.sendall(request("127.0.0.1", nginx.port))
        r = read_reply(s)
        assert r.raw[:4] == b"\x05\x00\x00\x01"
        assert http_body(http_get_raw(s))[1] == nginx.index_body


def test_wrong_password_gets_01_01_then_close(socks5d):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x02,)))
        assert recv_exact(s, 2) == b"\x05\x02"
        s.sendall(auth_msg(USER, "not-the-password"))
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"\x01\x01"
        assert got_eof


def test_unknown_user_gets_01_01_then_close(socks5d):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x02,)) + auth_msg("mallory", PASS))
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"\x05\x02\x01\x01"
        assert got_eof


def test_auth_subnegotiation_bad_version_gets_01_01(socks5d):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x02,)))
        assert recv_exact(s, 2) == b"\x05\x02"
        s.sendall(auth_msg(USER, PASS, ver=5))
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"\x01\x01"
        assert got_eof


def test_password_is_case_sensitive(socks5d):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x02,)) + auth_msg(USER, PASS.upper()))
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"\x05\x02\x01\x01"


def test_several_users_each_authenticate(socks5d, nginx):
    p = socks5d("-u", "alice:pa", "-u", "bob:pb", "-a", "root:pr")
    for u, pw in (("alice", "pa"), ("bob", "pb"), ("root", "pr")):
        s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port, user=u, password=pw)
        with s:
            assert http_body(http_get_raw(s))[1] == nginx.index_body


def test_password_containing_colon(socks5d, nginx):
    p = socks5d("-u", "carol:pa:ss")
    s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port, user="carol", password="pa:ss")
    s.close()


def test_method_02_chosen_when_offered_with_00_and_users_exist(socks5d):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x00, 0x02)))
        assert recv_exact(s, 2) == b"\x05\x02"


# ---------------------------------------------------------------- anonymous policy

def test_anonymous_auto_allows_loopback_client_without_users(proxy, nginx):
    s = connect("127.0.0.1", proxy.port)
    with s:
        s.sendall(greeting((0x00,)))
        assert recv_exact(s, 2) == b"\x05\x00"
        s.sendall(request("127.0.0.1", nginx.port))
        assert read_reply(s).rep == 0


def test_client_offering_only_userpass_without_users_gets_ff(proxy):
    s = connect("127.0.0.1", proxy.port)
    with s:
        s.sendall(greeting((0x02,)))
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"\x05\xff"
        assert got_eof


def test_anonymous_refused_when_users_exist_ff_once_then_eof(socks5d):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x00,)))
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"\x05\xff"   # exactly once
        assert got_eof


def test_allow_anonymous_with_users_accepts_method_00(socks5d, nginx):
    p = socks5d("-u", "%s:%s" % (USER, PASS), "--allow-anonymous")
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x00,)))
        assert recv_exact(s, 2) == b"\x05\x00"
        s.sendall(request("127.0.0.1", nginx.port))
        assert read_reply(s).rep == 0
        assert http_body(http_get_raw(s))[1] == nginx.index_body
    # users still get 02 when they offer it
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x00, 0x02)))
        assert recv_exact(s, 2) == b"\x05\x02"


def test_anonymous_always_policy_equals_allow_anonymous(socks5d):
    p = socks5d("-u", "%s:%s" % (USER, PASS), "--anonymous", "always")
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x00,)))
        assert recv_exact(s, 2) == b"\x05\x00"


def test_anonymous_never_policy_refuses_loopback_without_users(socks5d):
    p = socks5d("--anonymous", "never")
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x00,)))
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"\x05\xff"
        assert got_eof


def test_anonymous_auto_allows_other_loopback_source_address(proxy):
    # 127.0.0.0/8 is loopback, not only 127.0.0.1
    s = __import__("socket").socket()
    s.settimeout(5)
    with s:
        s.bind(("127.0.0.9", 0))
        s.connect(("127.0.0.1", proxy.port))
        s.sendall(greeting((0x00,)))
        assert recv_exact(s, 2) == b"\x05\x00"


def test_longest_username_and_password_255_bytes(socks5d, nginx):
    u, pw = "u" * 255, "p" * 255
    p = socks5d("-u", "%s:%s" % (u, pw))
    s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port, user=u, password=pw)
    s.close()
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x02,)) + auth_msg(u, "p" * 254))
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"\x05\x02\x01\x01"


def test_empty_username_and_password_rejected(socks5d):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x02,)) + b"\x01\x00\x00")
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"\x05\x02\x01\x01" and got_eof


def test_failed_auth_does_not_affect_other_sessions(socks5d, nginx):
    # the failing source backs off; a client elsewhere (another /24, so
    # not even the per-user back-off of that network applies) is not slowed
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    for _ in range(10):
        s = connect("127.0.0.1", p.port)
        with s:
            s.sendall(greeting((0x02,)) + auth_msg(USER, "bad"))
            eof_within(s, 3)
    s = connect_from("127.0.1.1", p.port)
    with s:
        s.sendall(greeting((0x02,)) + auth_msg(USER, PASS) + request("127.0.0.1", nginx.port))
        assert recv_exact(s, 4) == b"\x05\x02\x01\x00"
        assert read_reply(s).rep == 0


def test_password_with_embedded_nul_is_wrong_password(socks5d):
    # RFC 1929 PASSWD is a byte string: "secret\0junk" is not "secret"
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    for attempt in range(2):  # also once a correct login may have been remembered
        s = connect("127.0.0.1", p.port)
        with s:
            s.sendall(greeting((0x02,)) + auth_msg(USER, PASS.encode() + b"\x00junk"))
            got_eof, data, _ = eof_within(s, 3)
            assert data == b"\x05\x02\x01\x01", "attempt %d: %r" % (attempt, data)
        s = connect("127.0.0.1", p.port)
        with s:
            s.sendall(greeting((0x02,)) + auth_msg(USER, PASS))
            assert recv_exact(s, 4) == b"\x05\x02\x01\x00"


def test_username_with_embedded_nul_is_unknown_user(socks5d):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x02,)) + auth_msg(USER.encode() + b"\x00x", PASS))
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"\x05\x02\x01\x01", data


def test_password_checks_do_not_block_other_sessions(socks5d, echo_server):
    import time
    p = socks5d("-u", "%s:%s" % (USER, PASS), "--allow-anonymous", workers=1)
    bad = []
    try:
        # 30 yescrypt checks queued at once (30 names: one name's guesses
        # would be spaced by its back-off instead)
        for i in range(30):
            s = connect("127.0.0.1", p.port)
            s.sendall(greeting((0x02,)) + auth_msg("%s%d" % (USER, i), "wrong-%d" % i))
            bad.append(s)
        t0 = time.monotonic()
        s = connect("127.0.0.1", p.port)
        with s:
            s.sendall(greeting((0x00,)) + request("127.0.0.1", echo_server.port) + b"ping")
            assert recv_exact(s, 2) == b"\x05\x00"
            assert read_reply(s).rep == 0
            assert recv_exact(s, 4) == b"ping"
        fast = time.monotonic() - t0
        for s in bad:
            got_eof, data, _ = eof_within(s, 10)
            assert data == b"\x05\x02\x01\x01"
        slow = time.monotonic() - t0
        assert fast < 0.3 or fast < slow / 3, "anonymous session waited %.2fs behind password checks (%.2fs)" % (fast, slow)
    finally:
        for s in bad:
            s.close()


def test_many_concurrent_logins_all_succeed(socks5d, echo_server):
    # 100 at once from one address: past the per-source cap of unfinished
    # logins (64 per worker) when the accepts land unevenly; not its test.
    p = socks5d("-u", "%s:%s" % (USER, PASS), "-u", "bob:pw-bob", "--max-unauth-per-source", "0",
                workers=2)
    conns = []
    try:
        for i in range(100):
            u, pw = ((USER, PASS), ("bob", "pw-bob"))[i % 2]
            s = connect("127.0.0.1", p.port, timeout=20)
            s.sendall(greeting((0x02,)) + auth_msg(u, pw) + request("127.0.0.1", echo_server.port)
                      + b"hi %03d" % i)
            conns.append(s)
        for i, s in enumerate(conns):
            assert recv_exact(s, 4, 20) == b"\x05\x02\x01\x00", i
            assert read_reply(s, 20).rep == 0
            assert recv_exact(s, 6, 20) == b"hi %03d" % i
    finally:
        for s in conns:
            s.close()


# The anonymous "auto" policy for non-loopback clients is proven in the unit
# tests of socks5_choose_method (tests/unit/test_socks5.c): tests here use
# loopback addresses only, and every loopback client counts as local.
