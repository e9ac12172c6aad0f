#!/usr/bin/env python3
"""Write an uncompressed newc initramfs for the SCTP test VM.

  mkinitramfs.py OUT --init FILE [--file SRC:DST]... [--bin SRC:DST]...

--bin also copies the shared libraries that ldd lists for SRC (and the
dynamic loader), at the paths ldd gives.  The tree is merged-/usr like the
host (/lib, /lib64, /bin, /sbin are symlinks into /usr), so a library is
found under both spellings.  Uncompressed: decompressing in the guest costs
more emulated time than reading a larger image.
"""

import os
import re
import subprocess
import sys

MERGED = {"/lib": "usr/lib", "/lib64": "usr/lib64", "/bin": "usr/bin", "/sbin": "usr/sbin"}


class Cpio:
    def __init__(self, path):
        self.f = open(path, "wb")
        self.ino = 1
        self.dirs = set()

    def _entry(self, name, mode, data=b""):
        name = name.lstrip("/")
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join("%08x" % v for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        self.ino += 1
        self.f.write(hdr.encode() + nb)
        self.f.write(b"\0" * (-(110 + len(nb)) % 4))
        self.f.write(data)
        self.f.write(b"\0" * (-len(data) % 4))

    def mkdir(self, path):
        path = "/" + path.strip("/")
        if path == "/" or path in self.dirs:
            return
        self.mkdir(os.path.dirname(path))
        self.dirs.add(path)
        self._entry(path, 0o040755)

    def symlink(self, path, target):
        self.mkdir(os.path.dirname(path))
        self._entry(path, 0o120777, target.encode())

    def file(self, path, data, mode=0o100755):
        self.mkdir(os.path.dirname(path))
        self._entry(path, mode, data)

    def close(self):
        self._entry("TRAILER!!!", 0)
        self.f.close()


def usr_path(dst):
    """/lib/x -> /usr/lib/x: the merged-/usr spelling inside the image."""
    for top, real in MERGED.items():
        if dst == top or dst.startswith(top + "/"):
            return "/" + real + dst[len(top):]
    return dst


def ldd_deps(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    deps = []
    for line in out.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            deps.append(m.group(1))
    return deps


def main(argv):
    out = argv[1]
    files, bins, init = [], [], None
    i = 2
    while i < len(argv):
        opt, val = argv[i], argv[i + 1]
        i += 2
        if opt == "--init":
            init = val
        elif opt == "--file":
            files.append(val.split(":", 1))
        elif opt == "--bin":
            bins.append(val.split(":", 1))
        else:
            raise SystemExit("mkinitramfs: unknown option " + opt)
    c = Cpio(out)
    for top, real in MERGED.items():
        c.mkdir("/" + real)
        c.symlink(top, real)
    for d in ("/dev", "/proc", "/sys", "/tmp", "/run", "/etc", "/root"):
        c.mkdir(d)
    c.file("/etc/hosts", b"127.0.0.1 localhost\n::1 localhost\n", 0o100644)
    c.file("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o100644)
    c.file("/etc/group", b"root:x:0:\n", 0o100644)
    c.file("/etc/resolv.conf", b"nameserver 127.0.0.1\n", 0o100644)
    c.file("/init", open(init, "rb").read())
    seen = set()
    for src, dst in files + bins:
        c.file(usr_path(dst), open(src, "rb").read(), 0o100755)
    for src, _ in bins:
        for lib in ldd_deps(src):
            real = usr_path(lib)
            if real in seen:
                continue
            seen.add(real)
            c.file(real, open(os.path.realpath(lib), "rb").read(), 0o100755)
    c.close()


if __name__ == "__main__":
    main(sys.argv)
