// Command gosystemd is a test app for relaunch that takes its listeners only
// from coreos/go-systemd's activation.Listeners(), which ignores the
// inherited fds unless LISTEN_PID is this process's own pid. Run under
// relaunch, it proves relaunch interoperates with a strict reader. It answers
// "gosystemd pid=P\n", sends READY=1 with daemon.SdNotify, and drains
// gracefully on SIGQUIT/SIGTERM/SIGINT: close the listeners, wait 100ms, then
// http.Server.Shutdown.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

func main() {
	pid := os.Getpid()
	gen := os.Getenv("RELAUNCH_GENERATION")
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "gosystemd: gen %s pid %d: "+format+"\n", append([]any{gen, pid}, args...)...)
		os.Exit(1)
	}

	// Listeners unsets LISTEN_*: keep them for the error message.
	listenFds, listenPid := os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID")
	all, err := activation.Listeners()
	if err != nil {
		fail("activation.Listeners: %v", err)
	}
	var listeners []net.Listener
	for _, l := range all {
		if l != nil { // nil: an fd that is not a stream listener
			listeners = append(listeners, l)
		}
	}
	if len(listeners) == 0 {
		fail("no sockets passed (LISTEN_FDS=%q LISTEN_PID=%q, my pid %d)", listenFds, listenPid, pid)
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGINT)

	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "gosystemd pid=%d\n", pid)
	})}
	draining := make(chan struct{})
	serveErr := make(chan error, len(listeners))
	for _, l := range listeners {
		go func(l net.Listener) {
			err := srv.Serve(l)
			select {
			case <-draining:
			default:
				serveErr <- err
			}
		}(l)
	}
	fmt.Fprintf(os.Stderr, "gosystemd: gen %s pid %d listening on %d sockets\n", gen, pid, len(listeners))

	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		fmt.Fprintf(os.Stderr, "gosystemd: gen %s pid %d: sd_notify: %v\n", gen, pid, err)
	}

	select {
	case err := <-serveErr:
		fail("serve: %v", err)
	case <-sigs:
	}
	close(draining)
	for _, l := range listeners {
		l.Close()
	}
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "gosystemd: gen %s pid %d: shutdown: %v\n", gen, pid, err)
	}
	fmt.Fprintf(os.Stderr, "gosystemd: gen %s pid %d exiting\n", gen, pid)
}
