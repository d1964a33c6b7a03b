# An HTTP server that relaunch cannot see accepting: it is told of new
# connections by SIGIO (O_ASYNC on the socket it inherits as fd 3) and
# waits for that signal, so no thread of it waits on the socket in a way
# /proc shows (no epoll, no accept, no select or poll). relaunch's auto
# readiness falls back to 2s alive. Drains on SIGTERM.
import fcntl
import os
import signal
import socket

gen = os.environ.get("RELAUNCH_GENERATION", "?")
sock = socket.socket(fileno=3)
sock.setblocking(False)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGIO, signal.SIGTERM})
fcntl.fcntl(3, fcntl.F_SETOWN, os.getpid())
fcntl.fcntl(3, fcntl.F_SETFL, fcntl.fcntl(3, fcntl.F_GETFL) | os.O_ASYNC)
while True:
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            break
        with conn:
            conn.setblocking(True)
            req = b""
            while b"\r\n\r\n" not in req:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                req += chunk
            body = ("version=sigio pid=%d gen=%s\n" % (os.getpid(), gen)).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    if signal.sigwait({signal.SIGIO, signal.SIGTERM}) == signal.SIGTERM:
        break
