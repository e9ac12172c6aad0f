"""Every SOCKS5 reply code, provoked on loopback, with exact reply bytes.

Codes that need routing tricks (02, 03, 04, name resolution failure, several
addresses per name) run in a private network namespace in which only
127.0.0.1 is local, 127.0.0.6 is `unreachable`, 127.0.0.7 is `prohibit`, and
/etc/hosts + resolv.conf are replaced (ip netns exec bind-mounts
/etc/netns/NS/*). The probe client runs inside the namespace too.
"""

import json
import select
import socket
import struct
import time

import pytest

from s5lib import (Socks5d, connect, eof_within, greeting, handshake, read_reply,
                   recv_exact, request, closed_port)


def open_anon(port):
    s = connect("127.0.0.1", port)
    s.sendall(greeting((0x00,)))
    assert recv_exact(s, 2) == b"\x05\x00"
    return s


def assert_failure_reply(r, code):
    assert r.ver == 5 and r.rep == code and r.rsv == 0, r
    assert r.atyp in (1, 4), r
    assert len(r.raw) == (10 if r.atyp == 1 else 22)


def failed_request(port, req, code, timeout=5.0):
    s = open_anon(port)
    with s:
        t0 = time.monotonic()
        s.sendall(req)
        r = read_reply(s, timeout)
        elapsed = time.monotonic() - t0
        assert_failure_reply(r, code)
        # after a failure reply the server half-closes: EOF follows
        got_eof, data, _ = eof_within(s, 3)
        assert data == b"" and got_eof, "expected EOF after failure reply, got %r" % data
    return r, elapsed


# ---------------------------------------------------------------- default namespace

def test_closed_port_gets_05_connection_refused(proxy):
    failed_request(proxy.port, request("127.0.0.1", closed_port()), 5)


def test_closed_port_ipv6_gets_05_connection_refused(proxy):
    failed_request(proxy.port, request("::1", closed_port("::1")), 5)


def test_closed_port_by_name_gets_05(proxy):
    failed_request(proxy.port, request("localhost", closed_port(), atyp=3), 5)


@pytest.fixture
def full_backlog_listener():
    """A listener with listen(0) whose accept queue is full: new SYNs are dropped."""
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen(0)
    port = l.getsockname()[1]
    fill = []
    full = False
    for _ in range(10):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fill.append(s)
        _, w, _ = select.select([], [s], [], 0.3)
        if not w:
            full = True
            break
    assert full, "could not fill the accept queue"
    yield port
    for s in fill:
        s.close()
    l.close()


def test_connect_timeout_gets_06(socks5d, full_backlog_listener):
    p = socks5d("--connect-timeout", "1")
    r, elapsed = failed_request(p.port, request("127.0.0.1", full_backlog_listener), 6, timeout=8)
    assert 0.8 <= elapsed <= 4.0, elapsed


@pytest.mark.parametrize("cmd,name", [(0x09, "unknown"), (0xff, "0xff")])
def test_unsupported_command_gets_07(proxy, cmd, name):
    failed_request(proxy.port, request("127.0.0.1", 80, cmd=cmd), 7)


def test_udp_associate_with_zero_address_succeeds_with_a_real_address(proxy):
    # (tests/integration/test_udp.py covers the association itself)
    s = connect("127.0.0.1", proxy.port)
    with s:
        handshake(s)
        s.sendall(request("0.0.0.0", 0, cmd=3))
        r = read_reply(s)
        assert (r.rep, r.atyp, r.addr) == (0, 1, "127.0.0.1") and r.port != 0


@pytest.mark.parametrize("atyp", [0x00, 0x02, 0x05, 0xff])
def test_unknown_address_type_gets_08(proxy, atyp):
    failed_request(proxy.port, bytes([5, 1, 0, atyp]) + b"\x7f\x00\x00\x01\x00\x50", 8)


def test_nonzero_rsv_gets_01(proxy, nginx):
    failed_request(proxy.port, request("127.0.0.1", nginx.port, rsv=1), 1)


def test_request_version_not_5_gets_01(proxy, nginx):
    failed_request(proxy.port, request("127.0.0.1", nginx.port, ver=4), 1)


def test_empty_domain_name_gets_01(proxy, nginx):
    failed_request(proxy.port, bytes([5, 1, 0, 3, 0]) + struct.pack("!H", nginx.port), 1)


def test_success_reply_exact_bytes_ipv4(proxy, nginx):
    s = open_anon(proxy.port)
    with s:
        s.sendall(request("127.0.0.1", nginx.port))
        raw = recv_exact(s, 10)
        assert raw[:4] == b"\x05\x00\x00\x01"
        assert raw[4:8] == b"\x7f\x00\x00\x01"
        assert struct.unpack("!H", raw[8:])[0] != 0


def test_failure_then_client_data_is_discarded_until_eof(proxy):
    s = open_anon(proxy.port)
    with s:
        s.sendall(request("127.0.0.1", closed_port()))
        r = read_reply(s)
        assert r.rep == 5
        # the client may keep sending; the server discards and closes
        try:
            s.sendall(b"x" * 1000)
        except OSError:
            pass
        got_eof, data, _ = eof_within(s, 3)
        assert got_eof and data == b""


# ---------------------------------------------------------------- network namespace

class NsEnv:
    pass


@pytest.fixture(scope="module")
def ns_env(netns, socks5d_bin):
    helper, ports = netns.start_helper("serve")
    env = NsEnv()
    env.ns = netns
    env.p4, env.p6, env.pb, env.ph = (int(x) for x in ports)
    env.port = 10800 + (time.time_ns() // 1000) % 20000  # fresh namespace: any port is free
    srv = Socks5d(["-l", "127.0.0.1", "-p", str(env.port), "-w", "1", "--grace", "1",
                   "--connect-timeout", "1"], prefix=netns.prefix())
    try:
        srv.wait_ready()
        env.srv = srv
        yield env
    finally:
        srv.stop()
        srv.assert_clean()


def ns_probe(env, target, port, atyp=3, timeout=8, early=False):
    r = env.ns.python("probe", "--proxy", env.port, "--target", target, "--port", port,
                      "--atyp", atyp, "--timeout", timeout, *(["--early"] if early else []),
                      timeout=timeout + 20)
    assert r.returncode == 0, r.stderr.decode()
    res = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert res.get("method") == "0500", res
    assert "reply" in res, res
    return res


def rep_of(res):
    raw = bytes.fromhex(res["reply"])
    assert raw[0] == 5 and raw[2] == 0 and raw[3] in (1, 4), raw.hex()
    return raw[1]


def assert_ns_failure(res, code):
    assert rep_of(res) == code, res
    assert res.get("eof") is True, "expected EOF after failure reply: %r" % res


def test_ns_direct_connection_works(ns_env):
    res = ns_probe(ns_env, "127.0.0.1", ns_env.p4, atyp=1)
    assert rep_of(res) == 0 and res["echo"] == "ping through the namespace\n"


def test_unresolvable_invalid_name_gets_04(ns_env):
    # RFC 6761 .invalid; the namespace's DNS answers NXDOMAIN locally
    assert_ns_failure(ns_probe(ns_env, "no-such-host.invalid", 80), 4)


def test_network_unreachable_gets_03(ns_env):
    assert_ns_failure(ns_probe(ns_env, "127.0.0.5", 80, atyp=1), 3)


def test_host_unreachable_gets_04(ns_env):
    assert_ns_failure(ns_probe(ns_env, "127.0.0.6", 80, atyp=1), 4)


def test_prohibited_route_gets_02_not_allowed(ns_env):
    assert_ns_failure(ns_probe(ns_env, "127.0.0.7", 80, atyp=1), 2)


def test_timeout_in_namespace_gets_06(ns_env):
    res = ns_probe(ns_env, "127.0.0.1", ns_env.pb, atyp=1)
    assert_ns_failure(res, 6)
    assert 0.8 <= res["elapsed"] <= 4.0, res


@pytest.mark.parametrize("name,code", [("netunreach.test", 3), ("hostunreach.test", 4),
                                       ("prohibited.test", 2)])
def test_single_address_name_errors(ns_env, name, code):
    assert_ns_failure(ns_probe(ns_env, name, 80), code)


def test_second_address_used_when_first_refuses(ns_env):
    # Both names resolve to ::1 and 127.0.0.1; the target listens on only one
    # family, so whichever order the addresses are tried in, one of these two
    # sessions must survive a refused first attempt.
    for name, port in (("dual-v4only.test", ns_env.p4), ("dual-v6only.test", ns_env.p6)):
        res = ns_probe(ns_env, name, port)
        assert rep_of(res) == 0, (name, res)
        assert res["echo"] == "ping through the namespace\n"


@pytest.mark.parametrize("name,code,why", [
    ("mix-refused-host.test", 5, "refused beats host unreachable"),
    ("mix-net-host.test", 4, "host unreachable beats network unreachable"),
    ("mix-prohibit-net.test", 3, "network unreachable beats not allowed"),
])
def test_most_telling_error_when_all_addresses_fail(ns_env, name, code, why):
    port = ns_env.p4  # ::1:p4 refuses (the v4-only echo server holds p4 on 127.0.0.1 only)
    assert_ns_failure(ns_probe(ns_env, name, port), code)


def test_not_allowed_beats_timeout_when_all_addresses_fail(ns_env):
    res = ns_probe(ns_env, "mix-prohibit-timeout.test", ns_env.pb)
    assert_ns_failure(res, 2)


def test_second_address_used_when_first_times_out(ns_env):
    # he.test -> ::1 (connect never completes) and 127.0.0.1 (echo), --connect-timeout 1
    res = ns_probe(ns_env, "he.test", ns_env.ph)
    assert rep_of(res) == 0, res
    assert res["echo"] == "ping through the namespace\n"
    assert res["elapsed"] < 3.0, res


def test_longest_valid_domain_name_unresolvable_gets_04(ns_env):
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 53]) + ".invalid"
    assert len(name) == 253
    assert_ns_failure(ns_probe(ns_env, name, 80), 4)


def test_overlong_domain_name_fails_cleanly(ns_env):
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 55]) + ".invalid"
    assert len(name) == 255
    res = ns_probe(ns_env, name, 80)
    assert rep_of(res) in (1, 4), res
    assert res.get("eof") is True
    assert ns_env.srv.alive()


def test_unresolvable_name_logged_with_rep_4(ns_env):
    name = "logged-nxdomain.invalid"
    assert_ns_failure(ns_probe(ns_env, name, 4321), 4)
    f = ns_env.srv.wait_log(lambda f: len(f) == 15 and f[5] == name)[0]
    assert f[6] == "4321" and f[7] == "4"
    assert f[8] == "0" and f[9] == "0"


def test_network_unreachable_logged_with_rep_3(ns_env):
    assert_ns_failure(ns_probe(ns_env, "127.0.0.5", 4322, atyp=1), 3)
    f = ns_env.srv.wait_log(lambda f: len(f) == 15 and f[6] == "4322")[0]
    assert f[5] == "127.0.0.5" and f[7] == "3"


def ns_multi(env, reqs, timeout=8):
    args = ["multi", "--proxy", env.port, "--timeout", timeout]
    for host, port, atyp, delay in reqs:
        args += ["--req", "%s,%d,%d,%s" % (host, port, atyp, delay)]
    r = env.ns.python(*args, timeout=timeout + 30)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def test_slow_name_resolution_does_not_block_other_sessions(ns_env):
    # the namespace DNS answers "slow*" names after 1 s; the worker (-w 1)
    # must serve another session meanwhile
    slow, fast = ns_multi(ns_env, [("slow-lookup.invalid", 80, 3, 0),
                                   ("127.0.0.1", ns_env.p4, 1, 0.1)])
    assert rep_of(slow) == 4, slow
    assert slow["elapsed"] >= 0.9, slow
    assert rep_of(fast) == 0 and fast["echo"], fast
    assert fast["elapsed"] < 0.5, "fast session waited for the slow lookup: %r" % fast


def test_pending_connects_do_not_block_other_sessions(ns_env):
    reqs = [("127.0.0.1", ns_env.pb, 1, 0)] * 10 + [("127.0.0.1", ns_env.p4, 1, 0.2)]
    res = ns_multi(ns_env, reqs)
    for r in res[:10]:
        assert rep_of(r) == 6, r
        assert r["elapsed"] < 3.0, r   # attempts run in parallel, not one after another
    assert rep_of(res[10]) == 0 and res[10]["elapsed"] < 0.5, res[10]


def test_concurrent_lookups_of_same_unresolvable_name(ns_env):
    res = ns_multi(ns_env, [("same-name.invalid", 80, 3, 0)] * 20)
    for r in res:
        assert rep_of(r) == 4, r


@pytest.mark.parametrize("name", [b"bad\x00name.invalid", b"\xff\xfe.invalid", b"a..b.invalid",
                                  b".", b"-", b"x" * 64 + b".invalid"])
def test_odd_domain_names_fail_cleanly(ns_env, name):
    # sent raw (not through the probe CLI): odd bytes in the name
    code = ns_env.ns.run(*ns_env.ns.prefix(), "/usr/bin/python3", "-c", """
import socket, struct, sys
name = bytes.fromhex(sys.argv[1]); port = int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), timeout=5)
s.sendall(b"\\x05\\x01\\x00" + b"\\x05\\x01\\x00\\x03" + bytes([len(name)]) + name + b"\\x00\\x50")
d = b""
while True:
    c = s.recv(100)
    if not c: break
    d += c
print(d.hex())
""", name.hex(), str(ns_env.port), check=False)
    assert code.returncode == 0, code.stderr.decode()
    out = bytes.fromhex(code.stdout.decode().strip())
    assert out[:2] == b"\x05\x00"
    assert out[2] == 5 and out[3] in (1, 4) and out[4] == 0, out.hex()
    assert ns_env.srv.alive()


def test_failure_reply_survives_pipelined_client_data(proxy):
    # greeting + refused request + 256 KiB of data in one go: the server must
    # discard the data, not reset the connection and lose the reply
    s = connect("127.0.0.1", proxy.port)
    with s:
        s.sendall(greeting((0,)) + request("127.0.0.1", closed_port()) + b"d" * (256 * 1024))
        assert recv_exact(s, 2) == b"\x05\x00"
        r = read_reply(s)
        assert r.rep == 5
        got_eof, data, _ = eof_within(s, 3)
        assert got_eof and data == b""


def test_after_failure_input_discarded_until_handshake_timeout(socks5d):
    p = socks5d("--handshake-timeout", "2")
    s = open_anon(p.port)
    t0 = time.monotonic()
    with s:
        s.sendall(request("127.0.0.1", closed_port()))
        assert read_reply(s).rep == 5
        got_eof, _, _ = eof_within(s, 1)
        assert got_eof
        # still discarding: no reset while we keep talking
        for _ in range(5):
            s.sendall(b"z" * 1000)
            time.sleep(0.1)
        # after the handshake timeout the server closes completely: sends fail
        time.sleep(max(0, 2.6 - (time.monotonic() - t0)))
        failed = False
        for _ in range(20):
            try:
                s.send(b"z" * 1000)
            except OSError:
                failed = True
                break
            time.sleep(0.05)
        assert failed, "server did not close after the handshake timeout"


def test_early_data_survives_fallback_to_next_address(ns_env):
    # payload sent with the request; the first address fails (refused or
    # timeout), the data must reach the connection that finally succeeds
    for name, port in (("dual-v4only.test", ns_env.p4), ("dual-v6only.test", ns_env.p6),
                       ("he.test", ns_env.ph)):
        res = ns_probe(ns_env, name, port, early=True)
        assert rep_of(res) == 0, (name, res)
        assert res["echo"] == "ping through the namespace\n", (name, res)
