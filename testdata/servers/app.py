# The app that gunicorn (WSGI: app:wsgi) and uvicorn (ASGI: app:asgi) serve in
# servers_test.go. It answers "version=NAME pid=P gen=G" so that the load
# generator can tell the generations apart; NAME is "gunicorn" or "uvicorn".
import os

GEN = os.environ.get("RELAUNCH_GENERATION", "?")


def _body(name):
    return ("version=%s pid=%d gen=%s\n" % (name, os.getpid(), GEN)).encode()


def wsgi(environ, start_response):
    body = _body("gunicorn")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return  # lifespan: nothing to set up
    body = _body("uvicorn")
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
