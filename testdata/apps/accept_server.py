# An HTTP server that blocks in accept() on the socket it inherits as fd 3
# and never speaks sd_notify: relaunch must see it accepting in /proc.
# Drains on SIGTERM: finishes the connection in hand, then exits.
import os
import signal
import socket

gen = os.environ.get("RELAUNCH_GENERATION", "?")
sock = socket.socket(fileno=3)  # blocking, as relaunch hands it over
state = {"accepting": False, "stopping": False}


def on_term(signum, frame):
    state["stopping"] = True
    # Interrupted in accept(): nothing was taken, leave now. (Steered, no new
    # connection reaches this generation's socket any more; with a shared
    # socket a connection accept() took just as the signal came could be
    # lost here: the app's half of zero downtime, README.)
    if state["accepting"]:
        raise SystemExit(0)


signal.signal(signal.SIGTERM, on_term)
while not state["stopping"]:
    state["accepting"] = True
    conn, _ = sock.accept()
    state["accepting"] = False
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
