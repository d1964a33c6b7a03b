//go:build linux

package sdlisten

import (
	"net"
	"testing"
	"time"
)

// Steering sends every new connection to the chosen slot's queue, and the
// other slots get none (NOTES.md §8), with real connections.
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
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	connect := func(n int) {
		for range n {
			c, err := net.DialTimeout("tcp", p.Addr().Address, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
	}
	queued := func() []int {
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
