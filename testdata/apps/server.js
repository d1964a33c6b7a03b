// A node HTTP server on the socket it inherits as fd 3 (libuv polls it with
// epoll); no sd_notify. Drains on SIGTERM: stop accepting, finish, exit.
const http = require("http");
const gen = process.env.RELAUNCH_GENERATION || "?";
const server = http
  .createServer((req, res) => res.end(`version=node pid=${process.pid} gen=${gen}\n`))
  .listen({ fd: 3 });
process.on("SIGTERM", () => {
  // Close the listener first; then answer what was accepted and exit.
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
