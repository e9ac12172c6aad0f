"""Method selection, RFC 1929 username/password and the anonymous policy."""

import subprocess

import socks

from s5lib import (auth_msg, connect, eof_within, greeting, http_body, http_get_raw,
                   read_reply, read_until_eof, recv_exact, request, socks_connect_ok)

USER, PASS = "alice", "s3cret-pass"


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
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    for _ in range(10):
        s = connect("127.0.0.1", p.port)
        with s:
            s.sendall(greeting((0x02,)) + auth_msg(USER, "bad"))
            eof_within(s, 3)
    s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port, user=USER, password=PASS)
    s.close()
