"""The original administration protocol (pipo version 1) served beside
version 2 on the unix socket: a client written from the protocol's own
description (no length field: each response is parsed by its command),
every command against a real socks5d, refusals, hostile input, the
re-check of rights, and version 2 still working beside it."""

import signal
import socket
import struct
import time

import pytest

from admin_lib import (ADMIN_PASS, ADMIN_USER, Cursor, M_DEL_USER, OK, Q_BUFFER_SIZE,  # noqa: F401
                       Q_DISSECTORS, Q_HANDSHAKE_TIMEOUT, Q_IDLE_CLEANUP, Q_IDLE_TIMEOUT,
                       Q_USER_COUNT, admin_server, s8)
from s5lib import hash_password, recv_exact, socks_connect_ok, socks_login_ok

BOB, BOB_PASS = "bob", "bob-pass"

QUERY, MODIFY = 0x00, 0x01
# Queries: the response after TYPE CMD, as the original client reads it.
Q_USERS, Q_HISTORIC, Q_CURRENT, Q_MAX = 0x00, 0x01, 0x02, 0x03
Q_SENT, Q_RECEIVED, Q_USERS_CONNECTED, Q_COUNT = 0x04, 0x05, 0x06, 0x07
Q_BUFFER, Q_SELECTOR_TIMEOUT, Q_CONN_TIMEOUT, Q_USER_CONNS = 0x08, 0x09, 0x0A, 0x0B
WIDTH = {Q_HISTORIC: 8, Q_CURRENT: 8, Q_MAX: 4, Q_SENT: 8, Q_RECEIVED: 8, Q_USERS_CONNECTED: 8,
         Q_COUNT: 1, Q_BUFFER: 4, Q_SELECTOR_TIMEOUT: 1, Q_CONN_TIMEOUT: 1, Q_USER_CONNS: 1,
         0x10: 1, 0x11: 1}
# Modifications: the response is TYPE CMD STATUS.
M_ADD, M_DEL, M_DISSECTORS, M_IDLE_CLEANUP = 0x00, 0x01, 0x02, 0x03
M_BUFFER, M_SELECTOR_TIMEOUT, M_CONN_TIMEOUT = 0x04, 0x05, 0x06
ST_OK, ST_1, ST_INVALID, ST_SERVER = 0x00, 0x01, 0x02, 0xFF


def v1_auth(user, password):
    u, p = user.encode(), password.encode()
    return bytes([0x01, len(u)]) + u + bytes([len(p)]) + p


def add_req(name, password, priv=0):
    return bytes([MODIFY, M_ADD]) + s8(name) + s8(password) + bytes([priv])


class V1Conn:
    """A version-1 client over the unix socket."""

    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def recv(self, n):
        return recv_exact(self.sock, n, 5.0)

    def auth(self, user=ADMIN_USER, password=ADMIN_PASS):
        self.send(v1_auth(user, password))
        return self.recv(2)

    def login(self, user=ADMIN_USER, password=ADMIN_PASS):
        assert self.auth(user, password) == b"\x01\x00"
        return self

    def read_answer(self, type_, cmd):
        """The answer to one request, parsed as its command defines it."""
        assert self.recv(2) == bytes([type_, cmd]), "TYPE CMD not echoed"
        if type_ == MODIFY:
            return self.recv(1)[0]
        if cmd == Q_USERS:
            names = []
            for _ in range(self.recv(1)[0]):
                names.append(self.recv(self.recv(1)[0]).decode())
            return names
        raw = self.recv(WIDTH[cmd])
        return int.from_bytes(raw, "big")

    def q(self, cmd, payload=b""):
        self.send(bytes([QUERY, cmd]) + payload)
        return self.read_answer(QUERY, cmd)

    def m(self, cmd, payload=b""):
        self.send(bytes([MODIFY, cmd]) + payload)
        return self.read_answer(MODIFY, cmd)

    def eof_within(self, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                d = self.sock.recv(4096)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not d:
                return True
        return False


def v1(srv):
    return V1Conn(srv.path)


def echo_ok(sock, data=b"ping"):
    sock.sendall(data)
    return recv_exact(sock, len(data), 3) == data


# ---------------------------------------------------------------- login

def test_v1_login_answered_in_version_1(admin_server):
    srv = admin_server()
    with v1(srv) as c:
        assert c.auth() == b"\x01\x00"
        assert c.q(Q_COUNT) == 1


@pytest.mark.parametrize("user,password", [(ADMIN_USER, "wrong"), ("nobody", ADMIN_PASS)])
def test_v1_bad_credentials_failed_then_closed(admin_server, user, password):
    srv = admin_server()
    with v1(srv) as c:
        t0 = time.monotonic()
        assert c.auth(user, password) == b"\x01\x01"
        assert time.monotonic() - t0 >= 0.9   # the same delay as version 2
        assert c.eof_within(3)


def test_v1_non_admin_refused(admin_server):
    srv = admin_server(users=["%s:%s" % (BOB, BOB_PASS)])
    with v1(srv) as c:
        assert c.auth(BOB, BOB_PASS) == b"\x01\x01"
        assert c.eof_within(3)
    assert socks_login_ok(srv.port, BOB, BOB_PASS)


def test_v1_empty_password_refused(admin_server):
    srv = admin_server()
    with v1(srv) as c:
        c.send(b"\x01\x05admin\x00")
        assert c.recv(2) == b"\x01\x01"
        assert c.eof_within(3)


def test_unknown_auth_version_still_refused(admin_server):
    srv = admin_server()
    with v1(srv) as c:
        c.send(b"\x03\x05admin\x02pw")
        assert c.recv(2) == b"\x02\x02"
        assert c.eof_within(3)


# ---------------------------------------------------------------- queries

def test_v1_every_query(admin_server):
    srv = admin_server(users=["%s:%s" % (BOB, BOB_PASS)])
    with v1(srv).login() as c:
        assert sorted(c.q(Q_USERS)) == sorted([ADMIN_USER, BOB])
        for cmd in (Q_HISTORIC, Q_CURRENT, Q_SENT, Q_RECEIVED, Q_USERS_CONNECTED):
            assert c.q(cmd) == 0, hex(cmd)
        assert c.q(Q_MAX) == 0
        assert c.q(Q_COUNT) == 2
        assert c.q(Q_BUFFER) == 65536
        assert c.q(Q_SELECTOR_TIMEOUT) == 15
        # 600 s does not fit the u8 of version 1: the largest value it holds
        assert c.q(Q_CONN_TIMEOUT) == 255
        assert c.q(0x10) == 255     # the code the original text also gave it
        assert c.q(Q_USER_CONNS, s8(BOB)) == 0
        assert c.q(0x11, s8(BOB)) == 0
        assert c.q(Q_USER_CONNS, s8("ghost")) == 0   # no error status for a query
        assert c.q(Q_USER_CONNS, b"\x00") == 0       # an empty name


def test_v1_counters_follow_socks_traffic(admin_server, echo_server):
    srv = admin_server(users=["%s:%s" % (BOB, BOB_PASS)])
    with v1(srv).login() as c:
        s, _ = socks_connect_ok(srv.port, "127.0.0.1", echo_server.port, user=BOB, password=BOB_PASS)
        with s:
            assert echo_ok(s, b"x" * 1000)
            assert c.q(Q_USER_CONNS, s8(BOB)) == 1
            assert c.q(Q_CURRENT) >= 1
            assert c.q(Q_HISTORIC) >= 1
            assert c.q(Q_USERS_CONNECTED) == 1
            assert c.q(Q_MAX) >= 1
        end = time.monotonic() + 5
        while c.q(Q_SENT) < 1000 or c.q(Q_RECEIVED) < 1000:
            assert time.monotonic() < end, "byte counters did not rise"
            time.sleep(0.05)
        end = time.monotonic() + 5
        while c.q(Q_CURRENT) != 0:
            assert time.monotonic() < end
            time.sleep(0.05)


# ---------------------------------------------------------------- modifications

def test_v1_add_and_delete_users(admin_server, echo_server):
    srv = admin_server()
    with v1(srv).login() as c:
        assert c.m(M_ADD, add_req("carol", "carol-pass")[2:]) == ST_OK
        assert c.m(M_ADD, add_req("carol", "other-pass")[2:]) == ST_1   # name taken
        assert c.m(M_ADD, add_req("dave", "pw", priv=2)[2:]) == ST_INVALID
        assert c.m(M_ADD, b"\x00\x02pw\x00") == ST_INVALID             # empty name
        assert c.m(M_ADD, b"\x04erin\x00\x00") == ST_INVALID           # empty password
        assert c.m(M_ADD, b"\x03a\x00b\x02pw\x00") == ST_INVALID       # a NUL in the name
        assert sorted(c.q(Q_USERS)) == [ADMIN_USER, "carol"]
        assert c.q(Q_COUNT) == 2
        assert socks_login_ok(srv.port, "carol", "carol-pass")
        s, _ = socks_connect_ok(srv.port, "127.0.0.1", echo_server.port, user="carol",
                                password="carol-pass")
        with s:
            assert echo_ok(s)
            assert c.m(M_DEL, s8("carol")) == ST_OK
            # its active sessions are closed
            end = time.monotonic() + 5
            closed = False
            while time.monotonic() < end and not closed:
                s.settimeout(0.2)
                try:
                    closed = s.recv(1) == b""
                except socket.timeout:
                    pass
                except ConnectionResetError:
                    closed = True
            assert closed
        assert c.m(M_DEL, s8("carol")) == ST_1      # no such user
        assert c.m(M_DEL, b"\x00") == ST_INVALID
        assert not socks_login_ok(srv.port, "carol", "carol-pass")
        # an administrator added over version 1 logs in over version 1
        assert c.m(M_ADD, add_req("boss", "boss-pass", priv=1)[2:]) == ST_OK
    with v1(srv).login("boss", "boss-pass") as c:
        assert "boss" in c.q(Q_USERS)


def test_v1_settings(admin_server):
    srv = admin_server()
    with v1(srv).login() as c, srv.login() as c2:
        assert c.m(M_DISSECTORS, b"\x00") == ST_OK
        assert c2.q(Q_DISSECTORS).payload == b"\x00"
        assert c.m(M_DISSECTORS, b"\x01") == ST_OK
        assert c2.q(Q_DISSECTORS).payload == b"\x01"
        assert c.m(M_DISSECTORS, b"\x07") == ST_SERVER
        assert c.m(M_IDLE_CLEANUP, b"\x00") == ST_OK
        assert c2.q(Q_IDLE_CLEANUP).payload == b"\x00"
        assert c.m(M_IDLE_CLEANUP, b"\x01") == ST_OK
        assert c2.q(Q_IDLE_CLEANUP).payload == b"\x01"
        assert c.m(M_BUFFER, struct.pack("!I", 8192)) == ST_OK
        assert c.q(Q_BUFFER) == 8192
        assert c2.u32_query(Q_BUFFER_SIZE) == 8192
        assert c.m(M_BUFFER, struct.pack("!I", 0)) == ST_1
        assert c.m(M_BUFFER, struct.pack("!I", 0xFFFFFFFF)) == ST_1
        assert c.m(M_SELECTOR_TIMEOUT, b"\x1e") == ST_OK
        assert c.q(Q_SELECTOR_TIMEOUT) == 30
        assert c2.u32_query(Q_HANDSHAKE_TIMEOUT) == 30
        assert c.m(M_SELECTOR_TIMEOUT, b"\x00") == ST_1
        assert c.m(M_CONN_TIMEOUT, b"\x64") == ST_OK
        assert c.q(Q_CONN_TIMEOUT) == 100
        assert c2.u32_query(Q_IDLE_TIMEOUT) == 100
        assert c.m(M_CONN_TIMEOUT, b"\x00") == ST_1
        assert c.q(Q_SELECTOR_TIMEOUT) == 30   # refusals changed nothing


# ---------------------------------------------------------------- pipelining, framing

def test_v1_pipelined_byte_by_byte(admin_server):
    srv = admin_server(users=["%s:%s" % (BOB, BOB_PASS)])
    reqs = [(QUERY, Q_COUNT, b""), (MODIFY, M_ADD, add_req("erin", "erin-pass")[2:]),
            (QUERY, Q_USER_CONNS, s8(BOB)), (QUERY, Q_USERS, b""),
            (MODIFY, M_BUFFER, struct.pack("!I", 4096)), (QUERY, Q_BUFFER, b""),
            (QUERY, Q_COUNT, b"")]
    stream = v1_auth(ADMIN_USER, ADMIN_PASS) + b"".join(bytes([t, m]) + p for t, m, p in reqs)
    with v1(srv) as c:
        for i in range(len(stream)):
            c.send(stream[i:i + 1])
        assert c.recv(2) == b"\x01\x00"
        got = [c.read_answer(t, m) for t, m, _ in reqs]
    assert got[0] == 2 and got[1] == ST_OK and got[2] == 0
    assert sorted(got[3]) == sorted([ADMIN_USER, BOB, "erin"])
    assert got[4] == ST_OK and got[5] == 4096 and got[6] == 3


def test_v1_requests_behind_auth_in_one_write(admin_server):
    srv = admin_server()
    with v1(srv) as c:
        c.send(v1_auth(ADMIN_USER, ADMIN_PASS) + bytes([QUERY, Q_COUNT]) * 50)
        assert c.recv(2) == b"\x01\x00"
        for _ in range(50):
            assert c.read_answer(QUERY, Q_COUNT) == 1


@pytest.mark.parametrize("junk", [b"\x00\x0c", b"\x00\xff", b"\x01\x07", b"\x02\x00", b"\xff\xff",
                                  b"\x02\x00\x00\x00\x00\x00\x00\x00"])
def test_v1_unknown_request_closes_cleanly(admin_server, junk):
    srv = admin_server()
    with v1(srv).login() as c:
        assert c.q(Q_COUNT) == 1
        c.send(junk)
        # no length field: the request cannot be skipped; no answer, a close
        c.sock.settimeout(5)
        try:
            got = c.sock.recv(64)
        except ConnectionResetError:   # closed with the rest of junk unread
            got = b""
        assert got == b""
    assert srv.proc.alive()
    with v1(srv).login() as c:
        assert c.q(Q_COUNT) == 1


def test_v1_answers_before_an_unknown_request_are_sent(admin_server):
    """Requests read together with an unknown one after them: their
    answers leave first, then the session closes."""
    srv = admin_server()
    with v1(srv) as c:
        c.send(v1_auth(ADMIN_USER, ADMIN_PASS))
        assert c.recv(2) == b"\x01\x00"
        c.send(bytes([QUERY, Q_COUNT, QUERY, Q_BUFFER, QUERY, 0x7F]))
        assert c.read_answer(QUERY, Q_COUNT) == 1
        assert c.read_answer(QUERY, Q_BUFFER) == 65536
        assert c.eof_within(3)
    assert srv.proc.alive()


def test_v1_half_close_after_requests_answered(admin_server):
    srv = admin_server()
    with v1(srv) as c:
        c.send(v1_auth(ADMIN_USER, ADMIN_PASS) + bytes([QUERY, Q_COUNT, QUERY, Q_USER_CONNS, 3]))
        c.sock.shutdown(socket.SHUT_WR)   # in the middle of a name
        assert c.recv(2) == b"\x01\x00"
        assert c.read_answer(QUERY, Q_COUNT) == 1
        assert c.eof_within(5)


# ---------------------------------------------------------------- rights, version 2 beside

def request_closes_session(c, data):
    """Send one request; True when the server closes the session instead of answering."""
    try:
        c.send(data)
    except OSError:
        return True
    return c.eof_within(3)


def test_v1_session_of_a_deleted_admin_closed(admin_server):
    srv = admin_server()
    with srv.login() as c2:
        c2.add_user("boss", "boss-pass", admin=1)
        with v1(srv).login("boss", "boss-pass") as c:
            assert c.q(Q_COUNT) == 2
            c2.m(M_DEL_USER, s8("boss"))
            assert request_closes_session(c, bytes([QUERY, Q_COUNT]))


def test_v1_admin_demoted_by_a_reload_refused_at_its_next_request(admin_server, tmp_path):
    cfg = tmp_path / "socks5d.conf"
    base = "admin = %s:%s\n" % (ADMIN_USER, hash_password(ADMIN_PASS))
    xhash = hash_password("x-pass")
    cfg.write_text(base + "admin = xadmin:%s\n" % xhash)
    srv = admin_server(config=cfg)
    with v1(srv).login("xadmin", "x-pass") as x:
        assert x.q(Q_COUNT) == 2
        cfg.write_text(base + "user = xadmin:%s\n" % xhash)
        mark = srv.proc.n_err()
        srv.proc.send_signal(signal.SIGHUP)
        srv.proc.wait_stderr(r"reloaded", start=mark)
        assert request_closes_session(x, add_req("evil", "evil-pw", priv=1))
    with srv.login() as y:
        assert {u["name"] for u in y.users()} == {ADMIN_USER, "xadmin"}


def test_v1_session_deleting_its_own_user_answered_then_closed(admin_server):
    srv = admin_server()
    with srv.login() as c2:
        c2.add_user("boss", "boss-pass", admin=1)
    with v1(srv).login("boss", "boss-pass") as c:
        c.send(bytes([MODIFY, M_DEL]) + s8("boss") + bytes([QUERY, Q_COUNT]))
        assert c.read_answer(MODIFY, M_DEL) == ST_OK
        assert c.eof_within(5)


def test_v1_and_v2_side_by_side(admin_server):
    srv = admin_server()
    with v1(srv).login() as c1, srv.login() as c2:
        assert c1.m(M_ADD, add_req("frank", "frank-pass")[2:]) == ST_OK
        assert {"name": "frank", "admin": 0} in c2.users()
        c2.add_user("gina", "gina-pass")
        assert "gina" in c1.q(Q_USERS)
        assert c1.q(Q_COUNT) == c2.u32_query(Q_USER_COUNT) == 3
        # interleaved, each answered in its own version
        c1.send(bytes([QUERY, Q_COUNT]))
        c2.send(b"\x02\x00\x07\x00\x00\x00\x00\x00")
        assert c1.read_answer(QUERY, Q_COUNT) == 3
        f = c2.read_frame()
        assert (f.ver, f.cmd, f.status, f.payload) == (2, Q_USER_COUNT, OK, b"\x00\x00\x00\x03")
