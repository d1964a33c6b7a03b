# A server that ignores LISTEN_FDS: it binds a socket of its own on the port
# of the socket it inherits as fd 3, at the address given (127.0.0.2 by
# default), and blocks in accept() there. Exits 77 when it cannot bind that
# address (no IPv6, say).
import os
import socket
import sys

inherited = socket.socket(fileno=3)  # kept open, never used
port = inherited.getsockname()[1]
host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.2"
family = socket.AF_INET6 if ":" in host else socket.AF_INET
own = socket.socket(family, socket.SOCK_STREAM)
own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    own.bind((host, port))
except OSError as e:
    print("probe_own.py: bind %s port %d: %s" % (host, port, e), file=sys.stderr)
    sys.exit(77)
own.listen(16)
while True:
    conn, _ = own.accept()
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
    conn.close()
