#!/usr/bin/python3
"""Tables and plot data from bench/run.sh's results.

    report.py RESULTS OUTDIR [--doc docs/performance.md --png docs/bench.png]
    report.py udp UDP_RESULTS OUTDIR [--doc docs/performance.md]

RESULTS has one line per loadgen run, key=value pairs (wl, sys, run, the
proxy's cpu_ns, then loadgen's own output).  Writes OUTDIR/tables.md and
OUTDIR/plot-*.dat, and with --doc replaces the section between
<!-- bench:begin --> and <!-- bench:end --> of that file (appends one if it
has none), leaving the rest untouched.  The udp form does the same for
bench/udp.sh: OUTDIR/udp-tables.md and the section between
<!-- bench-udp:begin --> and <!-- bench-udp:end -->.
"""

import os
import re
import statistics
import sys

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

NAMES = {
    "direct": "direct (no proxy)",
    "socks5d": "socks5d -w 2",
    "socks5d-w1": "socks5d -w 1",
    "socks5d-w4": "socks5d -w 4",
    "socks5d-reuseport": "socks5d -w 2 --accept reuseport",
    "socks5d-auth": "socks5d -w 2",
    "dante": "Dante",
    "dante-auth": "Dante",
    "microsocks": "microsocks",
    "microsocks-auth": "microsocks",
}


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            kv = {}
            for tok in line.split():
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    kv[k] = v
            if "wl" in kv:
                rows.append(kv)
    return rows


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=2):
    if v is None:
        return "n/a"
    return "{:,.{d}f}".format(v, d=digits)


class Results:
    def __init__(self, rows):
        self.rows = rows

    def runs(self, wl, sys_):
        return [r for r in self.rows if r["wl"] == wl and r["sys"] == sys_ and "na" not in r]

    def has(self, wl, sys_):
        return any(r["wl"] == wl and r["sys"] == sys_ for r in self.rows)

    def med(self, wl, sys_, fn):
        out = []
        for r in self.runs(wl, sys_):
            try:
                out.append(fn(r))
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                pass
        return median(out)

    # bulk
    def gbps(self, wl, s):
        return self.med(wl, s, lambda r: float(r["bytes"]) / float(r["seconds"]) / 1e9)

    def cpu_s_per_gb(self, wl, s):
        return self.med(wl, s, lambda r: float(r["cpu_ns"]) / float(r["bytes"]))

    # the other ends of the path: nginx (its cgroup) and the client (loadgen's
    # own user + system time), per GB or per connection
    def nginx_s_per_gb(self, wl, s):
        return self.med(wl, s, lambda r: float(r["nginx_cpu_ns"]) / float(r["bytes"]))

    def client_s_per_gb(self, wl, s):
        return self.med(wl, s, lambda r: float(r["cpu_us"]) * 1e3 / float(r["bytes"]))

    def nginx_us_per_conn(self, wl, s):
        return self.med(wl, s, lambda r: float(r["nginx_cpu_ns"]) / 1000.0 / float(r["conns"]))

    def client_us_per_conn(self, wl, s):
        return self.med(wl, s, lambda r: float(r["cpu_us"]) / float(r["conns"]))

    # rate
    def rate(self, wl, s):
        return self.med(wl, s, lambda r: float(r["rate"]))

    def p(self, wl, s, key):
        return self.med(wl, s, lambda r: float(r[key]) / 1000.0)

    def cpu_us_per_conn(self, wl, s):
        return self.med(wl, s, lambda r: float(r["cpu_ns"]) / 1000.0 / float(r["conns"]))

    def failed(self, wl, s):
        vals = [int(r.get("failed", 0)) for r in self.runs(wl, s) if "failed" in r]
        return sum(vals) if vals else None


def ratio(a, b):
    return a / b if a is not None and b else None


def total(*vals):
    return None if any(v is None for v in vals) else sum(vals)


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    return "\n".join(out)


UDP_BEGIN, UDP_END = "<!-- bench-udp:begin -->", "<!-- bench-udp:end -->"
UDP_NAMES = {"direct": "direct (no proxy)", "dante": "Dante", "socks5d": "socks5d -w 2"}


def replace_section(doc, begin, end, section):
    text = open(doc).read()
    if begin in text and end in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(doc, "w") as f:
        f.write(text)


def udp_main(args):
    """Tables of bench/udp.sh: per datagram size, closed-loop rate, the
    paced runs at the direct rate and at half of it, proxy CPU."""
    doc = None
    if "--doc" in args:
        i = args.index("--doc")
        doc = args[i + 1]
        del args[i:i + 2]
    results_path, outdir = args
    rows = [r for r in load(results_path) if r.get("wl") == "udp"]
    meta = []
    mp = os.path.join(outdir, "udp-meta.txt")
    if os.path.exists(mp):
        meta = [l.rstrip("\n") for l in open(mp) if l.strip()]
    metad = dict(l.split(": ", 1) for l in meta if ": " in l)
    na = {}
    nap = os.path.join(outdir, "udp-na.txt")
    if os.path.exists(nap):
        for l in open(nap):
            if ": " in l:
                k, v = l.rstrip("\n").split(": ", 1)
                na[k] = v
    nruns = max([int(r["run"]) for r in rows] or [0])
    med_word = "median of %d" % nruns + (" (the mean of the two)" if nruns == 2 else "")

    def med(sys_, size, kind, fn):
        out = []
        for r in rows:
            if r["sys"] == sys_ and r["size"] == size and r["kind"] == kind and "na" not in r:
                try:
                    out.append(fn(r))
                except (KeyError, TypeError, ValueError, ZeroDivisionError):
                    pass
        return median(out)

    def recv(r):
        if int(r["established"]) == 0:
            raise ValueError
        return float(r["recv_rate"])

    def cpu_us(r):
        return float(r["cpu_ns"]) / 1000.0 / (2 * float(r["received"]))

    sizes = sorted({r["size"] for r in rows}, key=int)
    sections, goals = [], []
    for size in sizes:
        d = med("direct", size, "window", recv)
        table_rows = []
        for s in ("direct", "dante", "socks5d"):
            if not any(r["sys"] == s and r["size"] == size for r in rows):
                continue
            note = " (n/a: %s)" % na[s] if s in na else ""
            w = med(s, size, "window", recv)
            half = [fmt(med(s, size, "half", recv), 0), fmt(med(s, size, "half", lambda r: float(r["loss_pct"])), 3)]
            table_rows.append([UDP_NAMES[s] + note, fmt(w, 0), fmt(ratio(w, d)),
                               fmt(med(s, size, "paced", lambda r: float(r["sent_rate"])), 0),
                               fmt(med(s, size, "paced", recv), 0),
                               fmt(med(s, size, "paced", lambda r: float(r["loss_pct"])), 3),
                               *(["-", "-"] if s == "direct" else half),
                               "-" if s == "direct" else fmt(med(s, size, "window", cpu_us), 2)])
        sections.append("### UDP, %s-byte datagrams\n\n" % "{:,}".format(int(size))
                        + table(["system", "closed loop dgram/s", "x direct", "at the direct rate: sent dgram/s",
                                 "received dgram/s", "loss %", "at half the direct rate: received dgram/s",
                                 "loss %", "proxy CPU µs/dgram"], table_rows))
        if size == "1400":
            w = med("socks5d", size, "window", recv)
            dw = med("dante", size, "window", recv)
            loss = med("socks5d", size, "half", lambda r: float(r["loss_pct"]))
            def verdict(ok):
                return "n/a" if ok is None else "met" if ok else "missed"
            goals.append("| at least 0.5x direct datagrams per second | %s | %s |"
                         % (fmt(ratio(w, d)) + "x" if w else "n/a", verdict(None if w is None else ratio(w, d) >= 0.5)))
            goals.append("| under 0.1%% loss at half the direct rate | %s | %s |"
                         % (fmt(loss, 3) + "%" if loss is not None else "n/a",
                            verdict(None if loss is None else loss < 0.1)))
            goals.append("| ahead of Dante (closed loop) | %s against %s dgram/s | %s |"
                         % (fmt(w, 0), fmt(dw, 0), verdict(None if w is None or dw is None else w > dw)))
    facts = "\n".join("    " + l for l in meta)
    intro = ("Systems: **direct** is loadgen straight to the echo target; **Dante** (danted %s): "
             "`internal` and `external` 127.0.0.1, `socksmethod: none`, `socks pass` rules for "
             "`udpassociate` and `udpreply`; **socks5d** the release build, `-w 2 --anonymous always`.  "
             "%s associations, %s per run; %s.  The exact commands are in `build/bench/udp-commands.txt`."
             % (metad.get("dante", "").split(" (")[0].replace("Dante ", ""),
                re.search(r"UDP_ASSOCS=(\d+)", metad.get("command", "")).group(1)
                if re.search(r"UDP_ASSOCS=(\d+)", metad.get("command", "")) else "?",
                (re.search(r"DURATION=(\S+)", metad.get("command", "")).group(1) + " s")
                if re.search(r"DURATION=(\S+)", metad.get("command", "")) else "?",
                med_word))
    md = "\n\n".join([intro, facts] + sections)
    if goals:
        md += "\n\nGoals at 1,400 bytes:\n\n| goal | measured | |\n|---|---|---|\n" + "\n".join(goals)
    if na:
        md += "\n\nn/a: " + "; ".join("%s: %s" % (k, v) for k, v in sorted(na.items()))
    with open(os.path.join(outdir, "udp-tables.md"), "w") as f:
        f.write(md + "\n")
    if doc:
        replace_section(doc, UDP_BEGIN, UDP_END, "\n\n".join([UDP_BEGIN, md, UDP_END]))


def main():
    args = sys.argv[1:]
    if args and args[0] == "udp":
        udp_main(args[1:])
        return
    doc = png = None
    if "--doc" in args:
        i = args.index("--doc")
        doc = args[i + 1]
        del args[i:i + 2]
    if "--png" in args:
        i = args.index("--png")
        png = args[i + 1]
        del args[i:i + 2]
    results_path, outdir = args
    res = Results(load(results_path))
    meta = []
    mp = os.path.join(outdir, "meta.txt")
    if os.path.exists(mp):
        meta = [l.rstrip("\n") for l in open(mp) if l.strip()]
    metad = dict(l.split(": ", 1) for l in meta if ": " in l)
    na = {}
    nap = os.path.join(outdir, "na.txt")
    if os.path.exists(nap):
        for l in open(nap):
            if ": " in l:
                k, v = l.rstrip("\n").split(": ", 1)
                na[k] = v
    nruns = max([int(r["run"]) for r in res.rows] or [0])
    med_word = "median of %d" % nruns + (" (the mean of the two)" if nruns == 2 else "")
    m = re.search(r"DURATION=(\S+)", metad.get("command", ""))
    dur = m.group(1) if m else "?"
    m = re.search(r"HOLD_N=(\d+)", metad.get("command", ""))
    hold_n = int(m.group(1)) if m else 0

    sections = []
    plot_bulk, plot_rate, plot_workers = [], [], []

    def na_note(s):
        return " (n/a: %s)" % na[s] if s in na else ""

    # a, b: throughput
    for wl, title in (("a", "1 stream"), ("b", "32 streams")):
        if not any(r["wl"] == wl for r in res.rows):
            continue
        d = res.gbps(wl, "direct")
        rows = []
        for s in ("direct", "socks5d", "dante", "microsocks"):
            if not res.has(wl, s):
                continue
            g = res.gbps(wl, s)
            proxy = 0.0 if s == "direct" else res.cpu_s_per_gb(wl, s)
            ng, cl = res.nginx_s_per_gb(wl, s), res.client_s_per_gb(wl, s)
            rows.append([NAMES[s] + na_note(s), fmt(g), fmt(ratio(g, d)),
                         "-" if s == "direct" else fmt(proxy), fmt(ng), fmt(cl),
                         fmt(total(proxy, ng, cl)),
                         str(res.failed(wl, s)) if res.failed(wl, s) is not None else "n/a"])
        ng, sd = res.nginx_s_per_gb(wl, "direct"), res.cpu_s_per_gb(wl, "socks5d")
        floor = ""
        if ng is not None and sd is not None:
            floor = ("  Sending costs the sender: nginx, sending every byte once with sendfile, "
                     "spends %s s per GB directly, which on loopback includes the client's TCP "
                     "input.  A relay sends every byte once more, to the client; socks5d's %s s "
                     "per GB is %s times what nginx's sending costs." % (fmt(ng), fmt(sd), fmt(sd / ng)))
        sections.append("### %s. Throughput, %s\n\n`loadgen -m bulk -c %s -d %s -p /big.bin` "
                        "(1 GiB file, sendfile), %s.  CPU per GB moved of each end: the proxy "
                        "(its cgroup), nginx (its cgroup) and the client (loadgen's own time); "
                        "the sum is the machine's cost of the path.%s\n\n"
                        % (wl, title, 1 if wl == "a" else 32, dur, med_word, floor)
                        + table(["system", "GB/s", "x direct", "proxy CPU s/GB", "nginx s/GB",
                                 "client s/GB", "sum s/GB", "failed fetches"], rows))

    # c, d: connection rate
    for wl, title, systems in (
            ("c", "no authentication", ("direct", "socks5d", "dante", "microsocks")),
            ("d", "RFC 1929 username/password", ("socks5d-auth", "dante-auth", "microsocks-auth"))):
        if not any(r["wl"] == wl for r in res.rows):
            continue
        d = res.rate("c", "direct")
        rows = []
        for s in systems:
            if not res.has(wl, s):
                continue
            r = res.rate(wl, s)
            proxy = 0.0 if s == "direct" else res.cpu_us_per_conn(wl, s)
            ng, cl = res.nginx_us_per_conn(wl, s), res.client_us_per_conn(wl, s)
            rows.append([NAMES[s] + na_note(s), fmt(r, 0), fmt(ratio(r, d)),
                         fmt(res.p(wl, s, "p50_us")), fmt(res.p(wl, s, "p99_us")),
                         "-" if s == "direct" else fmt(proxy, 1), fmt(ng, 1), fmt(cl, 1),
                         fmt(total(proxy, ng, cl), 1),
                         str(res.failed(wl, s)) if res.failed(wl, s) is not None else "n/a"])
        extra = " -u USER:PASS" if wl == "d" else ""
        note = ("  CPU per connection of each end: the proxy (its cgroup), nginx (its cgroup) and "
                "the client (loadgen's own time).")
        ng, cl = res.nginx_us_per_conn("c", "direct"), res.client_us_per_conn("c", "direct")
        sd = res.cpu_us_per_conn(wl, "socks5d" if wl == "c" else "socks5d-auth")
        if wl == "c" and None not in (ng, cl, sd):
            note += ("  A direct connection's two ends cost nginx %s µs and the client %s µs, "
                     "%s µs together: a proxy hosts one end of each kind (it accepts the "
                     "client's connection as nginx does and opens its own to nginx as the client "
                     "does), plus the SOCKS exchange, so that sum is its floor on this machine; "
                     "socks5d's %s µs is %s times it."
                     % (fmt(ng, 1), fmt(cl, 1), fmt(ng + cl, 1), fmt(sd, 1), fmt(sd / (ng + cl))))
            ng2, cl2 = res.nginx_us_per_conn("c", "socks5d"), res.client_us_per_conn("c", "socks5d")
            if None not in (ng2, cl2):
                note += ("  Through socks5d the same two ends cost more (nginx %s µs, the client %s "
                         "µs, %s µs together: at the lower rate each wake-up finds fewer "
                         "connections), so in that run the proxy's %s µs is %s times what its "
                         "peers spend on one end of the same kinds each."
                         % (fmt(ng2, 1), fmt(cl2, 1), fmt(ng2 + cl2, 1), fmt(sd, 1),
                            fmt(sd / (ng2 + cl2))))
        if wl == "d":
            m = re.search(r"password hash (\S+),", metad.get("dante auth", ""))
            note += ("  Dante checks the password against the system account on every connection "
                    "(its hash is %s, Debian 12's default for new passwords); socks5d keeps "
                    "yescrypt hashes too but remembers a password it has verified (a keyed hash per "
                    "user and worker), so only a worker's first login of a user pays for the hash; "
                    "microsocks compares plain text." % (m.group(1) if m else "?"))
        sections.append("### %s. Connection rate, 64 clients, %s\n\n`loadgen -m rate -c 64 -d %s -p /small%s` "
                        "(connect, SOCKS5 handshake, `GET /small HTTP/1.0`, 100-byte body, close; "
                        "x direct is against direct without a proxy), %s.%s\n\n"
                        % (wl, title, dur, extra, med_word, note)
                        + table(["system", "conn/s", "x direct", "p50 ms", "p99 ms", "proxy CPU µs/conn",
                                 "nginx µs/conn", "client µs/conn", "sum µs/conn", "failed"], rows))

    # e: idle sessions
    if any(r["wl"] == "e" for r in res.rows):
        rows = []
        for s in ("socks5d", "dante", "microsocks"):
            if not res.has("e", s):
                continue
            def per(r, a, b):
                return (float(r[b]) - float(r[a])) / float(r["held"])
            rows.append([NAMES[s] + na_note(s),
                         fmt(res.med("e", s, lambda r: float(r["established"])), 0),
                         fmt(res.med("e", s, lambda r: float(r["held"])), 0),
                         fmt(res.med("e", s, lambda r: per(r, "mem0_kib", "mem1_kib")), 1),
                         fmt(res.med("e", s, lambda r: per(r, "fd0", "fd1")), 2),
                         fmt(res.med("e", s, lambda r: float(r["procs"])), 0)])
        sections.append("### e. Idle sessions held\n\n`loadgen -m hold -c %d` (SOCKS5 CONNECT to nginx, then "
                        "nothing; at most 128 handshakes in flight) through a freshly started proxy; "
                        "memory is the growth of the proxy's private memory (Private_Clean + "
                        "Private_Dirty of all its processes) from idle to the sessions held, divided by "
                        "the sessions; likewise descriptors; %s.  Dante "
                        "forks more processes as sessions come (an io-child relays up to 32), which is "
                        "most of its memory per session; microsocks runs a thread per session.\n\n"
                        % (hold_n, med_word)
                        + table(["system", "established", "held", "KiB per session", "fds per session",
                                 "processes"], rows))

    # f: 100k
    fr = [r for r in res.rows if r["wl"] == "f"]
    if fr:
        r = fr[0]
        if "na" in r:
            body = "n/a: %s" % na.get("socks5d-big", "socks5d did not start")
        else:
            held = float(r["held"]) or None

            def per(a, b):
                return (float(r[b]) - float(r[a])) / held if held else None
            def n(k):
                return "{:,}".format(int(r[k]))
            rows = [[n("sessions"), r["workers"], r["loadgens"], n("established"), n("held"),
                     n("failed"), n("dropped"), fmt(num(r["ramp_seconds"]), 0),
                     fmt(per("mem0_kib", "mem1_kib"), 2), fmt(per("fd0", "fd1"), 2),
                     fmt(float(r["max_rss_kib"]) / 1024, 1),
                     "%s - %s" % (n("worker_fds_min"), n("worker_fds_max")) if "worker_fds_min" in r else n("max_fds"),
                     fmt(per("kernel0_kib", "kernel1_kib"), 1)]]
            body = table(["sessions", "workers", "loadgens", "established", "held at the end", "failed",
                          "dropped", "ramp s", "socks5d KiB/session", "fds/session",
                          "largest worker RSS MiB", "fds per worker (least - most)", "kernel KiB/session (whole machine)"],
                         rows)
        sections.append("### f. %s concurrent sessions through socks5d\n\n"
                        "socks5d `-w %s --accept %s`; %s loadgen processes (`-m hold`, 64 handshakes "
                        "in flight each, each from its own source address 127.0.0.N), the proxy's "
                        "outbound connections spread over 8 nginx addresses 127.0.1.1-8; held %s s after "
                        "the ramp; one run.  The kernel column is the growth of the machine's slab, "
                        "page-table and kernel-stack memory (client, proxy and nginx sockets together) "
                        "per session.\n\n"
                        % ("{:,}".format(int(r["sessions"])) if "sessions" in r else "100,000",
                           r.get("workers", "?"), r.get("accept", "exclusive"), r.get("loadgens", "?"),
                           r.get("hold_s", "?")) + body)

    # g: worker scaling
    if any(r["wl"] in ("b", "c") and r["sys"] == "socks5d-w1" for r in res.rows):
        rows = []
        for s, w in (("socks5d-w1", 1), ("socks5d", 2), ("socks5d-w4", 4)):
            g, c = res.gbps("b", s), res.rate("c", s)
            rows.append(["%d%s" % (w, na_note(s)), fmt(g), fmt(res.cpu_s_per_gb("b", s)), fmt(c, 0),
                         fmt(res.p("c", s, "p99_us")), fmt(res.cpu_us_per_conn("c", s), 1)])
            plot_workers.append("%d %s %s" % (w, g if g is not None else "NaN", c if c is not None else "NaN"))
        sections.append("### g. socks5d worker scaling\n\nWorkloads b (32 streams) and c (64 clients) "
                        "with `-w 1`, `-w 2`, `-w 4` (2 CPUs: loadgen and nginx share them), %s.\n\n"
                        % med_word
                        + table(["workers", "GB/s (32 streams)", "CPU s/GB", "conn/s (64 clients)", "p99 ms",
                                 "CPU µs/conn"], rows))

    # h: accept strategy
    if any(r["wl"] == "c" and r["sys"] == "socks5d-reuseport" for r in res.rows):
        rows = []
        for s, label in (("socks5d", "exclusive (one shared socket, EPOLLEXCLUSIVE)"),
                         ("socks5d-reuseport", "reuseport (one SO_REUSEPORT socket per worker)")):
            rows.append([label + na_note(s), fmt(res.rate("c", s), 0), fmt(res.p("c", s, "p50_us")),
                         fmt(res.p("c", s, "p99_us")), fmt(res.cpu_us_per_conn("c", s), 1)])
        sections.append("### h. Accept strategy\n\nsocks5d `-w 2 --accept MODE` on workload c (exclusive is "
                        "the default: its row is socks5d's in c), %s.\n\n"
                        % med_word
                        + table(["accept", "conn/s", "p50 ms", "p99 ms", "CPU µs/conn"], rows))

    # plot data
    for s, label in (("direct", "direct"), ("socks5d", "socks5d"), ("dante", "Dante"), ("microsocks", "microsocks")):
        a, b = res.gbps("a", s), res.gbps("b", s)
        plot_bulk.append('"%s" %s %s' % (label, a if a is not None else "NaN", b if b is not None else "NaN"))
        auth = {"direct": None, "socks5d": "socks5d-auth", "dante": "dante-auth",
                "microsocks": "microsocks-auth"}[s]
        c = res.rate("c", s)
        d = res.rate("d", auth) if auth else None
        plot_rate.append('"%s" %s %s' % (label, c if c is not None else "NaN", d if d is not None else "NaN"))
    for name, lines in (("plot-bulk.dat", plot_bulk), ("plot-rate.dat", plot_rate),
                        ("plot-workers.dat", plot_workers)):
        with open(os.path.join(outdir, name), "w") as f:
            f.write("\n".join(lines) + "\n")

    facts = "\n".join("    " + l for l in meta)
    systems = ("Systems: **direct** is loadgen straight to nginx; **socks5d** the release build, default "
               "settings, `-w 2 --anonymous always` (`-u bench:benchpass` for d); **Dante** (danted "
               "%s): `internal` and `external` 127.0.0.1, `clientmethod: none`, `socksmethod: none` "
               "(`username` for d); **microsocks** (%s): "
               "`-i 127.0.0.1` (`-u bench -P benchpass` for d).  All on 127.0.0.0/8 against one nginx "
               "(8 workers, sendfile, access log off).  Proxy CPU is the cgroup's cpuacct.usage "
               "(the proxy and every process it forks) over the run, divided by the GB moved or the "
               "connections completed; on loopback it includes the kernel's TCP work for both of the "
               "proxy's connections.  Every client waits for each SOCKS answer before its next "
               "message (`loadgen -W`, as most clients do; microsocks cannot take a pipelined "
               "request).  The machine's two cores are shared by loadgen, the proxy and "
               "nginx: treat the numbers as ratios measured side by side, not as capacity.  "
               "The exact commands are in `build/bench/commands.txt`."
               % (metad.get("dante", "").split(" (")[0].replace("Dante ", ""),
                  metad.get("microsocks", "")))
    md = "\n\n".join([systems, facts] + sections)
    if na:
        md += "\n\nn/a: " + "; ".join("%s: %s" % (k, v) for k, v in sorted(na.items()))
    with open(os.path.join(outdir, "tables.md"), "w") as f:
        f.write(md + "\n")

    if doc:
        title = "## Side by side: direct, socks5d, Dante and microsocks (`make bench`)"
        intro = ("`bench/run.sh` (run by `make bench`, about five minutes as root) installs Dante, "
                 "microsocks and gnuplot if missing, starts nginx and every proxy on loopback and "
                 "drives them with `bench/loadgen`; each run rewrites this section, the plot and "
                 "`build/bench/` (raw loadgen output).")
        body = [BEGIN, title, intro, md]
        if png:
            rel = os.path.relpath(os.path.abspath(png), os.path.dirname(os.path.abspath(doc)))
            body.append("![throughput, connection rate and socks5d worker scaling](%s)" % rel)
        body.append(END)
        section = "\n\n".join(body)
        text = open(doc).read()
        if BEGIN in text and END in text:
            pre = text[:text.index(BEGIN)]
            post = text[text.index(END) + len(END):]
            text = pre + section + post
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        with open(doc, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
