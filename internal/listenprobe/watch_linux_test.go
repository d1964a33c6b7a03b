package listenprobe

import (
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// A Watch of an epoll instance a Scan found sees relaunch's socket added to
// it, and only then; a closed Watch sees nothing.
func TestWatchSeesTheSocketAdded(t *testing.T) {
	ln, other, ep, add := epollWith(t)
	add(other) // a socket that is not relaunch's

	p := New([]int{int(ln.Fd())})
	p.Scan(os.Getpid()) // sees this process, and its epoll instances
	self := EpollRef{os.Getpid(), ep}
	if !slices.Contains(p.Epolls(), self) {
		t.Fatalf("Epolls() = %v; want %v among them", p.Epolls(), self)
	}
	w := p.NewWatch()
	defer w.Close()
	w.Add([]EpollRef{self})
	w.Add([]EpollRef{self}) // once
	if w.Len() != 1 {
		t.Fatalf("Len() = %d; want 1", w.Len())
	}
	if w.Polled() {
		t.Fatal("Polled() before the socket is in the set")
	}
	add(ln)
	if !w.Polled() {
		t.Fatal("Polled() false after the socket was added")
	}
	w.Close()
	w.Add([]EpollRef{self})
	if w.Polled() || w.Len() != 0 {
		t.Fatalf("a closed Watch: Polled() true or Len() %d", w.Len())
	}
}

// Polls reads one epoll instance: it sees relaunch's socket in its set as
// a Scan does (the Scan's Result names the instance, and Polls of it gives
// the same How), and sees nothing in an instance without it, in an fd
// that is no epoll instance, or in one that is not open.
func TestPolls(t *testing.T) {
	ln, other, ep, add := epollWith(t)
	p := New([]int{int(ln.Fd())})
	self := EpollRef{os.Getpid(), ep}
	if r := p.Polls(self); r.Accepting {
		t.Fatalf("Polls(%v) = %+v on an empty set", self, r)
	}
	add(ln)
	r := p.Polls(self)
	if !r.Accepting || r.Epoll != self {
		t.Fatalf("Polls(%v) = %+v once the socket is in its set", self, r)
	}
	// The Scan names the instance it saw the socket in (this one, or the
	// Go runtime's, which has the listener's own fd): Polls sees it there.
	if s := p.Scan(os.Getpid()); !s.Accepting || s.Epoll.Pid != os.Getpid() || p.Polls(s.Epoll).How != s.How {
		t.Errorf("Scan = %+v; Polls of its instance = %+v", s, p.Polls(s.Epoll))
	}
	for _, ref := range []EpollRef{{os.Getpid(), int(other.Fd())}, {os.Getpid(), 9999}, {0x3fffffff, ep}} {
		if r := p.Polls(ref); r.Accepting {
			t.Errorf("Polls(%v) = %+v; want nothing", ref, r)
		}
	}
}

// epollWith makes two listening sockets (relaunch's, another) and an epoll
// instance of this process, closed with the test; add puts a socket in its
// set.
func epollWith(t *testing.T) (ln, other *os.File, ep int, add func(*os.File)) {
	t.Helper()
	ln, _ = probeListener(t)
	other, _ = probeListener(t)
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(ep) })
	add = func(f *os.File) {
		t.Helper()
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(f.Fd())}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, int(f.Fd()), &ev); err != nil {
			t.Fatal(err)
		}
	}
	return ln, other, ep, add
}
