"""Helper run inside the test network namespace (ip netns exec NS python3 nshelper.py ...).

  serve   start: a DNS responder on 127.0.0.1:53 answering NXDOMAIN to everything,
          an echo server on 127.0.0.1 only, one on ::1 only, and a listener on
          127.0.0.1 with a full accept queue (connects to it time out).
          Prints "ready V4PORT V6PORT BACKLOGPORT" and runs until stdin closes.
  probe   one SOCKS5 CONNECT through the proxy; prints a JSON result.
"""

import argparse
import json
import select
import socket
import struct
import sys
import threading
import time


def echo_loop(lsock):
    def handle(c):
        c.settimeout(30)
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            c.close()
    while True:
        try:
            c, _ = lsock.accept()
        except OSError:
            return
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def dns_loop(usock):
    while True:
        try:
            q, addr = usock.recvfrom(4096)
        except OSError:
            return
        if len(q) < 12:
            continue
        qid = q[:2]
        flags = struct.unpack("!H", q[2:4])[0]
        rd = flags & 0x0100
        # question section = everything after the header for a plain query
        resp = qid + struct.pack("!HHHHH", 0x8000 | rd | 0x0080 | 3, 1, 0, 0, 0) + q[12:]
        label = q[13:13 + q[12]] if len(q) > 13 else b""

        def send(resp=resp, addr=addr):
            try:
                usock.sendto(resp, addr)
            except OSError:
                pass
        if label.startswith(b"slow"):
            # names "slow*" are answered (NXDOMAIN) after 1 s
            threading.Timer(1.0, send).start()
        else:
            send()


def serve():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 53))
    threading.Thread(target=dns_loop, args=(u,), daemon=True).start()

    l4 = socket.socket(socket.AF_INET)
    l4.bind(("127.0.0.1", 0))
    l4.listen(64)
    p4 = l4.getsockname()[1]
    threading.Thread(target=echo_loop, args=(l4,), daemon=True).start()

    for _ in range(20):  # a port different from p4, so ::1:p4 refuses
        l6 = socket.socket(socket.AF_INET6)
        l6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        l6.bind(("::1", 0))
        if l6.getsockname()[1] != p4:
            break
        l6.close()
    l6.listen(64)
    p6 = l6.getsockname()[1]
    threading.Thread(target=echo_loop, args=(l6,), daemon=True).start()

    lb = socket.socket(socket.AF_INET)
    lb.bind(("127.0.0.1", 0))
    lb.listen(0)
    pb = lb.getsockname()[1]
    fill = []
    for _ in range(10):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", pb))
        except BlockingIOError:
            pass
        fill.append(s)
        _, w, _ = select.select([], [s], [], 0.3)
        if not w:
            break  # queue is full: this SYN is being dropped
    # Happy Eyeballs: ::1:PH never answers (full queue), 127.0.0.1:PH echoes
    for _ in range(20):
        lh6 = socket.socket(socket.AF_INET6)
        lh6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        lh6.bind(("::1", 0))
        ph = lh6.getsockname()[1]
        lh4 = socket.socket(socket.AF_INET)
        try:
            lh4.bind(("127.0.0.1", ph))
            break
        except OSError:
            lh4.close()
            lh6.close()
    lh6.listen(0)
    lh4.listen(64)
    threading.Thread(target=echo_loop, args=(lh4,), daemon=True).start()
    for _ in range(10):
        s = socket.socket(socket.AF_INET6)
        s.setblocking(False)
        try:
            s.connect(("::1", ph))
        except BlockingIOError:
            pass
        fill.append(s)
        _, w, _ = select.select([], [s], [], 0.3)
        if not w:
            break
    print("ready %d %d %d %d" % (p4, p6, pb, ph), flush=True)
    sys.stdin.read()  # until the test closes our stdin


def _request(a, s, rx, res, t0):
    host = a.target
    if a.atyp == 1:
        addr = b"\x01" + socket.inet_pton(socket.AF_INET, host)
    elif a.atyp == 4:
        addr = b"\x04" + socket.inet_pton(socket.AF_INET6, host)
    else:
        addr = b"\x03" + bytes([len(host)]) + host.encode()
    payload = b"ping through the namespace\n"
    early = getattr(a, "early", False)
    s.sendall(b"\x05\x01\x00" + addr + struct.pack("!H", a.port) + (payload if early else b""))
    head = rx(4)
    alen = {1: 4, 4: 16}.get(head[3])
    if alen is None:
        ln = rx(1)
        rest = ln + rx(ln[0] + 2)
    else:
        rest = rx(alen + 2)
    res["reply"] = (head + rest).hex()
    res["elapsed"] = time.monotonic() - t0
    if head[1] == 0:
        if not early:
            s.sendall(payload)
        res["echo"] = rx(len(payload)).decode()
    else:
        try:
            d = s.recv(100)
            res["after"] = d.hex()
            res["eof"] = d == b""
        except socket.timeout:
            res["eof"] = False


def probe(a, emit=True):
    t0 = time.monotonic()
    res = {}
    src = getattr(a, "bind", None)
    s = socket.create_connection((getattr(a, "proxy_host", "127.0.0.1"), a.proxy), timeout=5,
                                 source_address=(src, 0) if src else None)
    s.settimeout(a.timeout)

    def rx(n):
        b = b""
        while len(b) < n:
            d = s.recv(n - len(b))
            if not d:
                raise EOFError(b.hex())
            b += d
        return b

    try:
        s.sendall(b"\x05\x01\x00")
        res["method"] = rx(2).hex()
        if res["method"] != "0500":
            d = s.recv(100)
            res["eof"] = d == b""
        else:
            _request(a, s, rx, res, t0)
    except (EOFError, OSError) as e:
        res["error"] = repr(e)
        res["elapsed"] = time.monotonic() - t0
    finally:
        s.close()
    if emit:
        print(json.dumps(res), flush=True)
    return res


def multi(a):
    """Several probes in parallel threads: --req HOST,PORT,ATYP,DELAY (repeatable).
    Prints a JSON list of results in --req order."""
    reqs = []
    for r in a.req:
        host, port, atyp, delay = r.rsplit(",", 3)
        reqs.append((host, int(port), int(atyp), float(delay)))
    results = [None] * len(reqs)
    t0 = time.monotonic()

    def run(i, host, port, atyp, delay):
        time.sleep(delay)
        ns = argparse.Namespace(proxy=a.proxy, target=host, port=port, atyp=atyp, timeout=a.timeout)
        results[i] = probe(ns, emit=False)
        results[i]["started"] = time.monotonic() - t0

    ts = [threading.Thread(target=run, args=(i,) + r) for i, r in enumerate(reqs)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(a.timeout + 10)
    print(json.dumps(results), flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    sub.add_parser("serve")
    p = sub.add_parser("probe")
    p.add_argument("--proxy", type=int, required=True)
    p.add_argument("--proxy-host", default="127.0.0.1")
    p.add_argument("--bind", default=None, help="client source address")
    p.add_argument("--target", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--atyp", type=int, default=3)
    p.add_argument("--early", action="store_true", help="send the payload with the request")
    p.add_argument("--timeout", type=float, default=8)
    m = sub.add_parser("multi")
    m.add_argument("--proxy", type=int, required=True)
    m.add_argument("--req", action="append", required=True)
    m.add_argument("--timeout", type=float, default=8)
    a = ap.parse_args()
    if a.cmd == "serve":
        serve()
    elif a.cmd == "multi":
        multi(a)
    else:
        probe(a)


if __name__ == "__main__":
    main()
