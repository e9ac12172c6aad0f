"""Refused handshakes in the access log: one record each, with a non-SOCKS
status in the reply field, bounded under floods."""

import re
import socket
import time

from s5lib import (LOG_DATE_RE, auth_msg, connect, eof_within, greeting, recv_exact,
                   socks_connect_ok)

USER, PASS = "alice", "pw-alice"
RATE = 100  # refusal records a second per worker (SESSION_REFUSALS_PER_SEC)


def connect_from(src, port, timeout=10.0):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def check_refusal(f, status, src, sport, user="-"):
    assert len(f) == 15, "expected 15 tab-separated fields: %r" % (f,)
    assert LOG_DATE_RE.match(f[0]), f
    assert f[1] == user, f
    assert f[2] == "A", f
    assert (f[3], f[4]) == (src, str(sport)), f
    assert (f[5], f[6]) == ("-", "-"), f  # no destination yet
    assert f[7] == status, f
    assert (f[8], f[9]) == ("0", "0"), f
    assert re.fullmatch(r"\d+", f[10]), f
    # the method: the login's for a failed login, none chosen otherwise
    assert f[11:] == ["-", "0", "0", "password" if status == "auth-failed" else "-"], f


def records_from(p, sport):
    return [f for f in (l.split("\t") for l in p.log_lines()) if f[4:5] == [str(sport)]]


def one_record(p, sport):
    """The records for the client port sport, after a pause in which a second
    one would have come: exactly one is expected."""
    p.wait_log(lambda f: f[4:5] == [str(sport)])
    time.sleep(0.3)
    recs = records_from(p, sport)
    assert len(recs) == 1, recs
    return recs[0]


def test_no_acceptable_method_writes_one_record(socks5d):
    p = socks5d("-u", "%s:%s" % (USER, PASS), "--anonymous", "never")
    s = connect("127.0.0.1", p.port)
    sport = s.getsockname()[1]
    with s:
        s.sendall(greeting((0x00,)))
        assert recv_exact(s, 2) == b"\x05\xff"
        eof_within(s, 5)
    check_refusal(one_record(p, sport), "no-method", "127.0.0.1", sport)


def test_failed_login_writes_one_record_with_the_offered_name_escaped(socks5d):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    offered = b"ev\til\\ x\xff"
    s = connect("127.0.0.1", p.port)
    sport = s.getsockname()[1]
    with s:
        s.sendall(greeting((0x02,)))
        assert recv_exact(s, 2) == b"\x05\x02"
        s.sendall(auth_msg(offered, "wrong"))
        assert recv_exact(s, 2, 10) == b"\x01\x01"
        eof_within(s, 5)
    f = one_record(p, sport)
    check_refusal(f, "auth-failed", "127.0.0.1", sport, user=r"ev\x09il\x5c\x20x\xff")


def test_wrong_password_of_a_real_user_names_it(socks5d):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s = connect("127.0.0.1", p.port)
    sport = s.getsockname()[1]
    with s:
        s.sendall(greeting((0x02,)) + auth_msg(USER, "not-" + PASS))
        assert recv_exact(s, 4, 10) == b"\x05\x02\x01\x01"
    check_refusal(one_record(p, sport), "auth-failed", "127.0.0.1", sport, user=USER)


def test_malformed_login_writes_one_record_without_a_name(socks5d):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s = connect("127.0.0.1", p.port)
    sport = s.getsockname()[1]
    with s:
        s.sendall(greeting((0x02,)) + auth_msg(USER, PASS, ver=2))  # not RFC 1929's VER
        assert recv_exact(s, 4, 10) == b"\x05\x02\x01\x01"
    check_refusal(one_record(p, sport), "auth-failed", "127.0.0.1", sport)


def test_client_rule_writes_one_record(socks5d, tmp_path):
    conf = tmp_path / "s.conf"
    conf.write_text("anonymous = always\nclient block from 127.0.0.2\n")
    p = socks5d("-f", conf)
    s = connect_from("127.0.0.2", p.port)
    sport = s.getsockname()[1]
    with s:
        eof_within(s, 5)
    check_refusal(one_record(p, sport), "client-blocked", "127.0.0.2", sport)


def test_unauth_cap_writes_one_record(socks5d):
    p = socks5d("-u", "%s:%s" % (USER, PASS), "--max-unauth-per-source", "1", workers=1)
    held = connect_from("127.0.0.3", p.port)
    held_port = held.getsockname()[1]
    with held:
        time.sleep(0.2)  # accepted and counted before the second one comes
        s = connect_from("127.0.0.3", p.port)
        sport = s.getsockname()[1]
        with s:
            eof_within(s, 5)
        check_refusal(one_record(p, sport), "unauth-cap", "127.0.0.3", sport)
    time.sleep(0.3)
    # the held connection never got to a request nor was refused: no record
    assert records_from(p, held_port) == []


def test_successful_session_still_writes_exactly_one_record(socks5d, echo_server):
    p = socks5d("-u", "%s:%s" % (USER, PASS))
    s, r = socks_connect_ok(p.port, "127.0.0.1", echo_server.port, user=USER, password=PASS)
    sport = s.getsockname()[1]
    with s:
        s.sendall(b"abc")
        assert recv_exact(s, 3) == b"abc"
    f = one_record(p, sport)
    assert (f[1], f[7], f[11]) == (USER, "0", "connect"), f


def test_login_flood_writes_at_most_the_rate_then_a_count(socks5d):
    p = socks5d("-u", "%s:%s" % (USER, PASS), workers=1)
    n = 500
    # each from its own address and with its own name, so that the
    # per-source back-off is not what bounds them; all connected first,
    # then all logins sent at once
    socks_ = [connect_from("127.9.%d.%d" % (i // 200, i % 200 + 1), p.port, timeout=60)
              for i in range(n)]
    start = time.monotonic()
    try:
        for i, s in enumerate(socks_):
            s.sendall(greeting((0x02,)) + auth_msg("flood%d" % i, "wrong"))
        answers = [recv_exact(s, 4, 60) for s in socks_]
    finally:
        for s in socks_:
            s.close()
    elapsed = time.monotonic() - start
    assert answers == [b"\x05\x02\x01\x01"] * n, [a for a in answers if a != b"\x05\x02\x01\x01"][:5]
    # every refusal is either a record or counted in a line on stderr
    def tally():
        recs = [f for f in (l.split("\t") for l in p.log_lines())
                if len(f) == 15 and f[7] == "auth-failed"]
        said = [int(m.group(1)) for m in
                re.finditer(r"(\d+) refusal record\(s\) not written in the last second "
                            r"\(over %d a second\)" % RATE, p.stderr_text())]
        return recs, said
    end = time.monotonic() + 10
    recs, said = tally()
    while len(recs) + sum(said) < n and time.monotonic() < end:
        time.sleep(0.1)
        recs, said = tally()
    assert len(recs) + sum(said) == n, (len(recs), said)
    # one window of RATE records a second, and more than a second's worth
    # came in the first one
    assert len(recs) <= RATE * (int(elapsed) + 2), (len(recs), elapsed)
    assert said, "no count of the records not written"
    assert len(said) <= int(elapsed) + 2, (said, elapsed)
    for f in recs:
        assert f[1].startswith("flood"), f
