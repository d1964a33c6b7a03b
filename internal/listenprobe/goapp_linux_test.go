package listenprobe

import (
	"fmt"
	"golang.org/x/sys/unix"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// goAppEnv makes the test binary, started with it, the Go app of the tests
// instead of running them: a net/http server on fd 3, which Go polls with
// epoll. Starting it takes milliseconds, where building an app of its own
// took a second.
const goAppEnv = "LISTENPROBE_TEST_GO_APP=1"

func TestMain(m *testing.M) {
	if os.Getenv("LISTENPROBE_TEST_GO_APP") == "1" {
		goApp()
		return
	}
	if mode := os.Getenv(waitAppEnv); mode != "" {
		waitApp(mode)
		return
	}
	os.Exit(m.Run())
}

// goApp serves HTTP on the socket it inherits as fd 3. With PROBE_STAMP set
// it writes there, in Unix ns, when it creates the listener (that is when
// Go registers the socket with epoll) and right before it serves.
func goApp() {
	created := time.Now()
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "go app:", err)
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
	os.Exit(1)
}

// goAppPath is the test binary, to start with goAppEnv.
func goAppPath(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// waitAppEnv makes the test binary an app that waits for its listener
// (fd 3, dup'd to fd 70: the second word of an fd_set) with one of the raw
// calls select, pselect, poll or ppoll, among pipes of its own; with
// "pipe-only" it holds the listener but polls only a pipe, and with
// "poll-write" it polls the listener for POLLOUT only. It accepts and
// closes whatever comes.
const waitAppEnv = "LISTENPROBE_TEST_WAIT"

func waitApp(mode string) {
	const lfd = 70
	if err := unix.Dup2(3, lfd); err != nil {
		fmt.Fprintln(os.Stderr, "wait app:", err)
		os.Exit(2)
	}
	var p1, p2 [2]int
	unix.Pipe(p1[:])
	unix.Pipe(p2[:])
	for {
		var err error
		switch mode {
		case "select", "pselect":
			var rd unix.FdSet
			rd.Set(p1[0])
			rd.Set(lfd)
			rd.Set(p2[0])
			if mode == "select" {
				_, err = unix.Select(lfd+1, &rd, nil, nil, nil)
			} else {
				_, err = unix.Pselect(lfd+1, &rd, nil, nil, nil, nil)
			}
		case "poll", "ppoll", "pipe-only", "poll-write":
			fds := []unix.PollFd{{Fd: int32(p1[0]), Events: unix.POLLIN}, {Fd: -1}, {Fd: lfd, Events: unix.POLLIN}, {Fd: int32(p2[0]), Events: unix.POLLIN}}
			switch mode {
			case "pipe-only":
				fds = fds[:1]
			case "poll-write":
				fds[2].Events = unix.POLLOUT
			}
			if mode == "ppoll" {
				_, err = unix.Ppoll(fds, nil, nil)
			} else {
				_, err = unix.Poll(fds, -1)
			}
		default:
			fmt.Fprintln(os.Stderr, "wait app: no mode", mode)
			os.Exit(2)
		}
		if err != nil && err != unix.EINTR {
			fmt.Fprintln(os.Stderr, "wait app:", err)
			os.Exit(2)
		}
		if nfd, _, err := unix.Accept(lfd); err == nil {
			unix.Close(nfd)
		}
	}
}
