package launcher

import (
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/sdlisten"
)

// Sockets passed back from the fd store become the listeners they were,
// in slot order, when they match the --listen address; else they are
// closed with a warning, and sockets of others are passed on.
func TestStoredListeners(t *testing.T) {
	a, _ := sdlisten.ParseAddr("127.0.0.1:0")
	p, err := sdlisten.BindPool(a, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// As systemd passes them back: named, in any order, among others.
	var passed []*sdlisten.Socket
	for i, m := range p.Members() {
		name := fmt.Sprintf("relaunch.L0.S%d", i)
		if i == p.Len() {
			name = "relaunch.L0.spare"
		}
		passed = append([]*sdlisten.Socket{named(t, m, name)}, passed...)
	}
	other := named(t, p.Slot(0), "web")
	passed = append(passed, other)
	defer func() {
		for _, s := range passed {
			s.Close() // those closed already say so
		}
	}()

	addr, _ := sdlisten.ParseAddr("api=" + p.Addr().Address)
	logs := &lockedBuffer{}
	slotFd := map[int]int{}
	for i := range 3 {
		slotFd[i] = findNamed(passed, fmt.Sprintf("relaunch.L0.S%d", i)).Fd()
	}
	stored, rest := storedListeners(passed, []sdlisten.Addr{addr}, "the fd store", NewLogger(logs, LogOptions{}))
	if len(rest) != 1 || rest[0] != other {
		t.Errorf("passed on %v; want only the socket named web", rest)
	}
	got := stored[0]
	if got == nil || got.Pool == nil || got.Pool.Len() != 3 || !got.Stored {
		t.Fatalf("stored[0] = %+v; want a pool of 3 slots", got)
	}
	for i := range 3 {
		if got.Pool.Slot(i).Fd() != slotFd[i] {
			t.Errorf("slot %d is not the socket stored as S%d", i, i)
		}
		if name := got.Pool.Slot(i).Addr().Name; name != "api" {
			t.Errorf("slot %d is named %q for the app; want the listener's own name, api", i, name)
		}
	}

	// Another address: closed, said.
	other2, _ := sdlisten.ParseAddr("127.0.0.1:1")
	var again []*sdlisten.Socket
	for i, m := range p.Members() {
		again = append(again, named(t, m, storeName(0, fmt.Sprintf("S%d", i))))
	}
	defer func() {
		for _, s := range again {
			s.Close()
		}
	}()
	stored, _ = storedListeners(again, []sdlisten.Addr{other2}, "the fd store", NewLogger(logs, LogOptions{}))
	if len(stored) != 0 || !strings.Contains(logs.String(), "do not match it") {
		t.Errorf("stored %v for another address; log:\n%s", stored, logs)
	}
}

// named is a socket on a dup of s's fd carrying name, as Inherited makes
// them.
func named(t *testing.T, s *sdlisten.Socket, name string) *sdlisten.Socket {
	t.Helper()
	k := s.Keep()
	fd, err := unix.Dup(k.Fd)
	if err != nil {
		t.Fatal(err)
	}
	k.Fd = fd
	a, _ := sdlisten.ParseAddr(k.Addr)
	a.Name = name
	k.Addr = a.String()
	n, err := sdlisten.Adopt(k)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func findNamed(ss []*sdlisten.Socket, name string) *sdlisten.Socket {
	for _, s := range ss {
		if s.Addr().Name == name {
			return s
		}
	}
	return nil
}
