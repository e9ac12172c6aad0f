"""Real servers on loopback for the credential dissector tests.

- AuthNginx: nginx with auth_basic (an htpasswd file made by htpasswd) on
  plain HTTP, and a TLS listener with a self-signed certificate.
- Dovecot: POP3, IMAP and submission (SMTP with AUTH) in the foreground as
  root with its own base_dir and configuration; passwd-file passdb with
  plain-text passwords, plain-text authentication allowed (no TLS at all).
  Mail is relayed to an SmtpSink.
- Vsftpd: guest (virtual) users authenticated through a PAM service file
  of our own (/etc/pam.d/s5it-vsftpd-PID, removed at close: pam_pwdfile
  with a crypt(3) password file), mapped to the 'ftp' account that the vsftpd package creates.

Every server listens on 127.0.0.1 only, on a free port; start-up waits are
bounded and every server is stopped (and its files removed) at close().
"""

import os
import resource
import shutil
import signal
import socket
import socketserver
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from s5lib import free_port

USERS = {"alice": "s3cret", "bob": 'p4 ss"w\\d'}


def wait_port(port, proc, what, timeout=15.0, log=None):
    end = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > end:
            detail = ""
            if log and Path(log).exists():
                detail = Path(log).read_text(errors="replace")[-3000:]
            if proc.poll() is not None and proc.stderr:
                detail += proc.stderr.read().decode(errors="replace")[-3000:]
            raise RuntimeError("%s did not start on port %d: %s" % (what, port, detail))
        time.sleep(0.05)


def stop_proc(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _low_nofile():
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def world_readable(path):
    """mkdtemp makes 0700 directories; servers' unprivileged processes
    must traverse them."""
    os.chmod(path, 0o755)


# ---------------------------------------------------------------- nginx

class AuthNginx:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="s5it-authnginx-"))
        world_readable(self.root)
        www = self.root / "www"
        (www / "private").mkdir(parents=True)
        (www / "private" / "a.txt").write_text("secret page a\n")
        (www / "private" / "b.txt").write_text("secret page b\n")
        (www / "big.bin").write_bytes(os.urandom(1 << 20))
        for d in ("tmp", "logs"):
            (self.root / d).mkdir()
        htpasswd = self.root / "htpasswd"
        first = True
        for u, p in USERS.items():
            r = subprocess.run(["htpasswd", "-b", "-B"] + (["-c"] if first else []) +
                               [str(htpasswd), u, p], capture_output=True, timeout=30)
            if r.returncode != 0:
                raise RuntimeError("htpasswd failed: %s" % r.stderr.decode())
            first = False
        # bcrypt in htpasswd needs nginx built with libcrypt's bcrypt: Debian's is.
        crt, key = self.root / "cert.pem", self.root / "key.pem"
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                            "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(crt)],
                           capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("openssl failed: %s" % r.stderr.decode())
        self.port = free_port()
        self.tls_port = free_port()
        t = self.root / "tmp"
        conf = """
daemon off;
master_process on;
worker_processes 1;
user root;
pid {root}/nginx.pid;
error_log {root}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format tst '$remote_port "$request" $status $connection $connection_requests';
    access_log {root}/access.log tst;
    client_body_temp_path {t}/body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    default_type application/octet-stream;
    keepalive_requests 1000;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        root {www};
        location /private/ {{
            auth_basic "s5it";
            auth_basic_user_file {htpasswd};
        }}
    }}
}}
""".format(root=self.root, t=t, port=self.port, tls_port=self.tls_port, crt=crt, key=key,
           www=www, htpasswd=htpasswd)
        (self.root / "nginx.conf").write_text(conf)
        self.access_log = self.root / "access.log"
        self.proc = subprocess.Popen(
            ["/usr/sbin/nginx", "-p", str(self.root), "-c", str(self.root / "nginx.conf"),
             "-e", str(self.root / "logs" / "error.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(self.port, self.proc, "nginx", log=self.root / "logs" / "error.log")
        wait_port(self.tls_port, self.proc, "nginx (TLS)", log=self.root / "logs" / "error.log")

    def access_entries(self):
        try:
            return self.access_log.read_text().splitlines()
        except FileNotFoundError:
            return []

    def close(self):
        stop_proc(self.proc, signal.SIGQUIT)
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------- SMTP sink

class SmtpSink:
    """The relay behind dovecot's submission service: accepts any mail."""

    def __init__(self):
        sink = self
        self.messages = []

        class Handler(socketserver.StreamRequestHandler):
            timeout = 20

            def handle(self):
                w = self.wfile
                w.write(b"220 sink ESMTP\r\n")
                data = None
                while True:
                    line = self.rfile.readline(65536)
                    if not line:
                        return
                    if data is not None:
                        if line in (b".\r\n", b".\n"):
                            sink.messages.append(b"".join(data))
                            data = None
                            w.write(b"250 2.0.0 queued\r\n")
                        else:
                            data.append(line)
                        continue
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"LHLO"):
                        w.write(b"250-sink\r\n250 8BITMIME\r\n")
                    elif verb == b"DATA":
                        data = []
                        w.write(b"354 go ahead\r\n")
                    elif verb == b"QUIT":
                        w.write(b"221 bye\r\n")
                        return
                    else:
                        w.write(b"250 ok\r\n")

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# ---------------------------------------------------------------- dovecot

class Dovecot:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="s5it-dovecot-"))
        world_readable(self.root)
        self.sink = SmtpSink()
        self.pop3_port = free_port()
        self.imap_port = free_port()
        self.smtp_port = free_port()
        home = self.root / "home"
        home.mkdir()
        os.chmod(home, 0o777)
        users = self.root / "users"
        # passwd-file: user:{PLAIN}password:uid:gid::home
        users.write_text("".join("%s:{PLAIN}%s:65534:65534::%s/%s\n" % (u, p, home, u)
                                 for u, p in USERS.items()))
        self.log = self.root / "dovecot.log"
        conf = """
base_dir = {root}/run
state_dir = {root}/state
instance_name = s5it-{pid}
log_path = {log}
info_log_path = {log}
protocols = pop3 imap submission
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
default_internal_user = dovecot
default_login_user = dovenull
hostname = s5it.test
mail_location = maildir:~/Maildir
submission_relay_host = 127.0.0.1
submission_relay_port = {sink}
submission_relay_trusted = yes
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    address = 127.0.0.1
    port = {smtp}
  }}
  inet_listener submissions {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
""".format(root=self.root, pid=os.getpid(), log=self.log, users=users, pop3=self.pop3_port,
           imap=self.imap_port, smtp=self.smtp_port, sink=self.sink.port)
        self.conf = self.root / "dovecot.conf"
        self.conf.write_text(conf)
        self.proc = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", str(self.conf)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        try:
            for p in (self.pop3_port, self.imap_port, self.smtp_port):
                wait_port(p, self.proc, "dovecot", log=self.log)
        except Exception:
            self.close()
            raise

    def close(self):
        stop_proc(self.proc)
        self.sink.close()
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------- vsftpd

class Vsftpd:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="s5it-vsftpd-"))
        world_readable(self.root)
        ftproot = self.root / "ftp"
        ftproot.mkdir()
        world_readable(ftproot)
        (ftproot / "hello.txt").write_text("hello over ftp\n")
        empty = self.root / "empty"
        empty.mkdir()
        world_readable(empty)
        self.port = free_port()
        # pam_pwdfile checks crypt(3) hashes in a file of our own.  (pam_exec
        # would fork, and vsftpd's SIGCHLD handler then waits for a child
        # that pam_exec already reaped: the login hangs.)
        pwfile = self.root / "passwd"
        lines = []
        for u, p in USERS.items():
            r = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=p.encode(),
                               capture_output=True, timeout=30)
            if r.returncode != 0:
                raise RuntimeError("openssl passwd failed: %s" % r.stderr.decode())
            lines.append("%s:%s\n" % (u, r.stdout.decode().strip()))
        pwfile.write_text("".join(lines))
        self.service = "s5it-vsftpd-%d" % os.getpid()
        self.pam = Path("/etc/pam.d") / self.service
        self.pam.write_text("auth required pam_pwdfile.so pwdfile=%s\n"
                            "account required pam_permit.so\n"
                            "session required pam_permit.so\n" % pwfile)
        self.log = self.root / "vsftpd.log"
        conf = """
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
anonymous_enable=NO
local_enable=YES
guest_enable=YES
guest_username=ftp
nopriv_user=nobody
ftp_username=nobody
local_root={ftproot}
check_shell=NO
userlist_enable=NO
pam_service_name={service}
secure_chroot_dir={empty}
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
pasv_enable=YES
pasv_address=127.0.0.1
connect_from_port_20=NO
xferlog_enable=NO
vsftpd_log_file={log}
dual_log_enable=NO
ssl_enable=NO
""".format(port=self.port, ftproot=ftproot, service=self.service, empty=empty, log=self.log)
        self.conf = self.root / "vsftpd.conf"
        self.conf.write_text(conf)
        os.chmod(self.conf, stat.S_IRUSR | stat.S_IWUSR)
        # pam_exec closes every descriptor below the limit in its child:
        # with a limit of millions, a login would take minutes.
        self.proc = subprocess.Popen(["/usr/sbin/vsftpd", str(self.conf)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=_low_nofile)
        try:
            wait_port(self.port, self.proc, "vsftpd", log=self.log)
        except Exception:
            self.close()
            raise

    def close(self):
        stop_proc(self.proc)
        try:
            self.pam.unlink()
        except FileNotFoundError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
