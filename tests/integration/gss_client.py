"""The tests' own SOCKS5 GSS-API client (RFC 1961) with python3-gssapi.

For what socksify cannot do: every step on its own, and knobs for hostile
cases. Needs Debian's python3-gssapi (/usr/bin/python3) and KRB5_CONFIG in
the environment (the krb5_realm fixture sets it); the initiator's ticket
comes from the ccache given (else KRB5CCNAME).

    c = GssSocksClient("127.0.0.1", port, ccache=realm.ccache)
    c.negotiate_method()            # 05 01 01 -> 05 01
    c.establish_context()           # 01 01 LEN TOKEN ... until complete
    c.negotiate_protection(2)       # 01 02 LEN wrap(level) -> granted level
    rep = c.connect("127.0.0.1", 80)  # SOCKS request, wrapped unless level 0
    c.send(b"..."); c.recv_exact(n); c.shutdown_write(); c.recv_all()
    c.close()

or all at once: ``open_tunnel(proxy_host, proxy_port, host, port, level)``
and ``echo_transfer(...)``.

Wire details (RFC 1961 and what Dante and curl do):
- level 0 ("clear", not in RFC 1961): the level message is still wrapped,
  then the SOCKS request and the data travel raw;
- levels 1 and 2: the request, the reply and all data travel as
  01 03 LEN gss_wrap(data, conf = level == 2), LEN <= 65535;
- nec=True: the level byte travels unwrapped both ways (01 02 00 01 LEVEL),
  the NEC reference implementation's way (curl --socks5-gssapi-nec).

Errors: ServerAbort (the server sent 01 FF), ServerClosed (EOF or a reset
where a message was due), ProtocolError (anything else unexpected);
gssapi's own exceptions when the local GSS-API refuses (no ticket,
expired ticket, a token that does not verify).
"""

import argparse
import select
import socket
import struct
import sys
import time

import gssapi

GSS_VERSION = 0x01
MTYP_CONTEXT = 0x01
MTYP_PROTECTION = 0x02
MTYP_ENCAPSULATION = 0x03
MTYP_ABORT = 0xFF
MAX_TOKEN = 0xFFFF
# A payload per 01 03 message that keeps the wrapped token (payload + 60
# bytes at confidentiality with AES) well below 65535.
DEFAULT_CHUNK = 16384

LEVEL_NAMES = {0: "clear", 1: "integrity", 2: "confidentiality", 3: "permessage"}


class GssSocksError(Exception):
    pass


class ServerAbort(GssSocksError):
    """The server answered 01 FF."""


class ServerClosed(GssSocksError):
    """The server closed (or reset) where a message was due."""


class ProtocolError(GssSocksError):
    pass


def corrupt(token, where=None):
    """token with one byte flipped (by default in its last quarter: inside
    the checksum/ciphertext, past the ASN.1 and RFC 4121 headers)."""
    b = bytearray(token)
    i = where if where is not None else len(b) - max(1, len(b) // 4)
    b[i] ^= 0x5A
    return bytes(b)


def _creds(ccache):
    if ccache is None:
        return None
    cc = str(ccache)
    if ":" not in cc:
        cc = "FILE:" + cc
    return gssapi.Credentials(usage="initiate", store={"ccache": cc})


def new_context(service="rcmd@localhost", creds=None, flags=None):
    """An initiator gssapi.SecurityContext for the host-based service name,
    with mutual authentication, integrity, confidentiality, replay and
    sequence detection by default (the flags Dante's client asks for)."""
    name = gssapi.Name(service, gssapi.NameType.hostbased_service)
    rf = gssapi.RequirementFlag
    if flags is None:
        flags = [rf.mutual_authentication, rf.integrity, rf.confidentiality,
                 rf.replay_detection, rf.out_of_sequence_detection]
    return gssapi.SecurityContext(name=name, usage="initiate", creds=creds, flags=flags)


def first_token(service="rcmd@localhost", ccache=None):
    """The first context token for service from ccache, made now, with no
    connection: kept and sent later (establish_context(first_token=...)),
    it presents a ticket that has expired meanwhile."""
    return new_context(service, _creds(ccache)).step()


class GssSocksClient:
    """One SOCKS5 connection with RFC 1961 GSS-API authentication.

    host, port    the proxy
    service       host-based service name of the proxy ("rcmd@localhost"
                  names rcmd/localhost@REALM)
    ccache        credential cache of the initiator (Path/str, FILE: optional);
                  None: the default (KRB5CCNAME)
    nec           exchange the protection level byte unwrapped (NEC style)
    split_writes  send every message before the data phase one byte per
                  write (TCP_NODELAY, a short pause between bytes), so the
                  server sees headers and tokens cut at every boundary
    timeout       socket timeout in seconds
    """

    def __init__(self, host, port, service="rcmd@localhost", ccache=None, nec=False,
                 split_writes=False, timeout=10.0, split_pause=0.001):
        self.host, self.port = host, port
        self.service = service
        self.nec = nec
        self.split_writes = split_writes
        self.split_pause = split_pause
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.creds = _creds(ccache)
        self.ctx = None
        self.level = None  # granted protection level
        self.context_rounds = 0
        self._rbuf = bytearray()  # unwrapped bytes not yet returned
        self._wire = bytearray()  # received bytes not yet parsed

    # ------------------------------------------------------------ raw I/O

    def send_raw(self, data, split=None):
        """Write bytes as they are (byte by byte when split)."""
        if split is None:
            split = self.split_writes
        if not split:
            self.sock.sendall(data)
            return
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            if self.split_pause:
                time.sleep(self.split_pause)

    def _recv_wire(self):
        """One recv() into the wire buffer; False at EOF (or reset)."""
        try:
            c = self.sock.recv(65536)
        except ConnectionResetError:
            c = b""
        if not c:
            return False
        self._wire += c
        return True

    def read_exact(self, n):
        while len(self._wire) < n:
            if not self._recv_wire():
                raise ServerClosed("server closed after %d of %d bytes" % (len(self._wire), n))
        out = bytes(self._wire[:n])
        del self._wire[:n]
        return out

    def send_message(self, mtyp, token, split=None):
        """01 MTYP LEN TOKEN."""
        if len(token) > MAX_TOKEN:
            raise ValueError("token of %d bytes does not fit in a message" % len(token))
        self.send_raw(struct.pack("!BBH", GSS_VERSION, mtyp, len(token)) + token, split)

    def recv_message(self, want):
        """The token of the next message, which must be of type want."""
        ver, mtyp = self.read_exact(2)
        if ver == GSS_VERSION and mtyp == MTYP_ABORT:
            raise ServerAbort("server aborted (01 ff)")
        if ver != GSS_VERSION or mtyp != want:
            raise ProtocolError("expected 01 %02x, got %02x %02x" % (want, ver, mtyp))
        (n,) = struct.unpack("!H", self.read_exact(2))
        return self.read_exact(n)

    # ------------------------------------------------------------ negotiation

    def negotiate_method(self, methods=(0x01,)):
        """Offer methods (default GSS-API only); returns the chosen one."""
        self.send_raw(bytes([5, len(methods)]) + bytes(methods))
        ver, meth = self.read_exact(2)
        if ver != 5:
            raise ProtocolError("method reply version %d" % ver)
        return meth

    def make_context(self, flags=None):
        """A fresh initiator context for the service; returns its first
        token without sending it."""
        self.ctx = new_context(self.service, self.creds, flags)
        return self.ctx.step()

    def establish_context(self, corrupt_first=False, stop_after=None, flags=None,
                          first_token=None):
        """Context establishment (RFC 1961 section 3) until both sides are
        complete. corrupt_first: flip a byte of the first token.
        stop_after: send only that many bytes of the first message
        (header included) and return False without waiting (a client that
        stops mid-negotiation). first_token: send this (made earlier by
        first_token() while the ticket was still valid) instead of a new
        one; a server that answers it is a ProtocolError (this client has
        no context for it). Returns True when established."""
        if first_token is not None:
            tok = first_token
        else:
            tok = self.make_context(flags)
        if corrupt_first:
            tok = corrupt(tok)
        if stop_after is not None:
            msg = struct.pack("!BBH", GSS_VERSION, MTYP_CONTEXT, len(tok)) + tok
            self.send_raw(msg[:stop_after])
            return False
        while True:
            self.send_message(MTYP_CONTEXT, tok)
            self.context_rounds += 1
            if self.ctx is None:
                reply = self.recv_message(MTYP_CONTEXT)
                raise ProtocolError("server answered a token of another context (%d bytes)"
                                    % len(reply))
            if self.ctx.complete:
                break
            tok = self.ctx.step(self.recv_message(MTYP_CONTEXT))
            if self.ctx.complete and not tok:
                break
        return True

    def negotiate_protection(self, level, corrupt_token=False):
        """Request level (any byte value; 3 = per-message, not defined by
        Dante); returns the level the server grants and remembers it."""
        lv = bytes([level])
        tok = lv if self.nec else self.ctx.wrap(lv, False).message
        if corrupt_token:
            tok = corrupt(tok)
        self.send_message(MTYP_PROTECTION, tok)
        r = self.recv_message(MTYP_PROTECTION)
        if self.nec:
            granted = r
        else:
            granted = self.ctx.unwrap(r).message
        if len(granted) != 1:
            raise ProtocolError("protection reply of %d bytes" % len(granted))
        self.level = granted[0]
        return self.level

    # ------------------------------------------------------------ encapsulation

    def wrap_send(self, data, chunk=DEFAULT_CHUNK, corrupt_token=False, split=None):
        """data through the granted level: raw at 0, else 01 03 messages of
        at most chunk bytes of payload."""
        if self.level is None:
            raise ProtocolError("protection level not negotiated")
        if self.level == 0:
            self.send_raw(data, split)
            return
        conf = self.level == 2
        for i in range(0, len(data), chunk) if data else ():
            tok = self.ctx.wrap(data[i:i + chunk], conf).message
            if corrupt_token:
                tok = corrupt(tok)
            self.send_message(MTYP_ENCAPSULATION, tok, split)

    def _unwrap(self, tok):
        res = self.ctx.unwrap(tok)
        if self.level == 2 and not res.encrypted:
            raise ProtocolError("unencrypted token at confidentiality level")
        self._rbuf += res.message

    def _parse_wire(self):
        """Move every complete message of the wire buffer into the data
        buffer (all of it at level 0)."""
        if self.level == 0:
            self._rbuf += self._wire
            self._wire.clear()
            return
        while len(self._wire) >= 4:
            ver, mtyp, n = struct.unpack("!BBH", self._wire[:4])
            if ver == GSS_VERSION and mtyp == MTYP_ABORT:
                raise ServerAbort("server aborted (01 ff)")
            if ver != GSS_VERSION or mtyp != MTYP_ENCAPSULATION:
                raise ProtocolError("expected 01 03, got %02x %02x" % (ver, mtyp))
            if len(self._wire) < 4 + n:
                return
            tok = bytes(self._wire[4:4 + n])
            del self._wire[:4 + n]
            self._unwrap(tok)

    def _fill(self):
        """Read until at least one more piece of data: False at EOF."""
        have = len(self._rbuf)
        while True:
            self._parse_wire()
            if len(self._rbuf) > have:
                return True
            if not self._recv_wire():
                if self._wire:
                    raise ServerClosed("server closed inside a message (%d bytes)"
                                       % len(self._wire))
                return False

    def recv_exact(self, n):
        while len(self._rbuf) < n:
            if not self._fill():
                raise ServerClosed("EOF after %d of %d bytes" % (len(self._rbuf), n))
        out = bytes(self._rbuf[:n])
        del self._rbuf[:n]
        return out

    def recv_some(self):
        """What arrives next (b"" at EOF)."""
        if not self._rbuf and not self._fill():
            return b""
        out = bytes(self._rbuf)
        self._rbuf.clear()
        return out

    def recv_all(self):
        """Everything until the server closes."""
        while self._fill():
            pass
        out = bytes(self._rbuf)
        self._rbuf.clear()
        return out

    # ------------------------------------------------------------ SOCKS request

    def request(self, cmd, host, port):
        """A SOCKS5 request through the granted level; returns
        (rep, atyp, bound address bytes, bound port)."""
        try:
            addr = socket.inet_pton(socket.AF_INET, host)
            atyp = 1
        except OSError:
            try:
                addr = socket.inet_pton(socket.AF_INET6, host)
                atyp = 4
            except OSError:
                hb = host.encode()
                addr = bytes([len(hb)]) + hb
                atyp = 3
        req = bytes([5, cmd, 0, atyp]) + addr + struct.pack("!H", port)
        # The request is one message at levels 1 and 2 (RFC 1961 section 5).
        self.wrap_send(req, chunk=len(req))
        ver, rep, _rsv, ratyp = self.recv_exact(4)
        if ver != 5:
            raise ProtocolError("reply version %d" % ver)
        if ratyp == 1:
            baddr = self.recv_exact(4)
        elif ratyp == 4:
            baddr = self.recv_exact(16)
        elif ratyp == 3:
            baddr = self.recv_exact(self.recv_exact(1)[0])
        else:
            raise ProtocolError("reply address type %d" % ratyp)
        (bport,) = struct.unpack("!H", self.recv_exact(2))
        return rep, ratyp, baddr, bport

    def connect(self, host, port):
        return self.request(1, host, port)

    # ------------------------------------------------------------ data

    def send(self, data, chunk=DEFAULT_CHUNK):
        self.wrap_send(data, chunk=chunk, split=False)

    def exchange(self, payload, chunk=DEFAULT_CHUNK, timeout=120):
        """Send payload (wrapped as the level asks), half-close, and read
        until the server closes, both at once in one thread (select), so
        neither direction's buffers can fill up. Returns what was read."""
        if self.level == 0:
            out = bytes(payload)
        else:
            conf = self.level == 2
            parts = []
            for i in range(0, len(payload), chunk):
                tok = self.ctx.wrap(payload[i:i + chunk], conf).message
                parts.append(struct.pack("!BBH", GSS_VERSION, MTYP_ENCAPSULATION, len(tok)))
                parts.append(tok)
            out = b"".join(parts)
        view = memoryview(out)
        sent = 0
        shut = False
        old_timeout = self.sock.gettimeout()
        self.sock.setblocking(False)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if sent == len(out) and not shut:
                    self.sock.shutdown(socket.SHUT_WR)
                    shut = True
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GssSocksError("exchange: no end after %d s (sent %d of %d, read %d)"
                                        % (timeout, sent, len(out), len(self._rbuf)))
                r, w, _ = select.select([self.sock], [self.sock] if sent < len(out) else [],
                                        [], min(left, 1.0))
                if r:
                    try:
                        if not self._recv_wire():
                            break
                    except BlockingIOError:
                        pass
                    self._parse_wire()
                if w:
                    try:
                        sent += self.sock.send(view[sent:sent + 262144])
                    except BlockingIOError:
                        pass
        finally:
            self.sock.settimeout(old_timeout)
        self._parse_wire()
        if self._wire:
            raise ServerClosed("server closed inside a message (%d bytes)" % len(self._wire))
        if sent < len(out):
            raise ServerClosed("server closed after %d of %d bytes sent" % (sent, len(out)))
        got = bytes(self._rbuf)
        self._rbuf.clear()
        return got

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_tunnel(proxy_host, proxy_port, host, port, level, **kw):
    """A client through method, context, protection (must be granted as
    asked) and CONNECT to host:port (must succeed). kw: GssSocksClient's."""
    c = GssSocksClient(proxy_host, proxy_port, **kw)
    try:
        meth = c.negotiate_method()
        if meth != 0x01:
            raise ProtocolError("server chose method 0x%02x" % meth)
        c.establish_context()
        granted = c.negotiate_protection(level)
        if granted != level:
            raise ProtocolError("asked for level %d, granted %d" % (level, granted))
        rep = c.connect(host, port)[0]
        if rep != 0:
            raise ProtocolError("CONNECT reply %d" % rep)
        return c
    except BaseException:
        c.close()
        raise


def echo_transfer(proxy_host, proxy_port, echo_host, echo_port, level, payload,
                  chunk=DEFAULT_CHUNK, timeout=120, **kw):
    """payload to an echo server through the proxy at level, then a
    half-close; returns everything that came back until the server closed.
    kw: GssSocksClient's."""
    with open_tunnel(proxy_host, proxy_port, echo_host, echo_port, level, **kw) as c:
        return c.exchange(payload, chunk=chunk, timeout=timeout)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("proxy_host")
    ap.add_argument("proxy_port", type=int)
    ap.add_argument("target_host")
    ap.add_argument("target_port", type=int)
    ap.add_argument("level", type=int)
    ap.add_argument("--service", default="rcmd@localhost")
    ap.add_argument("--ccache")
    ap.add_argument("--nec", action="store_true")
    ap.add_argument("--split", action="store_true")
    ap.add_argument("--send", default="", help="bytes to send after CONNECT")
    a = ap.parse_args(argv)
    with open_tunnel(a.proxy_host, a.proxy_port, a.target_host, a.target_port, a.level,
                     service=a.service, ccache=a.ccache, nec=a.nec,
                     split_writes=a.split) as c:
        if a.send:
            c.send(a.send.encode())
        c.shutdown_write()
        sys.stdout.buffer.write(c.recv_all())
    return 0


if __name__ == "__main__":
    sys.exit(main())
