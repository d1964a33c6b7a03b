# A server that closes the socket it inherits as fd 3 (as puma does when
# its own binding does not match it) and listens on a port of its own,
# which it writes to the file named by PROBE_STAMP, then blocks in accept().
import os
import socket

os.close(3)
own = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
own.bind(("127.0.0.1", 0))
own.listen(16)
with open(os.environ["PROBE_STAMP"], "w") as f:
    f.write("port %d\n" % own.getsockname()[1])
while True:
    conn, _ = own.accept()
    conn.close()
