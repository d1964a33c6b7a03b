# A server that blocks in accept() on the socket it inherits as fd 3, for
# probe_test.go. With PROBE_STAMP set it writes the time (Unix ns)
# right before it first calls accept().
import os
import socket
import time

sock = socket.socket(fileno=3)  # blocking, as relaunch hands it over
stamp = os.environ.get("PROBE_STAMP")
if stamp:
    t = time.time_ns()
    with open(stamp, "w") as f:
        f.write("accept %d\n" % t)
while True:
    conn, _ = sock.accept()
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
    conn.close()
