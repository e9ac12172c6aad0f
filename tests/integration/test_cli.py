"""Command line: usage, version, bad values (exit 64), config errors (66, 78),
--hash-password."""

import os
import re
import subprocess
import warnings

import pytest

from s5lib import SANITIZER_MARKERS, socks5d_binary

TRY = "Try 'socks5d --help' for more information."


def run(*args, input=None, timeout=20):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1")
    r = subprocess.run([socks5d_binary(), *[str(a) for a in args]], input=input,
                       capture_output=True, timeout=timeout, env=env)
    err = r.stderr.decode("utf-8", "replace")
    for m in SANITIZER_MARKERS:
        assert m not in err, "sanitizer report:\n" + err
    return r


def test_version(socks5d_bin):
    r = run("--version")
    assert r.returncode == 0
    assert r.stdout.decode() == "socks5d 0.1.0\n"
    r2 = run("-v")
    assert r2.returncode == 0 and r2.stdout == r.stdout


def test_help_lists_options(socks5d_bin):
    r = run("--help")
    assert r.returncode == 0
    out = r.stdout.decode()
    for opt in ("--help", "--version", "--config", "--listen", "--port", "--user", "--workers",
                "--handshake-timeout", "--connect-timeout", "--idle-timeout", "--grace",
                "--buffer-size", "--anonymous", "--allow-anonymous", "--hash-password",
                "--no-idle-cleanup"):
        assert opt in out, "%s missing from --help" % opt
    assert run("-h").stdout == r.stdout


BAD = [
    (["--workers", "abc"], r"--workers", "abc"),
    (["-w", "0"], r"(-w|--workers)", "0"),
    (["--workers", "65"], r"--workers", "65"),
    (["--port", "70000"], r"--port", "70000"),
    (["-p", "0x"], r"(-p|--port)", "0x"),
    (["--port", "-1"], r"--port", "-1"),
    (["-m", "put"], r"(-m|--doh-method)", "put"),
    (["--buffer-size", "1"], r"--buffer-size", "1"),
    (["--buffer-size", "2000000"], r"--buffer-size", "2000000"),
    (["--anonymous", "sometimes"], r"--anonymous", "sometimes"),
    (["--log-level", "loud"], r"--log-level", "loud"),
    (["--handshake-timeout", "soon"], r"--handshake-timeout", "soon"),
    (["-l", "not-an-address"], r"(-l|--listen)", "not-an-address"),
    (["--admin-port", "99999"], r"--admin-port", "99999"),
    (["-u", "nopassword"], r"(-u|--user)", None),
    (["-u", "alice:"], r"-u: the password is empty", None),
    (["--user=alice:"], r"--user: the password is empty", None),
    (["-a", "root:"], r"-a: the password is empty", None),
    (["-u", ":secret"], r"-u: the user name is empty", None),
    (["-u", "al\x1bice:secret"], r"-u: the user name contains a control byte", None),
    (["-a", "ro\not:secret"], r"-a: the user name contains a control byte", None),
    (["-u", " alice:secret"], r"-u: the user name begins or ends with a blank", None),
    (["-u", "a" * 256 + ":secret"], r"-u: the user name is longer than 255 bytes", None),
    (["-u", "alice:" + "p" * 256], r"-u: the password is longer than 255 bytes", None),
    (["--doh-url", "ftp://x/"], r"--doh-url", None),
]


@pytest.mark.parametrize("args,opt,val", BAD, ids=[" ".join(b[0])[:40] for b in BAD])
def test_bad_option_value_exits_64_with_one_line(socks5d_bin, args, opt, val):
    r = run(*args)
    err = r.stderr.decode().splitlines()
    assert r.returncode == 64, (r.returncode, err)
    assert len(err) == 2, err
    assert err[0].startswith("socks5d: "), err
    assert re.search(opt, err[0]), err
    if val is not None:
        assert val in err[0], err
    assert err[1] == TRY
    assert r.stdout == b""


def test_unknown_option_exits_64(socks5d_bin):
    r = run("--frobnicate")
    err = r.stderr.decode().splitlines()
    assert r.returncode == 64
    assert len(err) == 2, err
    assert "frobnicate" in err[0]
    assert err[1] == TRY


def test_missing_option_argument_exits_64(socks5d_bin):
    r = run("--port")
    err = r.stderr.decode().splitlines()
    assert r.returncode == 64
    assert len(err) == 2 and "port" in err[0] and err[1] == TRY, err


def test_stray_argument_exits_64(socks5d_bin):
    r = run("extra-arg")
    assert r.returncode == 64
    assert r.stderr.decode().splitlines()[-1] == TRY


def test_missing_config_file_exits_66(socks5d_bin, tmp_path):
    missing = tmp_path / "nope" / "socks5d.conf"
    r = run("-f", missing, "-l", "127.0.0.1", "-p", "1")
    err = r.stderr.decode().splitlines()
    assert r.returncode == 66, (r.returncode, err)
    assert len(err) == 1, err
    assert str(missing) in err[0]


def test_invalid_config_file_exits_78_with_file_line(socks5d_bin, tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("# comment\n\nworkers = abc\nport = 1080\nno-such-key = 1\n")
    r = run("-f", conf)
    err = r.stderr.decode().splitlines()
    assert r.returncode == 78, (r.returncode, err)
    assert any(l.startswith("socks5d: %s:3: " % conf) for l in err), err
    assert any(l.startswith("socks5d: %s:5: " % conf) for l in err), err


def test_config_line_without_equals_exits_78(socks5d_bin, tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("port 1080\n")
    r = run("-f", conf)
    assert r.returncode == 78
    assert ("%s:1: " % conf) in r.stderr.decode()


def test_config_plaintext_user_refused_exits_78(socks5d_bin, tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("user = alice:plaintext\n")
    r = run("-f", conf)
    assert r.returncode == 78
    assert ("socks5d: %s:1: " % conf) in r.stderr.decode()


def test_hash_password_prints_yescrypt_hash(socks5d_bin):
    r = run("--hash-password", input=b"correct horse\n")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert out.startswith("$y$"), out
    assert out.endswith("\n") and out.count("\n") == 1
    h = out.strip()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    assert crypt.crypt("correct horse", h) == h
    assert crypt.crypt("wrong horse", h) != h
    # salted: two hashes of the same password differ
    assert run("--hash-password", input=b"correct horse\n").stdout.decode().strip() != h


@pytest.mark.parametrize("args", [
    ["--buffer-size", "4096"], ["--buffer-size", "1048576"], ["-w", "1"],
    ["--anonymous", "never"], ["--log-level", "debug"], ["-N"], ["-D"],
    ["-m", "post"], ["--doh-method-post"], ["--no-dns-fallback"],
    ["-L", "127.0.0.1", "-P", "18080"], ["--doh-url", "https://127.0.0.1:8053/dns-query"],
    ["--doh-ip", "127.0.0.1", "--doh-port", "8053", "--doh-host", "localhost",
     "--doh-path", "/getnsrecord", "--doh-query", "?dns="],
], ids=lambda a: " ".join(a))
def test_documented_option_values_accepted(socks5d, args):
    p = socks5d(*args, workers=None if "-w" in args else 1)
    assert p.alive()


def _wait_port(port, timeout=20.0):
    import socket
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("port %d never accepted connections" % port)


def test_log_level_warn_hides_info_and_debug(socks5d, nginx):
    from s5lib import socks_connect_ok
    p = socks5d("--log-level", "warn", wait_ready=False)
    _wait_port(p.port)
    s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port)
    s.close()
    p.stop()
    noisy = [l for l in p.err_lines if " info: " in l or " debug: " in l]
    assert not noisy, noisy


def test_log_level_debug_adds_debug_lines(socks5d):
    p = socks5d("--log-level", "debug")
    assert any(" debug: " in l for l in p.err_lines), p.err_lines


def test_long_options_with_equals_sign(socks5d, nginx):
    from s5lib import socks_connect_ok
    p = socks5d("--handshake-timeout=5", "--idle-timeout=60", "--log-level=info")
    s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port)
    s.close()
