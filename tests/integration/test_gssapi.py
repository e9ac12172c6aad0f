"""GSS-API authentication (RFC 1961) in socks5d against a real MIT KDC on
loopback: Dante's socksify (Debian's source rebuilt with GSS-API) at levels
0, 1 and 2 with 1 MB both ways, byte for byte; the tests' own client
(gss_client.py, python3-gssapi) for what socksify cannot do: byte-by-byte
messages, level 3, bad tokens, a ticket for another service, an expired
ticket, a client that stops mid-negotiation, NEC mode; the identity in the
access log, the rules, the user table and pipoClient; the keytab checks.
"""

import json
import signal
import os
import socket
import struct
import subprocess
import time

import pytest

import gssapi

import gss_client
from gss_client import GssSocksClient, ServerAbort, ServerClosed
from s5lib import free_port, recv_exact
from test_gssapi_dante import dante_gss, socksify_echo  # noqa: F401 (a fixture)

LEVELS = {0: "clear", 1: "integrity", 2: "confidentiality"}
MB = 1 << 20
ADMIN, ADMIN_PW = "admin", "gss-admin-pw"


@pytest.fixture
def gss_proxy(socks5d, krb5_realm, tmp_path):
    """socks5d(*args, protection=..., config_lines=...) with GSS-API on the
    realm's keytab.  The environment's KRB5_KTNAME leads nowhere: only
    --gssapi-keytab may give the keys."""
    def start(*args, protection="clear,integrity,confidentiality", config_lines=(), **kw):
        env = dict(krb5_realm.env)
        env["KRB5_KTNAME"] = "FILE:/nonexistent/keytab"
        argv = ["--gssapi-keytab", str(krb5_realm.keytab), "--gssapi-protection", protection,
                "--dns-server", "127.0.0.1:9"]
        if config_lines:
            conf = tmp_path / "gss.conf"
            conf.write_text("\n".join(config_lines) + "\n")
            argv += ["-f", str(conf)]
        return socks5d(*(argv + list(args)), env=env, **kw)
    return start


def gss_records(proxy, port=None, count=1, timeout=10):
    return proxy.wait_log(lambda f: len(f) == 15 and f[14].startswith("gssapi")
                          and (port is None or f[6] == str(port)), count=count, timeout=timeout)


# ------------------------------------------------------------ real clients


@pytest.mark.parametrize("level", [0, 1, 2], ids=["clear", "integrity", "confidentiality"])
def test_socksify_moves_a_megabyte_both_ways(level, gss_proxy, dante_gss, krb5_realm,  # noqa: F811
                                              echo_server):
    p = gss_proxy()
    payload = os.urandom(MB)
    got = socksify_echo("127.0.0.1", p.port, level, echo_server.host, echo_server.port, payload,
                        krb5_realm)
    assert len(got) == len(payload)
    assert got == payload
    f = gss_records(p, echo_server.port)[0]
    # The access log names the principal and the method with its level.
    assert f[1] == "alice@SOCKS.TEST", f
    assert f[14] == "gssapi/" + LEVELS[level], f
    assert (f[7], int(f[8]), int(f[9])) == ("0", MB, MB), f


def test_socksify_reaches_an_http_server(gss_proxy, dante_gss, krb5_realm, nginx,  # noqa: F811
                                          tmp_path):
    """Done means: socksify reaches an HTTP server through socks5d with a
    ticket, at integrity and at confidentiality."""
    p = gss_proxy(protection="integrity,confidentiality")
    req = b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n"
    for level in (1, 2):
        got = socksify_echo("127.0.0.1", p.port, level, "127.0.0.1", nginx.port, req, krb5_realm)
        assert got.startswith(b"HTTP/1.1 200"), got[:200]
    recs = gss_records(p, nginx.port, count=2)
    assert sorted(f[14] for f in recs) == ["gssapi/confidentiality", "gssapi/integrity"]


@pytest.mark.parametrize("level", [1, 2], ids=["integrity", "confidentiality"])
def test_own_client_megabyte_in_small_and_large_messages(level, gss_proxy, krb5_realm,
                                                        echo_server):
    p = gss_proxy()
    payload = os.urandom(MB)
    for chunk in (1000, 65000):
        got = gss_client.echo_transfer("127.0.0.1", p.port, echo_server.host, echo_server.port,
                                       level, payload, chunk=chunk, ccache=krb5_realm.ccache)
        assert got == payload


def test_messages_cut_at_every_byte(gss_proxy, krb5_realm, echo_server):
    """Every message of the negotiation, the request and the data arrive
    one byte per segment."""
    p = gss_proxy()
    with GssSocksClient("127.0.0.1", p.port, ccache=krb5_realm.ccache, split_writes=True) as c:
        assert c.negotiate_method() == 0x01
        assert c.establish_context()
        assert c.negotiate_protection(2) == 2
        assert c.connect(echo_server.host, echo_server.port)[0] == 0
        c.wrap_send(b"hello through a split stream", split=True)
        assert c.recv_exact(28) == b"hello through a split stream"


def test_clear_level_relays_raw_bytes(gss_proxy, krb5_realm, echo_server):
    p = gss_proxy()
    got = gss_client.echo_transfer("127.0.0.1", p.port, echo_server.host, echo_server.port, 0,
                                   b"x" * 300000, ccache=krb5_realm.ccache)
    assert got == b"x" * 300000
    assert gss_records(p, echo_server.port)[0][14] == "gssapi/clear"


# ------------------------------------------------------------ protection levels


def negotiated(port, krb5_realm, **kw):
    c = GssSocksClient("127.0.0.1", port, ccache=krb5_realm.ccache, **kw)
    assert c.negotiate_method() == 0x01
    assert c.establish_context()
    return c


def assert_refused(c, fn, *a):
    """The server answers 01 FF (or has closed right after it)."""
    with pytest.raises((ServerAbort, ServerClosed)):
        fn(*a)
    c.close()


def test_level_3_is_refused(gss_proxy, krb5_realm):
    p = gss_proxy()
    c = negotiated(p.port, krb5_realm)
    assert_refused(c, c.negotiate_protection, 3)
    p.wait_stderr(r"GSS-API login from 127\.0\.0\.1 failed: alice@SOCKS\.TEST asked for "
                  r"protection level 3, not granted")


def test_clear_is_refused_unless_configured(gss_proxy, krb5_realm):
    p = gss_proxy(protection="integrity,confidentiality")
    c = negotiated(p.port, krb5_realm)
    assert_refused(c, c.negotiate_protection, 0)
    # The default grants integrity and confidentiality.
    for level in (1, 2):
        c = negotiated(p.port, krb5_realm)
        assert c.negotiate_protection(level) == level
        c.close()


def test_only_listed_levels_are_granted(gss_proxy, krb5_realm):
    p = gss_proxy(protection="confidentiality")
    c = negotiated(p.port, krb5_realm)
    assert_refused(c, c.negotiate_protection, 1)
    c = negotiated(p.port, krb5_realm)
    assert c.negotiate_protection(2) == 2
    c.close()


def test_nec_mode_only_when_configured(gss_proxy, krb5_realm, echo_server):
    p = gss_proxy()
    c = negotiated(p.port, krb5_realm, nec=True)
    assert_refused(c, c.negotiate_protection, 0)
    p2 = gss_proxy("--gssapi-nec", "yes")
    got = gss_client.echo_transfer("127.0.0.1", p2.port, echo_server.host, echo_server.port, 0,
                                   b"nec" * 1000, ccache=krb5_realm.ccache, nec=True)
    assert got == b"nec" * 1000


def test_a_corrupted_protection_token_is_refused(gss_proxy, krb5_realm):
    p = gss_proxy()
    c = negotiated(p.port, krb5_realm)
    assert_refused(c, c.negotiate_protection, 1, True)


# ------------------------------------------------------------ hostile and failing logins


def test_a_corrupted_context_token_is_refused_and_logged(gss_proxy, krb5_realm):
    p = gss_proxy()
    c = GssSocksClient("127.0.0.1", p.port, ccache=krb5_realm.ccache)
    sport = c.sock.getsockname()[1]
    assert c.negotiate_method() == 0x01
    assert_refused(c, c.establish_context, True)
    f = p.wait_log(lambda f: len(f) == 15 and f[4] == str(sport))[0]
    assert (f[7], f[14]) == ("auth-failed", "gssapi"), f


def test_a_ticket_for_another_service_is_refused(gss_proxy, krb5_realm):
    """host/localhost exists in the realm but not in the keytab."""
    p = gss_proxy()
    c = GssSocksClient("127.0.0.1", p.port, ccache=krb5_realm.ccache, service="host@localhost")
    assert c.negotiate_method() == 0x01
    assert_refused(c, c.establish_context)
    p.wait_stderr(r"GSS-API login from 127\.0\.0\.1 failed")


def test_a_key_of_another_service_in_the_keytab_is_not_taken(gss_proxy, krb5_realm, tmp_path):
    """A keytab holding host/localhost too: a ticket for it decrypts, but
    the service is not gssapi-service."""
    kt = tmp_path / "mixed.keytab"
    krb5_realm.kadmin("ktadd -k %s -norandkey rcmd/localhost host/localhost" % kt)
    p = gss_proxy("--gssapi-keytab", str(kt))
    c = GssSocksClient("127.0.0.1", p.port, ccache=krb5_realm.ccache, service="host@localhost")
    assert c.negotiate_method() == 0x01
    assert_refused(c, c.establish_context)
    p.wait_stderr(r"the ticket is for host/localhost@SOCKS\.TEST, not the service rcmd")


def test_an_expired_ticket_is_refused(gss_proxy, krb5_realm):
    p = gss_proxy()
    cc = krb5_realm.kinit("bob", lifetime="2s")
    end = krb5_realm.ticket_end(cc)
    tok = gss_client.first_token("rcmd@localhost", ccache=cc)
    krb5_realm.wait_expired(cc, end)
    c = GssSocksClient("127.0.0.1", p.port, ccache=cc)
    assert c.negotiate_method() == 0x01
    assert_refused(c, c.establish_context, False, None, None, tok)
    p.wait_stderr(r"GSS-API login from 127\.0\.0\.1 failed: .*(expired|skew)")


def test_a_client_that_stops_mid_token_meets_the_handshake_timeout(gss_proxy, krb5_realm):
    p = gss_proxy("--handshake-timeout", "2")
    c = GssSocksClient("127.0.0.1", p.port, ccache=krb5_realm.ccache)
    assert c.negotiate_method() == 0x01
    assert c.establish_context(stop_after=40) is False
    c.sock.settimeout(10)
    t0 = time.monotonic()
    assert c.sock.recv(16) == b""  # closed, nothing answered
    assert time.monotonic() - t0 < 8
    c.close()


def test_a_bad_token_after_negotiation_ends_the_session(gss_proxy, krb5_realm, echo_server):
    p = gss_proxy()
    c = gss_client.open_tunnel("127.0.0.1", p.port, echo_server.host, echo_server.port, 1,
                               ccache=krb5_realm.ccache)
    c.wrap_send(b"good", chunk=4)
    assert c.recv_exact(4) == b"good"
    c.wrap_send(b"evil", chunk=4, corrupt_token=True)
    c.sock.settimeout(10)
    with pytest.raises((ServerClosed, ConnectionError)):
        c.recv_exact(1)
    c.close()
    p.wait_stderr(r"GSS-API: bad token from the client")


@pytest.mark.parametrize("msg", [
    b"\x02\x01\x00\x01x",        # version 2
    b"\x01\x02\x00\x01x",        # a protection message first
    b"\x01\x01\x00\x00",         # an empty token
    b"\x01\x01\x00\x05junk!",    # not a GSS-API token
], ids=["version", "type", "empty", "junk"])
def test_malformed_messages_get_01_ff(gss_proxy, msg):
    p = gss_proxy()
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(b"\x05\x01\x01")
    assert recv_exact(s, 2) == b"\x05\x01"
    s.sendall(msg)
    assert recv_exact(s, 2) == b"\x01\xff"
    s.close()


def test_the_client_giving_up_is_counted(gss_proxy, krb5_realm, tmp_path):
    p = gss_proxy("-a", "%s:%s" % (ADMIN, ADMIN_PW))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(b"\x05\x01\x01")
    assert recv_exact(s, 2) == b"\x05\x01"
    s.sendall(b"\x01\xff")
    s.settimeout(10)
    assert s.recv(4) == b""
    s.close()
    m = stats(p)
    assert m["gssapi_failures"] >= 1


def test_a_two_component_principal_has_no_local_name(gss_proxy, krb5_realm):
    """auth_to_local's default maps one-component principals of the default
    realm only: alice/admin is refused."""
    krb5_realm.kadmin("addprinc -pw admin-pw-1961 alice/admin")
    cc = krb5_realm.kinit("alice/admin", ccache=krb5_realm.ccache_path("alice_admin"),
                          password="admin-pw-1961")
    p = gss_proxy()
    c = GssSocksClient("127.0.0.1", p.port, ccache=cc)
    assert c.negotiate_method() == 0x01
    with pytest.raises((ServerAbort, ServerClosed)):
        c.establish_context()
        c.negotiate_protection(1)
    c.close()
    p.wait_stderr(r"alice/admin@SOCKS\.TEST has no local name")


# ------------------------------------------------------------ methods, identity, rules


def test_gssapi_is_preferred_over_password(gss_proxy):
    p = gss_proxy("-u", "carol:carol-pw")
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(b"\x05\x03\x00\x02\x01")
    assert recv_exact(s, 2) == b"\x05\x01"
    s.close()
    # A client without GSS-API still logs in with a password.
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(b"\x05\x02\x00\x02")
    assert recv_exact(s, 2) == b"\x05\x02"
    s.close()


def test_no_anonymous_access_under_the_auto_policy(gss_proxy):
    p = gss_proxy()
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(b"\x05\x01\x00")
    assert recv_exact(s, 2) == b"\x05\xff"
    s.close()


def test_rules_match_the_local_name(gss_proxy, krb5_realm, echo_server):
    p = gss_proxy(config_lines=["block user bob", "pass user alice"])
    c = gss_client.open_tunnel("127.0.0.1", p.port, echo_server.host, echo_server.port, 1,
                               ccache=krb5_realm.ccache)
    c.close()
    cc = krb5_realm.kinit("bob")
    c = negotiated(p.port, krb5_realm)
    c.close()
    c = GssSocksClient("127.0.0.1", p.port, ccache=cc)
    assert c.negotiate_method() == 0x01
    assert c.establish_context()
    assert c.negotiate_protection(2) == 2
    assert c.connect(echo_server.host, echo_server.port)[0] == 0x02  # wrapped reply
    c.close()
    f = p.wait_log(lambda f: len(f) == 15 and f[1] == "bob@SOCKS.TEST")[0]
    assert (f[7], f[14]) == ("2", "gssapi/confidentiality"), f


def test_udp_associate_under_protection_is_not_supported(gss_proxy, krb5_realm):
    p = gss_proxy()
    c = negotiated(p.port, krb5_realm)
    assert c.negotiate_protection(1) == 1
    assert c.request(3, "0.0.0.0", 0)[0] == 0x07
    c.close()


def pipo(p, *args, env=None):
    env = dict(os.environ, PIPO_PASSWORD=ADMIN_PW, **(env or {}))
    r = subprocess.run([os.environ.get("PIPOCLIENT", "build/test/pipoClient"), "-S",
                        os.path.join(p.runtime_dir, "socks5d.sock"), "-u", ADMIN] + list(args),
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def stats(p):
    return json.loads(pipo(p, "--json", "stats"))["metrics"]


def test_pipoclient_and_metrics_show_gssapi_sessions(gss_proxy, krb5_realm, echo_server):
    p = gss_proxy("-a", "%s:%s" % (ADMIN, ADMIN_PW))
    before = stats(p)
    c = gss_client.open_tunnel("127.0.0.1", p.port, echo_server.host, echo_server.port, 2,
                               ccache=krb5_realm.ccache)
    c.wrap_send(b"x" * 5000)
    assert c.recv_exact(5000) == b"x" * 5000
    sessions = json.loads(pipo(p, "--json", "sessions"))["sessions"]
    mine = [x for x in sessions if x["port"] == echo_server.port]
    assert len(mine) == 1, sessions
    assert (mine[0]["user"], mine[0]["method"], mine[0]["protection"]) == \
        ("alice", "gssapi", "confidentiality"), mine
    table = pipo(p, "sessions")
    assert "gssapi/confidentiality" in table, table
    c.close()
    after = stats(p)
    assert after["gssapi_logins"] == before["gssapi_logins"] + 1
    assert after["gssapi_bytes_wrapped"] >= before["gssapi_bytes_wrapped"] + 5000 + 10
    assert after["gssapi_bytes_unwrapped"] >= before["gssapi_bytes_unwrapped"] + 5000 + 10


def test_a_user_table_entry_binds_and_its_removal_closes(gss_proxy, krb5_realm, echo_server):
    p = gss_proxy("-a", "%s:%s" % (ADMIN, ADMIN_PW))
    pipo(p, "user", "add", "alice", env={"PIPO_NEW_PASSWORD": "unused-password"})
    c = gss_client.open_tunnel("127.0.0.1", p.port, echo_server.host, echo_server.port, 1,
                               ccache=krb5_realm.ccache)
    c.wrap_send(b"ping")
    assert c.recv_exact(4) == b"ping"
    users = json.loads(pipo(p, "--json", "users"))
    alice = [u for u in users["users"] if u["name"] == "alice"][0]
    assert alice["connections"] == 1, users
    pipo(p, "user", "del", "alice")
    c.sock.settimeout(10)
    with pytest.raises((ServerClosed, ConnectionError)):
        c.recv_exact(1)
    c.close()


# ------------------------------------------------------------ configuration


def test_bad_keytabs_stop_the_start_with_one_line(socks5d_bin, krb5_realm, tmp_path):
    empty = tmp_path / "empty.keytab"
    empty.write_bytes(b"")
    other = tmp_path / "other.keytab"
    krb5_realm.kadmin("ktadd -k %s -norandkey host/localhost" % other)
    cases = [
        (str(tmp_path / "missing.keytab"), "rcmd", "No such file"),
        (str(empty), "rcmd", "holds no key"),
        (str(other), "rcmd", "no key of the service rcmd"),
        (str(krb5_realm.keytab), "ftp", "no key of the service ftp"),
    ]
    for kt, svc, why in cases:
        r = subprocess.run([socks5d_bin, "-l", "127.0.0.1", "-p", str(free_port()), "-P",
                            str(free_port()), "--admin-socket", str(tmp_path / "a.sock"),
                            "--gssapi-keytab", kt, "--gssapi-service", svc],
                           capture_output=True, text=True, env=krb5_realm.env, timeout=30)
        assert r.returncode == 78, (kt, r.stderr)
        errs = [l for l in r.stderr.splitlines() if "error" in l]
        assert len(errs) == 1 and kt in errs[0] and why in errs[0], r.stderr


def test_bad_protection_list_is_refused(socks5d_bin, tmp_path):
    r = subprocess.run([socks5d_bin, "--gssapi-protection", "integrity,strong"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "gssapi-protection" in r.stderr and "strong" in r.stderr, r.stderr


# ------------------------------------------------------------ adversarial


@pytest.mark.parametrize("order", ["replayed", "reordered"])
def test_a_replayed_or_reordered_message_ends_the_session(order, gss_proxy, krb5_realm,
                                                          echo_server):
    """A client that asks for replay and sequence detection is protected
    from a man in the middle that repeats or swaps its 01 03 messages: the
    mechanism flags them (supplementary status), and the session ends
    instead of relaying them."""
    p = gss_proxy()
    rf = gssapi.RequirementFlag
    c = GssSocksClient("127.0.0.1", p.port, ccache=krb5_realm.ccache)
    assert c.negotiate_method() == 0x01
    assert c.establish_context(flags=[rf.mutual_authentication, rf.integrity,
                                      rf.confidentiality, rf.replay_detection,
                                      rf.out_of_sequence_detection])
    assert c.negotiate_protection(1) == 1
    assert c.connect(echo_server.host, echo_server.port)[0] == 0
    a = c.ctx.wrap(b"first", False).message
    b = c.ctx.wrap(b"second", False).message
    msgs = [a, a] if order == "replayed" else [b, a]
    for m in msgs:
        c.send_message(gss_client.MTYP_ENCAPSULATION, m)
    c.sock.settimeout(10)
    try:
        got = c.recv_all()
    except gssapi.exceptions.GSSError:
        got = b"<server output that did not verify>"
    c.close()
    # What was relayed before the bad message may come back; nothing after.
    assert got in (b"", b"first", b"second"), got
    p.wait_stderr(r"GSS-API: bad token from the client")


def test_names_in_a_forged_ticket_cannot_forge_log_lines(gss_proxy, krb5_realm):
    """The ticket's server name travels in the clear: a client can put a
    line break in it.  The mechanism's error text quotes that name; the
    log line stays one line, its control bytes escaped."""
    p = gss_proxy()
    tok = gss_client.first_token(ccache=krb5_realm.ccache)
    assert tok.count(b"localhost") == 1, tok
    # A name no key has, and a ticket no key decrypts (a byte of its
    # ciphertext flipped): the error names the server the ticket says.
    forged = gss_client.corrupt(tok.replace(b"localhost", b"l\nFORGED\r"), len(tok) // 2)
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    s.sendall(b"\x05\x01\x01")
    assert recv_exact(s, 2) == b"\x05\x01"
    s.sendall(struct.pack("!BBH", 1, 1, len(forged)) + forged)
    assert recv_exact(s, 2) == b"\x01\xff"
    s.close()
    m = p.wait_stderr(r"GSS-API login from 127\.0\.0\.1 failed: .*")
    assert "FORGED" in m.group(0), m.group(0)
    assert not any(line.startswith("FORGED") for line in p.err_lines), p.err_lines[-5:]
    assert not any("\r" in line for line in p.err_lines), p.err_lines[-5:]


def test_a_ticket_renamed_in_the_clear_is_not_taken_for_the_service(gss_proxy, krb5_realm,
                                                                    tmp_path):
    """The ticket's server name is not under its encryption: a ticket for
    host/localhost renamed rcmd/localhost still decrypts with the host
    key of a mixed keytab.  The service is the key's, not the name's."""
    kt = tmp_path / "mixed.keytab"
    krb5_realm.kadmin("ktadd -k %s -norandkey rcmd/localhost host/localhost" % kt)
    p = gss_proxy("--gssapi-keytab", str(kt))
    c = GssSocksClient("127.0.0.1", p.port, ccache=krb5_realm.ccache, service="host@localhost")
    assert c.negotiate_method() == 0x01
    tok = c.make_context()
    assert tok.count(b"\x1b\x04host") == 1, tok  # the sname's first part
    c.send_message(gss_client.MTYP_CONTEXT, tok.replace(b"\x1b\x04host", b"\x1b\x04rcmd"))
    with pytest.raises((ServerAbort, ServerClosed)):
        c.ctx.step(c.recv_message(gss_client.MTYP_CONTEXT))
        c.negotiate_protection(2)
    c.close()
    p.wait_stderr(r"GSS-API login from 127\.0\.0\.1 failed")


@pytest.mark.parametrize("level", [1, 2], ids=["integrity", "confidentiality"])
def test_bind_under_protection_wraps_both_replies_and_the_relay(level, gss_proxy, krb5_realm):
    p = gss_proxy()
    c = negotiated(p.port, krb5_realm)
    assert c.negotiate_protection(level) == level
    rep, atyp, baddr, bport = c.request(2, "127.0.0.1", 0)
    assert (rep, atyp) == (0, 1)
    peer = socket.create_connection((socket.inet_ntop(socket.AF_INET, baddr), bport), timeout=10)
    ver, rep2, _rsv, atyp2 = c.recv_exact(4)
    assert (ver, rep2, atyp2) == (5, 0, 1)
    c.recv_exact(6)
    c.send(b"to the peer")
    assert recv_exact(peer, 11) == b"to the peer"
    peer.sendall(b"to the client")
    assert c.recv_exact(13) == b"to the client"
    peer.close()
    c.sock.settimeout(10)
    assert c.recv_all() == b""
    c.close()
    f = gss_records(p)[0]
    assert (f[7], f[11], f[14]) == ("0", "bind", "gssapi/" + LEVELS[level]), f


@pytest.mark.parametrize("level", [1, 2], ids=["integrity", "confidentiality"])
def test_a_rate_limit_paces_an_encapsulated_session(level, gss_proxy, krb5_realm, echo_server):
    """The relay of a protected session pauses at its bucket and resumes
    on the limit's timer, in both directions, without losing a byte."""
    rate = 256 * 1024
    p = gss_proxy(config_lines=["pass to 127.0.0.1 port %d rate %d" % (echo_server.port, rate)])
    payload = os.urandom(3 * rate // 2)
    t0 = time.monotonic()
    got = gss_client.echo_transfer("127.0.0.1", p.port, echo_server.host, echo_server.port,
                                   level, payload, chunk=7000, ccache=krb5_realm.ccache)
    took = time.monotonic() - t0
    assert got == payload
    # 1.5 rates of data at one rate per second each way: the bucket's
    # first second of credit aside, it had to wait.
    assert took >= 0.4, took
    f = gss_records(p, echo_server.port)[0]
    assert (f[7], int(f[8]), int(f[9])) == ("0", len(payload), len(payload)), f


def test_everything_pipelined_behind_the_context(gss_proxy, krb5_realm, echo_server):
    """The protection message, the request, and 200 KB of data in several
    messages (one holding the request's tail and data) sent at once, before
    any answer: all of it is relayed, in order."""
    p = gss_proxy()
    c = negotiated(p.port, krb5_realm)
    wrap = lambda b: c.ctx.wrap(b, True).message  # noqa: E731
    msg = lambda t, tok: struct.pack("!BBH", 1, t, len(tok)) + tok  # noqa: E731
    req = bytes([5, 1, 0, 1]) + socket.inet_aton(echo_server.host) + \
        struct.pack("!H", echo_server.port)
    payload = os.urandom(200000)
    out = msg(2, wrap(b"\x02")) + msg(3, wrap(req[:5])) + msg(3, wrap(req[5:] + payload[:1000]))
    for i in range(1000, len(payload), 30000):
        out += msg(3, wrap(payload[i:i + 30000]))
    c.sock.sendall(out)
    assert c.ctx.unwrap(c.recv_message(2)).message == b"\x02"
    c.level = 2
    assert c.recv_exact(10)[:2] == b"\x05\x00"
    assert c.recv_exact(len(payload)) == payload
    c.close()


def _login_flood(port, tokens, linger_reset):
    """Each token on its own connection; returns the connections kept open
    (those the source's cap of logins in progress let in)."""
    socks = []
    for tok in tokens:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            s.sendall(b"\x05\x01\x01")
            assert recv_exact(s, 2) == b"\x05\x01"
            s.sendall(struct.pack("!BBH", 1, 1, len(tok)) + tok)
        except (ConnectionError, AssertionError, EOFError):
            s.close()
            continue
        if linger_reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        else:
            socks.append(s)
    return socks


def test_logins_abandoned_on_the_thread_and_a_stop_with_logins_in_flight(gss_proxy,
                                                                          krb5_realm,
                                                                          echo_server):
    """Clients that reset right after their token leave jobs whose session
    is gone; the worker still serves the next login.  A stop with jobs
    queued and running exits cleanly (the fixture checks the sanitizers)."""
    p = gss_proxy("-w", "1")
    tokens = [gss_client.first_token(ccache=krb5_realm.ccache) for _ in range(150)]
    _login_flood(p.port, tokens, linger_reset=True)
    got = gss_client.echo_transfer("127.0.0.1", p.port, echo_server.host, echo_server.port, 2,
                                   b"still served", ccache=krb5_realm.ccache)
    assert got == b"still served"
    tokens = [gss_client.first_token(ccache=krb5_realm.ccache) for _ in range(150)]
    socks = _login_flood(p.port, tokens, linger_reset=False)
    assert len(socks) >= 10
    assert p.stop() == 0
    for s in socks:
        s.close()


def _cut_at(c, stage, echo_server, end):
    """Run the client up to stage, then end (b"" for EOF, or bytes to send
    last, 01 FF for a client giving up) and close."""
    def part(msg):
        return msg[:len(msg) // 2]

    if stage == "mid-context":
        tok = c.make_context()
        c.send_raw(part(struct.pack("!BBH", 1, 1, len(tok)) + tok))
    else:
        assert c.establish_context()
        lv = c.ctx.wrap(b"\x02", False).message
        pmsg = struct.pack("!BBH", 1, 2, len(lv)) + lv
        if stage == "mid-protection":
            c.send_raw(part(pmsg))
        elif stage != "context-done":
            c.send_raw(pmsg)
            assert c.ctx.unwrap(c.recv_message(2)).message == b"\x02"
            c.level = 2
            req = bytes([5, 1, 0, 1]) + socket.inet_aton(echo_server.host) + \
                struct.pack("!H", echo_server.port)
            tok = c.ctx.wrap(req, True).message
            rmsg = struct.pack("!BBH", 1, 3, len(tok)) + tok
            if stage == "mid-request":
                c.send_raw(part(rmsg))
            elif stage != "level-done":
                c.send_raw(rmsg)
                assert c.recv_exact(10)[:2] == b"\x05\x00"
                tok = c.ctx.wrap(b"data" * 100, True).message
                dmsg = struct.pack("!BBH", 1, 3, len(tok)) + tok
                if stage == "mid-data":
                    c.send_raw(part(dmsg))
                else:
                    c.send_raw(dmsg)
                    assert c.recv_exact(400) == b"data" * 100
    if end:
        c.send_raw(end)
    c.sock.shutdown(socket.SHUT_WR)
    c.sock.settimeout(10)
    try:
        while c.sock.recv(65536):
            pass
    except ConnectionError:
        pass
    c.close()


@pytest.mark.parametrize("end", [b"", b"\x01\xff", b"\x05\x01\x00\x01"],
                         ids=["eof", "give-up", "garbage"])
def test_the_client_ending_at_every_stage(end, gss_proxy, krb5_realm, echo_server):
    """EOF, 01 FF or bytes of another protocol at each stage, whole or in
    the middle of a message: the session ends (the server closes), the
    worker goes on serving, the sanitizers stay quiet (fixture)."""
    p = gss_proxy("-w", "1")
    for stage in ("mid-context", "context-done", "mid-protection", "level-done",
                  "mid-request", "relaying", "mid-data"):
        c = GssSocksClient("127.0.0.1", p.port, ccache=krb5_realm.ccache)
        assert c.negotiate_method() == 0x01
        _cut_at(c, stage, echo_server, end)
    got = gss_client.echo_transfer("127.0.0.1", p.port, echo_server.host, echo_server.port, 1,
                                   b"alive", ccache=krb5_realm.ccache)
    assert got == b"alive"


def _worker_rss_kb(p):
    (w,) = p.workers()
    with open("/proc/%d/status" % w) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_idle_protected_sessions_keep_no_message_buffers(socks5d, krb5_realm, echo_server):
    """A protected session that has carried large messages and waits keeps
    no buffer of them (the client's message, its raw bytes, the target's
    plaintext): memory follows the traffic in flight, not the sessions
    that once had some.  (No ASan quarantine here, so freed memory is
    reused and the worker's size shows what is kept.)"""
    env = dict(krb5_realm.env)
    env["KRB5_KTNAME"] = "FILE:/nonexistent/keytab"
    env["ASAN_OPTIONS"] = ("detect_leaks=1:abort_on_error=0:quarantine_size_mb=0:"
                           "thread_local_quarantine_size_kb=0:max_malloc_fill_size=1048576")
    p = socks5d("--gssapi-keytab", str(krb5_realm.keytab), "--dns-server", "127.0.0.1:9",
                "-w", "1", "--dissectors", "no", env=env)
    payload = os.urandom(30000)

    def session():
        c = gss_client.open_tunnel("127.0.0.1", p.port, echo_server.host, echo_server.port, 2,
                                   ccache=krb5_realm.ccache)
        c.send(payload, chunk=len(payload))
        assert c.recv_exact(len(payload)) == payload
        return c

    for c in [session() for _ in range(20)]:  # the allocator's own growth
        c.close()
    time.sleep(0.5)
    before = _worker_rss_kb(p)
    n = 150
    held = [session() for _ in range(n)]
    after = _worker_rss_kb(p)
    for c in held:
        c.close()
    # Over 100 KiB a session (under ASan) when the buffers stayed, some 25
    # without them.
    assert after - before < n * 56, (before, after, (after - before) / n)


def test_a_reload_without_the_keytab_stops_new_logins_not_sessions(socks5d, krb5_realm,
                                                                   echo_server, tmp_path):
    conf = tmp_path / "gss-reload.conf"
    conf.write_text("gssapi-keytab = %s\n" % krb5_realm.keytab)
    env = dict(krb5_realm.env)
    env["KRB5_KTNAME"] = "FILE:/nonexistent/keytab"
    p = socks5d("-f", str(conf), "--dns-server", "127.0.0.1:9", env=env)
    c = gss_client.open_tunnel("127.0.0.1", p.port, echo_server.host, echo_server.port, 2,
                               ccache=krb5_realm.ccache)
    c.send(b"before")
    assert c.recv_exact(6) == b"before"
    # A login waiting for its protection level across the reload.
    mid = negotiated(p.port, krb5_realm)
    conf.write_text("\n")
    p.send_signal(signal.SIGHUP)
    end = time.monotonic() + 10
    while True:
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        s.sendall(b"\x05\x01\x01")
        got = recv_exact(s, 2)
        s.close()
        if got == b"\x05\xff":
            break
        assert got == b"\x05\x01" and time.monotonic() < end, got
        time.sleep(0.1)
    c.send(b"after")
    assert c.recv_exact(5) == b"after"
    c.close()
    # Its context is established: the level is still negotiated.
    assert mid.negotiate_protection(1) == 1
    mid.close()


def test_an_idle_protected_session_times_out_and_a_trickle_does_not_keep_it(gss_proxy,
                                                                            krb5_realm,
                                                                            echo_server):
    """Bytes of a message that never completes move nothing: they do not
    keep a protected session from its idle timeout."""
    p = gss_proxy("--idle-timeout", "2")
    c = gss_client.open_tunnel("127.0.0.1", p.port, echo_server.host, echo_server.port, 1,
                               ccache=krb5_realm.ccache)
    c.send(b"ping")
    assert c.recv_exact(4) == b"ping"
    tok = c.ctx.wrap(b"never whole", False).message
    msg = struct.pack("!BBH", 1, 3, len(tok)) + tok
    t0 = time.monotonic()
    c.sock.settimeout(1)
    closed = False
    for i in range(len(msg) - 1):
        try:
            c.sock.sendall(msg[i:i + 1])
            if c.sock.recv(1) == b"":
                closed = True
                break
        except socket.timeout:
            pass
        except ConnectionError:
            closed = True
            break
        if time.monotonic() - t0 > 20:
            break
    took = time.monotonic() - t0
    c.close()
    assert closed
    assert took >= 1.5, took  # the timeout, not a refusal of the bytes
    assert int(gss_records(p, echo_server.port)[0][10]) >= 2000


def test_protection_needs_replay_and_sequence_detection(gss_proxy, krb5_realm, echo_server):
    """Levels 1 and 2 protect the stream only if repeated, reordered or
    dropped messages are seen: a context without replay and sequence
    detection gets clear at most."""
    import gssapi
    rf = gssapi.RequirementFlag
    bare = [rf.mutual_authentication, rf.integrity, rf.confidentiality]
    p = gss_proxy()
    for level in (1, 2):
        c = GssSocksClient("127.0.0.1", p.port, ccache=krb5_realm.ccache)
        assert c.negotiate_method() == 0x01
        assert c.establish_context(flags=bare)
        assert_refused(c, c.negotiate_protection, level)
    p.wait_stderr(r"asked for protection integrity without replay and sequence detection")
    c = GssSocksClient("127.0.0.1", p.port, ccache=krb5_realm.ccache)
    assert c.negotiate_method() == 0x01
    assert c.establish_context(flags=bare)
    assert c.negotiate_protection(0) == 0
    assert c.connect(echo_server.host, echo_server.port)[0] == 0
    c.close()



def test_a_flood_of_failed_logins_is_said_once_a_second(gss_proxy):
    """Every failure has its refusal record; stderr says one a second
    (per worker: one here)."""
    p = gss_proxy(workers=1)
    t0 = time.monotonic()
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        s.sendall(b"\x05\x01\x01\x01\x01\x00\x05junk!")
        assert recv_exact(s, 4) == b"\x05\x01\x01\xff"
        s.close()
    p.wait_log(lambda f: len(f) == 15 and f[7] == "auth-failed" and f[14] == "gssapi", count=40)
    elapsed = time.monotonic() - t0
    said = [l for l in p.stderr_text().splitlines() if "GSS-API login from" in l]
    assert 1 <= len(said) <= int(elapsed) + 1, (elapsed, said)
