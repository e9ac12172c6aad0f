"""CONNECT through socks5d to a real nginx: IPv4, IPv6 and domain targets,
with curl, PySocks and raw sockets."""

import subprocess
import uuid

import pytest
import socks  # PySocks

from s5lib import http_body, http_get_raw, socks_connect_ok, socks_open


def curl(*args, timeout=60):
    return subprocess.run(["curl", "-sS", "--max-time", "30", *args],
                          capture_output=True, timeout=timeout)


@pytest.mark.parametrize("option, host", [
    ("--socks5", "127.0.0.1"),
    ("--socks5-hostname", "localhost"),
    ("--socks5", "[::1]"),
    ("--socks5-hostname", "[::1]"),
], ids=["socks5_ipv4_target", "socks5_hostname_domain_target", "socks5_ipv6_literal_target",
        "socks5_hostname_ipv6_literal_target"])
def test_curl_fetches_through_proxy(proxy, nginx, option, host):
    r = curl(option, "127.0.0.1:%d" % proxy.port, "http://%s:%d/index.html" % (host, nginx.port))
    assert r.returncode == 0, r.stderr
    assert r.stdout == nginx.index_body


def test_pysocks_remote_dns_domain_target(proxy, nginx):
    s = socks.socksocket()
    s.set_proxy(socks.SOCKS5, "127.0.0.1", proxy.port, rdns=True)
    s.settimeout(10)
    try:
        s.connect(("localhost", nginx.port))
        resp = http_get_raw(s)
    finally:
        s.close()
    head, body = http_body(resp)
    assert head.startswith(b"HTTP/1.1 200")
    assert body == nginx.index_body


def test_pysocks_create_connection_ipv4_target(proxy, nginx):
    s = socks.create_connection(("127.0.0.1", nginx.port), timeout=10,
                                proxy_type=socks.SOCKS5, proxy_addr="127.0.0.1", proxy_port=proxy.port)
    try:
        resp = http_get_raw(s)
    finally:
        s.close()
    assert http_body(resp)[1] == nginx.index_body


def _fetch_seen_from_bound_address(s, r, nginx):
    """Fetch the index through s (then closed); nginx saw the connection
    coming from BND.ADDR:BND.PORT of the reply r."""
    with s:
        tag = uuid.uuid4().hex
        resp = http_get_raw(s, "/index.html?tag=" + tag)
    assert http_body(resp)[1] == nginx.index_body
    line = nginx.wait_access(tag)
    addr, port = line.split()[:2]
    assert (addr, int(port)) == (r.addr, r.port)


def test_raw_ipv4_connect_reply_bytes_and_bound_address(proxy, nginx):
    s, r = socks_connect_ok(proxy.port, "127.0.0.1", nginx.port)
    assert r.raw[:4] == b"\x05\x00\x00\x01"
    assert r.addr == "127.0.0.1"
    assert r.port != 0
    _fetch_seen_from_bound_address(s, r, nginx)


def test_raw_ipv6_connect_reply_bytes_and_bound_address(proxy, nginx):
    s, r = socks_connect_ok(proxy.port, "::1", nginx.port)
    assert r.raw[:4] == b"\x05\x00\x00\x04"
    assert len(r.raw) == 22
    assert r.addr == "::1"
    assert r.port != 0
    _fetch_seen_from_bound_address(s, r, nginx)


def test_raw_domain_connect_localhost(proxy, nginx):
    s, r = socks_connect_ok(proxy.port, "localhost", nginx.port, atyp=3)
    with s:
        assert r.raw[:3] == b"\x05\x00\x00"
        assert r.atyp in (1, 4)
        assert r.addr in ("127.0.0.1", "::1")
        assert r.port != 0
        resp = http_get_raw(s)
    assert http_body(resp)[1] == nginx.index_body


def test_listening_on_ipv6_loopback_serves_clients(socks5d, nginx):
    p = socks5d(listen=("::1",))
    s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port, proxy_host="::1")
    with s:
        resp = http_get_raw(s)
    assert http_body(resp)[1] == nginx.index_body
    r2 = curl("--socks5-hostname", "[::1]:%d" % p.port, "http://localhost:%d/index.html" % nginx.port)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout == nginx.index_body


def test_listening_on_two_addresses_serves_both(socks5d, nginx):
    p = socks5d(listen=("127.0.0.1", "::1"))
    assert len([l for l in p.err_lines if "listening on" in l]) >= 2, p.stderr_text()
    for host in ("127.0.0.1", "::1"):
        s, r = socks_connect_ok(p.port, "127.0.0.1", nginx.port, proxy_host=host)
        with s:
            assert http_body(http_get_raw(s))[1] == nginx.index_body


def test_startup_prints_listening_and_ready_with_worker_count(socks5d):
    p = socks5d(workers=3)
    assert any("listening on" in l for l in p.err_lines)
    p.wait_ready()
    line = [l for l in p.err_lines if "ready" in l][0]
    assert "ready: 3 workers" in line, line
    assert "socks5d[%d] info:" % p.pid in line, line


def test_sequential_sessions_on_one_proxy(proxy, nginx):
    for _ in range(20):
        s, r = socks_connect_ok(proxy.port, "127.0.0.1", nginx.port)
        with s:
            assert http_body(http_get_raw(s))[1] == nginx.index_body


def test_domain_atyp_with_numeric_ipv4_text(proxy, nginx):
    s, r = socks_connect_ok(proxy.port, "127.0.0.1", nginx.port, atyp=3)
    with s:
        assert r.addr == "127.0.0.1"
        assert http_body(http_get_raw(s))[1] == nginx.index_body


def test_domain_atyp_with_numeric_ipv6_text(proxy, nginx):
    s, r = socks_connect_ok(proxy.port, "::1", nginx.port, atyp=3)
    with s:
        assert r.atyp == 4 and r.addr == "::1"
        assert http_body(http_get_raw(s))[1] == nginx.index_body


def test_ipv4_mapped_ipv6_target(proxy, nginx):
    s, r = socks_open(proxy.port, "::ffff:127.0.0.1", nginx.port, atyp=4)
    with s:
        assert r.rep == 0, r
        assert http_body(http_get_raw(s))[1] == nginx.index_body
