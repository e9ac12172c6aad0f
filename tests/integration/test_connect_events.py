"""What the target does while its connect completes reaches the session:
a target that answers and closes before the worker has looked at the
connect gives the client the answer and then EOF.  The worker is slowed
down by strace delaying each epoll_wait, so that the answer, the FIN and
the connect's completion come to it in one batch of events."""
import shutil
import socket
import subprocess
import time

import pytest
from s5lib import ThreadedTarget, connect, handshake, read_reply, read_until_eof, request

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")


def slowed(pid, delay_us):
    return subprocess.Popen(["strace", "-qq", "-o", "/dev/null", "-p", str(pid),
                             "-e", "trace=epoll_wait,epoll_pwait",
                             "-e", "inject=epoll_wait,epoll_pwait:delay_enter=%d" % delay_us])


@pytest.mark.parametrize("relay", [(), ("--no-splice",)], ids=["splice", "copy"])
def test_target_that_answers_and_closes_during_the_connect(socks5d, relay):
    p = socks5d("--anonymous", "always", *relay, workers=1)

    def hello(c, a):
        c.sendall(b"hello\n")
        c.shutdown(socket.SHUT_WR)
        c.recv(1)

    t = ThreadedTarget(hello)
    (w,) = p.workers()
    st = slowed(w, 300000)
    try:
        time.sleep(1)  # strace attached
        s = connect("127.0.0.1", p.port, 10)
        with s:
            handshake(s, timeout=10)
            s.sendall(request("127.0.0.1", t.port))
            assert read_reply(s, 10).rep == 0
            assert read_until_eof(s, 15) == b"hello\n"
    finally:
        st.terminate()
        st.wait(10)
        t.close()
