"""Logins under flood: fair password-check queue, failure back-off per source
and per user network, cap on unauthenticated sessions per source, and a
check answered after a password change.

Several loopback source addresses stand for different clients: the proxy
groups IPv4 sources by address (/32) and the per-user back-off by network
(/24), so 127.0.0.x and 127.0.1.x are different networks.
"""

import ctypes
import selectors
import socket
import threading
import time

import pytest

from admin_lib import ADMIN_PASS, ADMIN_USER, admin_server, run_client  # noqa: F401

MET_AUTH_DELAYED, MET_UNAUTH_REFUSED = 32, 35  # pipo metric ids
from s5lib import (auth_msg, eof_within, greeting, read_reply, recv_exact, request)

USER, PASS = "alice", "s3cret-pass"
# guard.h: GUARD_FREE_FAILS failures are free, then GUARD_BASE_MS doubling
FREE_FAILS, BASE_S = 3, 0.25
LEGIT_TIMEOUT = 2.0


def connect_from(src, port, timeout=5.0):
    s = socket.socket()
    s.settimeout(timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def wrong_login(src, port, user=USER, timeout=10.0):
    """One failed login from src; returns (answer bytes, seconds from the
    auth message to the answer)."""
    s = connect_from(src, port)
    with s:
        s.sendall(greeting((0x02,)))
        assert recv_exact(s, 2) == b"\x05\x02"
        t0 = time.monotonic()
        s.sendall(auth_msg(user, "wrong-password"))
        data = recv_exact(s, 2, timeout)
        return data, time.monotonic() - t0


class Flood:
    """n connections from the given sources, each sending a wrong password
    and starting again as soon as it is answered or closed."""

    def __init__(self, port, sources, n, user=USER):
        self.port, self.sources, self.n, self.user = port, sources, n, user
        self.sel = selectors.DefaultSelector()
        self.stop_ev = threading.Event()
        self.answered = 0
        self.opened = 0
        self.got = {}
        self.thread = threading.Thread(target=self.run, daemon=True)

    def open_one(self, i):
        s = socket.socket()
        s.setblocking(False)
        s.bind((self.sources[i % len(self.sources)], 0))
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        self.opened += 1
        # Half the flood guesses the real user's password, half unknown names.
        name = self.user if i % 2 == 0 else "nobody-%d" % i
        msg = greeting((0x02,)) + auth_msg(name, "guess-%d" % self.opened)
        self.sel.register(s, selectors.EVENT_WRITE, (i, msg))

    def run(self):
        for i in range(self.n):
            self.open_one(i)
        while not self.stop_ev.is_set():
            for key, ev in self.sel.select(0.2):
                s, (i, msg) = key.fileobj, key.data
                if ev & selectors.EVENT_WRITE:
                    try:
                        s.send(msg)
                        self.sel.modify(s, selectors.EVENT_READ, (i, msg))
                    except OSError:
                        self.got.pop(s, None)
                        self.sel.unregister(s)
                        s.close()
                        self.open_one(i)
                    continue
                try:
                    data = s.recv(64)
                except OSError:
                    data = b""
                got = self.got.get(s, b"") + data
                self.got[s] = got
                if len(got) >= 4 or not data:  # 05 02 01 01, or closed
                    self.answered += len(got) >= 4
                    del self.got[s]
                    self.sel.unregister(s)
                    s.close()
                    self.open_one(i)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop_ev.set()
        self.thread.join(10)


def legit_login(src, port, echo_port, user=USER, password=PASS, timeout=LEGIT_TIMEOUT):
    """A full login and CONNECT from src; returns the seconds until the
    auth answer.  Raises if the login is not answered with success."""
    s = connect_from(src, port, timeout)
    with s:
        t0 = time.monotonic()
        s.sendall(greeting((0x02,)) + auth_msg(user, password) + request("127.0.0.1", echo_port) + b"ping")
        assert recv_exact(s, 4, timeout) == b"\x05\x02\x01\x00", "login of %s" % user
        took = time.monotonic() - t0
        assert read_reply(s, 5).rep == 0
        assert recv_exact(s, 4, 5) == b"ping"
        return took


def test_legitimate_logins_succeed_during_wrong_password_flood(socks5d, echo_server):
    # 600 connections from 60 addresses of 127.0.0.0/24 guess passwords
    # (of the real user and of unknown names) without pause; real users,
    # from another network, must log in every time, each within 2 s: those
    # whose password must be checked (each user's first login) and those
    # remembered from an earlier login.
    others = ["user%d" % i for i in range(10)]
    args = ["-u", "%s:%s" % (USER, PASS)]
    for u in others:
        args += ["-u", "%s:pw-%s" % (u, u)]
    p = socks5d(*args, workers=2)
    sources = ["127.0.0.%d" % i for i in range(10, 70)]
    checked, remembered = [], []
    with Flood(p.port, sources, 600) as f:
        deadline = time.monotonic() + 10
        while f.opened < 600 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(3.0)  # past the start, when every flooding source is new
        for i, u in enumerate(others):
            src = "127.0.1.%d" % (1 + i)
            checked.append(legit_login(src, p.port, echo_server.port, u, "pw-" + u))
            for _ in range(2):  # the second is remembered in at least one worker
                remembered.append(legit_login(src, p.port, echo_server.port, u, "pw-" + u))
            time.sleep(0.1)
        answered = f.answered
    assert answered > 0, "the flood was never answered"
    for name, t in (("checked", checked), ("repeated", remembered)):
        t.sort()
        print("%s logins during the flood: median %.1f ms, max %.1f ms (%d logins, %d flood answers)"
              % (name, t[len(t) // 2] * 1000, t[-1] * 1000, len(t), answered))


def test_failures_from_one_source_back_off(admin_server):
    srv = admin_server(users=["%s:%s" % (USER, PASS)], workers=1)
    p = srv.proc
    for i in range(FREE_FAILS):
        data, _ = wrong_login("127.0.0.1", p.port)
        assert data == b"\x01\x01"
    # the second wave: each failure is answered, but only after a back-off
    # that doubles
    for k in range(3):
        data, took = wrong_login("127.0.0.1", p.port)
        assert data == b"\x01\x01"
        assert took >= BASE_S * (2 ** k) * 0.9, "failure %d answered after %.3f s" % (FREE_FAILS + 1 + k, took)
    with srv.login() as c:
        assert c.metrics()[MET_AUTH_DELAYED] == 3


def test_failures_for_one_user_back_off_across_a_network(socks5d):
    # a guesser rotating addresses in one /24 against one user: the user's
    # back-off for that network catches it though each address is new
    p = socks5d("-u", "%s:%s" % (USER, PASS), workers=1)
    for i in range(FREE_FAILS):
        data, _ = wrong_login("127.0.0.%d" % (10 + i), p.port)
        assert data == b"\x01\x01"
    data, took = wrong_login("127.0.0.%d" % (10 + FREE_FAILS), p.port)
    assert data == b"\x01\x01"
    assert took >= BASE_S * 0.9, "answered after %.3f s" % took


def test_unauthenticated_sessions_capped_per_source(socks5d, echo_server):
    # default cap: 64 sessions per source and worker before authentication
    p = socks5d("-u", "%s:%s" % (USER, PASS), workers=1)
    held = []
    try:
        for _ in range(64):
            s = connect_from("127.0.0.1", p.port)
            s.sendall(greeting((0x02,)))
            assert recv_exact(s, 2) == b"\x05\x02"  # accepted, not authenticated
            held.append(s)
        over = connect_from("127.0.0.1", p.port)
        with over:
            got_eof, data, _ = eof_within(over, 3)
            assert got_eof and data == b"", "the 65th unauthenticated session was served: %r" % data
        # another source is not affected
        s = connect_from("127.0.0.2", p.port)
        with s:
            s.sendall(greeting((0x02,)) + auth_msg(USER, PASS) + request("127.0.0.1", echo_server.port) + b"hi")
            assert recv_exact(s, 4) == b"\x05\x02\x01\x00"
            assert read_reply(s).rep == 0
            assert recv_exact(s, 2) == b"hi"
        # an authenticated session no longer counts: one of the 64 logs in,
        # and a new session from the first source is served again
        held[0].sendall(auth_msg(USER, PASS))
        assert recv_exact(held[0], 2) == b"\x01\x00"
        s = connect_from("127.0.0.1", p.port)
        with s:
            s.sendall(greeting((0x02,)))
            assert recv_exact(s, 2) == b"\x05\x02"
    finally:
        for s in held:
            s.close()
    assert "not authenticated yet" in p.stderr_text()


def test_unauthenticated_cap_setting(admin_server):
    srv = admin_server("--max-unauth-per-source", "2", users=["%s:%s" % (USER, PASS)], workers=1)
    p = srv.proc
    held = [connect_from("127.0.0.1", p.port) for _ in range(2)]
    try:
        for s in held:
            s.sendall(greeting((0x02,)))
            assert recv_exact(s, 2) == b"\x05\x02"
        over = connect_from("127.0.0.1", p.port)
        with over:
            got_eof, data, _ = eof_within(over, 3)
            assert got_eof and data == b""
    finally:
        for s in held:
            s.close()
    with srv.login() as c:
        assert c.metrics()[MET_UNAUTH_REFUSED] == 1


# ---------------------------------------------------------------- a password change during a check

def crypt_hash(password, cost):
    lc = ctypes.CDLL("libcrypt.so.1")
    lc.crypt_gensalt.restype = ctypes.c_char_p
    lc.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lc.crypt.restype = ctypes.c_char_p
    lc.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    return lc.crypt(password.encode(), lc.crypt_gensalt(b"$y$", cost, None, 0)).decode()


def test_login_checked_before_password_change_is_refused_after_it(admin_server, tmp_path):
    # A yescrypt hash that takes about two seconds to verify: the password is
    # changed while the old one is being checked; the answer must be no.
    conf = tmp_path / "slow.conf"
    conf.write_text("admin = %s:%s\nuser = bob:%s\n"
                    % (ADMIN_USER, crypt_hash(ADMIN_PASS, 5), crypt_hash("old-pw", 11)))
    srv = admin_server(config=conf, workers=1)
    s = connect_from("127.0.0.1", srv.port, timeout=20)
    with s:
        s.sendall(greeting((0x02,)))
        assert recv_exact(s, 2) == b"\x05\x02"
        s.sendall(auth_msg("bob", "old-pw"))
        r = run_client("user", "passwd", "bob", server=srv, new_password="new-pw")
        assert r.returncode == 0, r.err
        s.setblocking(False)
        try:
            early = s.recv(2, socket.MSG_PEEK)
        except BlockingIOError:
            early = None
        s.setblocking(True)
        if early is not None:
            pytest.fail("the check was answered before the change (%r): the hash is too fast here" % early)
        assert recv_exact(s, 2, 20) == b"\x01\x01", "old password accepted after the change"


# ---------------------------------------------------------------- abandoned logins

def abandoned_login(src, port, user=USER):
    """A login for user sent and given up at once, as a cheap attacker does."""
    s = connect_from(src, port)
    with s:
        s.sendall(greeting((0x02,)) + auth_msg(user, "guess"))
        assert recv_exact(s, 2) == b"\x05\x02"


def test_abandoned_logins_do_not_push_the_users_back_off_out(socks5d, echo_server):
    """Logins for a user given up while held used to reserve one back-off
    each on the (user, network) record: 80 of them kept the real user, with
    a remembered password, out until the handshake timeout."""
    p = socks5d("-u", "%s:%s" % (USER, PASS), workers=1)
    legit_login("127.0.0.1", p.port, echo_server.port)  # remembered from now on
    for i in range(FREE_FAILS):
        assert wrong_login("127.0.0.%d" % (10 + i), p.port)[0] == b"\x01\x01"
    for i in range(80):
        abandoned_login("127.0.0.%d" % (20 + i), p.port)
    legit_login("127.0.0.1", p.port, echo_server.port)
    legit_login("127.0.0.2", p.port, echo_server.port)


def test_a_login_given_up_leaves_the_check_queue(admin_server):
    """A client that sends its login and closes, with no request sent ahead,
    can never be served: its session ends at once instead of holding its
    place (and its count toward the unauthenticated cap) until the
    handshake timeout."""
    srv = admin_server("--max-unauth-per-source", "4", users=["%s:%s" % (USER, PASS)], workers=1)
    # more than the cap, each given up after its login was sent
    for _ in range(12):
        abandoned_login("127.0.0.1", srv.port, user=USER)
    time.sleep(0.5)
    with srv.login() as c:
        sessions, _ = c.sessions()
    assert sessions == [], sessions
    # and the source is not refused
    s = connect_from("127.0.0.1", srv.port)
    with s:
        s.sendall(greeting((0x02,)))
        assert recv_exact(s, 2) == b"\x05\x02"


@pytest.mark.parametrize("user_logs_in", [False, True])
def test_addresses_of_one_network_take_turns_guessing_one_user(socks5d, echo_server, user_logs_in):
    """Many addresses of one /24 guessing one user's password in parallel:
    the (user, network) back-off lets one check start per back-off period,
    not one per address at the same moment; the user's own login from that
    network in between does not reopen the door."""
    p = socks5d("-u", "%s:%s" % (USER, PASS), workers=1)
    if user_logs_in:
        legit_login("127.0.0.1", p.port, echo_server.port)  # remembered from now on
    for i in range(FREE_FAILS):
        assert wrong_login("127.0.0.%d" % (10 + i), p.port)[0] == b"\x01\x01"
    if user_logs_in:
        legit_login("127.0.0.2", p.port, echo_server.port)
    done = []

    def guess(i):
        data, _ = wrong_login("127.0.0.%d" % (40 + i), p.port, timeout=30)
        done.append((time.monotonic(), data))

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert len(done) == 5 and all(d == b"\x01\x01" for _, d in done), done
    times = sorted(t for t, _ in done)
    # back-offs of 0.25, 0.5, 1 and 2 s between the five starts
    assert times[-1] - times[0] >= 2.0, [round(t - times[0], 2) for t in times]


def test_failed_logins_are_logged_at_most_once_a_second(socks5d):
    p = socks5d("-u", "%s:%s" % (USER, PASS), workers=1)
    start = time.monotonic()
    for n in range(20):  # sources and names apart: no back-off in the way
        wrong_login("127.0.%d.1" % (n + 1), p.port, user="guess%d" % n)
    elapsed = time.monotonic() - start
    # the count comes when the second is over, with the last one's user
    # and address
    p.wait_stderr(r"authentication failed \d+ more time\(s\) in the last second, the last "
                  r"for user 'guess19' from 127\.0\.20\.1")
    lines = [l for l in p.stderr_text().splitlines() if "authentication failed" in l]
    assert 2 <= len(lines) <= elapsed + 3, lines
    assert "user 'guess0' from 127.0.1.1" in lines[0], lines
