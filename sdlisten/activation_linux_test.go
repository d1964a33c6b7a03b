package sdlisten

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// placeFds dups socks onto a run of free fds without close-on-exec, as a
// systemd-started process would hold them, and returns the first one.
func placeFds(t *testing.T, socks ...*Socket) int {
	t.Helper()
	base := 200
next:
	for ; base < 1000; base += 10 {
		for i := range socks {
			if _, err := unix.FcntlInt(uintptr(base+i), unix.F_GETFD, 0); err != unix.EBADF {
				continue next
			}
		}
		break
	}
	for i, s := range socks {
		if err := unix.Dup3(s.Fd(), base+i, 0); err != nil {
			t.Fatal(err)
		}
		fd := base + i
		t.Cleanup(func() {
			// Unless the test closed it already through its Socket.
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
				unix.Close(fd)
			}
		})
	}
	return base
}

func envLookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

func TestInherited(t *testing.T) {
	tcp := mustBind(t, "tcp4://127.0.0.1:0")
	dual := mustBind(t, ":0")
	udp := mustBind(t, "udp://127.0.0.1:0")
	path := filepath.Join(t.TempDir(), "app.sock")
	sock := mustBind(t, "unix://"+path)
	base := placeFds(t, tcp, dual, udp, sock)
	pid := os.Getpid()

	socks, err := inherited(envLookup(map[string]string{
		"LISTEN_PID":     strconv.Itoa(pid),
		"LISTEN_FDS":     "4",
		"LISTEN_FDNAMES": "web::dns:ctl",
	}), pid, base)
	if err != nil {
		t.Fatal(err)
	}
	want := []Addr{
		{"web", "tcp", tcp.Addr().Address},
		{"", "tcp", dual.Addr().Address},
		{"dns", "udp", udp.Addr().Address},
		{"ctl", "unix", path},
	}
	if len(socks) != len(want) {
		t.Fatalf("got %d sockets, want %d", len(socks), len(want))
	}
	for i, s := range socks {
		if s.Fd() != base+i || s.Addr() != want[i] {
			t.Errorf("socket %d: fd %d %#v, want fd %d %#v", i, s.Fd(), s.Addr(), base+i, want[i])
		}
		if fl, _ := unix.FcntlInt(uintptr(s.Fd()), unix.F_GETFD, 0); fl&unix.FD_CLOEXEC == 0 {
			t.Errorf("socket %d is not close-on-exec", i)
		}
	}
	// Closing an inherited unix socket never removes its file.
	if err := socks[3].Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("Close of an inherited socket removed %s: %v", path, err)
	}

	// Without LISTEN_FDNAMES every name is empty.
	socks, err = inherited(envLookup(map[string]string{"LISTEN_PID": strconv.Itoa(pid), "LISTEN_FDS": "1"}), pid, base)
	if err != nil || len(socks) != 1 || socks[0].Addr() != (Addr{"", "tcp", tcp.Addr().Address}) {
		t.Errorf("without names: %v, %v", socks, err)
	}
}

func TestInheritedNone(t *testing.T) {
	pid := os.Getpid()
	for _, env := range []map[string]string{
		{},
		{"LISTEN_FDS": "2"},
		{"LISTEN_PID": strconv.Itoa(pid + 1), "LISTEN_FDS": "2"},
		{"LISTEN_PID": strconv.Itoa(pid), "LISTEN_FDS": "0"},
		{"LISTEN_PID": strconv.Itoa(pid)},
	} {
		socks, err := inherited(envLookup(env), pid, 3)
		if socks != nil || err != nil {
			t.Errorf("%v: %v, %v; want nil, nil", env, socks, err)
		}
	}
	// The real environment: relaunch's own pid is never 1 here.
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "1")
	if socks, err := Inherited(); socks != nil || err != nil {
		t.Errorf("Inherited with another LISTEN_PID: %v, %v", socks, err)
	}
}

func TestInheritedBad(t *testing.T) {
	pid := os.Getpid()
	ps := strconv.Itoa(pid)
	s := mustBind(t, "tcp4://127.0.0.1:0")
	base := placeFds(t, s)
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"LISTEN_PID": "abc"}, `LISTEN_PID="abc"`},
		{map[string]string{"LISTEN_PID": "-1"}, `LISTEN_PID="-1"`},
		{map[string]string{"LISTEN_PID": ps, "LISTEN_FDS": "x"}, `LISTEN_FDS="x"`},
		{map[string]string{"LISTEN_PID": ps, "LISTEN_FDS": "-2"}, `LISTEN_FDS="-2"`},
		{map[string]string{"LISTEN_PID": ps, "LISTEN_FDS": "99999999999"}, `LISTEN_FDS="99999999999"`},
		{map[string]string{"LISTEN_PID": ps, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"}, `LISTEN_FDNAMES="a:b" in relaunch's environment: 2 names for LISTEN_FDS=1`},
		{map[string]string{"LISTEN_PID": ps, "LISTEN_FDS": "2"}, "fd " + strconv.Itoa(base+1) + " is not open"},
	} {
		socks, err := inherited(envLookup(tc.env), pid, base)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v, %v; want an error with %q", tc.env, socks, err, tc.want)
		}
	}
}

func TestInheritedUnixNotRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.sock")
	s := mustBind(t, "unix://"+path)
	base := placeFds(t, s)
	pid := os.Getpid()
	socks, err := inherited(envLookup(map[string]string{"LISTEN_PID": strconv.Itoa(pid), "LISTEN_FDS": "1"}), pid, base)
	if err != nil {
		t.Fatal(err)
	}
	socks[0].Close()
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		t.Error("the file was removed")
	}
}
