"""pipoClient `rules` and `rule test` against a running socks5d: the listing
gives each rule's number, line and text, its hit counter rises with real
requests through the proxy, and `rule test` gives the decision that real
requests from loopback get, without sending anything itself.  Everything is
on loopback; socks5d has a loopback DNS server that answers nothing."""

import json
import os
import struct

import pytest

from admin_lib import (ADMIN_PASS, ADMIN_USER, INVALID, MALFORMED, OK, QUERY,  # noqa: F401
                       admin_server, pipoclient_binary, run_client, s8)
from s5lib import EchoServer, echo_roundtrip, socks_open

Q_RULES, Q_RULE_TEST = 0x30, 0x31
USERS = {"alice": "pw-alice", "bob": "pw-bob", "carol": "pw-carol"}


@pytest.fixture(scope="module", autouse=True)
def client_built():
    if not os.access(pipoclient_binary(), os.X_OK):
        pytest.fail("pipoClient not found at %s (set PIPOCLIENT)" % pipoclient_binary())


@pytest.fixture
def second_echo():
    e = EchoServer("127.0.0.1")
    yield e
    e.close()


def rules_text(p1, p2):
    # The line numbers matter: the listing and the answers give them.
    return "\n".join([
        "# access rules of the rule commands' test",      # 1
        "group = staff: alice, bob",                       # 2
        "",                                                # 3
        "client pass from 127.0.0.0/8",                    # 4  rule 1
        "block to blocked.test",                           # 5  rule 2
        "pass to .localhost group staff port %d" % p1,     # 6  rule 3
        "block to 127.0.0.1 port %d" % p2,                 # 7  rule 4
        "pass to 127.0.0.0/8 user carol",                  # 8  rule 5
        "block   to 127.0.0.0/8   command connect log",    # 9  rule 6
    ]) + "\n"


@pytest.fixture
def srv(admin_server, tmp_path, echo_server, second_echo):
    conf = tmp_path / "rules.conf"
    conf.write_text(rules_text(echo_server.port, second_echo.port))
    users = tuple("%s:%s" % kv for kv in sorted(USERS.items()))
    s = admin_server("-a", "%s:%s" % (ADMIN_USER, ADMIN_PASS), config=conf, users=users)
    s.p1, s.p2 = echo_server.port, second_echo.port
    return s


def listing(srv):
    r = run_client("rules", "--json", server=srv)
    assert r.returncode == 0, r.err
    return json.loads(r.out)


def hits(srv):
    return {x["number"]: x["hits"] for x in listing(srv)["rules"]}


def rule_test(srv, *args, user=None):
    a = ["rule", "test"] + (["--user", user] if user else []) + [str(x) for x in args]
    r = run_client(*a, "--json", server=srv)
    assert r.returncode == 0, r.err
    return json.loads(r.out)


def real(srv, user, host, port):
    """The reply code socks5d gives a CONNECT from loopback."""
    s, r = socks_open(srv.port, host, port, user=user, password=USERS[user], atyp=None)
    with s:
        if r.rep == 0:
            echo_roundtrip(s, b"through\n")
        return r.rep


def one_line_error(r, *needles):
    lines = r.err.strip().splitlines()
    assert lines and lines[0].startswith("pipoClient: "), r.err
    for n in needles:
        assert n in lines[0], (n, r.err)


# ---------------------------------------------------------------- rules

def test_rules_lists_numbers_lines_texts_and_the_default(srv):
    doc = listing(srv)
    assert doc["default_policy_only"] is False
    assert "169.254.0.0/16" in doc["default_policy"] and "port %d" % srv.port in doc["default_policy"]
    got = [(x["number"], x["line"], x["stage"], x["action"], x["text"]) for x in doc["rules"]]
    assert got == [
        (1, 4, "client", "pass", "client pass from 127.0.0.0/8"),
        (2, 5, "request", "block", "block to blocked.test"),
        (3, 6, "request", "pass", "pass to .localhost group staff port %d" % srv.p1),
        (4, 7, "request", "block", "block to 127.0.0.1 port %d" % srv.p2),
        (5, 8, "request", "pass", "pass to 127.0.0.0/8 user carol"),
        (6, 9, "request", "block", "block   to 127.0.0.0/8   command connect log"),
    ]
    assert doc["count"] == 6
    assert all(x["hits"] == 0 for x in doc["rules"])
    # The table: number, line, hits, text; then the default policy.
    r = run_client("rules", server=srv)
    assert r.returncode == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["RULE", "LINE", "HITS", "TEXT"]
    assert lines[5].split()[:4] == ["5", "8", "0", "pass"]
    assert lines[5].endswith("pass to 127.0.0.0/8 user carol")
    assert lines[-1].startswith("Default policy (no rule matches): pass;")


def test_hit_counters_rise_with_real_requests(srv):
    assert set(hits(srv).values()) == {0}
    assert real(srv, "carol", "127.0.0.1", srv.p1) == 0       # rule 5
    assert real(srv, "bob", "127.0.0.1", srv.p1) == 2         # rule 6
    assert real(srv, "alice", "127.0.0.1", srv.p2) == 2       # rule 4
    assert real(srv, "alice", "blocked.test", srv.p1) == 2    # rule 2, on the name
    assert real(srv, "alice", "localhost", srv.p1) == 0       # rule 3, per address
    h = hits(srv)
    assert (h[2], h[4], h[5], h[6]) == (1, 1, 1, 1), h
    assert h[3] >= 1, h  # once per address of localhost tried
    assert h[1] >= 5, h  # the client rule: every connection from loopback
    # A second carol request: exactly one more.
    assert real(srv, "carol", "127.0.0.1", srv.p1) == 0
    assert hits(srv)[5] == 2


@pytest.mark.parametrize("user,dest,port_name,rep,decision,rule,line", [
    ("carol", "127.0.0.1", "p1", 0, "pass", 5, 8),
    ("bob", "127.0.0.1", "p1", 2, "block", 6, 9),
    ("alice", "127.0.0.1", "p2", 2, "block", 4, 7),
    ("alice", "blocked.test", "p1", 2, "block", 2, 5),
    ("alice", "localhost", "p1", 0, "pass", 3, 6),
    ("bob", "localhost", "p1", 0, "pass", 3, 6),   # bob is in staff
])
def test_rule_test_agrees_with_real_requests(srv, user, dest, port_name, rep, decision, rule,
                                             line):
    port = getattr(srv, port_name)
    before = hits(srv)
    v = rule_test(srv, "127.0.0.1", dest, port, user=user)
    assert (v["decision"], v["rule"], v["line"], v["stage"]) == (decision, rule, line, "request")
    assert v["decided_on"] == ("name" if dest[0].isalpha() else "address")
    assert hits(srv) == before, "a rule test counts no hit"
    assert real(srv, user, dest, port) == rep


def test_rule_test_text_output(srv):
    r = run_client("rule", "test", "--user", "alice", "127.0.0.1", "blocked.test", srv.p1,
                   server=srv)
    assert r.returncode == 0, r.err
    assert r.out == "block by request rule 2 (line 5), decided on the name: " \
                    "block to blocked.test\n"
    # -u after the command is the rule test's user too; the login stays admin
    r = run_client("rule", "test", "127.0.0.1", "127.0.0.1", srv.p1, "-u", "carol", server=srv)
    assert r.returncode == 0, r.err
    assert r.out.startswith("pass by request rule 5 (line 8): ")


def test_rule_test_name_undecided_is_decided_per_address(srv):
    # Rules 4 to 6 name addresses: what an unknown name reaches decides.
    v = rule_test(srv, "127.0.0.1", "db.example.org", srv.p1, user="bob")
    assert v["decision"] == "undecided" and v["rule"] == 0 and v["decided_on"] == "address"
    r = run_client("rule", "test", "127.0.0.1", "db.example.org", srv.p1, server=srv)
    assert r.returncode == 0, r.err
    assert r.out.startswith("undecided on the name: decided per address")


def test_rule_test_commands(srv):
    # rule 6 takes connect only: a BIND from loopback falls to the default
    v = rule_test(srv, "127.0.0.1", "127.0.0.1", srv.p1, "bind", user="bob")
    assert (v["decision"], v["rule"], v["default_policy"]) == ("pass", 0, True)
    v = rule_test(srv, "127.0.0.1", "127.0.0.1", srv.p1, "connect", user="bob")
    assert (v["decision"], v["rule"]) == ("block", 6)
    v = rule_test(srv, "127.0.0.1", "127.0.0.1", srv.p1, "udp", user="bob")
    assert v["decision"] == "pass"


def test_rule_test_default_policy_for_a_client_not_on_loopback(srv):
    # No traffic is needed: 10.77.0.2 is nowhere on this host.
    for dest in ("169.254.77.77", "[fe80::1]", "0.0.0.1", "::1"):
        v = rule_test(srv, "10.77.0.2", dest, 80, user="bob")
        assert (v["decision"], v["rule"], v["default_policy"]) == ("block", 0, True), dest
    v = rule_test(srv, "10.77.0.2", "192.0.2.1", 80, user="bob")
    assert (v["decision"], v["default_policy"]) == ("pass", True)
    # loopback is taken by rule 6 first
    v = rule_test(srv, "10.77.0.2", "127.0.0.1", 80, user="bob")
    assert (v["decision"], v["rule"]) == ("block", 6)
    r = run_client("rule", "test", "10.77.0.2", "169.254.77.77", "80", server=srv)
    assert r.returncode == 0 and r.out == "block by the default policy\n", (r.out, r.err)


def test_rules_without_rules_says_the_default_decides(admin_server):
    s = admin_server()
    doc = listing(s)
    assert doc["default_policy_only"] is True and doc["rules"] == [] and doc["count"] == 0
    r = run_client("rules", server=s)
    assert r.returncode == 0
    assert r.out.startswith("No rules: the default policy decides every request: pass;")
    v = rule_test(s, "10.77.0.2", "127.0.0.1", 80)
    assert (v["decision"], v["rule"]) == ("block", 0)
    v = rule_test(s, "127.0.0.1", "127.0.0.1", 80)
    assert (v["decision"], v["rule"]) == ("pass", 0)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("args,status,needles", [
    (["1.2.3", "127.0.0.1", "80"], 2, ["source '1.2.3'", "IPv4 or IPv6"]),
    (["localhost", "127.0.0.1", "80"], 2, ["source 'localhost'"]),
    (["127.0.0.1", "127.0.0.1", "70000"], 2, ["port '70000'"]),
    (["127.0.0.1", "127.0.0.1", "http"], 2, ["port 'http'"]),
    (["127.0.0.1", "127.0.0.1", "65536"], 2, ["port '65536'"]),
    (["127.0.0.1", "127.0.0.1", "80", "ping"], 2, ["command 'ping'", "connect, bind or udp"]),
    (["127.0.0.1", "300.1.2.3", "80"], 1, ["invalid value", "destination '300.1.2.3'"]),
    (["127.0.0.1", "a b.test", "80"], 1, ["destination 'a b.test'"]),
    (["127.0.0.1", "[::1", "80"], 1, ["destination '[::1'"]),
])
def test_rule_test_bad_input_is_a_clear_error(srv, args, status, needles):
    r = run_client("rule", "test", *args, server=srv)
    assert r.returncode == status, (r.returncode, r.out, r.err)
    assert r.out == ""
    one_line_error(r, "rule test", *needles)


@pytest.mark.parametrize("args,needle", [
    (["rule", "test", "127.0.0.1", "127.0.0.1"], "missing argument"),
    (["rule", "test", "127.0.0.1", "127.0.0.1", "80", "connect", "x"], "too many"),
    (["rule"], "needs a subcommand"),
    (["rules", "extra"], "too many"),
    (["rule", "test", "--all", "127.0.0.1", "127.0.0.1", "80"], "--all"),
    (["rule", "test", "--user", "", "127.0.0.1", "127.0.0.1", "80"], "--user"),
])
def test_rule_usage_errors(args, needle):
    r = run_client(*args, "-S", "/nonexistent/admin.sock")
    assert r.returncode == 2, (r.returncode, r.err)
    one_line_error(r, needle)


def test_server_refuses_bad_fields_itself(srv):
    """What another client might send: INVALID for a source that is not an
    address, a name that is not one, an unknown command; MALFORMED for a
    payload that does not parse."""
    def req(user, src, dst, port, cmd):
        return s8(user) + s8(src) + s8(dst) + struct.pack("!HB", port, cmd)

    with srv.login() as c:
        assert c.q(Q_RULE_TEST, req("", "127.0.0.1", "a.test", 80, 1)).status == OK
        c.q(Q_RULE_TEST, req("", "not-an-address", "a.test", 80, 1), expect=INVALID)
        c.q(Q_RULE_TEST, req("", "127.0.0.1", "a_b c", 80, 1), expect=INVALID)
        c.q(Q_RULE_TEST, req("", "127.0.0.1", "a.test", 80, 9), expect=INVALID)
        c.q(Q_RULE_TEST, req("", "127.0.0.1", "a.test", 80, 1)[:-1], expect=MALFORMED)
        c.q(Q_RULES, b"\x00", expect=MALFORMED)
        # the session goes on
        assert c.q(Q_RULES).status == OK


def test_non_admin_is_refused(srv):
    for args in (["rules"], ["rule", "test", "127.0.0.1", "127.0.0.1", "80"]):
        r = run_client(*args, server=srv, user="alice", password=USERS["alice"])
        assert r.returncode == 4, (r.returncode, r.err)
        one_line_error(r, "authentication failed")


# ---------------------------------------------------------------- option order and shell

def test_global_options_after_the_command_still_taken(srv):
    # -S after the command: for every command but a --user of its own
    r = run_client("rules", "--json", "-S", str(srv.path))
    assert r.returncode == 0, r.err
    assert json.loads(r.out)["count"] == 6
    # the login before the command, the rule test's user after it
    r = run_client("rule", "test", "--user", "carol", "127.0.0.1", "127.0.0.1", srv.p1, "-S",
                   str(srv.path), "--json")
    assert r.returncode == 0, r.err
    assert json.loads(r.out)["rule"] == 5


def test_shell_runs_rule_commands(srv):
    script = ("rule test --user alice 127.0.0.1 blocked.test 80\n"
              "rule test -u carol 127.0.0.1 127.0.0.1 %d --json\n"
              "rules\n" % srv.p1).encode()
    r = run_client(server=srv, input=script)
    assert r.returncode == 0, r.err
    assert "block by request rule 2 (line 5), decided on the name" in r.out
    assert '"rule": 5' in r.out
    assert "RULE" in r.out and "block to blocked.test" in r.out


# ---------------------------------------------------------------- a hostile server

def _fake_pipo_server(path, payload):
    """A pipo server on a unix socket that takes any login and answers every
    request with payload (one connection)."""
    import socket
    import threading
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)

    def serve():
        c, _ = srv.accept()
        buf = b""

        def need(n):
            nonlocal buf
            while len(buf) < n:
                x = c.recv(65536)
                if not x:
                    raise EOFError
                buf += x
        try:
            need(2)
            ul = buf[1]
            need(3 + ul)
            pl = buf[2 + ul]
            need(3 + ul + pl)
            buf = buf[3 + ul + pl:]
            c.sendall(b"\x02\x00")
            while True:
                need(8)
                ln, cmd = struct.unpack(">I", buf[4:8])[0], buf[2]
                need(8 + ln)
                buf = buf[8 + ln:]
                c.sendall(struct.pack(">BBBBI", 2, 0, cmd, 0, len(payload)) + payload)
        except (EOFError, OSError):
            pass
        c.close()
        srv.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def test_server_text_cannot_drive_the_terminal(tmp_path):
    import subprocess
    text = b"\x1b]0;pwned\x07\x1b[2J\rfake line\n  2  2  0  pass to evil"
    rules = (struct.pack(">QB", 1, 0) + struct.pack(">H", 4) + b"pass" + struct.pack(">I", 1) +
             struct.pack(">IIBBQ", 1, 1, 0, 0, 0) + struct.pack(">H", len(text)) + text)
    vt = b"\x1b[2Jblock\x07"
    verdict = struct.pack(">BBIIB", 1, 0, 1, 1, 0) + struct.pack(">H", len(vt)) + vt
    env = dict(os.environ, PIPO_PASSWORD="x")
    for payload, args in ((rules, ["rules"]), (verdict, ["rule", "test", "10.0.0.1", "a.test", "80"])):
        sock = tmp_path / "fake.sock"
        if sock.exists():
            sock.unlink()
        t = _fake_pipo_server(sock, payload)
        r = subprocess.run([pipoclient_binary(), "-S", str(sock), "-u", "a", *args],
                           capture_output=True, env=env, timeout=10)
        t.join(5)
        assert r.returncode == 0, r
        assert b"\x1b" not in r.stdout and b"\x07" not in r.stdout and b"\r" not in r.stdout, r.stdout
        assert b"\\x1b" in r.stdout, r.stdout
