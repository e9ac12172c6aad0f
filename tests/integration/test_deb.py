"""The Debian package (make deb): its contents and control fields, lintian,
and the package installed with dpkg on this machine: the service user, the
conffile's owner and mode, the unit's ExecStart command line serving a
CONNECT as that user, a modified conffile kept across a reinstall and an
upgrade, and a purge that leaves neither the user nor /etc/socks5d.

The package is installed for this module only and always purged at its end
(the tests need root; a machine where socks5d is installed already is
refused rather than overwritten)."""

import fcntl
import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from s5lib import EchoServer, closed_port, echo_roundtrip, free_port, socks_connect_ok

ROOT = Path(__file__).resolve().parents[2]
CONFDIR = Path("/etc/socks5d")
CONF = CONFDIR / "socks5d.conf"
UNIT = Path("/lib/systemd/system/socks5d.service")
WANTS = Path("/etc/systemd/system/multi-user.target.wants/socks5d.service")

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="installing a package with dpkg needs root")


def run(cmd, timeout=120, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, **kw)


def dpkg(*args, timeout=300):
    """dpkg ARGS, waiting (bounded) while another dpkg or apt holds its lock."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    end = time.monotonic() + 600
    while True:
        r = run(["dpkg"] + list(args), timeout=timeout, env=env)
        if r.returncode == 2 and "locked by another process" in r.stderr and time.monotonic() < end:
            time.sleep(1)
            continue
        return r


def package_state():
    r = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", "socks5d"])
    return r.stdout.strip() if r.returncode == 0 else ""


def user_exists(name="socks5d"):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def group_exists(name="socks5d"):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


# ---------------------------------------------------------------- the package

@pytest.fixture(scope="module")
def deb():
    r = run(["make", "-C", ROOT, "deb"], timeout=1800)
    assert r.returncode == 0, "make deb failed:\n%s\n%s" % (r.stdout[-4000:], r.stderr[-4000:])
    debs = sorted((ROOT / "build" / "deb").glob("socks5d_*.deb"))
    assert len(debs) == 1, debs
    return debs[0]


@pytest.fixture(scope="module")
def unpacked(deb, tmp_path_factory):
    d = tmp_path_factory.mktemp("deb-x")
    r = run(["dpkg-deb", "-x", deb, d])
    assert r.returncode == 0, r.stderr
    return d


def control_fields(deb):
    r = run(["dpkg-deb", "-f", deb])
    assert r.returncode == 0, r.stderr
    fields, key = {}, None
    for line in r.stdout.splitlines():
        if line.startswith(" ") and key:
            fields[key] += "\n" + line
        else:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def test_deb_holds_the_programs_manuals_unit_and_conffile_with_their_modes(deb):
    r = run(["dpkg-deb", "-c", deb])
    assert r.returncode == 0, r.stderr
    entries = {}
    for line in r.stdout.splitlines():
        f = line.split()
        entries[f[5].rstrip("/")] = (f[0], f[1])
    want = {
        "./usr/sbin/socks5d": "-rwxr-xr-x",
        "./usr/bin/pipoClient": "-rwxr-xr-x",
        "./usr/share/man/man8/socks5d.8.gz": "-rw-r--r--",
        "./usr/share/man/man5/socks5d.conf.5.gz": "-rw-r--r--",
        "./usr/share/man/man1/pipoClient.1.gz": "-rw-r--r--",
        "./lib/systemd/system/socks5d.service": "-rw-r--r--",
        "./usr/share/doc/socks5d/copyright": "-rw-r--r--",
        "./usr/share/doc/socks5d/changelog.Debian.gz": "-rw-r--r--",
        # root's only until postinst hands them to the service user
        "./etc/socks5d": "drwxr-x---",
        "./etc/socks5d/socks5d.conf": "-rw-r-----",
    }
    for path, mode in want.items():
        assert path in entries, "%s missing from the package:\n%s" % (path, r.stdout)
        assert entries[path] == (mode, "root/root"), (path, entries[path])
    for path, (mode, owner) in entries.items():
        assert owner == "root/root", (path, owner)
        assert "w" not in mode[7:], "%s is writable by others: %s" % (path, mode)


def test_deb_binaries_are_stripped_and_manuals_compressed(unpacked):
    for b in ("usr/sbin/socks5d", "usr/bin/pipoClient"):
        r = run(["readelf", "-S", "-W", unpacked / b])
        assert r.returncode == 0, r.stderr
        assert ".symtab" not in r.stdout and ".debug_" not in r.stdout, "%s is not stripped" % b
    for m, src in (("man8/socks5d.8.gz", "socks5d.8"), ("man5/socks5d.conf.5.gz", "socks5d.conf.5"),
                   ("man1/pipoClient.1.gz", "pipoClient.1")):
        r = subprocess.run(["gzip", "-dc", str(unpacked / "usr/share/man" / m)], capture_output=True,
                           timeout=30)
        assert r.returncode == 0 and r.stdout == (ROOT / "man" / src).read_bytes(), m
    assert (unpacked / "lib/systemd/system/socks5d.service").read_bytes() == \
        (ROOT / "dist/socks5d.service").read_bytes()
    assert (unpacked / "etc/socks5d/socks5d.conf").read_bytes() == \
        (ROOT / "dist/socks5d.conf").read_bytes()


def library_packages(path):
    """The packages that ship a library, by any of its names (merged /usr:
    dpkg may know it under /lib or /usr/lib, as the link or its target)."""
    names = set()
    for p in (path, os.path.realpath(path)):
        names.add(p)
        names.add(p[4:] if p.startswith("/usr/") else "/usr" + p)
    pkgs = set()
    for n in names:
        r = run(["dpkg", "-S", n])
        if r.returncode == 0:
            pkgs |= {o.split(":")[0] for o in r.stdout.splitlines()}
    return pkgs


def test_deb_control_names_version_arch_and_every_library_package(deb, unpacked):
    f = control_fields(deb)
    version = run([ROOT / "build" / "socks5d", "--version"]).stdout.split()[-1]
    assert f["Package"] == "socks5d"
    assert f["Version"].startswith(version + "-"), (f["Version"], version)
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    assert f["Architecture"] == arch
    assert deb.name == "socks5d_%s_%s.deb" % (f["Version"], arch)
    assert f["Section"] == "net" and f["Priority"] == "optional"
    assert re.fullmatch(r".+ <[^@\s]+@[^@\s]+>", f["Maintainer"]), f["Maintainer"]
    assert f["Description"].strip()
    depends = {d.split()[0] for d in f["Depends"].split(",")}
    assert "adduser" in depends
    # every library the binaries need directly comes from a package named there
    for b in ("usr/sbin/socks5d", "usr/bin/pipoClient"):
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]",
                            run(["readelf", "-d", unpacked / b]).stdout)
        assert needed, b
        ldd = run(["ldd", unpacked / b]).stdout
        for so in needed:
            m = re.search(r"^\s*%s => (\S+)" % re.escape(so), ldd, re.M)
            assert m, "%s: %s not found by ldd:\n%s" % (b, so, ldd)
            pkgs = library_packages(m.group(1))
            assert pkgs & depends, "%s needs %s (%s) but Depends is %r" % (b, so, pkgs, f["Depends"])
    r = run(["dpkg-deb", "-I", deb, "conffiles"])
    assert r.stdout.split() == [str(CONF)]


def test_lintian_reports_no_errors(deb):
    r = run(["lintian", "--tag-display-limit", "0", "-I", "--pedantic", deb], timeout=600)
    print(r.stdout)
    errors = [line for line in r.stdout.splitlines() if line.startswith("E:")]
    assert not errors, "lintian errors:\n" + r.stdout
    # 0: clean; 1: tags at the fail-on level (errors, by default); 2: lintian itself failed
    assert r.returncode == 0, "lintian exit %d:\n%s%s" % (r.returncode, r.stdout, r.stderr)


# ---------------------------------------------------------------- installed

@pytest.fixture(scope="module")
def machine_lock():
    """One run of these tests at a time on a machine (several checkouts may
    run their suites at once): the package, its user and /etc/socks5d are
    the machine's."""
    f = open("/run/lock/socks5d-test-deb.lock", "w")
    end = time.monotonic() + 900
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > end:
                f.close()
                pytest.fail("another run of test_deb.py holds /run/lock/socks5d-test-deb.lock")
            time.sleep(1)
    try:
        yield
    finally:
        f.close()


@pytest.fixture(scope="module")
def installed(deb, machine_lock):
    if package_state():
        pytest.fail("socks5d is installed on this machine already (%s): this test installs and "
                    "purges its own; purge it first" % package_state())
    if user_exists() or group_exists():
        pytest.fail("a user or group socks5d exists already: the package's purge would remove it")
    try:
        r = dpkg("-i", deb)
        assert r.returncode == 0, "dpkg -i failed:\n%s%s" % (r.stdout, r.stderr)
        yield deb
    finally:
        if package_state():
            dpkg("--purge", "socks5d")
        # What a broken purge left (the purge test reports it) is this
        # module's own: nothing of it stays on the machine.
        if user_exists():
            run(["userdel", "socks5d"])
        if group_exists():
            run(["groupdel", "socks5d"])
        shutil.rmtree(CONFDIR, ignore_errors=True)
        if package_state():
            dpkg("--purge", "socks5d")   # a purge that failed on what was in /etc/socks5d
        assert not package_state(), "socks5d still installed after the module's purge"


class AsServiceUser:
    """A program run as the unit runs it: the service user and group, no
    other groups, no new privileges, umask 0077, $RUNTIME_DIRECTORY."""

    def __init__(self, argv, runtime_dir):
        env = dict(os.environ, RUNTIME_DIRECTORY=str(runtime_dir))
        cmd = ["setpriv", "--reuid", "socks5d", "--regid", "socks5d", "--clear-groups",
               "--no-new-privs", "--"] + [str(a) for a in argv]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env,
                                     preexec_fn=lambda: os.umask(0o077))
        self.lines = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self):
        for raw in iter(self.proc.stderr.readline, b""):
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def text(self):
        with self.cond:
            return "\n".join(self.lines)

    def wait_stderr(self, pattern, timeout=20.0):
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if rx.search(line):
                        return line
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.thread.is_alive()):
                    raise AssertionError("no stderr line matching %r (exit %r); stderr:\n%s"
                                         % (pattern, self.proc.poll(), "\n".join(self.lines[-40:])))
                self.cond.wait(min(left, 0.1))

    def pids(self):
        pids = [self.proc.pid]
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                pids += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
        return pids

    def stop(self, timeout=20.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for p in self.pids():
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(5)
            rc = "timeout (killed)"
        self.thread.join(5)
        return rc


def ids_of(pid):
    with open("/proc/%d/status" % pid) as f:
        st = f.read()
    uids = [int(x) for x in re.search(r"^Uid:\s+(.*)$", st, re.M).group(1).split()]
    gids = [int(x) for x in re.search(r"^Gid:\s+(.*)$", st, re.M).group(1).split()]
    groups = [int(x) for x in re.search(r"^Groups:[ \t]*(.*)$", st, re.M).group(1).split()]
    return uids, gids, groups


@pytest.fixture
def service_dir():
    """A directory of the service user's (as RuntimeDirectory= makes one)."""
    d = Path(tempfile.mkdtemp(prefix="s5it-deb-"))
    u = pwd.getpwnam("socks5d")
    os.chown(d, u.pw_uid, u.pw_gid)
    os.chmod(d, 0o750)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def exec_start():
    """The installed unit's ExecStart= command line, as argv."""
    lines = [l for l in UNIT.read_text().splitlines() if l.startswith("ExecStart=")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0][len("ExecStart="):].lstrip("-@:+!"))


def serve_one_connect(port):
    """One SOCKS5 CONNECT through the proxy to a loopback echo server."""
    echo = EchoServer("127.0.0.1")
    try:
        s, _ = socks_connect_ok(port, "127.0.0.1", echo.port)
        with s:
            echo_roundtrip(s, b"through the packaged socks5d\n")
    finally:
        echo.close()


def test_install_creates_the_system_user_and_a_conffile_only_it_and_root_read(installed):
    assert package_state() == "ii"
    u = pwd.getpwnam("socks5d")
    g = grp.getgrnam("socks5d")
    assert u.pw_gid == g.gr_gid
    assert u.pw_dir == "/nonexistent" and u.pw_shell == "/usr/sbin/nologin"
    assert not os.path.exists("/nonexistent")
    sys_max = 999
    try:
        m = re.search(r"^\s*SYS_UID_MAX\s+(\d+)", Path("/etc/login.defs").read_text(), re.M)
        sys_max = int(m.group(1)) if m else sys_max
    except OSError:
        pass
    assert u.pw_uid <= sys_max, "socks5d is not a system user (uid %d)" % u.pw_uid
    for path, mode in ((CONFDIR, 0o750), (CONF, 0o640)):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (u.pw_uid, g.gr_gid), path
        assert stat.S_IMODE(st.st_mode) == mode, (path, oct(st.st_mode))
    assert g.gr_mem == [], "the group socks5d should have no other member: %r" % g.gr_mem
    # Another unprivileged user cannot read it.
    r = run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
             "cat", CONF])
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    # The service user can.
    r = run(["setpriv", "--reuid", "socks5d", "--regid", "socks5d", "--clear-groups", "cat", CONF])
    assert r.returncode == 0 and r.stdout == (ROOT / "dist/socks5d.conf").read_text(), r.stderr
    assert run(["/usr/sbin/socks5d", "--version"]).stdout.startswith("socks5d ")
    assert run(["/usr/bin/pipoClient", "--help"]).returncode == 0
    # Enabled the way deb-systemd-helper does it, even without a running systemd.
    assert WANTS.is_symlink() and os.readlink(WANTS) == str(UNIT)


def test_installed_unit_passes_systemd_analyze_verify(installed):
    # its binary, its user and its man:socks5d(8) are all the package's now
    r = run(["systemd-analyze", "verify", UNIT], timeout=60)
    said = [l for l in (r.stdout + r.stderr).splitlines() if "socks5d" in l]
    assert r.returncode == 0 and not said, r.stdout + r.stderr


def test_installed_default_conffile_is_accepted_and_listens_on_loopback(installed, service_dir):
    port = free_port()
    svc = AsServiceUser(["/usr/sbin/socks5d", "-f", CONF, "-p", port, "-w", "1",
                         "--dns-server", "127.0.0.1:%d" % closed_port()], service_dir)
    try:
        svc.wait_stderr(r"\bready\b")
        svc.wait_stderr(r"listening on 127\.0\.0\.1 port %d$" % port, timeout=1)
        assert "listening on 0.0.0.0" not in svc.text() and "listening on ::" not in svc.text()
        serve_one_connect(port)
    finally:
        rc = svc.stop()
    assert rc == 0, "exit %r; stderr:\n%s" % (rc, svc.text())


def test_unit_execstart_serves_a_connect_as_the_service_user(installed, service_dir):
    argv = exec_start()
    assert argv[0] == "/usr/sbin/socks5d", argv
    i = argv.index("-f")
    assert argv[i + 1] == str(CONF), argv
    # The unit's command line with a configuration of the test's own.
    port = free_port()
    conf = service_dir / "test.conf"
    conf.write_text("listen = 127.0.0.1\nport = %d\nworkers = 2\ndns-server = 127.0.0.1:%d\n"
                    % (port, closed_port()))
    u = pwd.getpwnam("socks5d")
    os.chown(conf, u.pw_uid, u.pw_gid)
    os.chmod(conf, 0o640)
    run_dir = service_dir / "run"
    run_dir.mkdir(mode=0o750)
    os.chown(run_dir, u.pw_uid, u.pw_gid)
    argv[i + 1] = str(conf)
    svc = AsServiceUser(argv, run_dir)
    try:
        svc.wait_stderr(r"\bready\b")
        svc.wait_stderr(r"admin socket %s/socks5d\.sock" % re.escape(str(run_dir)), timeout=1)
        pids = svc.pids()
        assert len(pids) == 3, pids   # the master and its 2 workers
        for p in pids:
            uids, gids, groups = ids_of(p)
            assert uids == [u.pw_uid] * 4 and gids == [u.pw_gid] * 4 and groups == [], (p, uids, gids)
        serve_one_connect(port)
    finally:
        rc = svc.stop()
    assert rc == 0, "exit %r; stderr:\n%s" % (rc, svc.text())


def repack(deb, out_dir, version, conf_extra=None):
    """The package under another version (an upgrade), its default
    configuration changed when conf_extra is given."""
    d = out_dir / ("pkg-" + version)
    assert run(["dpkg-deb", "-R", deb, d]).returncode == 0
    ctl = d / "DEBIAN" / "control"
    ctl.write_text(re.sub(r"^Version: .*$", "Version: " + version, ctl.read_text(), flags=re.M))
    if conf_extra:
        with open(d / "etc/socks5d/socks5d.conf", "a") as f:
            f.write(conf_extra)
    out = out_dir / ("socks5d_%s.deb" % version)
    r = run(["dpkg-deb", "--root-owner-group", "-b", d, out])
    assert r.returncode == 0, r.stderr
    return out


def assert_conffile_owned_by_service_user():
    u = pwd.getpwnam("socks5d")
    for path, mode in ((CONFDIR, 0o750), (CONF, 0o640)):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (u.pw_uid, u.pw_gid, mode), path


def test_reinstall_and_upgrade_keep_a_modified_conffile(installed, tmp_path):
    uid = pwd.getpwnam("socks5d").pw_uid
    local = CONF.read_text().replace("#workers = 4", "workers = 1") + "# this host's change\n"
    CONF.write_text(local)

    r = dpkg("-i", installed)      # the same version again
    assert r.returncode == 0, r.stdout + r.stderr
    assert CONF.read_text() == local
    assert pwd.getpwnam("socks5d").pw_uid == uid
    assert_conffile_owned_by_service_user()

    # An upgrade whose default configuration is unchanged keeps the local file
    # without asking.
    up1 = repack(installed, tmp_path, control_fields(installed)["Version"] + "+up1")
    r = dpkg("-i", up1)
    assert r.returncode == 0, r.stdout + r.stderr
    assert CONF.read_text() == local
    assert_conffile_owned_by_service_user()

    # One whose default changed too: dpkg asks; told to keep the local file,
    # it puts the new default beside it.
    up2 = repack(installed, tmp_path, control_fields(installed)["Version"] + "+up2",
                 conf_extra="# a newer default\n")
    r = dpkg("--force-confdef", "--force-confold", "-i", up2)
    assert r.returncode == 0, r.stdout + r.stderr
    assert CONF.read_text() == local
    assert (CONFDIR / "socks5d.conf.dpkg-dist").read_text().endswith("# a newer default\n")
    assert pwd.getpwnam("socks5d").pw_uid == uid
    assert_conffile_owned_by_service_user()


def as_service_user(*argv):
    return run(["setpriv", "--reuid", "socks5d", "--regid", "socks5d", "--clear-groups", "--"]
               + list(argv))


def test_service_user_cannot_make_a_reinstall_hand_it_a_file_of_roots(installed, tmp_path):
    # The service user owns /etc/socks5d: it can put a link to any file of
    # root's where the conffile was.  A reinstall (root's dpkg and postinst)
    # must neither give that file to the user nor write through the link.
    saved = CONF.read_bytes()
    victim = tmp_path / "root-only"
    victim.write_text("root's secret\n")
    os.chmod(victim, 0o600)
    r = as_service_user("ln", "-sfn", victim, CONF)
    assert r.returncode == 0, r.stderr
    try:
        r = dpkg("-i", installed)
        st = os.stat(victim)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600), \
            "the reinstall handed %s to the service user:\n%s%s" % (victim, r.stdout, r.stderr)
        assert victim.read_text() == "root's secret\n"
        assert r.returncode != 0 and str(CONF) in r.stderr, r.stdout + r.stderr
    finally:
        if CONF.is_symlink():
            CONF.unlink()
        CONF.write_bytes(saved)
    # With the file back, the reinstall goes through and hands it back.
    r = dpkg("--force-confdef", "--force-confold", "-i", installed)
    assert r.returncode == 0, r.stdout + r.stderr
    assert CONF.read_bytes() == saved
    assert_conffile_owned_by_service_user()

    # Links where dpkg puts its copies of the conffile are replaced, never
    # written through, whether the local file is kept or the new one taken.
    for n, keep in enumerate((True, False)):
        for suffix in (".dpkg-dist", ".dpkg-new", ".dpkg-old", ".dpkg-tmp"):
            r = as_service_user("ln", "-sfn", victim, str(CONF) + suffix)
            assert r.returncode == 0, r.stderr
        CONF.write_bytes(saved + b"# local\n")
        up = repack(installed, tmp_path, control_fields(installed)["Version"] + "+links%d" % n,
                    conf_extra="# newer default %d\n" % n)
        r = dpkg("--force-confdef", "--force-confold" if keep else "--force-confnew", "-i", up)
        assert r.returncode == 0, r.stdout + r.stderr
        st = os.stat(victim)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600), (keep, r.stdout)
        assert victim.read_text() == "root's secret\n", keep
        assert_conffile_owned_by_service_user()


def test_purge_removes_the_user_group_and_configuration(installed):
    # leftovers of an interrupted rewrite by socks5d are removed too
    u = pwd.getpwnam("socks5d")
    tmp = CONFDIR / "socks5d.conf.Ab12Cd"
    tmp.write_text("user = x:y\n")
    os.chown(tmp, u.pw_uid, u.pw_gid)
    # and what the service user (it owns the directory) made there in their
    # place cannot make the purge fail
    r = as_service_user("mkdir", "-p", CONFDIR / "socks5d.conf.XyZ123" / "sub")
    assert r.returncode == 0, r.stderr
    r = dpkg("--purge", "socks5d")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not package_state()
    assert not user_exists() and not group_exists()
    assert not CONFDIR.exists(), list(CONFDIR.iterdir())
    assert not os.path.exists("/usr/sbin/socks5d") and not UNIT.exists()
    assert not WANTS.is_symlink()
