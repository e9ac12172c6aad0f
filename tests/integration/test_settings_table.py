"""One table behind every setting (shared/settings.c, settings_table).

Walks the rows of the table and checks that each one is in --help, in
man/socks5d.8 and in README.md's settings table, is accepted in a
configuration file (with its unit suffixes), comes back through pipoClient
`get` (the pipo get by key), and that pipoClient `set` changes exactly the
rows that change while running.  Also the pipo get/set by key on the wire,
and the numeric codes of the first protocol version mapped to table rows.
"""

import json
import os
import pwd
import re
import struct
import subprocess

import pytest

from admin_lib import (ADMIN_PASS, ADMIN_USER, INVALID, M_BUFFER_SIZE, NOT_FOUND, Q_BUFFER_SIZE,
                       Cursor, admin_server, run_client, s8)  # noqa: F401 (a fixture)
from s5lib import REPO, free_port, hash_password, socks5d_binary

Q_SETTING, M_SETTING = 0x17, 0x0f


def table_rows():
    """(key, type, when, flag names, short options) of every row, in order."""
    src = (REPO / "shared" / "settings.c").read_text()
    body = src[src.index("const struct setting_desc settings_table[] = {"):]
    body = body[:body.index("\n};")]
    rows = []
    for chunk in re.split(r"\n    (?=\{\")", body)[1:]:
        m = re.match(r'\{"([a-z-]+)", SETTING_([A-Z0-9_]+),', chunk)
        assert m, chunk
        when = re.search(r"SETTING_(RUNTIME|RELOAD|START)\b", chunk).group(1)
        flags = re.findall(r'\{"([a-z-]+)", (?:\'\w\'|0), "[a-z]+"\}', chunk)
        shorts = re.findall(r", '(\w)',", chunk)
        rows.append((m.group(1), m.group(2), when, flags, shorts))
    return rows


ROWS = table_rows()
KEYS = [r[0] for r in ROWS]


def test_the_table_is_read():
    # guards the parsing above: a handful of rows known to exist
    assert len(ROWS) >= 32
    for key in ("port", "workers", "buffer-size", "doh-url", "run-as", "dns-timeout"):
        assert key in KEYS
    assert ("splice", "BOOL", "RUNTIME", ["no-splice"], []) in ROWS


def help_text():
    r = subprocess.run([socks5d_binary(), "--help"], capture_output=True, timeout=20)
    assert r.returncode == 0
    return r.stdout.decode()


@pytest.mark.parametrize("key,type_,when,flags,shorts", ROWS, ids=KEYS)
def test_every_row_is_in_help_man_page_and_readme(key, type_, when, flags, shorts):
    text = help_text()
    man = (REPO / "man" / "socks5d.8").read_text()
    readme = (REPO / "README.md").read_text()
    table = "\n".join(l for l in readme.splitlines() if l.startswith("|"))
    for name in [key] + flags:
        assert re.search(r"--%s\b" % re.escape(name), text), "--%s missing from --help" % name
        assert ("\\-\\-" + name.replace("-", "\\-")) in man, "--%s missing from socks5d(8)" % name
        assert "`--%s" % name in table or "--%s`" % name in table or \
            re.search(r"`[^`]*--%s\b[^`]*`" % re.escape(name), table), \
            "--%s missing from README's settings table" % name
    for c in shorts:
        assert re.search(r"-%s, --" % c, text), "-%s missing from --help" % c


def make_keytab(path, principal):
    """A keytab with one key of principal, made offline by MIT's ktutil."""
    script = ("addent -password -p %s -k 1 -e aes256-cts-hmac-sha1-96\nsample-key-pw\n"
              "wkt %s\nquit\n" % (principal, path))
    subprocess.run(["ktutil"], input=script.encode(), check=True, capture_output=True, timeout=20)
    assert os.path.getsize(path) > 0


# A value for every row: not the default where that is safe, with units
# where the row has them.  A row added without a sample fails here.
def samples(tmp_path):
    me = pwd.getpwuid(os.getuid()).pw_name
    keytab = str(tmp_path / "socks.keytab")
    make_keytab(keytab, "rcmd/localhost@SOCKS.TEST")
    return {
        "listen": ("127.0.0.1", None), "port": (str(free_port()), None),
        "admin-addr": ("127.0.0.1", None), "admin-port": (str(free_port()), None),
        "admin-socket": (str(tmp_path / "file.sock"), None), "run-as": (me, me),
        "metrics": ("127.0.0.1:%d" % free_port(), None),
        "workers": ("1", None), "accept": ("exclusive", "exclusive"),
        "anonymous": ("never", "never"), "handshake-timeout": ("2m", 120),
        "connect-timeout": ("7s", 7), "idle-timeout": ("1h", 3600), "idle-cleanup": ("no", False),
        "grace": ("1", None), "buffer-size": ("32K", 32768), "splice": ("off", False),
        "sockmap": ("yes", True),
        "client-congestion": ("reno", "reno"), "target-congestion": ("reno", "reno"),
        "pipe-size": ("256KiB", 262144), "dissectors": ("no", False),
        "log-level": ("info", "info"), "dns-server": ("127.0.0.1:5353", None),
        "dns-timeout": ("3", 3), "dns-cache-size": ("100", 100), "dns-fallback": ("no", False),
        "doh-url": ("https://127.0.0.1:8443/dns-query", "https://127.0.0.1:8443/dns-query"),
        "doh-ip": ("::1", "::1"), "doh-port": ("8443", 8443), "doh-host": ("dns.test", "dns.test"),
        "doh-path": ("/q", "/q"), "doh-query": ("?d=", "?d="), "doh-method": ("post", "post"),
        "doh-ca-file": ("/nonexistent/ca.pem", "/nonexistent/ca.pem"),
        "doh-connections": ("2", 2), "max-unauth-per-source": ("32", 32),
        "bind-timeout": ("90s", 90), "bind-ports": ("20000-20100", "20000-20100"),
        "udp-idle-timeout": ("5m", 300), "udp-filter": ("address-port", "address-port"),
        "proxy-protocol": ("10.99.0.0/16,2001:db8::/32", "10.99.0.0/16,2001:db8::/32"),
        "gssapi-keytab": (keytab, keytab), "gssapi-service": ("rcmd/localhost", "rcmd/localhost"),
        "gssapi-protection": ("confidentiality", "confidentiality"), "gssapi-nec": ("yes", True),
    }


def test_every_row_goes_through_the_file_the_server_and_pipoclient(admin_server, tmp_path):
    sample = samples(tmp_path)
    assert set(sample) == set(KEYS), "rows without a sample: %s" % (set(KEYS) - set(sample))
    conf = tmp_path / "every.conf"
    lines = ["%s = %s" % (k, sample[k][0]) for k in KEYS]
    lines.append("admin = %s:%s" % (ADMIN_USER, hash_password(ADMIN_PASS)))
    conf.write_text("\n".join(lines) + "\n")
    srv = admin_server(config=conf)

    r = run_client("--json", "get", server=srv)
    assert r.returncode == 0, r.err
    got = json.loads(r.out)
    assert set(got) == set(KEYS)
    for key in KEYS:
        want = sample[key][1]  # None: the command line of the test wins
        if want is not None:
            assert got[key] == want, (key, got[key], want)
        r = run_client("--json", "get", key, server=srv)
        assert r.returncode == 0, (key, r.err)
        assert json.loads(r.out) == {key: got[key]}

    for key, _, when, _, _ in ROWS:
        r = run_client("set", key, sample[key][0], server=srv)
        if when == "RUNTIME":
            assert r.returncode == 0, (key, r.err)
        else:
            assert r.returncode == 2, (key, r.err)
            assert ("at start only" if when == "START" else "at reload") in r.err, r.err


def test_config_file_takes_unit_suffixes_and_refuses_bad_values(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("buffer-size = 64X\nidle-timeout = 2w\nrun-as = bad user\n")
    r = subprocess.run([socks5d_binary(), "-f", str(conf)], capture_output=True, timeout=20)
    err = r.stderr.decode()
    assert r.returncode == 78, err
    for n, v in ((1, "64X"), (2, "2w"), (3, "bad user")):
        assert re.search(r"%s:%d: .*'%s'" % (re.escape(str(conf)), n, v), err), err


def test_run_as_option_takes_user_or_user_and_group(tmp_path):
    for bad in ("", "a:b:c", "-x", "us er", "a:"):
        r = subprocess.run([socks5d_binary(), "--run-as", bad], capture_output=True, timeout=20)
        assert r.returncode == 64, (bad, r.stderr)
        assert "--run-as" in r.stderr.decode().splitlines()[0]


# ---------------------------------------------------------------- the wire

def str16(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def text_of(payload):
    c = Cursor(payload)
    t = c.str16()
    c.done()
    return t


def test_pipo_get_and_set_by_key(admin_server):
    srv = admin_server()
    with srv.login() as c:
        f = c.q(Q_SETTING, s8("buffer-size"))
        assert text_of(f.payload) == "65536"
        c.q(Q_SETTING, s8("no-such-key"), expect=NOT_FOUND)
        f = c.m(M_SETTING, s8("buffer-size") + str16("128K"))
        assert text_of(f.payload) == "131072"
        # the numeric code of the same row sees the change, and the reverse
        assert c.u32_query(Q_BUFFER_SIZE) == 131072
        c.m(M_BUFFER_SIZE, struct.pack(">I", 8192))
        assert text_of(c.q(Q_SETTING, s8("buffer-size")).payload) == "8192"
        # refused: a value out of range, a row read at start only
        c.m(M_SETTING, s8("buffer-size") + str16("100"), expect=INVALID)
        c.m(M_BUFFER_SIZE, struct.pack(">I", 100), expect=INVALID)
        c.m(M_SETTING, s8("port") + str16("1081"), expect=INVALID)
        c.m(M_SETTING, s8("workers") + str16("1"), expect=INVALID)
        c.m(M_SETTING, s8("buffer-size") + str16("12x"), expect=INVALID)
        c.m(M_SETTING, s8("colour") + str16("blue"), expect=NOT_FOUND)
        assert text_of(c.q(Q_SETTING, s8("buffer-size")).payload) == "8192"
