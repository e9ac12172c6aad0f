"""Credential dissectors: P records on stdout for clear-text credentials
that crossed the proxy and that the server accepted.

Real servers on loopback (tests/integration/mail_servers.py): nginx with
auth_basic (and TLS), dovecot (POP3, IMAP, submission), vsftpd.  Real
clients: curl through --socks5 and --socks5-hostname, and Python's poplib
and imaplib (through PySocks) where curl cannot be told to use USER/PASS
or LOGIN.  Exactly one correct record per credential, none for a wrong
password, none for TLS, none with -N or after a SIGHUP that turns them off.
"""

import imaplib
import poplib
import re
import signal
import subprocess
import time

import pytest
import socks

from mail_servers import USERS, AuthNginx, Dovecot, Vsftpd
from s5lib import LOG_DATE_RE, connect, greeting, recv_exact

MODES = [("socks5", "127.0.0.1"), ("socks5-hostname", "localhost")]
MODE_IDS = ["socks5", "socks5-hostname"]
# A failing curl shows the proxy's stderr: let it say what happened.
DEBUG = ("--log-level", "debug")


def esc(s):
    """The record's escaping (as the access log's): bytes outside
    printable ASCII, space and backslash become \\xHH."""
    out = []
    for b in s.encode():
        if 0x20 < b < 0x7F and b != 0x5C:
            out.append(chr(b))
        else:
            out.append("\\x%02x" % b)
    return "".join(out)


@pytest.fixture(scope="module")
def web():
    n = AuthNginx()
    yield n
    n.close()


@pytest.fixture(scope="module")
def mail():
    d = Dovecot()
    yield d
    d.close()


@pytest.fixture(scope="module")
def ftpd():
    v = Vsftpd()
    yield v
    v.close()


def start(socks5d, *args, **kw):
    """socks5d(...), then wait (bounded) until a worker answers a greeting.
    A worker that has not finished starting leaves connections in the
    listen queue: without this, a slow start looks like a timeout of the
    client under test."""
    p = socks5d(*args, **kw)
    end = time.monotonic() + 30
    while True:
        try:
            s = connect("127.0.0.1", p.port, timeout=2)
            with s:
                s.sendall(greeting((0x00, 0x02)))
                if len(recv_exact(s, 2, timeout=2)) == 2:
                    return p
        except (OSError, TimeoutError, EOFError):
            pass
        if time.monotonic() > end:
            raise AssertionError("no worker answered within 30 s; stderr:\n" + p.stderr_text()[-3000:])
        time.sleep(0.1)


def curl(proxy, mode, url, *args, input=None, proxy_user=None):
    auth = "%s@" % proxy_user if proxy_user else ""
    cmd = ["curl", "-sS", "--max-time", "20", "--connect-timeout", "10",
           "-x", "%s://%s127.0.0.1:%d" % (mode.replace("-hostname", "h"), auth, proxy.port)]
    cmd += list(args) + [url]
    r = subprocess.run(cmd, capture_output=True, timeout=40, input=input)
    if r.returncode:
        r.stderr += ("\n--- socks5d stderr tail:\n" + proxy.stderr_text()[-3000:]).encode()
    return r


def a_lines(proxy, port):
    return [f for f in (l.split("\t") for l in proxy.log_lines())
            if len(f) == 15 and f[2] == "A" and f[6] == str(port)]


def p_lines(proxy, port=None):
    return [f for f in (l.split("\t") for l in proxy.log_lines())
            if len(f) > 2 and f[2] == "P" and (port is None or f[5] == str(port))]


def sessions_done(proxy, port, count, timeout=10.0):
    """Wait for `count` access records to port: a session's P records are
    queued before its A record, so after this the P records are all in."""
    proxy.wait_log(lambda f: len(f) == 15 and f[2] == "A" and f[6] == str(port), count=count,
                   timeout=timeout)


def check_record(f, proto, dest, port, user, password, proxy_user="anonymous"):
    assert len(f) == 8, "expected 8 tab-separated fields: %r" % (f,)
    assert LOG_DATE_RE.match(f[0]), f
    t = time.strptime(f[0], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(time.mktime(t) - time.timezone - time.time()) < 120, f[0]
    assert f[1:] == [proxy_user, "P", proto, dest, str(port), esc(user), esc(password)], f


# ---------------------------------------------------------------- HTTP

@pytest.mark.parametrize("mode,dest", MODES, ids=MODE_IDS)
def test_http_basic_right_password_recorded_once(socks5d, web, mode, dest):
    p = start(socks5d, *DEBUG)
    r = curl(p, mode, "http://%s:%d/private/a.txt" % (dest, web.port), "-u", "alice:s3cret")
    assert r.returncode == 0 and r.stdout == b"secret page a\n", r.stderr
    sessions_done(p, web.port, 1)
    recs = p_lines(p)
    assert len(recs) == 1, recs
    check_record(recs[0], "HTTP", dest, web.port, "alice", USERS["alice"])


@pytest.mark.parametrize("mode,dest", MODES, ids=MODE_IDS)
def test_http_wrong_password_not_recorded(socks5d, web, mode, dest):
    p = start(socks5d, *DEBUG)
    r = curl(p, mode, "http://%s:%d/private/a.txt" % (dest, web.port), "-u", "alice:nope",
             "-o", "/dev/null", "-w", "%{http_code}")
    assert r.returncode == 0 and r.stdout == b"401", (r.stdout, r.stderr)
    sessions_done(p, web.port, 1)
    assert p_lines(p) == []


@pytest.mark.parametrize("mode,dest", MODES, ids=MODE_IDS)
def test_http_two_requests_on_one_keepalive_connection_two_records(socks5d, web, mode, dest):
    p = start(socks5d, *DEBUG)
    base = "http://%s:%d/private/" % (dest, web.port)
    r = curl(p, mode, base + "b.txt", "-u", "bob:" + USERS["bob"], base + "a.txt")
    assert r.returncode == 0 and r.stdout == b"secret page a\nsecret page b\n", r.stderr
    sessions_done(p, web.port, 1)
    time.sleep(0.3)
    assert len(a_lines(p, web.port)) == 1, "curl did not reuse the connection"
    recs = p_lines(p)
    assert len(recs) == 2, recs
    for f in recs:
        check_record(f, "HTTP", dest, web.port, "bob", USERS["bob"])


def test_http_record_names_the_proxy_user(socks5d, web):
    p = start(socks5d, "-u", "carol:pw-carol", *DEBUG)
    r = curl(p, "socks5", "http://127.0.0.1:%d/private/a.txt" % web.port, "-u", "alice:s3cret",
             proxy_user="carol:pw-carol")
    assert r.returncode == 0, r.stderr
    sessions_done(p, web.port, 1)
    recs = p_lines(p)
    assert len(recs) == 1, recs
    check_record(recs[0], "HTTP", "127.0.0.1", web.port, "alice", "s3cret", proxy_user="carol")


def test_large_download_without_credentials_no_record(socks5d, web):
    p = start(socks5d, *DEBUG)
    r = curl(p, "socks5", "http://127.0.0.1:%d/big.bin" % web.port, "-o", "/dev/null",
             "-w", "%{size_download}")
    assert r.returncode == 0 and r.stdout == b"1048576", (r.stdout, r.stderr)
    sessions_done(p, web.port, 1)
    assert p_lines(p) == []


@pytest.mark.parametrize("mode,dest", MODES, ids=MODE_IDS)
def test_tls_session_yields_no_record(socks5d, web, mode, dest):
    p = start(socks5d, *DEBUG)
    r = curl(p, mode, "https://%s:%d/private/a.txt" % (dest, web.tls_port), "-k",
             "-u", "alice:s3cret")
    assert r.returncode == 0 and r.stdout == b"secret page a\n", r.stderr
    sessions_done(p, web.tls_port, 1)
    assert p_lines(p) == []


# ---------------------------------------------------------------- POP3

@pytest.mark.parametrize("mode,dest", MODES, ids=MODE_IDS)
def test_pop3_auth_plain_recorded(socks5d, mail, mode, dest):
    p = start(socks5d, *DEBUG)
    r = curl(p, mode, "pop3://%s:%d/" % (dest, mail.pop3_port), "-u", "alice:s3cret")
    assert r.returncode == 0, r.stderr
    sessions_done(p, mail.pop3_port, 1)
    recs = p_lines(p)
    assert len(recs) == 1, recs
    check_record(recs[0], "POP3", dest, mail.pop3_port, "alice", "s3cret")


def socks_pop3(proxy_port, dest, port):
    class P(poplib.POP3):
        def _create_socket(self, timeout):
            s = socks.socksocket()
            s.set_proxy(socks.SOCKS5, "127.0.0.1", proxy_port, rdns=dest != "127.0.0.1")
            s.settimeout(timeout)
            s.connect((dest, port))
            return s
    return P(dest, port, timeout=10)


@pytest.mark.parametrize("mode,dest", MODES, ids=MODE_IDS)
def test_pop3_user_pass_recorded_after_a_wrong_one(socks5d, mail, mode, dest):
    p = start(socks5d, *DEBUG)
    c = socks_pop3(p.port, dest, mail.pop3_port)
    try:
        c.capa()
        c.user("bob")
        with pytest.raises(poplib.error_proto):
            c.pass_("wrong")
        c.user("bob")
        c.pass_(USERS["bob"])
        c.stat()
    finally:
        c.quit()
    sessions_done(p, mail.pop3_port, 1)
    recs = p_lines(p)
    assert len(recs) == 1, recs
    check_record(recs[0], "POP3", dest, mail.pop3_port, "bob", USERS["bob"])


def test_pop3_wrong_password_not_recorded(socks5d, mail):
    p = start(socks5d, *DEBUG)
    r = curl(p, "socks5", "pop3://127.0.0.1:%d/" % mail.pop3_port, "-u", "alice:nope")
    assert r.returncode != 0
    sessions_done(p, mail.pop3_port, 1)
    assert p_lines(p) == []


# ---------------------------------------------------------------- IMAP

@pytest.mark.parametrize("mode,dest", MODES, ids=MODE_IDS)
def test_imap_authenticate_plain_recorded(socks5d, mail, mode, dest):
    p = start(socks5d, *DEBUG)
    r = curl(p, mode, "imap://%s:%d/" % (dest, mail.imap_port), "-u", "alice:s3cret")
    assert r.returncode == 0 and b"INBOX" in r.stdout, r.stderr
    sessions_done(p, mail.imap_port, 1)
    recs = p_lines(p)
    assert len(recs) == 1, recs
    check_record(recs[0], "IMAP", dest, mail.imap_port, "alice", "s3cret")


@pytest.mark.parametrize("mode,dest", MODES, ids=MODE_IDS)
def test_imap_authenticate_login_recorded(socks5d, mail, mode, dest):
    p = start(socks5d, *DEBUG)
    r = curl(p, mode, "imap://%s:%d/" % (dest, mail.imap_port), "-u", "alice:s3cret",
             "--login-options", "AUTH=LOGIN")
    assert r.returncode == 0 and b"INBOX" in r.stdout, r.stderr
    sessions_done(p, mail.imap_port, 1)
    recs = p_lines(p)
    assert len(recs) == 1, recs
    check_record(recs[0], "IMAP", dest, mail.imap_port, "alice", "s3cret")


def socks_imap(proxy_port, dest, port):
    class I(imaplib.IMAP4):
        def _create_socket(self, timeout):
            s = socks.socksocket()
            s.set_proxy(socks.SOCKS5, "127.0.0.1", proxy_port, rdns=dest != "127.0.0.1")
            s.settimeout(timeout)
            s.connect((dest, port))
            return s
    return I(dest, port, timeout=10)


@pytest.mark.parametrize("mode,dest", MODES, ids=MODE_IDS)
def test_imap_login_quoted_string_recorded_after_a_wrong_one(socks5d, mail, mode, dest):
    # bob's password has a space, a quote and a backslash: imaplib sends
    # it as a quoted string with escapes.
    p = start(socks5d, *DEBUG)
    c = socks_imap(p.port, dest, mail.imap_port)
    try:
        with pytest.raises(imaplib.IMAP4.error):
            c.login("bob", "wrong")
        c.login("bob", USERS["bob"])
        c.select("INBOX")
    finally:
        c.logout()
    sessions_done(p, mail.imap_port, 1)
    recs = p_lines(p)
    assert len(recs) == 1, recs
    check_record(recs[0], "IMAP", dest, mail.imap_port, "bob", USERS["bob"])


def test_imap_login_literal_recorded(socks5d, mail):
    # imaplib sends a literal {n} (synchronising: it waits for "+") for a
    # string it cannot quote; force one through its literal attribute.
    p = start(socks5d, *DEBUG)
    c = socks_imap(p.port, "127.0.0.1", mail.imap_port)
    try:
        c.literal = USERS["alice"].encode()
        typ, _ = c._simple_command("LOGIN", "alice")
        assert typ == "OK"
    finally:
        c.logout()
    sessions_done(p, mail.imap_port, 1)
    recs = p_lines(p)
    assert len(recs) == 1, recs
    check_record(recs[0], "IMAP", "127.0.0.1", mail.imap_port, "alice", "s3cret")


# ---------------------------------------------------------------- FTP

@pytest.mark.parametrize("mode,dest", MODES, ids=MODE_IDS)
def test_ftp_user_pass_recorded(socks5d, ftpd, mode, dest):
    p = start(socks5d, *DEBUG)
    r = curl(p, mode, "ftp://%s:%d/hello.txt" % (dest, ftpd.port), "-u", "bob:" + USERS["bob"])
    assert r.returncode == 0 and r.stdout == b"hello over ftp\n", r.stderr
    sessions_done(p, ftpd.port, 1)
    time.sleep(0.3)  # the data connection's session, to another port
    recs = p_lines(p)
    assert len(recs) == 1, recs
    check_record(recs[0], "FTP", dest, ftpd.port, "bob", USERS["bob"])


def test_ftp_wrong_password_not_recorded(socks5d, ftpd):
    p = start(socks5d, *DEBUG)
    r = curl(p, "socks5", "ftp://127.0.0.1:%d/hello.txt" % ftpd.port, "-u", "alice:nope")
    assert r.returncode == 67, r.stderr
    sessions_done(p, ftpd.port, 1)
    assert p_lines(p) == []


# ---------------------------------------------------------------- SMTP

MAIL = b"From: alice@s5it.test\r\nTo: bob@s5it.test\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.mark.parametrize("mode,dest", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_smtp_auth_recorded(socks5d, mail, mode, dest, mech):
    p = start(socks5d, *DEBUG)
    r = curl(p, mode, "smtp://%s:%d/" % (dest, mail.smtp_port), "-u", "alice:s3cret",
             "--login-options", "AUTH=" + mech, "--mail-from", "alice@s5it.test",
             "--mail-rcpt", "bob@s5it.test", "-T", "-", input=MAIL)
    assert r.returncode == 0, r.stderr
    sessions_done(p, mail.smtp_port, 1)
    recs = p_lines(p)
    assert len(recs) == 1, recs
    check_record(recs[0], "SMTP", dest, mail.smtp_port, "alice", "s3cret")


def test_smtp_wrong_password_not_recorded(socks5d, mail):
    p = start(socks5d, *DEBUG)
    r = curl(p, "socks5", "smtp://127.0.0.1:%d/" % mail.smtp_port, "-u", "alice:nope",
             "--mail-from", "alice@s5it.test", "--mail-rcpt", "bob@s5it.test", "-T", "-",
             input=MAIL)
    assert r.returncode != 0
    sessions_done(p, mail.smtp_port, 1)
    assert p_lines(p) == []


# ---------------------------------------------------------------- switching off

def test_no_dissectors_option_records_nothing(socks5d, web, mail):
    p = start(socks5d, "-N", *DEBUG)
    r = curl(p, "socks5", "http://127.0.0.1:%d/private/a.txt" % web.port, "-u", "alice:s3cret")
    assert r.returncode == 0, r.stderr
    r = curl(p, "socks5", "pop3://127.0.0.1:%d/" % mail.pop3_port, "-u", "alice:s3cret")
    assert r.returncode == 0, r.stderr
    sessions_done(p, web.port, 1)
    sessions_done(p, mail.pop3_port, 1)
    assert p_lines(p) == []


def test_sighup_toggles_dissectors_for_new_sessions(socks5d, web, tmp_path):
    conf = tmp_path / "s.conf"
    conf.write_text("dissectors = no\n")
    p = start(socks5d, "-f", conf, *DEBUG, workers=1)
    url = "http://127.0.0.1:%d/private/a.txt" % web.port

    def reload(text, n):
        conf.write_text(text)
        start = p.n_err()
        p.send_signal(signal.SIGHUP)
        p.wait_stderr(r"configuration .* reloaded", timeout=5, start=start)
        # the master has published it; the worker reads it from its
        # control socket at its next loop turn
        time.sleep(0.5)

    assert curl(p, "socks5", url, "-u", "alice:s3cret").returncode == 0
    sessions_done(p, web.port, 1)
    assert p_lines(p) == []
    reload("dissectors = yes\n", 1)
    assert curl(p, "socks5", url, "-u", "alice:s3cret").returncode == 0
    sessions_done(p, web.port, 2)
    assert len(p_lines(p)) == 1
    reload("# back off\ndissectors = no\n", 2)
    assert curl(p, "socks5", url, "-u", "alice:s3cret").returncode == 0
    sessions_done(p, web.port, 3)
    assert len(p_lines(p)) == 1


def test_record_escapes_a_tab_in_the_password(socks5d):
    """A fake POP3 server is enough to show the escaping end to end: the
    password holds a tab and a backslash; the record keeps 8 fields."""
    import socket
    import threading

    from s5lib import socks_connect_ok
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(10)
    port = srv.getsockname()[1]

    def serve():
        c, _ = srv.accept()
        with c:
            c.settimeout(10)
            c.sendall(b"+OK fake\r\n")
            buf = b""
            for want in (b"USER", b"PASS"):
                while b"\r\n" not in buf:
                    d = c.recv(100)
                    if not d:
                        return
                    buf += d
                line, buf = buf.split(b"\r\n", 1)
                assert line.startswith(want)
                c.sendall(b"+OK\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    p = start(socks5d, *DEBUG)
    s, _ = socks_connect_ok(p.port, "127.0.0.1", port)
    with s:
        s.settimeout(10)
        assert s.recv(100).startswith(b"+OK")
        s.sendall(b"USER eve\r\n")
        assert s.recv(100) == b"+OK\r\n"
        s.sendall(b"PASS a\tb\\c\r\n")
        assert s.recv(100) == b"+OK\r\n"
    t.join(10)
    srv.close()
    sessions_done(p, port, 1)
    recs = p_lines(p)
    assert len(recs) == 1, recs
    check_record(recs[0], "POP3", "127.0.0.1", port, "eve", "a\tb\\c")
    assert recs[0][7] == "a\\x09b\\x5cc"
