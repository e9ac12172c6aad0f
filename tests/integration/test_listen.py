"""Listening defaults, tested inside a private network namespace (only lo
exists there, so binding the wildcard address exposes nothing)."""

import json
import subprocess

import pytest

from s5lib import Socks5d


@pytest.fixture(scope="module")
def ns_echo(netns):
    helper, ports = netns.start_helper("serve")
    return int(ports[0])


def probe(netns, proxy_host, proxy_port, target_port):
    r = netns.python("probe", "--proxy", proxy_port, "--proxy-host", proxy_host,
                     "--target", "127.0.0.1", "--port", target_port, "--atyp", 1)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def start_in_ns(netns, args):
    p = Socks5d(args + ["--grace", "1", "-w", "1"], prefix=netns.prefix())
    try:
        p.wait_ready()
    except AssertionError:
        p.stop()
        raise
    return p


def test_default_listen_is_dual_stack_wildcard_on_port_1080(netns, ns_echo):
    p = start_in_ns(netns, [])
    try:
        for host in ("127.0.0.1", "::1"):
            res = probe(netns, host, 1080, ns_echo)
            assert res.get("reply", "")[:4] == "0500", (host, res)
            assert res.get("echo"), res
    finally:
        p.stop()
    p.assert_clean()


def test_port_option_with_default_listen(netns, ns_echo):
    p = start_in_ns(netns, ["-p", "2080"])
    try:
        for host in ("127.0.0.1", "::1"):
            res = probe(netns, host, 2080, ns_echo)
            assert res.get("reply", "")[:4] == "0500", (host, res)
    finally:
        p.stop()
    p.assert_clean()


def test_listen_address_in_use_fails_at_start(netns):
    blocker = subprocess.Popen(netns.prefix() + ["/usr/bin/python3", "-c", """
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 3080)); s.listen(1)
print("ready", flush=True); sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert blocker.stdout.readline().startswith(b"ready")
        p = Socks5d(["-l", "127.0.0.1", "-p", "3080", "-w", "1"], prefix=netns.prefix())
        try:
            rc = p.proc.wait(10)
        finally:
            p.stop()
        assert rc != 0
        assert "3080" in p.stderr_text() or "in use" in p.stderr_text().lower()
        for m in ("AddressSanitizer", "LeakSanitizer", "runtime error"):
            assert m not in p.stderr_text()
    finally:
        blocker.stdin.close()
        blocker.wait(5)
