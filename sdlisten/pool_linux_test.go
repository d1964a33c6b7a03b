package sdlisten

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Steering sends every new connection to the chosen slot's queue, and the
// other slots get none, with real connections.
func TestPoolSteer(t *testing.T) {
	a, err := ParseAddr("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := BindPool(a, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i := 1; i < p.Len(); i++ {
		if p.Slot(i).Addr() != p.Slot(0).Addr() {
			t.Fatalf("slot %d on %s, slot 0 on %s", i, p.Slot(i).Addr(), p.Slot(0).Addr())
		}
	}
	connect, queued := poolProbes(t, p)
	if err := p.Steer(1); err != nil {
		t.Fatal(err)
	}
	connect(5)
	if q := queued(); q[0] != 0 || q[1] != 5 || q[2] != 0 {
		t.Fatalf("steered to slot 1, queues are %v; want [0 5 0]", q)
	}
	if err := p.Steer(2); err != nil {
		t.Fatal(err)
	}
	connect(2)
	if q := queued(); q[0] != 0 || q[1] != 5 || q[2] != 2 {
		t.Fatalf("steered to slot 2, queues are %v; want [0 5 2]", q)
	}
	if err := p.Steer(3); err == nil {
		t.Fatal("steering to a slot out of range succeeded")
	}
}

func TestPoolRejectsNonTCP(t *testing.T) {
	for _, s := range []string{"udp://127.0.0.1:0", "unix:///tmp/x.sock"} {
		a, _ := ParseAddr(s)
		if _, err := BindPool(a, 2); err == nil {
			t.Errorf("BindPool(%s) succeeded", s)
		}
	}
}

// A holder's shutdown() takes a slot out of the group; Revive puts it back
// at its index, so steering by index goes on to the right slots, and what
// queued on the spare while the dead slot was the one steered to is
// returned, not lost.
func TestPoolRevive(t *testing.T) {
	a, _ := ParseAddr("127.0.0.1:0")
	p, err := BindPool(a, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	connect, queued := poolProbes(t, p)
	shutdown := func(i int) {
		t.Helper()
		if err := unix.Shutdown(p.Slot(i).Fd(), unix.SHUT_RD); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Steer(2); err != nil {
		t.Fatal(err)
	}
	shutdown(0)
	if d := p.Dead(); len(d) != 1 || d[0] != 0 {
		t.Fatalf("Dead() = %v after slot 0's shutdown; want [0]", d)
	}
	// Slot 0's index holds the spare now: slot 2 is untouched.
	connect(1)
	if q := queued(); q[2] != 1 {
		t.Fatalf("after slot 0's shutdown, steered to 2, queues are %v", q)
	}
	if got, err := p.Revive([]int{0}, 2); err != nil || len(got) != 0 {
		t.Fatalf("Revive: %v, %d rescued", err, len(got))
	}
	if d := p.Dead(); len(d) != 0 {
		t.Fatalf("Dead() = %v after Revive", d)
	}
	for _, s := range []int{0, 1, 2} {
		before := queued()
		if err := p.Steer(s); err != nil {
			t.Fatal(err)
		}
		connect(2)
		after := queued()
		for i := range after {
			want := before[i]
			if i == s {
				want += 2
			}
			if after[i] != want {
				t.Fatalf("steered to %d after Revive: queues %v → %v", s, before, after)
			}
		}
	}

	// The slot steered to dies: its connections meanwhile reach the spare,
	// and Revive hands them back.
	if err := p.Steer(1); err != nil {
		t.Fatal(err)
	}
	shutdown(1)
	connect(3)
	got, err := p.Revive([]int{1}, 1)
	if err != nil || len(got) != 3 {
		t.Fatalf("Revive of the steered slot: %v, %d rescued; want 3", err, len(got))
	}
	for _, fd := range got {
		unix.Close(fd)
	}
	before := queued()
	connect(1)
	if after := queued(); after[1] != before[1]+1 {
		t.Fatalf("steered to 1 after its Revive: queues %v → %v", before, after)
	}

	// Two slots dead at once: which left first decides the order.
	shutdown(0)
	shutdown(2)
	if _, err := p.Revive(p.Dead(), 1); err != ErrOrderLost {
		t.Fatalf("Revive of two slots: %v; want ErrOrderLost", err)
	}
	if d := p.Dead(); len(d) != 0 {
		t.Fatalf("Dead() = %v after Revive of two", d)
	}
}

// A socket on a port the kernel picked (port 0) keeps that port through a
// shutdown() and Relisten: the port is bound by number.
func TestRelistenKeepsPort(t *testing.T) {
	a, _ := ParseAddr("127.0.0.1:0")
	s, err := Bind(a)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := unix.Shutdown(s.Fd(), unix.SHUT_RD); err != nil {
		t.Fatal(err)
	}
	if s.Listening() {
		t.Fatal("Listening() after shutdown")
	}
	if err := s.Relisten(); err != nil {
		t.Fatal(err)
	}
	if !s.Listening() {
		t.Fatal("not Listening() after Relisten")
	}
	c, err := net.DialTimeout("tcp", s.Addr().Address, time.Second)
	if err != nil {
		t.Fatalf("connect to %s after Relisten: %v", s.Addr(), err)
	}
	c.Close()
}

// poolProbes gives a test of p connect (n new connections to its address,
// closed when the test ends) and queued (every slot's queue length).
func poolProbes(t *testing.T, p *Pool) (connect func(n int), queued func() []int) {
	connect = func(n int) {
		t.Helper()
		for range n {
			c, err := net.DialTimeout("tcp", p.Addr().Address, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
		}
	}
	queued = func() []int {
		t.Helper()
		var q []int
		for i := range p.Len() {
			n, err := p.Queued(i)
			if err != nil {
				t.Fatal(err)
			}
			q = append(q, n)
		}
		return q
	}
	return connect, queued
}
