"""client-congestion and target-congestion: the TCP congestion control of
the proxy's two connections of a session (TCP_CONGESTION), read back from
the kernel with ss(8); the system's default where unset; a name the kernel
does not have is refused at start, by pipoClient set and at reload."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from admin_lib import ADMIN_PASS, ADMIN_USER, admin_server, run_client  # noqa: F401 (a fixture)
from s5lib import (connect, deadline_loop, echo_roundtrip, free_port, handshake, hash_password,
                   read_reply, request, socks5d_binary, socks_connect_ok)

SYSCTL = "/proc/sys/net/ipv4/"


def system_default():
    with open(SYSCTL + "tcp_congestion_control") as f:
        return f.read().strip()


def others():
    """Loaded algorithms other than the system's default (reno is built in)."""
    with open(SYSCTL + "tcp_available_congestion_control") as f:
        avail = f.read().split()
    rest = [a for a in avail if a != system_default()]
    assert rest, avail
    return rest


def algorithms(filt):
    """The congestion control of every established TCP socket matching an
    ss filter, e.g. "sport = :1080"."""
    r = subprocess.run(["ss", "-Htni", "state", "established", "( %s )" % filt],
                       capture_output=True, timeout=10, check=True)
    found = []
    for line in r.stdout.decode().splitlines():
        if line.startswith((" ", "\t")):
            words = line.split()
            if words:
                found.append(words[0])
    return found


def proxy_sides(proxy_port, client, target_port):
    """(the proxy's socket facing this client, its socket facing the target):
    the first has the proxy's port and the client's port, the second the
    target's port as its peer."""
    cport = client.getsockname()[1]
    return (algorithms("sport = :%d and dport = :%d" % (proxy_port, cport)),
            algorithms("dport = :%d" % target_port))


@pytest.mark.parametrize("side", ["client", "target"])
def test_each_side_gets_its_own_congestion_control(socks5d, echo_server, side):
    a, d = others()[0], system_default()
    p = socks5d("--%s-congestion" % side, a)
    s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    with s:
        echo_roundtrip(s, b"x" * 1000)
        want = ([a], [d]) if side == "client" else ([d], [a])
        assert proxy_sides(p.port, s, echo_server.port) == want


def test_both_sides_set_at_once(socks5d, echo_server):
    a, b = others()[0], others()[-1]
    p = socks5d("--client-congestion", a, "--target-congestion", b)
    s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    with s:
        echo_roundtrip(s, b"x" * 1000)
        assert proxy_sides(p.port, s, echo_server.port) == ([a], [b])


def test_unset_leaves_the_system_default(socks5d, echo_server):
    p = socks5d()
    s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    with s:
        echo_roundtrip(s, b"y")
        d = system_default()
        assert proxy_sides(p.port, s, echo_server.port) == ([d], [d])


def test_bind_peer_gets_the_target_side(socks5d):
    a = others()[0]
    p = socks5d("--target-congestion", a, "--client-congestion", others()[-1])
    c = connect("127.0.0.1", p.port)
    with c:
        handshake(c)
        c.sendall(request("127.0.0.1", 0, cmd=2))
        first = read_reply(c)
        assert first.rep == 0, first
        peer = socket.create_connection(("127.0.0.1", first.port), timeout=5)
        with peer:
            second = read_reply(c)
            assert second.rep == 0, second
            # the proxy's socket accepted for BIND has the listening port
            got = algorithms("sport = :%d and dport = :%d" % (first.port,
                                                              peer.getsockname()[1]))
            assert got == [a]


def test_unknown_name_refused_at_start_naming_the_setting(tmp_path):
    r = subprocess.run([socks5d_binary(), "-l", "127.0.0.1", "-p", str(free_port()), "-w", "1",
                        "-P", str(free_port()), "--admin-socket", str(tmp_path / "a.sock"),
                        "--dns-server", "127.0.0.1:9", "--target-congestion", "nosuchcc"],
                       capture_output=True, timeout=20)
    err = r.stderr.decode()
    assert r.returncode == 78, err
    assert "target-congestion nosuchcc: no such congestion control" in err


@pytest.mark.parametrize("bad", ["Cubic", "bb r", "x;y", "a" * 16, "../bbr"])
def test_malformed_name_refused_on_the_command_line(bad):
    r = subprocess.run([socks5d_binary(), "--client-congestion", bad], capture_output=True,
                       timeout=20)
    assert r.returncode == 64, r.stderr
    assert r.stderr.decode().splitlines()[0].startswith("socks5d: option --client-congestion:")


def test_pipoclient_set_changes_new_sessions_and_refuses_unknown(admin_server, echo_server):
    srv = admin_server("--anonymous", "always")
    a = others()[0]
    r = run_client("set", "target-congestion", "nosuchcc", server=srv)
    assert r.returncode == 1 and "invalid value" in r.err, r.err
    assert "no such congestion control" in srv.proc.stderr_text()
    r = run_client("--json", "get", "target-congestion", server=srv)
    assert r.returncode == 0 and json.loads(r.out) == {"target-congestion": ""}, r.out
    r = run_client("set", "target-congestion", a, server=srv)
    assert r.returncode == 0, r.err

    def target_side():
        s, _ = socks_connect_ok(srv.port, "127.0.0.1", echo_server.port)
        with s:
            echo_roundtrip(s, b"z")
            return proxy_sides(srv.port, s, echo_server.port)[1]

    # the workers take the change from the shared segment: soon, not at once
    for _ in deadline_loop(5):
        if target_side() == [a]:
            break
    else:
        pytest.fail("target-congestion %s not in force" % a)
    r = run_client("set", "target-congestion", "", server=srv)
    assert r.returncode == 0, r.err
    for _ in deadline_loop(5):
        if target_side() == [system_default()]:
            break
    else:
        pytest.fail("an empty target-congestion did not give the system's default back")


def test_reload_with_unknown_name_keeps_the_running_one(socks5d, tmp_path, echo_server):
    a = others()[0]
    conf = tmp_path / "cc.conf"
    conf.write_text("anonymous = always\ntarget-congestion = %s\n" % a)
    p = socks5d("-f", conf)
    n = p.n_err()
    conf.write_text("anonymous = always\ntarget-congestion = nosuchcc\n")
    p.send_signal(signal.SIGHUP)
    p.wait_stderr(r"target-congestion nosuchcc: no such congestion control", timeout=5, start=n)
    p.wait_stderr(r"not reloaded: keeping the running configuration", timeout=5, start=n)
    time.sleep(0.2)
    s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    with s:
        echo_roundtrip(s, b"w")
        assert proxy_sides(p.port, s, echo_server.port)[1] == [a]


@pytest.fixture
def one_not_allowed():
    """An algorithm that is loaded but, for a while, not in
    net.ipv4.tcp_allowed_congestion_control (what a process without
    CAP_NET_ADMIN may set); the machine's list is put back afterwards."""
    path = SYSCTL + "tcp_allowed_congestion_control"
    with open(path) as f:
        saved = f.read().strip()
    x = others()[0]
    rest = [a for a in saved.split() if a != x] or [system_default()]
    with open(path, "w") as f:
        f.write(" ".join(rest))
    try:
        yield x
    finally:
        with open(path, "w") as f:
            f.write(saved)


def start_args(tmp_path, *extra):
    return [socks5d_binary(), "-l", "127.0.0.1", "-p", str(free_port()), "-w", "1",
            "-P", str(free_port()), "--admin-socket", str(tmp_path / "a.sock"),
            "--dns-server", "127.0.0.1:9", *extra]


def test_a_name_unprivileged_workers_may_not_set_is_refused(tmp_path, one_not_allowed):
    x = one_not_allowed
    # run-as: the workers give up every capability
    r = subprocess.run(start_args(tmp_path, "--run-as", "nobody", "--client-congestion", x),
                       capture_output=True, timeout=20)
    err = r.stderr.decode()
    assert r.returncode == 78, err
    assert "client-congestion %s: workers without CAP_NET_ADMIN may not set it" % x in err
    # started as another user with CAP_NET_ADMIN in its ambient set: the
    # master keeps it, the workers drop it, so the master's own socket
    # proves nothing and the allowed list decides
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        "--inh-caps=+net_admin", "--ambient-caps=+net_admin",
                        *start_args(tmp_path, "--target-congestion", x)],
                       capture_output=True, timeout=20)
    err = r.stderr.decode()
    assert r.returncode == 78, err
    assert "target-congestion %s: workers without CAP_NET_ADMIN may not set it" % x in err


def test_root_workers_may_set_a_name_not_in_the_allowed_list(socks5d, echo_server,
                                                             one_not_allowed):
    x = one_not_allowed
    p = socks5d("--client-congestion", x)
    s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port)
    with s:
        echo_roundtrip(s, b"r")
        assert proxy_sides(p.port, s, echo_server.port)[0] == [x]


def test_a_name_refused_since_does_not_block_other_changes(admin_server, echo_server):
    """The kernel stops taking the name in force (here: it leaves the allowed
    list of unprivileged workers): other settings still change, by pipoClient
    and by reload, and the workers say so once and keep the system's."""
    x = others()[0]
    # a directory the master, as nobody, can read the file again in
    d = Path(tempfile.mkdtemp(prefix="s5-cc-"))
    os.chmod(d, 0o755)
    conf = d / "cc.conf"
    conf.write_text("anonymous = always\nrun-as = nobody\nclient-congestion = %s\n"
                    "admin = %s:%s\n" % (x, ADMIN_USER, hash_password(ADMIN_PASS)))
    os.chmod(conf, 0o644)
    srv = admin_server(config=conf)
    path = SYSCTL + "tcp_allowed_congestion_control"
    with open(path) as f:
        saved = f.read().strip()
    try:
        with open(path, "w") as f:
            f.write(" ".join([a for a in saved.split() if a != x] or [system_default()]))
        r = run_client("set", "buffer-size", "32K", server=srv)
        assert r.returncode == 0, r.err
        n = srv.proc.n_err()
        conf.write_text(conf.read_text() + "idle-timeout = 10m\n")
        srv.proc.send_signal(signal.SIGHUP)
        srv.proc.wait_stderr(r"configuration \S+ (not )?reloaded", timeout=5, start=n)
        assert "not reloaded" not in "\n".join(srv.proc.err_lines[n:]), srv.proc.err_lines[n:]
        for _ in range(3):
            s, _ = socks_connect_ok(srv.port, "127.0.0.1", echo_server.port)
            with s:
                echo_roundtrip(s, b"k")
                assert proxy_sides(srv.port, s, echo_server.port)[0] == [system_default()]
        srv.proc.wait_stderr(r"client-congestion %s: Operation not permitted; connections keep "
                             r"the system's for a minute" % x, timeout=5, start=n)
    finally:
        with open(path, "w") as f:
            f.write(saved)
        srv.stop()
        shutil.rmtree(d)
