# Python's standard library HTTP server (http.server.ThreadingHTTPServer) on
# the socket relaunch passes as fd 3, with no dependency. It answers
# "version=pyhttp pid=P gen=G".
#
# * The server is made with bind_and_activate=False and its socket replaced
#   by fd 3: it neither binds nor listens.
# * The socket is made non-blocking: when several processes poll one socket
#   (generations sharing it, with --handover shared), a connection wakes all
#   of them and only one wins the accept; a blocking accept in the others
#   would then wait for the next client, drain or not. (O_NONBLOCK belongs
#   to the socket, not to the process: every generation of this app sets it.)
# * It polls with poll(2), which /proc cannot show, so it says READY=1 on
#   NOTIFY_SOCKET once it serves: run it with --ready notify (or auto).
# * It drains on SIGTERM or SIGINT: stop accepting, finish the requests it
#   accepted (their threads are joined), exit 0.
import http.server
import os
import signal
import socket
import threading

GEN = os.environ.get("RELAUNCH_GENERATION", "?")


class Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.0 (the default): one request per connection, so no idle
    # keep-alive connection holds a thread, and the drain up, forever.
    def do_GET(self):
        body = ("version=pyhttp pid=%d gen=%s\n" % (os.getpid(), GEN)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the requests in hand
    block_on_close = True


def sd_notify(state):
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.sendto(state.encode(), addr)


def main():
    # The drain signals wait for sigwait below, in the main thread; the
    # threads started after this inherit the mask.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    sock = socket.socket(fileno=3)
    sock.setblocking(False)
    server = Server(sock.getsockname()[:2], Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    sd_notify("READY=1\nSTATUS=serving")
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    sd_notify("STOPPING=1")
    server.shutdown()  # serve_forever returns: no more accepts
    serving.join()
    server.server_close()  # closes fd 3 (relaunch keeps the socket) and joins the request threads


main()
