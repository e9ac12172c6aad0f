"""Passwords given with -u and -a do not stay readable in /proc/PID/cmdline
of the master or of any worker (every local user can read those files),
and they still log in."""

from s5lib import auth_msg, connect, greeting, recv_exact

USER_PW = "u-secret-4711"
ADMIN_PW = "a-secret-0815"


def cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read()


def login(port, user, password):
    s = connect("127.0.0.1", port)
    with s:
        s.sendall(greeting((0x02,)))
        assert recv_exact(s, 2) == b"\x05\x02"
        s.sendall(auth_msg(user, password))
        return recv_exact(s, 2)


def test_passwords_are_not_in_the_cmdline_of_master_and_workers(socks5d):
    p = socks5d("-u", "alice:" + USER_PW, "--admin=root:" + ADMIN_PW, workers=2)
    workers = p.workers()
    assert len(workers) == 2, workers
    for pid in [p.pid] + workers:
        text = cmdline(pid)
        assert b"alice:" in text and b"root:" in text, text  # the names stay
        assert USER_PW.encode() not in text, (pid, text)
        assert ADMIN_PW.encode() not in text, (pid, text)
        # nor their lengths: one '*' each
        assert b"alice:*\0" in text and b"root:*\0" in text, text
    assert login(p.port, "alice", USER_PW) == b"\x01\x00"
    assert login(p.port, "root", ADMIN_PW) == b"\x01\x00"
    assert login(p.port, "alice", "*") == b"\x01\x01"
