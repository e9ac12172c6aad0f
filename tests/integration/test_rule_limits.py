"""Limits carried by access rules (max-sessions, rate on a pass rule), and the
rules applied to BIND: the expected peer, and the peer that connects."""

import signal
import socket
import struct
import threading
import time

from s5lib import ThreadedTarget, echo_roundtrip, hash_password, recv_exact, socks_open
from test_user_limits import drain_for, source_handler

RATE = 1 << 20


def start(socks5d, tmp_path, text, **kw):
    conf = tmp_path / "rules.conf"
    conf.write_text(text)
    return socks5d("-f", conf, "--dns-server", "127.0.0.1:53", **kw)


def test_rule_max_sessions_counts_the_rules_sessions(socks5d, tmp_path, echo_server):
    h = hash_password("pw")
    p = start(socks5d, tmp_path,
              "user = alice:%s\nuser = bob:%s\n" % (h, h) +
              "pass to 127.0.0.1 port %d max-sessions 2\n" % echo_server.port +
              "pass\n", workers=2)
    # The rule's places are shared by everyone it matches: alice and bob.
    a, r = socks_open(p.port, "127.0.0.1", echo_server.port, user="alice", password="pw")
    assert r.rep == 0, r
    b, r = socks_open(p.port, "127.0.0.1", echo_server.port, user="bob", password="pw")
    assert r.rep == 0, r
    c, r = socks_open(p.port, "127.0.0.1", echo_server.port, user="alice", password="pw")
    assert r.rep == 2, r
    c.close()
    p.wait_log(lambda f: len(f) > 7 and f[1] == "alice" and f[7] == "2")
    # Another destination is under rule 2, which has no limit.
    other = ThreadedTarget(lambda c, a: c.recv(1))
    try:
        d, r = socks_open(p.port, "127.0.0.1", other.port, user="alice", password="pw")
        assert r.rep == 0, r
        d.close()
    finally:
        other.close()
    echo_roundtrip(a, b"held\n")
    a.close()
    end = time.monotonic() + 5
    while True:
        e, r = socks_open(p.port, "127.0.0.1", echo_server.port, user="alice", password="pw")
        if r.rep == 0:
            break
        e.close()
        assert r.rep == 2 and time.monotonic() < end, r
        time.sleep(0.05)
    echo_roundtrip(e, b"again\n")
    e.close()
    b.close()


def test_rule_rate_limits_its_sessions(socks5d, tmp_path):
    target = ThreadedTarget(source_handler)
    try:
        p = start(socks5d, tmp_path, "anonymous = always\npass to 127.0.0.1 port %d rate 1M\n"
                  % target.port)
        sessions = []
        for _ in range(2):
            s, r = socks_open(p.port, "127.0.0.1", target.port)
            assert r.rep == 0, r
            sessions.append(s)
        counts = [0, 0]
        go = threading.Event()
        threads = [threading.Thread(target=drain_for, args=(s, 5.0, counts, i, go))
                   for i, s in enumerate(sessions)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        go.set()
        for t in threads:
            t.join(30)
        rate = sum(counts) / (time.monotonic() - t0)
        assert 0.85 * RATE <= rate <= 1.15 * RATE, (rate, counts)
        for s in sessions:
            s.close()
    finally:
        target.close()


def bind_request(port, addr="0.0.0.0", proxy="127.0.0.1"):
    s = socket.create_connection((proxy, port), timeout=5)
    s.sendall(b"\x05\x01\x00")
    assert recv_exact(s, 2) == b"\x05\x00"
    s.sendall(b"\x05\x02\x00\x01" + socket.inet_aton(addr) + struct.pack("!H", 0))
    head = recv_exact(s, 10)
    return s, head


def test_bind_rules_refuse_a_blocked_expected_peer(socks5d, tmp_path):
    p = start(socks5d, tmp_path, "anonymous = always\nblock to 127.0.0.9 command bind log\npass\n")
    s, head = bind_request(p.port, "127.0.0.9")
    assert head[1] == 2, head.hex()
    s.close()
    p.wait_stderr(r"blocked by rule 1 \(line 2\)")
    # connect to the same address is another command: rule 2
    s, head = bind_request(p.port, "127.0.0.8")
    assert head[1] == 0, head.hex()
    s.close()


def test_bind_rules_close_a_blocked_peer_and_wait_on(socks5d, tmp_path):
    p = start(socks5d, tmp_path,
              "anonymous = always\nblock to 127.0.0.3 command bind\npass\n")
    s, head = bind_request(p.port)
    assert head[1] == 0, head.hex()
    baddr, bport = socket.inet_ntoa(head[4:8]), struct.unpack("!H", head[8:10])[0]
    bad = socket.socket()
    bad.bind(("127.0.0.3", 0))
    bad.settimeout(5)
    bad.connect((baddr, bport))
    assert bad.recv(1) == b""  # closed by the proxy: the rules block it
    bad.close()
    good = socket.socket()
    good.bind(("127.0.0.4", 0))
    good.connect((baddr, bport))
    second = recv_exact(s, 10)
    assert second[1] == 0 and socket.inet_ntoa(second[4:8]) == "127.0.0.4", second.hex()
    good.sendall(b"hello\n")
    assert recv_exact(s, 6) == b"hello\n"
    good.close()
    s.close()


# ---------------------------------------------------------------- egress address

def _tell_peer(c, a):
    c.sendall(("%s\n" % a[0]).encode())


def _source_seen(p, port, **kw):
    s, r = socks_open(p.port, "127.0.0.1", port, **kw)
    assert r.rep == 0, r
    line = b""
    while not line.endswith(b"\n"):
        d = s.recv(64)
        assert d, line
        line += d
    s.close()
    return line.decode().strip()


def test_external_and_via_choose_the_source_address(socks5d, tmp_path):
    target = ThreadedTarget(_tell_peer, host="0.0.0.0")
    other = ThreadedTarget(_tell_peer, host="0.0.0.0")
    try:
        p = start(socks5d, tmp_path,
                  "anonymous = always\nexternal = 127.0.0.5\n"
                  "pass to 127.0.0.1 port %d via 127.0.0.6\npass\n" % other.port)
        assert _source_seen(p, target.port) == "127.0.0.5"
        assert _source_seen(p, other.port) == "127.0.0.6"
    finally:
        target.close()
        other.close()


# ---------------------------------------------------------------- limits across reloads

def _hold_target():
    """A target that keeps every connection open."""
    return ThreadedTarget(lambda c, a: c.recv(1))


def _reload(p, conf, text):
    start = p.n_err()
    conf.write_text(text)
    p.send_signal(signal.SIGHUP)
    p.wait_stderr(r"configuration .* reloaded", timeout=10, start=start)
    time.sleep(0.3)  # the workers take the new rules with CONFIG


def _open(p, port, **kw):
    s, r = socks_open(p.port, "127.0.0.1", port, **kw)
    return s, r.rep


def test_rule_limits_after_two_reloads_old_sessions_leave_a_new_rule_alone(socks5d, tmp_path):
    """A rule's sessions count against that rule only: once its number
    belongs to another rule, they never fill the other's max-sessions."""
    a, b = _hold_target(), _hold_target()
    try:
        old = "pass to 127.0.0.1 port %d max-sessions 5\npass\n" % a.port
        new = "pass to 127.0.0.1 port %d max-sessions 1\npass\n" % b.port
        p = start(socks5d, tmp_path, old)
        held = []
        for _ in range(5):
            s, rep = _open(p, a.port)
            assert rep == 0
            held.append(s)
        conf = tmp_path / "rules.conf"
        _reload(p, conf, new)
        s, rep = _open(p, b.port)
        assert rep == 0
        s.close()
        time.sleep(0.3)
        _reload(p, conf, new)  # the same file again
        first, rep = _open(p, b.port)
        assert rep == 0, "the old rule's 5 sessions count against the new rule 1"
        # and the new rule's own maximum holds
        second, rep = _open(p, b.port)
        assert rep == 2
        second.close()
        first.close()
        for h in held:
            h.close()
    finally:
        a.close()
        b.close()


def test_rule_limits_a_connect_across_a_reload_keeps_its_own_rule(socks5d, tmp_path):
    """A CONNECT decided by a rule of the set before a reload, whose target
    answers after it, takes its place under that rule, not under the rule
    that has its number in the new set."""
    # A slow target: its accept queue full, so the proxy's SYN is dropped and
    # sent again about a second later, after the reload.
    slow = socket.socket()
    slow.bind(("127.0.0.1", 0))
    slow.listen(0)
    sport = slow.getsockname()[1]
    fill = [socket.create_connection(("127.0.0.1", sport))]
    for _ in range(3):
        x = socket.socket()
        x.setblocking(False)
        x.connect_ex(("127.0.0.1", sport))
        fill.append(x)
    b = _hold_target()
    stop = threading.Event()
    try:
        old = "pass to 127.0.0.1 port %d max-sessions 100\npass\n" % sport
        new = "pass to 127.0.0.1 port %d max-sessions 1\npass\n" % b.port
        p = start(socks5d, tmp_path, old, workers=1)
        res = {}

        def slow_open():
            res["s"], res["rep"] = _open(p, sport, timeout=20)

        t = threading.Thread(target=slow_open)
        t.start()
        time.sleep(0.3)
        _reload(p, tmp_path / "rules.conf", new)
        slow.settimeout(0.1)

        def acceptor():
            while not stop.is_set():
                try:
                    c, _ = slow.accept()
                    fill.append(c)
                except OSError:
                    pass

        threading.Thread(target=acceptor, daemon=True).start()
        t.join(20)
        assert not t.is_alive()
        assert res["rep"] == 0
        first, rep = _open(p, b.port)
        assert rep == 0, "the old rule's session took the new rule 1's only place"
        second, rep = _open(p, b.port)
        assert rep == 2
        second.close()
        first.close()
        res["s"].close()
    finally:
        stop.set()
        for x in fill:
            x.close()
        slow.close()
        b.close()


def test_rule_limits_an_unchanged_rule_keeps_its_count_across_a_reload(socks5d, tmp_path):
    """max-sessions holds exactly across reloads: the sessions admitted
    before count, even when the rule's number changes."""
    a, other = _hold_target(), _hold_target()
    try:
        rule = "pass to 127.0.0.1 port %d max-sessions 2\n" % a.port
        p = start(socks5d, tmp_path, rule + "pass\n")
        held = []
        for _ in range(2):
            s, rep = _open(p, a.port)
            assert rep == 0
            held.append(s)
        conf = tmp_path / "rules.conf"
        # a rule before it: the same rule is now number 2
        _reload(p, conf, "pass to 127.0.0.1 port %d\n" % other.port + rule + "pass\n")
        for _ in range(2):
            s, rep = _open(p, a.port)
            s.close()
            assert rep == 2, "the rule let in more than its max-sessions after a reload"
        _reload(p, conf, "pass to 127.0.0.1 port %d\n" % other.port + rule + "pass\n")
        s, rep = _open(p, a.port)
        s.close()
        assert rep == 2
        # a place freed by a session of before is the rule's again
        held.pop().close()
        end = time.monotonic() + 5
        while True:
            s, rep = _open(p, a.port)
            if rep == 0:
                break
            s.close()
            assert rep == 2 and time.monotonic() < end
            time.sleep(0.05)
        held.append(s)
        s, rep = _open(p, a.port)
        s.close()
        assert rep == 2
        for h in held:
            h.close()
    finally:
        a.close()
        other.close()


# ---------------------------------------------------------------- rule identities

FNV_PRIME = 0x100000001b3
MASK64 = (1 << 64) - 1


def _fnv(h, data):
    for c in data:
        h = ((h ^ c) * FNV_PRIME) & MASK64
    return h


def _prefix_hash(line):
    """The rule's hash (shared/rules.c: FNV-1a over its words, each ended
    by a NUL) as far as the line goes."""
    return _fnv(0xcbf29ce484222325, b"".join(w.encode() + b"\0" for w in line.split()))


def _tag(h):
    t = (h ^ (h >> 32)) & 0xffffffff
    return t or 1


def _rate_tags(port, max_sessions, rates):
    """(tag, rate) of `pass to 127.0.0.1 port PORT max-sessions N rate R`
    for each rate: the rate only makes the line another rule (at 1 GB/s it
    limits nothing here)."""
    pre = _prefix_hash("pass to 127.0.0.1 port %d max-sessions %d rate" % (port, max_sessions))
    for r in rates:
        yield _tag(_fnv(pre, b"%d\0" % r)), r


def _rule(port, max_sessions, rate):
    return "pass to 127.0.0.1 port %d max-sessions %d rate %d\n" % (port, max_sessions, rate)


def _listener():
    """A target that completes connections (the backlog) and never reads."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


BASE_RATE = 1000000000


def test_rules_whose_tags_collide_keep_their_own_counts(socks5d, tmp_path):
    """Two different rules whose 32-bit tags are equal (found by a birthday
    search over a number in their text) count apart: a session of one
    never fills the other's max-sessions, and each keeps its own maximum."""
    la, lb = _listener(), _listener()
    try:
        pa, pb = la.getsockname()[1], lb.getsockname()[1]
        seen = dict(_rate_tags(pa, 1, range(BASE_RATE, BASE_RATE + (1 << 16))))
        pair = None
        for t, r in _rate_tags(pb, 1, range(BASE_RATE, BASE_RATE + (1 << 22))):
            if t in seen:
                pair = (seen[t], r)
                break
        assert pair, "no colliding pair found"
        p = start(socks5d, tmp_path, _rule(pa, 1, pair[0]) + _rule(pb, 1, pair[1]))
        a, rep = _open(p, pa)
        assert rep == 0
        b, rep = _open(p, pb)
        assert rep == 0, "a session of a rule with the same tag filled this rule's max-sessions"
        for port in (pa, pb):
            s, rep = _open(p, port)
            s.close()
            assert rep == 2, "a rule let in more than its max-sessions"
        a.close()
        b.close()
    finally:
        la.close()
        lb.close()


def test_a_rule_whose_probe_window_is_full_gets_a_slot_beyond_it(socks5d, tmp_path):
    """65 rules whose tags all start at one slot, each with a session open:
    the last finds its 64 slots held and takes one beyond them; later
    requests find that slot again (its max-sessions holds)."""
    n = 65
    ls = [_listener() for _ in range(n)]
    held = []
    try:
        ports = [l.getsockname()[1] for l in ls]
        home = None
        rates = []
        for port in ports:
            for t, r in _rate_tags(port, 2, range(BASE_RATE, BASE_RATE + (1 << 20))):
                if home is None:
                    home = t % 2048
                if t % 2048 == home:
                    rates.append(r)
                    break
        assert len(rates) == n
        p = start(socks5d, tmp_path, "".join(_rule(pt, 2, r) for pt, r in zip(ports, rates)),
                  workers=1)
        for port in ports:
            s, rep = _open(p, port)
            held.append(s)
            assert rep == 0, "refused with %d of 2048 rule slots held" % (len(held) - 1)
        s, rep = _open(p, ports[-1])
        held.append(s)
        assert rep == 0
        s, rep = _open(p, ports[-1])
        s.close()
        assert rep == 2, "the rule's slot beyond the window was not found again"
    finally:
        for s in held:
            s.close()
        for l in ls:
            l.close()
