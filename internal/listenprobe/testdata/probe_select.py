# A server that waits for connections with select() on the socket it
# inherits as fd 3: the probe decodes the fd_set of the blocked thread. With
# PROBE_STAMP set it writes the time (Unix ns) right before its first
# select().
import os
import select
import socket
import time

sock = socket.socket(fileno=3)
stamp = os.environ.get("PROBE_STAMP")
if stamp:
    t = time.time_ns()
    with open(stamp, "w") as f:
        f.write("select %d\n" % t)
while True:
    ready, _, _ = select.select([sock], [], [])
    if ready:
        conn, _ = sock.accept()
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        conn.close()
