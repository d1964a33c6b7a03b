# An HTTP server that blocks in accept() on the socket it inherits as fd 3
# and never speaks sd_notify: relaunch must see it accepting in /proc.
# Drains on SIGTERM: finishes the connection in hand, then exits.
import os
import signal
import socket

gen = os.environ.get("RELAUNCH_GENERATION", "?")
sock = socket.socket(fileno=3)  # blocking, as relaunch hands it over
stopping = False


def on_term(signum, frame):
    global stopping
    stopping = True
    # accept() is retried after a handler returns (PEP 475): wake it with a
    # connection of our own. Whichever generation accepts it reads EOF.
    # Raising here instead could drop a connection accept() had just taken.
    try:
        socket.create_connection(sock.getsockname()[:2], timeout=1).close()
    except OSError:
        pass


signal.signal(signal.SIGTERM, on_term)
while not stopping:
    conn, _ = sock.accept()
    with conn:
        req = b""
        while b"\r\n\r\n" not in req:
            chunk = conn.recv(4096)
            if not chunk:
                break
            req += chunk
        if req:
            body = ("version=py pid=%d gen=%s\n" % (os.getpid(), gen)).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
