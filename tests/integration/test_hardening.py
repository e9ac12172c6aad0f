"""Process hardening: forked workers never return into master code, the
shared segment's name cannot be squatted, and names that would break the
configuration file are refused at start."""

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from admin_lib import ADMIN_PASS, ADMIN_USER, INVALID, M_RELOAD, admin_server  # noqa: F401
from s5lib import (Socks5d, free_port, hash_password, proc_status, recv_exact, socks5d_binary,
                   socks_connect_ok)


def worker_pids(master_pid):
    with open("/proc/%d/task/%d/children" % (master_pid, master_pid)) as f:
        return [int(p) for p in f.read().split()]


def wait_workers(master_pid, n, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pids = worker_pids(master_pid)
        if len(pids) == n:
            return pids
        time.sleep(0.05)
    raise AssertionError("expected %d workers, have %s" % (n, worker_pids(master_pid)))


def test_admin_reload_raising_workers_forks_cleanly(admin_server, tmp_path):
    """The workers forked from inside an admin request run and exit without
    ever unwinding into the admin handler (a use-after-free under ASan
    before), and the admin session that asked goes on."""
    cfg = tmp_path / "socks5d.conf"
    admin = "admin = %s:%s" % (ADMIN_USER, hash_password(ADMIN_PASS))
    cfg.write_text("%s\nworkers = 1\n" % admin)
    srv = admin_server(config=cfg, workers=None)
    wait_workers(srv.proc.pid, 1)
    with srv.login() as c:
        cfg.write_text("%s\nworkers = 3\n" % admin)
        c.m(M_RELOAD)
        wait_workers(srv.proc.pid, 3)
        # the same admin session still answers, in the master
        c.m(M_RELOAD)
    # stop(): SIGTERM, exit 0, and no sanitizer report from any process
    assert srv.stop() == 0
    srv.proc.assert_clean()


def segments_of(pid):
    return sorted(glob.glob("/dev/shm/socks5d-%d*" % pid))


def test_planted_segment_name_is_neither_used_nor_removed():
    """Someone else's file at /dev/shm/socks5d-PID (the name a master with
    that pid once used): the master starts with a segment of its own, which
    has no name once mapped, and leaves the planted file as it was."""
    port = free_port()
    plant = ('p=/dev/shm/socks5d-$$; printf planted > "$p"; chown 65534:65534 "$p"; '
             'exec "$0" "$@"')
    s = Socks5d(["-l", "127.0.0.1", "-p", str(port), "-w", "1", "--grace", "1"],
                prefix=("sh", "-c", plant))
    try:
        s.wait_ready()
        planted = "/dev/shm/socks5d-%d" % s.pid
        # the segment in use has no name that anyone could open
        assert segments_of(s.pid) == [planted]
        maps = open("/proc/%d/maps" % s.pid).read()
        assert "/dev/shm/socks5d-%d-" % s.pid in maps and "(deleted)" in maps
    finally:
        assert s.stop() == 0
    s.assert_clean()
    with open(planted) as f:
        assert f.read() == "planted"
    os.unlink(planted)
    assert segments_of(s.pid) == []


def test_config_user_name_with_a_control_byte_refused_at_start(tmp_path):
    cfg = tmp_path / "bad.conf"
    cfg.write_text("user = evil\x1b[2Jname:%s\n" % hash_password("pw"))
    r = subprocess.run([socks5d_binary(), "-f", str(cfg), "-l", "127.0.0.1",
                        "-p", str(free_port())], capture_output=True, timeout=20)
    assert r.returncode == 78, r
    err = r.stderr.decode()
    assert "%s:1: user: the user name contains a control byte" % cfg in err, err
    assert "\x1b" not in err


def test_run_as_drops_root_in_master_and_workers(socks5d, echo_server):
    s = socks5d("--run-as", "nobody:nogroup", "--dns-server", "127.0.0.1:9", workers=2)
    s.wait_stderr(r"running as uid 65534 gid 65534")
    procs = [s.pid] + wait_workers(s.pid, 2)
    for pid in procs:
        st = proc_status(pid)
        assert st["Uid"] == ["65534"] * 4, (pid, st["Uid"])
        assert st["Gid"] == ["65534"] * 4, (pid, st["Gid"])
        assert st["Groups"] == ["65534"], (pid, st["Groups"])
        assert int(st["CapEff"][0], 16) == 0 and int(st["CapPrm"][0], 16) == 0, st
    for pid in procs[1:]:
        assert proc_status(pid)["NoNewPrivs"] == ["1"]
    # the proxy still relays
    c, _ = socks_connect_ok(s.port, "127.0.0.1", echo_server.port)
    c.sendall(b"ping")
    assert recv_exact(c, 4) == b"ping"
    c.close()
    # the segment (users and their hashes) has no name the user could open
    assert segments_of(s.pid) == []
    assert s.stop() == 0


def test_run_as_with_reuseport_keeps_the_worker_count_until_restart(admin_server):
    """The kernel groups SO_REUSEPORT sockets by the uid that made them, so
    a worker added after the switch could not get a socket of the group: a
    reload that changes the count says so and keeps the running workers."""
    # a directory the unprivileged master can read on reload
    d = Path(tempfile.mkdtemp(prefix="s5-runas-"))
    os.chmod(d, 0o755)
    cfg = d / "socks5d.conf"
    admin = "admin = %s:%s" % (ADMIN_USER, hash_password(ADMIN_PASS))
    cfg.write_text("%s\nworkers = 1\n" % admin)
    os.chmod(cfg, 0o644)
    srv = admin_server("--run-as", "nobody", "--accept", "reuseport", config=cfg, workers=None)
    srv.proc.wait_stderr(r"running as uid 65534 gid 65534")
    assert int(proc_status(srv.proc.pid)["CapEff"][0], 16) == 0
    before = wait_workers(srv.proc.pid, 1)
    cfg.write_text("%s\nworkers = 2\n" % admin)
    with srv.login() as c:
        c.m(M_RELOAD)
    srv.proc.wait_stderr(r"workers changed to 2: with accept = reuseport and run-as it takes "
                         r"effect at the next start")
    time.sleep(1.5)
    assert worker_pids(srv.proc.pid) == before
    assert "cannot listen" not in srv.proc.stderr_text()
    assert srv.stop() == 0
    shutil.rmtree(d)


def test_run_as_unknown_user_is_refused_at_start():
    r = subprocess.run([socks5d_binary(), "--run-as", "no-such-user-s5", "-l", "127.0.0.1",
                        "-p", str(free_port()), "--dns-server", "127.0.0.1:9"],
                       capture_output=True, timeout=20)
    assert r.returncode == 78, r
    assert "run-as no-such-user-s5: no user 'no-such-user-s5'" in r.stderr.decode()


def test_config_replaced_by_a_link_after_reading_is_not_written_through(admin_server, tmp_path):
    """Whoever can write the configuration's directory replaces the file
    with a link to another file (one that parses); a reload does not read
    it, and a user added at run time does not make the server rewrite it."""
    cfg = tmp_path / "socks5d.conf"
    victim = tmp_path / "victim"
    admin = "admin = %s:%s\n" % (ADMIN_USER, hash_password(ADMIN_PASS))
    victim.write_text(admin + "# precious\n")
    cfg.write_text(admin)
    srv = admin_server(config=cfg)
    cfg.unlink()
    cfg.symlink_to(victim)
    with srv.login() as c:
        assert c.add_user("carol", "carol-pw") == 0  # added, not persisted
        c.m(M_RELOAD, expect=INVALID)
        assert c.add_user("dave", "dave-pw") == 0
    assert victim.read_text() == admin + "# precious\n"
    srv.proc.wait_stderr(r"users not written to it")
    srv.proc.wait_stderr(r"not reloaded: it no longer leads to the file found at start")


def test_config_replaced_by_a_file_of_someone_else_is_not_reloaded(admin_server, tmp_path):
    """A file renamed into the configuration's place by another user, naming
    that user's own administrator: a reload refuses it; the operator's own
    save by rename is read."""
    cfg = tmp_path / "socks5d.conf"
    admin = "admin = %s:%s\n" % (ADMIN_USER, hash_password(ADMIN_PASS))
    cfg.write_text(admin)
    srv = admin_server(config=cfg)
    planted = tmp_path / "planted"
    planted.write_text(admin + "admin = evil:%s\n" % hash_password("evil-pw"))
    os.chown(planted, 65534, 65534)
    os.rename(planted, cfg)
    with srv.login() as c:
        c.m(M_RELOAD, expect=INVALID)
    with pytest.raises(AssertionError):
        srv.login("evil", "evil-pw")
    # the operator's editor: a new file of the same owner renamed into place
    mine = tmp_path / "mine"
    mine.write_text(admin + "user = erin:%s\n" % hash_password("erin-pw"))
    os.rename(mine, cfg)
    with srv.login() as c:
        c.m(M_RELOAD)
        assert "erin" in [u["name"] for u in c.users()]
