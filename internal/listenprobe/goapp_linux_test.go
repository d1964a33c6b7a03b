package listenprobe

import (
	"fmt"
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
