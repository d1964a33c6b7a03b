# An HTTP server that waits with select() on fd 3 and never speaks
# sd_notify: relaunch reads the fd_set of the thread blocked in select(), so
# its auto readiness sees it accept.
import os
import select
import signal
import socket
import sys

gen = os.environ.get("RELAUNCH_GENERATION", "?")
sock = socket.socket(fileno=3)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    r, _, _ = select.select([sock], [], [])
    conn, _ = sock.accept()
    with conn:
        conn.recv(4096)
        body = ("version=select pid=%d gen=%s\n" % (os.getpid(), gen)).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
