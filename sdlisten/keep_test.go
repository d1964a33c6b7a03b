package sdlisten

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Keep and Adopt round-trip a socket within one process (the exec in
// between is relaunch's, tested end to end): same fd, same address,
// close-on-exec again, and Close still removes the socket file it made.
func TestKeepAdopt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.sock")
	a, err := ParseAddr("unix://" + path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Bind(a)
	if err != nil {
		t.Fatal(err)
	}
	k := s.Keep()
	if _, err := unix.FcntlInt(uintptr(k.Fd), unix.F_SETFD, 0); err != nil { // as before an exec
		t.Fatal(err)
	}
	got, err := Adopt(k)
	if err != nil {
		t.Fatal(err)
	}
	if got.Fd() != s.Fd() || got.Addr() != s.Addr() {
		t.Errorf("adopted fd %d %s; want fd %d %s", got.Fd(), got.Addr(), s.Fd(), s.Addr())
	}
	if fl, _ := unix.FcntlInt(uintptr(got.Fd()), unix.F_GETFD, 0); fl&unix.FD_CLOEXEC == 0 {
		t.Error("the adopted socket is not close-on-exec")
	}
	if err := got.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("%s left after Close of the adopted socket: %v", path, err)
	}

	p, err := BindPool(Addr{Network: "tcp", Address: "127.0.0.1:0"}, 3)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := AdoptPool(p.Keep())
	if err != nil {
		t.Fatal(err)
	}
	if ap.Len() != 3 || ap.Addr() != p.Addr() || ap.Slot(2).Fd() != p.Slot(2).Fd() {
		t.Errorf("adopted pool: %d slots on %s; want 3 on %s", ap.Len(), ap.Addr(), p.Addr())
	}
	if err := ap.Steer(2); err != nil {
		t.Errorf("the adopted pool cannot steer: %v", err)
	}
	ap.Close()
	if _, err := AdoptPool(nil); err == nil {
		t.Error("AdoptPool(nil) succeeded")
	}
}
