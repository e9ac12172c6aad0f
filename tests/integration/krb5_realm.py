"""A real MIT Kerberos realm on loopback for the GSS-API (RFC 1961) tests.

The session fixture ``krb5_realm`` (registered in conftest.py) creates the
realm SOCKS.TEST in a temporary directory and starts krb5kdc on 127.0.0.1
(UDP and TCP, one port below 32768: krb5kdc cannot listen on port 0 and
report the port). Principals:

  alice@SOCKS.TEST          password Krb5Realm.PASSWORDS["alice"]
  bob@SOCKS.TEST            password Krb5Realm.PASSWORDS["bob"]
  rcmd/localhost@SOCKS.TEST random key, in the keytab
  rcmd/127.0.0.1@SOCKS.TEST random key, in the keytab
  host/localhost@SOCKS.TEST random key, not in the keytab

Nothing reads /etc/krb5.conf: every program gets its files through the
environment (Krb5Realm.env): KRB5_CONFIG, KRB5_KDC_PROFILE, KRB5CCNAME
(alice's default ccache, filled by the fixture) and KRB5_KTNAME (the service
keytab). krb5.conf turns off DNS and reverse lookups, so a host-based
service name rcmd@HOST names the principal rcmd/HOST literally: both
rcmd/localhost and rcmd/127.0.0.1 exist.

Tickets: the KDC grants lifetimes down to a second, so
``kinit("bob", lifetime="2s")`` gets a ticket that expires soon. The
initiator's own library refuses to use an expired ticket (gssapi raises
"Ticket expired") before anything reaches the server, so a test of a server
rejecting one makes the first context token while the ticket is valid
(gss_client's make_context()) and sends it once the ticket has expired
plus the clock skew an acceptor tolerates, Krb5Realm.CLOCKSKEW (3 s in
krb5.conf instead of MIT's 300): realm.wait_expired(ccache).
"""

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REALM = "SOCKS.TEST"


def free_port_udp_tcp(host="127.0.0.1", lo=20000, hi=32767, tries=200):
    """A port in [lo, hi] that is free for both UDP and TCP on host (probe
    binds; the caller must still cope with losing a race for it)."""
    rnd = random.Random(os.getpid() ^ int(time.monotonic_ns()))
    for _ in range(tries):
        p = rnd.randint(lo, hi)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                t.bind((host, p))
                u.bind((host, p))
            return p
        except OSError:
            continue
    raise RuntimeError("no port free for UDP and TCP on %s in %d..%d" % (host, lo, hi))


def _tool(name):
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    found = shutil.which(name)
    if not found:
        raise RuntimeError("%s not found (Debian packages krb5-kdc, krb5-admin-server, "
                           "krb5-user: make deps)" % name)
    return found


class Krb5Realm:
    """A running KDC and its files. Attributes:

    realm      "SOCKS.TEST"
    dir        Path of the temporary directory holding everything
    port       the KDC's port on 127.0.0.1 (UDP and TCP)
    krb5_conf  Path of krb5.conf      (KRB5_CONFIG)
    kdc_conf   Path of kdc.conf       (KRB5_KDC_PROFILE)
    keytab     Path of the service keytab with rcmd/localhost, rcmd/127.0.0.1
    ccache     Path of alice's default credential cache (KRB5CCNAME)
    kdc_log    Path of the KDC's log
    env        os.environ plus the four KRB5_* variables above
    """

    # Seconds an acceptor tolerates past a ticket's end (MIT's default is
    # 300): small, so that a test can present an expired ticket soon.
    CLOCKSKEW = 3
    PASSWORDS = {"alice": "alice-pw-1961", "bob": "bob-pw-1961"}
    SERVICES = ("rcmd/localhost", "rcmd/127.0.0.1")
    # A service of the realm that is not in the keytab: a client that asks
    # for it gets a ticket the proxy cannot decrypt.
    OTHER_SERVICES = ("host/localhost",)

    def __init__(self, root=None):
        self.realm = REALM
        self.dir = Path(root) if root else Path(tempfile.mkdtemp(prefix="s5it-krb5-"))
        self.krb5_conf = self.dir / "krb5.conf"
        self.kdc_conf = self.dir / "kdc.conf"
        self.keytab = self.dir / "services.keytab"
        self.ccache = self.dir / "cc.alice"
        self.kdc_log = self.dir / "kdc.log"
        self.proc = None
        self.port = None
        self.env = dict(os.environ)
        self.env.update({
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self.kdc_conf),
            "KRB5CCNAME": "FILE:%s" % self.ccache,
            "KRB5_KTNAME": "FILE:%s" % self.keytab,
        })
        # Debugging trace of the krb5 library when asked for.
        if os.environ.get("S5IT_KRB5_TRACE"):
            self.env["KRB5_TRACE"] = str(self.dir / "krb5.trace")

    # ------------------------------------------------------------ setup

    def _write_confs(self):
        d = self.dir
        self.krb5_conf.write_text("""[libdefaults]
    default_realm = {realm}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
    clockskew = {skew}
    ticket_lifetime = 10h
    forwardable = false

[realms]
    {realm} = {{
        kdc = 127.0.0.1:{port}
    }}

[domain_realm]
    localhost = {realm}
    127.0.0.1 = {realm}

[logging]
    default = FILE:{d}/krb5lib.log
""".format(realm=REALM, port=self.port, d=d, skew=self.CLOCKSKEW))
        self.kdc_conf.write_text("""[kdcdefaults]
    kdc_ports = {port}
    kdc_tcp_ports = {port}
    kdc_listen = 127.0.0.1:{port}
    kdc_tcp_listen = 127.0.0.1:{port}

[realms]
    {realm} = {{
        database_name = {d}/principal
        key_stash_file = {d}/stash
        acl_file = {d}/kadm5.acl
        max_life = 10h 0m 0s
        max_renewable_life = 1d 0h 0m 0s
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
    }}

[logging]
    kdc = FILE:{log}
    default = FILE:{d}/kdc-lib.log
""".format(realm=REALM, port=self.port, d=d, log=self.kdc_log))
        (d / "kadm5.acl").write_text("")
        # Servers that drop privileges (danted runs as nobody) still read
        # krb5.conf; the keytab and the database stay root-only (0600).
        os.chmod(d, 0o755)
        for f in (self.krb5_conf, self.kdc_conf):
            os.chmod(f, 0o644)

    def run(self, argv, check=True, input=None, env=None, timeout=30):
        """Run a krb5 tool with the realm's environment."""
        r = subprocess.run(argv, input=input, env=env or self.env, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError("%s failed (%d): %s%s" % (" ".join(argv), r.returncode,
                                                         r.stdout, r.stderr))
        return r

    def kadmin(self, query):
        return self.run([_tool("kadmin.local"), "-r", REALM, "-q", query])

    def _create_db(self):
        self.run([_tool("kdb5_util"), "create", "-s", "-r", REALM,
                  "-P", "master-%d" % os.getpid(), "-d", str(self.dir / "principal")])
        for name, pw in self.PASSWORDS.items():
            self.kadmin("addprinc -pw %s %s" % (pw, name))
        for svc in self.SERVICES + self.OTHER_SERVICES:
            self.kadmin("addprinc -randkey %s" % svc)
        self.kadmin("ktadd -k %s %s" % (self.keytab, " ".join(self.SERVICES)))

    def _start_kdc(self):
        # krb5kdc cannot report a port of its choosing: probe one, start, and
        # retry with another port when it lost the race for it.
        last = ""
        for _ in range(5):
            self.port = free_port_udp_tcp()
            self._write_confs()
            out = open(self.dir / "krb5kdc.out", "wb")
            self.proc = subprocess.Popen([_tool("krb5kdc"), "-n", "-r", REALM],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
            out.close()
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
                except OSError:
                    time.sleep(0.05)
            last = (self.dir / "krb5kdc.out").read_text(errors="replace")
            self._stop_kdc()
        raise RuntimeError("krb5kdc did not start: %s" % last)

    def start(self):
        # The database does not depend on the port; the confs do.
        self.port = 0
        self._write_confs()
        self._create_db()
        self._start_kdc()
        self.kinit("alice")
        return self

    # ------------------------------------------------------------ use

    def principal(self, name):
        return name if "@" in name else "%s@%s" % (name, REALM)

    def ccache_path(self, name):
        """A fresh ccache path in the realm's directory (not created)."""
        return self.dir / ("cc.%s.%d" % (name.replace("/", "_"), time.monotonic_ns()))

    def kinit(self, principal="alice", ccache=None, lifetime=None, password=None):
        """Get principal's TGT into ccache (a Path or str; default: the
        realm's default ccache for alice, a fresh file for anyone else).
        lifetime is kinit's -l syntax ("5s", "1m"); the KDC grants what is
        asked up to max_life (10 h). Returns the ccache Path."""
        user = principal.split("@")[0]
        if ccache is None:
            ccache = self.ccache if user == "alice" else self.ccache_path(user)
        ccache = Path(ccache)
        pw = password if password is not None else self.PASSWORDS[user]
        argv = [_tool("kinit"), "-c", "FILE:%s" % ccache]
        if lifetime:
            argv += ["-l", str(lifetime)]
        argv.append(self.principal(principal))
        self.run(argv, input=pw + "\n")
        return ccache

    def ticket_end(self, ccache):
        """The end time (epoch seconds) of the TGT in ccache."""
        import gssapi  # python3-gssapi; only this helper needs it here
        cc = "FILE:%s" % ccache
        creds = gssapi.Credentials(usage="initiate", store={"ccache": cc})
        return time.time() + creds.lifetime

    def wait_expired(self, ccache, end=None):
        """Sleep until a ticket of ccache that ends at end (default: the
        TGT's end, read now) is past end + CLOCKSKEW for any acceptor."""
        if end is None:
            end = self.ticket_end(ccache)
        left = end + self.CLOCKSKEW + 1 - time.time()
        if left > 0:
            time.sleep(left)

    def env_for(self, ccache):
        """The realm's environment with KRB5CCNAME set to ccache."""
        e = dict(self.env)
        e["KRB5CCNAME"] = "FILE:%s" % ccache
        return e

    def klist(self, ccache=None):
        return self.run([_tool("klist"), "-c", "FILE:%s" % (ccache or self.ccache)]).stdout

    def kdc_log_text(self):
        try:
            return self.kdc_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------ teardown

    def _stop_kdc(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def close(self, remove=True):
        self._stop_kdc()
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def krb5_realm():
    """The session's realm (Krb5Realm), KDC running, alice's TGT in
    realm.ccache. KRB5_CONFIG of this process points at its krb5.conf for
    the session, so python-gssapi in the tests finds the KDC."""
    realm = Krb5Realm()
    try:
        realm.start()
    except BaseException:
        realm.close(remove=False)
        raise
    old = os.environ.get("KRB5_CONFIG")
    os.environ["KRB5_CONFIG"] = str(realm.krb5_conf)
    yield realm
    if old is None:
        os.environ.pop("KRB5_CONFIG", None)
    else:
        os.environ["KRB5_CONFIG"] = old
    realm.close()
