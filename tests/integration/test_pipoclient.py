"""pipoClient, the real binary ($PIPOCLIENT), against socks5d over the unix
socket: one-shot commands with exit statuses, --json output, the password
prompt and the interactive shell on a pseudo-terminal."""

import json
import os
import socket
import time

import pytest

from admin_lib import (ADMIN_PASS, ADMIN_USER, PtyClient, admin_server, client_env,  # noqa: F401
                       pipoclient_binary, run_client)
from s5lib import (eof_within, free_port, recv_exact, socks_connect_ok,
                   socks_login_ok)

BOB, BOB_PASS = "bob", "bob-pass"


@pytest.fixture(scope="module", autouse=True)
def client_built():
    if not os.access(pipoclient_binary(), os.X_OK):
        pytest.fail("pipoClient not found at %s (set PIPOCLIENT)" % pipoclient_binary())


def one_line_error(r, *needles):
    lines = r.err.strip().splitlines()
    assert lines, "no error message"
    assert lines[0].startswith("pipoClient: "), r.err
    for n in needles:
        assert n in lines[0], (n, r.err)
    return lines


# ---------------------------------------------------------------- command line

def test_help_and_version():
    r = run_client("--help", user=None)
    assert r.returncode == 0 and "Usage: pipoClient" in r.out and "user add NAME" in r.out
    r = run_client("--version", user=None)
    assert r.returncode == 0 and r.out.startswith("pipoClient 0.1.0")


@pytest.mark.parametrize("args,needle", [
    (["--bogus", "stats"], "--bogus"),
    (["-P", "70000", "stats"], "--port"),
    (["-t", "0", "stats"], "--timeout"),
    (["frobnicate"], "frobnicate"),
    (["user"], "user"),
    (["user", "add"], "missing argument"),
    (["stats", "extra"], "too many"),
    (["users", "--all"], "--all"),
    (["top", "--iterations", "0"], "--iterations"),
    (["set", "buffer-size", "lots"], "buffer-size"),
    (["set", "colour", "blue"], "colour"),
    (["get", "colour"], "colour"),
    (["session", "close", "abc"], "abc"),
])
def test_usage_errors_exit_2_with_one_line_and_hint(args, needle):
    # no server is needed: usage is checked before connecting
    r = run_client(*args, "-S", "/nonexistent/admin.sock")
    assert r.returncode == 2, (r.returncode, r.err)
    lines = one_line_error(r, needle)
    assert len(lines) <= 2
    if len(lines) == 2:
        assert "--help" in lines[1]
    assert r.out == ""


def test_no_user_is_a_usage_error():
    r = run_client("stats", "-S", "/nonexistent/admin.sock", user=None)
    assert r.returncode == 2
    one_line_error(r, "-u NAME")


def test_cannot_connect_exit_3():
    r = run_client("stats", "-S", "/nonexistent/admin.sock")
    assert r.returncode == 3
    one_line_error(r, "/nonexistent/admin.sock")


def test_sctp_unavailable_or_refused_exit_3():
    # nothing listens there; on a kernel without SCTP the message says so
    r = run_client("stats", "-L", "127.0.0.1", "-P", str(free_port()))
    assert r.returncode == 3
    one_line_error(r, "127.0.0.1")
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError:
        assert "SCTP" in r.err


def test_wrong_password_exit_4(admin_server):
    srv = admin_server()
    t0 = time.monotonic()
    r = run_client("stats", server=srv, password="wrong")
    assert r.returncode == 4
    one_line_error(r, "authentication failed", ADMIN_USER)
    assert time.monotonic() - t0 >= 0.9


# ---------------------------------------------------------------- queries

def test_stats_human_and_json(admin_server):
    srv = admin_server()
    r = run_client("stats", server=srv)
    assert r.returncode == 0, r.err
    assert "socks5d 0.1.0" in r.out and "pid %d" % srv.proc.pid in r.out
    assert "connections_total" in r.out and "bytes_up" in r.out
    r = run_client("--json", "stats", server=srv)
    assert r.returncode == 0, r.err
    doc = json.loads(r.out)
    assert doc["server"]["pid"] == srv.proc.pid
    assert isinstance(doc["server"]["workers"], int)   # exact count: test_admin.py
    assert doc["metrics"]["users"] == 1
    assert isinstance(doc["metrics"]["workers"], int)
    assert "replies_succeeded" in doc["metrics"]


def test_server_and_users(admin_server):
    srv = admin_server(users=["%s:%s" % (BOB, BOB_PASS)])
    r = run_client("server", server=srv)
    assert r.returncode == 0 and str(srv.proc.pid) in r.out and "0.1.0" in r.out
    doc = json.loads(run_client("server", "--json", server=srv).out)
    assert doc["protocol"] == 2 and doc["pid"] == srv.proc.pid
    r = run_client("users", server=srv)
    assert r.returncode == 0
    assert any(l.split()[:2] == [ADMIN_USER, "yes"] for l in r.out.splitlines()), r.out
    assert any(l.split()[:2] == [BOB, "no"] for l in r.out.splitlines()), r.out
    doc = json.loads(run_client("users", "--json", server=srv).out)
    by = {u["name"]: u for u in doc["users"]}
    assert by[ADMIN_USER]["admin"] is True and by[BOB]["admin"] is False
    assert by[BOB]["connections"] == 0 and doc["count"] == 2


def test_user_add_passwd_conns_del(admin_server, echo_server):
    srv = admin_server()
    r = run_client("user", "add", "carol", server=srv, new_password="carol-pw")
    assert r.returncode == 0, r.err
    assert "carol" in r.out and "not saved" in r.out
    assert socks_login_ok(srv.port, "carol", "carol-pw")
    r = run_client("user", "add", "carol", server=srv, new_password="x")
    assert r.returncode == 1
    one_line_error(r, "already exists")
    r = run_client("user", "add", "root2", "--admin", "--json", server=srv, new_password="r2")
    assert r.returncode == 0
    assert json.loads(r.out) == {"ok": True, "user": "root2", "persisted": False}
    assert run_client("server", server=srv, user="root2", password="r2").returncode == 0

    r = run_client("user", "passwd", "carol", server=srv, new_password="new-pw")
    assert r.returncode == 0, r.err
    assert socks_login_ok(srv.port, "carol", "new-pw")
    assert not socks_login_ok(srv.port, "carol", "carol-pw")
    r = run_client("user", "passwd", "ghost", server=srv, new_password="x")
    assert r.returncode == 1
    one_line_error(r, "no such user")

    s, _ = socks_connect_ok(srv.port, "127.0.0.1", echo_server.port, user="carol", password="new-pw")
    with s:
        r = run_client("user", "conns", "carol", server=srv)
        assert r.returncode == 0 and "carol: 1 connection" in r.out
        assert json.loads(run_client("user", "conns", "carol", "--json", server=srv).out) == {
            "user": "carol", "connections": 1}
        r = run_client("user", "del", "carol", server=srv)
        assert r.returncode == 0, r.err
        got, _, _ = eof_within(s, 2)
        assert got
    r = run_client("user", "del", "carol", server=srv)
    assert r.returncode == 1
    one_line_error(r, "no such user")
    r = run_client("user", "conns", "carol", server=srv)
    assert r.returncode == 1


def test_user_add_password_limits(admin_server):
    srv = admin_server()
    r = run_client("user", "add", "x" * 256, server=srv, new_password="pw")
    assert r.returncode == 2
    r = run_client("user", "add", "dan", server=srv, new_password="p" * 256)
    assert r.returncode == 2
    one_line_error(r, "PIPO_NEW_PASSWORD")
    # no password source at all: no terminal here
    r = run_client("user", "add", "dan", server=srv)
    assert r.returncode == 2
    one_line_error(r, "PIPO_NEW_PASSWORD")


def test_user_add_name_with_a_newline_refused(admin_server):
    srv = admin_server()
    r = run_client("user", "add", "eve\nadmin = x:y", server=srv, new_password="pw")
    # refused before anything is sent (the server refuses it too: test_admin.py)
    assert r.returncode == 2
    assert r.err == "pipoClient: user add: the user name contains a control byte\n", r.err
    r = run_client("users", "--json", server=srv)
    assert [u["name"] for u in json.loads(r.out)["users"]] == [ADMIN_USER]


def test_command_line_user_change_refused_clearly(admin_server):
    srv = admin_server(users=["%s:%s" % (BOB, BOB_PASS)])
    r = run_client("user", "passwd", BOB, server=srv, new_password="new-pw")
    assert r.returncode == 1
    one_line_error(r, "command line")
    assert "saved" not in r.out
    r = run_client("user", "del", BOB, server=srv)
    assert r.returncode == 1
    one_line_error(r, "command line")
    assert socks_login_ok(srv.port, BOB, BOB_PASS)


def test_sessions_and_session_close(admin_server, echo_server):
    srv = admin_server(users=["%s:%s" % (BOB, BOB_PASS)])
    r = run_client("sessions", server=srv)
    assert r.returncode == 0 and "no sessions" in r.out
    s, _ = socks_connect_ok(srv.port, "127.0.0.1", echo_server.port, user=BOB, password=BOB_PASS)
    with s:
        s.sendall(b"hello")
        recv_exact(s, 5)
        r = run_client("sessions", server=srv)
        assert r.returncode == 0
        assert BOB in r.out and "relay" in r.out and "127.0.0.1:%d" % echo_server.port in r.out
        doc = json.loads(run_client("sessions", "--all", "--json", server=srv).out)
        assert doc["count"] == 1 and doc["more"] is False
        x = doc["sessions"][0]
        assert x["user"] == BOB and x["client_port"] == s.getsockname()[1]
        assert x["port"] == echo_server.port and x["state"] == "relay"
        assert x["command"] == "connect" and x["datagrams_up"] == 0
        assert " connect " in r.out
        r = run_client("session", "close", str(x["id"]), server=srv)
        assert r.returncode == 0, r.err
        got, _, _ = eof_within(s, 2)
        assert got
        r = run_client("session", "close", str(x["id"]), server=srv)
        assert r.returncode == 1
        one_line_error(r, "no such session")


SETTINGS = [
    ("buffer-size", "32K", 32768),
    ("handshake-timeout", "20", 20),
    ("idle-timeout", "2h", 7200),
    ("connect-timeout", "5", 5),
    ("dissectors", "off", False),
    ("idle-cleanup", "off", False),
    ("splice", "off", False),
    ("pipe-size", "256K", 262144),
    ("anonymous", "never", "never"),
    ("doh-method", "post", "post"),
    ("doh-url", "https://127.0.0.1:8053/dns-query", "https://127.0.0.1:8053/dns-query"),
]


def test_get_and_set_every_setting(admin_server):
    srv = admin_server()
    r = run_client("get", server=srv)
    assert r.returncode == 0
    for name, _, _ in SETTINGS:
        assert name in r.out
    before = json.loads(run_client("get", "--json", server=srv).out)
    assert before["buffer-size"] == 65536 and before["dissectors"] is True
    assert before["anonymous"] == "auto"
    for name, value, want in SETTINGS:
        r = run_client("set", name, value, server=srv)
        assert r.returncode == 0, (name, r.err)
        r = run_client("get", name, "--json", server=srv)
        assert r.returncode == 0
        assert json.loads(r.out) == {name: want}
    after = json.loads(run_client("get", "--json", server=srv).out)
    assert after["doh-method"] == "post"     # set doh-url kept the method


@pytest.mark.parametrize("name,value,accepted", [
    ("buffer-size", "100", "4096..1048576 bytes"), ("idle-timeout", "0", "1..604800 seconds"),
    ("connect-timeout", "2h", "1..3600 seconds"), ("doh-url", "ftp://x", "https://"),
    ("port", "1081", "at start only")])
def test_set_refused_by_the_shared_parser_before_connecting(name, value, accepted):
    # The server's own table and parser (shared/settings.c) say no: a usage
    # error with the server's words, and no connection (no server here).
    r = run_client("set", name, value, "-S", "/nonexistent/admin.sock")
    assert r.returncode == 2, r.err
    one_line_error(r, "set %s" % name, accepted)


def test_reload_without_configuration_file_exit_1(admin_server):
    srv = admin_server()
    r = run_client("reload", server=srv)
    assert r.returncode == 1
    one_line_error(r, "reload")


def test_json_output_of_every_query(admin_server):
    srv = admin_server()
    for args in (["stats"], ["server"], ["users"], ["sessions"], ["sessions", "--all"], ["get"],
                 ["get", "doh-url"], ["user", "conns", ADMIN_USER],
                 ["top", "--iterations", "1"]):
        r = run_client("--json", *args, server=srv)
        assert r.returncode == 0, (args, r.err)
        json.loads(r.out)


def test_top_bounded_iterations_with_rates(admin_server, echo_server):
    srv = admin_server(users=["%s:%s" % (BOB, BOB_PASS)])
    t0 = time.monotonic()
    r = run_client("top", "--iterations", "3", "--interval", "0.3", server=srv)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.err
    assert r.out.count("METRIC") == 3 and "connections_total" in r.out
    assert "/s" in r.out
    assert 0.5 < took < 10
    r = run_client("top", "--json", "--iterations", "2", "--interval", "0.2", server=srv)
    doc = json.loads(r.out)
    assert len(doc) == 2
    assert doc[0]["rates"] == {} and "connections_total" in doc[1]["rates"]
    assert doc[1]["metrics"]["users"] == 2


# ---------------------------------------------------------------- terminal

def pty_env(password=ADMIN_PASS):
    e = client_env(password)
    e["TERM"] = "xterm"
    e["HOME"] = "/nonexistent"   # no ~/.editrc
    return e


def test_password_prompt_without_echo(admin_server):
    srv = admin_server()
    p = PtyClient([pipoclient_binary(), "-S", str(srv.path), "-u", ADMIN_USER, "server"],
                  pty_env(password=None))
    try:
        p.read_until("Password for admin: ")
        p.write(ADMIN_PASS + "\n")
        out = p.read_until(r"workers:\s+\d+")
        assert ADMIN_PASS not in out, "the password was echoed"
        assert p.wait(10) == 0
    finally:
        p.close()


def test_interactive_shell_on_a_terminal(admin_server):
    srv = admin_server()
    p = PtyClient([pipoclient_binary(), "-S", str(srv.path), "-u", ADMIN_USER], pty_env())
    try:
        p.read_until("pipo> ")
        p.write("help\n")
        out = p.read_until(r"JSON output\.\s*\npipo> ")
        assert "user add NAME" in out and "sessions" in out
        p.write("users\n")
        out = p.read_until(r"admin\s+yes.*\n(.*\n)*.*pipo> ")
        p.write("frobnicate\n")
        out = p.read_until(r"unknown command 'frobnicate'.*\n(.*\n)*.*pipo> ")
        # Tab completion: "ser<TAB>" completes to "server "
        p.write("ser\t")
        p.read_until("server ")
        p.write("\n")
        p.read_until(r"workers:\s+\d+(.*\n)*.*pipo> ")
        p.write("user add tina\n")
        p.read_until("New password for tina: ")
        p.write("tina-pw\n")
        p.read_until("Retype password: ")
        p.write("tina-pw\n")
        out = p.read_until(r"user tina added.*\n(.*\n)*.*pipo> ")
        assert "tina-pw" not in out
        p.write("get buffer-size --json\n")
        p.read_until(r'"buffer-size": 65536(.*\n)*.*pipo> ')
        p.write("quit\n")
        assert p.wait(10) == 0
    finally:
        p.close()
    assert socks_login_ok(srv.port, "tina", "tina-pw")


def test_interactive_shell_ctrl_d_leaves(admin_server):
    srv = admin_server()
    p = PtyClient([pipoclient_binary(), "-S", str(srv.path), "-u", ADMIN_USER], pty_env())
    try:
        p.read_until("pipo> ")
        p.write("\x04")
        assert p.wait(10) == 0
    finally:
        p.close()


def test_top_on_a_terminal_quits_on_q(admin_server):
    srv = admin_server()
    p = PtyClient([pipoclient_binary(), "-S", str(srv.path), "-u", ADMIN_USER, "top"], pty_env())
    try:
        p.read_until("q or Ctrl-C to quit")
        p.read_until("q or Ctrl-C to quit")     # a second refresh
        p.write("q")
        assert p.wait(5) == 0
    finally:
        p.close()


def test_shell_reads_commands_from_a_pipe(admin_server):
    srv = admin_server()
    r = run_client(server=srv, input=b"server\nget idle-timeout\nquit\nusers\n")
    assert r.returncode == 0, r.err
    assert "workers:" in r.out and "idle-timeout" in r.out
    assert "USER" not in r.out     # nothing after quit


def test_seventeenth_session_refused_exit_3(admin_server):
    srv = admin_server()
    conns = [srv.login() for _ in range(16)]
    try:
        r = run_client("server", server=srv)
        assert r.returncode == 3, r.err
        one_line_error(r, "too many administration sessions")
    finally:
        for c in conns:
            c.close()


def test_shell_logs_in_again_after_the_server_closed_the_session(admin_server):
    # The server ends silent sessions after 60 s; a restart closes it the
    # same way, sooner.
    srv = admin_server()
    p = PtyClient([pipoclient_binary(), "-S", str(srv.path), "-u", ADMIN_USER], pty_env())
    try:
        p.read_until("pipo> ")
        p.write("server\n")
        p.read_until(r"pid:\s+%d(.*\n)*.*pipo> " % srv.proc.pid)
        assert srv.stop() == 0
        srv.start()
        p.write("server\n")
        out = p.read_until(r"pid:\s+%d(.*\n)*.*pipo> " % srv.proc.pid)
        assert "reconnecting" in out
        p.write("quit\n")
        assert p.wait(10) == 0
    finally:
        p.close()


# ---------------------------------------------------------------- a misbehaving server

class FakeServer:
    """A unix-socket pipo server that accepts any login and then answers
    with the bytes `reply(request_header)` returns (None: hang up)."""

    def __init__(self, reply):
        import tempfile
        import threading
        self.dir = tempfile.mkdtemp(prefix="pipo-fake-")
        self.path = os.path.join(self.dir, "fake.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(4)
        self.sock.settimeout(10)
        self.reply = reply
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        try:
            c, _ = self.sock.accept()
        except OSError:
            return
        with c:
            c.settimeout(10)
            try:
                ulen = recv_exact(c, 2)[1]
                recv_exact(c, ulen)
                recv_exact(c, recv_exact(c, 1)[0])
                c.sendall(b"\x02\x00")
                hdr = recv_exact(c, 8)
                n = int.from_bytes(hdr[4:], "big")
                if n:
                    recv_exact(c, n)
                out = self.reply(hdr)
                if out:
                    c.sendall(out)
                    time.sleep(0.5)
            except (OSError, EOFError, TimeoutError):
                pass

    def close(self):
        import shutil
        self.sock.close()
        self.t.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.mark.parametrize("reply,code,needle", [
    (lambda h: None, 3, "closed by the server"),
    (lambda h: h[:3] + b"\x00" + (3).to_bytes(4, "big") + b"abc", 5, "malformed response"),
    (lambda h: b"\x02\x00\x55\x00\x00\x00\x00\x00", 5, "was expected"),
    (lambda h: h[:3] + b"\x00" + (2 << 20).to_bytes(4, "big") + b"x" * 64, 5, "over the"),
    (lambda h: b"\x03" + h[1:3] + b"\x00\x00\x00\x00\x00", 5, "protocol version 3"),
])
def test_misbehaving_server_reported(reply, code, needle):
    fake = FakeServer(reply)
    try:
        r = run_client("server", "-S", fake.path)
        assert r.returncode == code, (r.returncode, r.err)
        one_line_error(r, needle)
        assert r.out == ""
    finally:
        fake.close()
