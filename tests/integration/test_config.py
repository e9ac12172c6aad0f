"""Config file at start and SIGHUP reload."""

import signal
import subprocess
import socket
import time

import pytest

from s5lib import (auth_msg, connect, echo_roundtrip, eof_within, free_port, greeting,
                   hash_password, recv_exact, socks_connect_ok)


@pytest.fixture(scope="module")
def hashes():
    return {"alice": ("pw-alice", hash_password("pw-alice")),
            "bob": ("pw-bob", hash_password("pw-bob"))}


def write_conf(path, lines):
    path.write_text("\n".join(lines) + "\n")


def try_auth(port, user, password):
    """Return the 2-byte RFC1929 status (or b'' if closed)."""
    s = connect("127.0.0.1", port)
    with s:
        s.sendall(greeting((0x02,)))
        m = recv_exact(s, 2)
        if m != b"\x05\x02":
            return m
        s.sendall(auth_msg(user, password))
        try:
            return recv_exact(s, 2)
        except EOFError:
            return b""


def wait_auth(port, user, password, want, timeout=3.0):
    end = time.monotonic() + timeout
    got = None
    while time.monotonic() < end:
        got = try_auth(port, user, password)
        if got == want:
            return
        time.sleep(0.05)
    raise AssertionError("auth %s: wanted %r, got %r" % (user, want, got))


def test_config_file_users_with_hashes_authenticate(socks5d, tmp_path, hashes, nginx):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["# test config", "", "user = alice:%s" % hashes["alice"][1]])
    p = socks5d("-f", conf)
    assert try_auth(p.port, "alice", "pw-alice") == b"\x01\x00"
    assert try_auth(p.port, "alice", "wrong") == b"\x01\x01"
    s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port, user="alice", password="pw-alice")
    s.close()


def test_config_file_sets_port_and_listen(socks5d, tmp_path, nginx):
    port = free_port()
    conf = tmp_path / "s.conf"
    write_conf(conf, ["listen = 127.0.0.1", "port = %d" % port, "workers = 1"])
    # no -l/-p/-w on the command line
    from s5lib import Socks5d
    p = Socks5d(["-f", str(conf), "--grace", "1"])
    socks5d.started.append(p)
    p.wait_ready()
    assert "ready: 1 worker" in p.stderr_text()
    s, r = socks_connect_ok(port, "127.0.0.1", nginx.port)
    s.close()


def test_command_line_port_wins_over_file(socks5d, tmp_path, nginx):
    conf = tmp_path / "s.conf"
    file_port = free_port()
    write_conf(conf, ["port = %d" % file_port])
    p = socks5d("-f", conf)  # fixture passes -p <other port>
    assert p.port != file_port
    s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port)
    s.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", file_port), timeout=1).close()


def test_sighup_adds_user(socks5d, tmp_path, hashes):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["user = alice:%s" % hashes["alice"][1]])
    p = socks5d("-f", conf)
    assert try_auth(p.port, "bob", "pw-bob") == b"\x01\x01"
    write_conf(conf, ["user = alice:%s" % hashes["alice"][1], "user = bob:%s" % hashes["bob"][1]])
    p.send_signal(signal.SIGHUP)
    wait_auth(p.port, "bob", "pw-bob", b"\x01\x00")
    assert try_auth(p.port, "alice", "pw-alice") == b"\x01\x00"


def test_sighup_removed_user_session_closed_at_once(socks5d, tmp_path, hashes, echo_server):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["user = alice:%s" % hashes["alice"][1], "user = bob:%s" % hashes["bob"][1]])
    p = socks5d("-f", conf)
    sa, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port, user="alice", password="pw-alice")
    sb, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port, user="bob", password="pw-bob")
    with sa, sb:
        echo_roundtrip(sa, b"alice\n")
        echo_roundtrip(sb, b"bob\n")
        write_conf(conf, ["user = bob:%s" % hashes["bob"][1]])
        p.send_signal(signal.SIGHUP)
        got_eof, data, elapsed = eof_within(sa, 3)
        assert got_eof, "removed user's session still open"
        assert elapsed < 1.5, elapsed
        echo_roundtrip(sb, b"bob still here\n")
    assert try_auth(p.port, "alice", "pw-alice") == b"\x01\x01"


def test_sighup_invalid_config_logged_with_file_line_and_old_config_kept(socks5d, tmp_path, hashes):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["user = alice:%s" % hashes["alice"][1]])
    p = socks5d("-f", conf)
    n = p.n_err()
    write_conf(conf, ["user = bob:%s" % hashes["bob"][1], "workers = abc"])
    p.send_signal(signal.SIGHUP)
    p.wait_stderr(r"%s:2: " % str(conf).replace(".", r"\."), timeout=3, start=n)
    time.sleep(0.2)
    assert try_auth(p.port, "alice", "pw-alice") == b"\x01\x00"
    assert try_auth(p.port, "bob", "pw-bob") == b"\x01\x01"
    assert p.alive()


def test_sighup_plaintext_password_refused(socks5d, tmp_path, hashes):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["user = alice:%s" % hashes["alice"][1]])
    p = socks5d("-f", conf)
    n = p.n_err()
    write_conf(conf, ["# comment", "user = alice:%s" % hashes["alice"][1], "user = eve:plaintext"])
    p.send_signal(signal.SIGHUP)
    p.wait_stderr(r"%s:3: " % str(conf).replace(".", r"\."), timeout=3, start=n)
    time.sleep(0.2)
    assert try_auth(p.port, "eve", "plaintext") == b"\x01\x01"
    assert try_auth(p.port, "alice", "pw-alice") == b"\x01\x00"


def test_sighup_command_line_flags_still_win(socks5d, tmp_path):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["handshake-timeout = 30"])
    p = socks5d("-f", conf, "--handshake-timeout", "1")
    write_conf(conf, ["handshake-timeout = 20"])
    p.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    s = connect("127.0.0.1", p.port)
    with s:
        got_eof, data, elapsed = eof_within(s, 4)
        assert got_eof and elapsed < 3.0, "command-line --handshake-timeout lost after SIGHUP"


def test_sighup_new_setting_applies_to_new_sessions(socks5d, tmp_path):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["handshake-timeout = 30"])
    p = socks5d("-f", conf)
    write_conf(conf, ["handshake-timeout = 1"])
    p.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    s = connect("127.0.0.1", p.port)
    with s:
        got_eof, data, elapsed = eof_within(s, 4)
        assert got_eof and elapsed < 3.0, "reloaded handshake-timeout not applied"


def test_sighup_without_change_keeps_serving(socks5d, tmp_path, hashes, echo_server):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["user = alice:%s" % hashes["alice"][1]])
    p = socks5d("-f", conf)
    s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port, user="alice", password="pw-alice")
    with s:
        for _ in range(3):
            p.send_signal(signal.SIGHUP)
            time.sleep(0.1)
        echo_roundtrip(s, b"unchanged\n")
    assert try_auth(p.port, "alice", "pw-alice") == b"\x01\x00"


def test_config_file_settings_and_users_work_together(socks5d, tmp_path, hashes, nginx):
    # Every key of the settings table is checked by test_settings_table.py;
    # here a file with many of them also serves SOCKS to its users.
    conf = tmp_path / "all.conf"
    port = free_port()
    write_conf(conf, [
        "# settings and users from one file",
        "listen = 127.0.0.1",
        "port = %d" % port,
        "admin-addr = 127.0.0.1",
        "admin-port = %d" % free_port(),
        "workers = 1",
        "handshake-timeout = 5",
        "connect-timeout = 5",
        "idle-timeout = 60",
        "grace = 1",
        "buffer-size = 65536",
        "log-level = info",
        "anonymous = auto",
        "dissectors = no",
        "idle-cleanup = yes",
        "doh-ip = 127.0.0.1",
        "doh-port = 8053",
        "doh-host = localhost",
        "doh-path = /getnsrecord",
        "doh-query = ?dns=",
        "doh-method = get",
        "doh-url = http://127.0.0.1:8053/dns-query",
        "dns-fallback = yes",
        "",
        "user = alice:%s" % hashes["alice"][1],
        "admin = bob:%s" % hashes["bob"][1],
    ])
    from s5lib import Socks5d
    p = Socks5d(["-f", str(conf)])
    socks5d.started.append(p)
    p.wait_ready()
    s, r = socks_connect_ok(port, "localhost", nginx.port, atyp=3, user="alice", password="pw-alice")
    s.close()
    s, r = socks_connect_ok(port, "127.0.0.1", nginx.port, user="bob", password="pw-bob")
    s.close()


def test_config_unknown_key_exits_78(tmp_path, socks5d_bin):
    conf = tmp_path / "c.conf"
    write_conf(conf, ["port = 1080", "colour = blue"])
    r = subprocess.run([socks5d_bin, "-f", str(conf)], capture_output=True, timeout=20)
    assert r.returncode == 78
    assert ("socks5d: %s:2: " % conf) in r.stderr.decode()


def test_sighup_keeps_command_line_users(socks5d, tmp_path, hashes):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["user = alice:%s" % hashes["alice"][1]])
    p = socks5d("-f", conf, "-u", "carol:pw-carol")
    assert try_auth(p.port, "carol", "pw-carol") == b"\x01\x00"
    write_conf(conf, ["user = bob:%s" % hashes["bob"][1]])
    p.send_signal(signal.SIGHUP)
    wait_auth(p.port, "bob", "pw-bob", b"\x01\x00")
    assert try_auth(p.port, "carol", "pw-carol") == b"\x01\x00"
    assert try_auth(p.port, "alice", "pw-alice") == b"\x01\x01"


def test_sighup_changed_password_closes_nothing_but_new_password_needed(socks5d, tmp_path, hashes):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["user = alice:%s" % hashes["alice"][1]])
    p = socks5d("-f", conf)
    write_conf(conf, ["user = alice:%s" % hashes["bob"][1]])  # alice's password is now pw-bob
    p.send_signal(signal.SIGHUP)
    wait_auth(p.port, "alice", "pw-bob", b"\x01\x00")
    assert try_auth(p.port, "alice", "pw-alice") == b"\x01\x01"


def test_sighup_removing_all_users_enables_anonymous_auto(socks5d, tmp_path, hashes, nginx):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["user = alice:%s" % hashes["alice"][1]])
    p = socks5d("-f", conf)
    s = connect("127.0.0.1", p.port)
    with s:
        s.sendall(greeting((0x00,)))
        assert recv_exact(s, 2) == b"\x05\xff"
    write_conf(conf, ["# no users"])
    p.send_signal(signal.SIGHUP)
    end = time.monotonic() + 3
    got = None
    while time.monotonic() < end:
        s = connect("127.0.0.1", p.port)
        with s:
            s.sendall(greeting((0x00,)))
            got = recv_exact(s, 2)
        if got == b"\x05\x00":
            break
        time.sleep(0.05)
    assert got == b"\x05\x00"


def test_sighup_many_times_under_traffic(socks5d, tmp_path, hashes, echo_server):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["user = alice:%s" % hashes["alice"][1]])
    p = socks5d("-f", conf)
    s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port, user="alice", password="pw-alice")
    with s:
        for i in range(20):
            p.send_signal(signal.SIGHUP)
            echo_roundtrip(s, b"reload %d\n" % i)
            time.sleep(0.02)
    assert try_auth(p.port, "alice", "pw-alice") == b"\x01\x00"
    assert p.alive() and len(p.workers()) == 2


def test_sighup_with_config_file_gone_keeps_old_config(socks5d, tmp_path, hashes):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["user = alice:%s" % hashes["alice"][1]])
    p = socks5d("-f", conf)
    n = p.n_err()
    conf.unlink()
    p.send_signal(signal.SIGHUP)
    p.wait_stderr(r"s\.conf", timeout=3, start=n)
    time.sleep(0.2)
    assert try_auth(p.port, "alice", "pw-alice") == b"\x01\x00"
    assert p.alive()


def test_sighup_removed_user_sessions_closed_on_every_worker(socks5d, tmp_path, hashes, echo_server):
    from s5lib import owner_worker
    conf = tmp_path / "s.conf"
    write_conf(conf, ["user = alice:%s" % hashes["alice"][1], "user = bob:%s" % hashes["bob"][1]])
    p = socks5d("-f", conf, workers=2)
    workers = p.workers()
    alice = []
    for _ in range(12):
        s, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port, user="alice", password="pw-alice")
        alice.append(s)
    owners = {owner_worker(workers, p.port, s) for s in alice}
    sb, _ = socks_connect_ok(p.port, "127.0.0.1", echo_server.port, user="bob", password="pw-bob")
    try:
        write_conf(conf, ["user = bob:%s" % hashes["bob"][1]])
        p.send_signal(signal.SIGHUP)
        t0 = time.monotonic()
        for s in alice:
            got_eof, data, _ = eof_within(s, max(0.1, 2.0 - (time.monotonic() - t0)))
            assert got_eof, "a session of the removed user is still open (workers used: %r)" % owners
        assert time.monotonic() - t0 < 2.0
        echo_roundtrip(sb, b"bob unaffected\n")
    finally:
        for s in alice + [sb]:
            s.close()


def test_respawned_worker_uses_reloaded_config(socks5d, tmp_path, hashes):
    import os
    conf = tmp_path / "s.conf"
    write_conf(conf, ["user = alice:%s" % hashes["alice"][1]])
    p = socks5d("-f", conf, workers=1)
    write_conf(conf, ["user = bob:%s" % hashes["bob"][1]])
    p.send_signal(signal.SIGHUP)
    wait_auth(p.port, "bob", "pw-bob", b"\x01\x00")
    (w,) = p.workers()
    os.kill(w, signal.SIGKILL)
    end = time.monotonic() + 3
    while time.monotonic() < end and (p.workers() in ([], [w])):
        time.sleep(0.02)
    assert p.workers() and p.workers() != [w]
    wait_auth(p.port, "bob", "pw-bob", b"\x01\x00")
    assert try_auth(p.port, "alice", "pw-alice") == b"\x01\x01"


def test_users_table_holds_1024_and_refuses_more_clearly(socks5d, socks5d_bin, tmp_path, hashes):
    # The users table has a fixed capacity (1024, documented): all of them
    # log in, and a file with more is refused at start with a clear error.
    h = hashes["alice"][1]
    conf = tmp_path / "many.conf"
    write_conf(conf, ["user = user%d:%s" % (i, h) for i in range(1, 1025)])
    p = socks5d("-f", conf, workers=1)
    for u in ("user1", "user512", "user1024"):
        assert try_auth(p.port, u, "pw-alice") == b"\x01\x00", u
    over = tmp_path / "over.conf"
    write_conf(over, ["user = user%d:%s" % (i, h) for i in range(1, 1026)])
    r = subprocess.run([socks5d_bin, "-l", "127.0.0.1", "-p", "1", "-f", str(over)],
                       capture_output=True, timeout=60)
    assert r.returncode == 78
    assert b"more than the 1024" in r.stderr


def test_command_line_listen_replaces_file_listen(socks5d, tmp_path, nginx):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["listen = ::1"])
    p = socks5d("-f", conf)  # fixture passes -l 127.0.0.1
    s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port)
    s.close()
    with pytest.raises(OSError):
        socket.create_connection(("::1", p.port), timeout=1).close()


def test_command_line_user_wins_over_file_user_of_same_name(socks5d, tmp_path, hashes):
    conf = tmp_path / "s.conf"
    write_conf(conf, ["user = alice:%s" % hashes["alice"][1]])
    p = socks5d("-f", conf, "-u", "alice:cli-pw")
    assert try_auth(p.port, "alice", "cli-pw") == b"\x01\x00"
    assert try_auth(p.port, "alice", "pw-alice") == b"\x01\x01"
    p.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert try_auth(p.port, "alice", "cli-pw") == b"\x01\x00"
    assert try_auth(p.port, "alice", "pw-alice") == b"\x01\x01"
