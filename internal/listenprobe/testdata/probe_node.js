// A node http server on the socket it inherits as fd 3 (libuv polls it with
// epoll), for probe_test.go.
const http = require("http");
http.createServer((req, res) => res.end("ok\n")).listen({ fd: 3 });
