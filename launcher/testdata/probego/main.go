// probego is a Go net/http server on the socket it inherits as fd 3, for
// listenprobe_test.go: Go polls its listener with epoll. With PROBE_STAMP
// set it writes there, in Unix ns, when it creates the listener (that is
// when Go registers the socket with epoll) and right before it serves.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	created := time.Now()
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "probego:", err)
		os.Exit(2)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})}
	if path := os.Getenv("PROBE_STAMP"); path != "" {
		stamp := fmt.Sprintf("listener %d\nserve %d\n", created.UnixNano(), time.Now().UnixNano())
		os.WriteFile(path, []byte(stamp), 0o644)
	}
	srv.Serve(ln)
}
