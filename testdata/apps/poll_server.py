# Python's socketserver (http.server.ThreadingHTTPServer) on the socket
# relaunch passes as fd 3, taken with socket.fromfd (a dup: the app's own fd
# number), and no sd_notify: serve_forever waits with poll(2)
# (selectors.PollSelector), which relaunch decodes from the app's memory, so
# --ready auto sees it accept. Answers "version=pypoll pid=P gen=G"; drains
# on SIGTERM (stops accepting, joins the requests in hand, exits 0).
import http.server
import os
import signal
import socket
import threading

GEN = os.environ.get("RELAUNCH_GENERATION", "?")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("version=pypoll pid=%d gen=%s\n" % (os.getpid(), GEN)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True


signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
sock = socket.fromfd(3, socket.AF_INET, socket.SOCK_STREAM)
os.close(3)
# Non-blocking: a poll wake-up that another generation's accept wins (a
# shared socket) must not leave this one stuck in accept().
sock.setblocking(False)
server = Server(sock.getsockname()[:2], Handler, bind_and_activate=False)
server.socket.close()
server.socket = sock
serving = threading.Thread(target=server.serve_forever)
serving.start()
signal.sigwait({signal.SIGTERM})
server.shutdown()
serving.join()
server.server_close()
