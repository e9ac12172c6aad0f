"""SOCKS5 GSS-API (RFC 1961) reference: Dante against Dante, and the tests'
own client (gss_client.py) against Dante's server.

Dante's socksify and sockd are Debian's source rebuilt with GSS-API
(make dante-gssapi -> build/dante-gss, or $DANTE_GSS); the realm is the
krb5_realm fixture's MIT KDC. These tests pin down the wire behaviour the
clients expect; the helpers socksify_echo() and gss_client.echo_transfer()
take any proxy's host and port, so the same clients run against socks5d.

Levels: 0 clear (not in RFC 1961; Dante's "clear"), 1 integrity,
2 confidentiality. Dante grants exactly the level the client asks for or
closes the connection.
"""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import gssapi
import pytest

import gss_client
from gss_client import GssSocksClient, ServerAbort, ServerClosed
from krb5_realm import free_port_udp_tcp

LEVELS = {0: "clear", 1: "integrity", 2: "confidentiality"}
MB = 1 << 20
REPO = Path(__file__).resolve().parents[2]


def dante_dir():
    return Path(os.environ.get("DANTE_GSS", REPO / "build" / "dante-gss"))


@pytest.fixture(scope="session")
def dante_gss():
    """The Dante build with GSS-API; a failure (not a skip) when missing."""
    d = dante_dir()
    for f in ("bin/socksify", "sbin/sockd", "lib/libdsocksd.so.0"):
        if not (d / f).exists():
            pytest.fail("%s missing: run make dante-gssapi (or set DANTE_GSS)" % (d / f))
    return d


def _listening(port):
    """True when something listens on TCP 127.0.0.1:port (/proc, so the
    probe is not a connection the server logs)."""
    want = ":%04X" % port
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1] == "0100007F" + want and parts[3] == "0A":
                return True
    return False


# ------------------------------------------------------------ Dante's server

class Danted:
    """sockd with GSS-API on 127.0.0.1:PORT; every file in its own tmp dir.
    enctypes: Dante's gssapi.enctype value ("clear", "integrity",
    "confidentiality", several separated by spaces, or None for Dante's
    default integrity+confidentiality); nec: accept the level byte unwrapped."""

    def __init__(self, dante, realm, enctypes, nec=False):
        self.dir = Path(tempfile.mkdtemp(prefix="s5it-danted-"))
        self.log = self.dir / "danted.log"
        self.conf = self.dir / "danted.conf"
        extra = ""
        if enctypes:
            extra += "    gssapi.enctype: %s\n" % enctypes
        if nec:
            extra += "    clientcompatibility: necgssapi\n"
        # gssapi.* must be in the client rule: the GSS-API negotiation
        # happens before socks rules are looked at. danted sets KRB5_KTNAME
        # itself from gssapi.keytab.
        self.conf_template = """logoutput: {log}
debug: 1
internal: 127.0.0.1 port = {port}
external: 127.0.0.1
clientmethod: none
socksmethod: gssapi
user.privileged: root
user.unprivileged: nobody
client pass {{
    from: 127.0.0.0/8 to: 0.0.0.0/0
    socksmethod: gssapi
    gssapi.keytab: FILE:{keytab}
    gssapi.servicename: rcmd
{extra}    log: connect disconnect error
}}
socks pass {{
    from: 127.0.0.0/8 to: 127.0.0.0/8
    command: connect
    socksmethod: gssapi
    log: connect disconnect error
}}
"""
        self.realm = realm
        self.dante = dante
        self.extra = extra
        # sockd cannot take port 0: a probed port, another one if sockd
        # lost it to someone else meanwhile.
        for attempt in range(3):
            self.port = free_port_udp_tcp()
            if self._start(last=attempt == 2):
                return

    def _start(self, last):
        self.conf.write_text(self.conf_template.format(
            log=self.log, port=self.port, keytab=self.realm.keytab, extra=self.extra))
        out = open(self.dir / "sockd.out", "wb")
        self.proc = subprocess.Popen(
            [str(self.dante / "sbin" / "sockd"), "-f", str(self.conf),
             "-p", str(self.dir / "sockd.pid"), "-N", "1"],
            env=self.realm.env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        out.close()
        deadline = time.monotonic() + 20
        while not _listening(self.port) or self.proc.poll() is not None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                if not last:
                    return False
                pytest.fail("sockd did not start (files in %s):\n%s\n%s" % (
                    self.dir, (self.dir / "sockd.out").read_text(errors="replace"),
                    self.log_text()))
            time.sleep(0.05)
        return True

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, needle, timeout=10):
        """The log once it contains needle (danted writes it from its
        children, after the fact); fails the test otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            t = self.log_text()
            if needle in t:
                return t
            if time.monotonic() > deadline:
                pytest.fail("%r not in danted's log %s:\n%s" % (needle, self.log, t[-3000:]))
            time.sleep(0.1)

    def stop(self, remove=False):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def danted(dante_gss, krb5_realm):
    """danted(enctypes, nec=False) -> a running Danted, stopped after the test."""
    started = []

    def start(enctypes, nec=False):
        d = Danted(dante_gss, krb5_realm, enctypes, nec)
        started.append(d)
        return d

    yield start
    # A failed test's danted files stay for a look (the path is in the
    # failure message); a passing test's go.
    for d in started:
        d.stop(remove=True)


# ------------------------------------------------------------ Dante's client

def socksify_echo(proxy_host, proxy_port, level, echo_host, echo_port, payload,
                  realm, ccache=None, nec=False, dante=None, timeout=120):
    """payload through socksify (Dante's client with GSS-API at level) and
    nc to an echo server, via the SOCKS5 proxy at proxy_host:proxy_port;
    returns the bytes nc received back (nc half-closes after its input).

    proxy_host must be an IPv4 address or a name (a Dante client limit);
    Dante's client asks for rcmd@<reverse lookup of the proxy address>, so
    127.0.0.1 becomes rcmd/localhost. SOCKS_AUTOADD_LANROUTES=no: otherwise
    libdsocksd routes 127.0.0.0/8 (every local network) directly, and the
    transfer silently bypasses the proxy."""
    dante = Path(dante or dante_dir())
    work = Path(tempfile.mkdtemp(prefix="s5it-socksify-"))
    conf = work / "socks.conf"
    compat = "    clientcompatibility: necgssapi\n" if nec else ""
    conf.write_text("""debug: 1
logoutput: {work}/socks-client.log
route {{
    from: 0.0.0.0/0 to: 127.0.0.1/32 port = {kdc} via: direct
}}
route {{
    from: 0.0.0.0/0 to: 0.0.0.0/0 via: {ph} port = {pp}
    proxyprotocol: socks_v5
    protocol: tcp
    method: gssapi
    gssapi.servicename: rcmd
    gssapi.enctype: {enc}
{compat}}}
""".format(work=work, kdc=realm.port, ph=proxy_host, pp=proxy_port, enc=LEVELS[level],
           compat=compat))
    src = work / "in.bin"
    dst = work / "out.bin"
    src.write_bytes(payload)
    env = realm.env_for(ccache or realm.ccache)
    env.update({"SOCKS_CONF": str(conf), "SOCKS_AUTOADD_LANROUTES": "no",
                "SOCKS_USEFULLPATH": "1", "SOCKS_LIBDIR": str(dante / "lib")})
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        r = subprocess.run([str(dante / "bin" / "socksify"), "nc", "-N", echo_host,
                            str(echo_port)], stdin=fin, stdout=fout, stderr=subprocess.PIPE,
                           env=env, timeout=timeout)
    got = dst.read_bytes()
    if r.returncode != 0:
        log = (work / "socks-client.log").read_text(errors="replace") \
            if (work / "socks-client.log").exists() else ""
        raise RuntimeError("socksify nc exited %d (files in %s): %s\n%s" % (
            r.returncode, work, r.stderr.decode(errors="replace"), log[-3000:]))
    shutil.rmtree(work, ignore_errors=True)
    return got


def connect_line(level, user="alice"):
    """What danted logs for a GSS-API session's CONNECT at level."""
    return "gssapi/%s%%%s@SOCKS.TEST@" % (LEVELS[level], user)


# ------------------------------------------------------------ tests

@pytest.mark.parametrize("level", [0, 1, 2], ids=["clear", "integrity", "confidentiality"])
def test_socksify_echo_through_danted(level, danted, krb5_realm, echo_server):
    d = danted(LEVELS[level])
    payload = os.urandom(MB)
    got = socksify_echo("127.0.0.1", d.port, level, echo_server.host, echo_server.port,
                        payload, krb5_realm)
    assert len(got) == len(payload)
    assert got == payload
    log = d.wait_log(connect_line(level))
    assert "tcp/connect [" in log


@pytest.mark.parametrize("level", [0, 1, 2], ids=["clear", "integrity", "confidentiality"])
def test_gss_client_echo_through_danted(level, danted, krb5_realm, echo_server):
    d = danted(LEVELS[level])
    payload = os.urandom(MB)
    got = gss_client.echo_transfer("127.0.0.1", d.port, echo_server.host, echo_server.port,
                                   level, payload, ccache=krb5_realm.ccache)
    assert len(got) == len(payload)
    assert got == payload
    d.wait_log(connect_line(level))


def test_gss_client_split_writes_through_danted(danted, krb5_realm, echo_server):
    """Every negotiation message one byte per write: Dante reassembles."""
    d = danted("integrity")
    got = gss_client.echo_transfer("127.0.0.1", d.port, echo_server.host, echo_server.port,
                                   1, b"split-" * 1000, ccache=krb5_realm.ccache,
                                   split_writes=True)
    assert got == b"split-" * 1000


def test_gss_client_nec_clear_through_danted(danted, krb5_realm, echo_server):
    d = danted("clear", nec=True)
    got = gss_client.echo_transfer("127.0.0.1", d.port, echo_server.host, echo_server.port,
                                   0, b"nec" * 5000, ccache=krb5_realm.ccache, nec=True)
    assert got == b"nec" * 5000


def test_gss_client_as_bob(danted, krb5_realm, echo_server):
    d = danted("confidentiality")
    cc = krb5_realm.kinit("bob")
    got = gss_client.echo_transfer("127.0.0.1", d.port, echo_server.host, echo_server.port,
                                   2, b"bob", ccache=cc)
    assert got == b"bob"
    d.wait_log(connect_line(2, "bob"))


def _negotiated(d, krb5_realm, **kw):
    c = GssSocksClient("127.0.0.1", d.port, ccache=krb5_realm.ccache, **kw)
    assert c.negotiate_method() == 0x01
    return c


def test_danted_refuses_level_3(danted, krb5_realm):
    """Per-message protection (3) is not something Dante offers: it closes."""
    d = danted("clear integrity confidentiality")
    with _negotiated(d, krb5_realm) as c:
        assert c.establish_context()
        with pytest.raises((ServerClosed, ServerAbort)):
            c.negotiate_protection(3)


def test_danted_refuses_a_level_it_does_not_offer(danted, krb5_realm):
    d = danted("integrity")
    with _negotiated(d, krb5_realm) as c:
        c.establish_context()
        with pytest.raises((ServerClosed, ServerAbort)):
            c.negotiate_protection(2)


def test_danted_rejects_a_corrupted_context_token(danted, krb5_realm):
    d = danted("integrity")
    with _negotiated(d, krb5_realm) as c:
        with pytest.raises((ServerClosed, ServerAbort)):
            c.establish_context(corrupt_first=True)


def test_danted_rejects_a_ticket_for_another_service(danted, krb5_realm):
    """host/localhost exists in the realm but not in the proxy's keytab."""
    d = danted("integrity")
    with _negotiated(d, krb5_realm, service="host@localhost") as c:
        with pytest.raises((ServerClosed, ServerAbort)):
            c.establish_context()


def test_danted_rejects_a_corrupted_protection_token(danted, krb5_realm):
    d = danted("integrity")
    with _negotiated(d, krb5_realm) as c:
        c.establish_context()
        with pytest.raises((ServerClosed, ServerAbort)):
            c.negotiate_protection(1, corrupt_token=True)


def test_danted_drops_a_client_that_stops_mid_token(danted, krb5_realm):
    """Half a context message, then nothing: the client knob works and the
    server still answers nothing it should not (no method reply twice, no
    01 01 for a partial token)."""
    d = danted("integrity")
    with _negotiated(d, krb5_realm) as c:
        assert c.establish_context(stop_after=10) is False
        c.sock.settimeout(1.0)
        with pytest.raises(OSError):  # socket.timeout: nothing comes back
            c.sock.recv(1)


def test_danted_rejects_an_expired_ticket(danted, krb5_realm):
    """The first token made while bob's 2-second ticket was valid, sent
    once it is past its end and the realm's clock skew."""
    d = danted("integrity")
    cc = krb5_realm.kinit("bob", lifetime="2s")
    end = krb5_realm.ticket_end(cc)
    tok = gss_client.first_token("rcmd@localhost", cc)
    krb5_realm.wait_expired(cc, end)
    with _negotiated(d, krb5_realm) as c:
        with pytest.raises((ServerClosed, ServerAbort)):
            c.establish_context(first_token=tok)


def test_an_expired_ticket_is_refused_by_the_client_library(krb5_realm):
    """What a client without the trick above gets: nothing is sent."""
    cc = krb5_realm.kinit("bob", lifetime="1s")
    krb5_realm.wait_expired(cc)
    with pytest.raises(gssapi.exceptions.GSSError, match="expired"):
        gss_client.first_token("rcmd@localhost", cc)


def test_a_fresh_first_token_is_accepted(danted, krb5_realm, echo_server):
    """The control of the expired-ticket test: the same path with a valid
    ticket establishes the context (the failure above is the expiry)."""
    d = danted("integrity")
    cc = krb5_realm.kinit("bob")
    c = GssSocksClient("127.0.0.1", d.port, ccache=cc)
    with c:
        assert c.negotiate_method() == 0x01
        tok = c.make_context()
        assert c.establish_context(first_token=tok)
        assert c.negotiate_protection(1) == 1
