package launcher

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/sdlisten"
)

// slotRig is a launcher with one steered pool and no generation, its loop
// running, and the slots' watch on: what the rescue and the revival see
// between generations.
type slotRig struct {
	l    *launcher
	p    *sdlisten.Pool
	logs *lockedBuffer
	stop chan struct{}
	done chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newSlotRig(t *testing.T, rescue Rescue) *slotRig {
	t.Helper()
	a, _ := sdlisten.ParseAddr("127.0.0.1:0")
	p, err := sdlisten.BindPool(a, 3)
	if err != nil {
		t.Fatal(err)
	}
	r := &slotRig{p: p, logs: &lockedBuffer{}, stop: make(chan struct{}), done: make(chan struct{})}
	r.l = newLauncher(Config{Listeners: []Listener{{Pool: p}}, Rescue: rescue, Logger: NewLogger(r.logs, LogOptions{})}, osSystem(false, nil))
	go func() {
		defer close(r.done)
		for {
			select {
			case fn := <-r.l.events:
				fn()
			case <-r.stop:
				return
			}
		}
	}()
	var stopWatch func()
	r.do(func() { stopWatch = r.l.watchSlots() })
	t.Cleanup(func() {
		close(r.l.quit)
		stopWatch()
		close(r.stop)
		<-r.done
		p.Close()
	})
	return r
}

// do runs fn on the loop and waits for it.
func (r *slotRig) do(fn func()) {
	ch := make(chan struct{})
	r.l.events <- func() { fn(); close(ch) }
	<-ch
}

// until waits for cond, evaluated on the loop.
func (r *slotRig) until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		var ok bool
		r.do(func() { ok = cond() })
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s; log:\n%s", what, r.logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// strand puts a connection in slot's queue the way a late handshake does:
// the kernel picked the slot when steering pointed there, and steering
// has moved on since.
func (r *slotRig) strand(t *testing.T, slot int) net.Conn {
	t.Helper()
	var c net.Conn
	r.do(func() {
		if err := r.p.Steer(slot); err != nil {
			t.Error(err)
			return
		}
		var err error
		if c, err = net.DialTimeout("tcp", r.p.Addr().Address, time.Second); err != nil {
			t.Error(err)
		}
		if err := r.p.Steer(r.l.steerSlot); err != nil {
			t.Error(err)
		}
	})
	if c == nil {
		t.FailNow()
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A handshake that completes on the old slot long after the rescue's old
// 3 s window (a SYN-ACK lost twice: 6 s) is still rescued, and it is not
// taken for a foreign BPF program.
func TestRescueLateHandshake(t *testing.T) {
	r := newSlotRig(t, RescueAuto)
	r.do(func() {
		r.l.cur = &generation{id: 2, slot: 1, state: current}
		r.l.gens = []*generation{r.l.cur}
		r.l.steerTo(1)
		r.l.awaySince[0] = time.Now().Add(-6 * time.Second)
	})
	r.strand(t, 0)
	r.until(t, "the late connection rescued", func() bool { return r.l.rescued.Held == 1 })
	r.do(func() {
		if r.l.frozen[0] >= 0 {
			t.Errorf("steering stopped for a late handshake; log:\n%s", r.logs)
		}
		if why := r.l.disturbed(r.p); why != "" {
			t.Errorf("the tripwire blames %q for a held late handshake", why)
		}
		// The next generation takes the held slot, queue and all.
		if s, err := r.l.pickSlot(nil); err != nil || s != 0 {
			t.Errorf("the next generation gets slot %d (%v); want 0, the held one", s, err)
		}
	})
	if !strings.Contains(r.logs.String(), "kept for the next generation") {
		t.Errorf("no log line says the connection is kept:\n%s", r.logs)
	}
}

// A connection on a slot relaunch never steered to, or left long before
// any handshake could still complete, is a foreign program's doing: the
// address stops being steered. The connection itself is still rescued.
func TestRescueForeignProgram(t *testing.T) {
	for _, tc := range []struct {
		name string
		away time.Duration // 0: never steered to
	}{{"never steered to", 0}, {"left two minutes ago", 2 * time.Minute}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newSlotRig(t, RescueAuto)
			r.do(func() {
				if tc.away > 0 {
					r.l.awaySince[2] = time.Now().Add(-tc.away)
				}
			})
			r.strand(t, 2)
			r.until(t, "the stray connection rescued", func() bool { return r.l.rescued.Held == 1 })
			r.do(func() {
				if r.l.frozen[0] != 0 {
					t.Errorf("frozen = %v; want steering stopped on slot 0", r.l.frozen)
				}
			})
			if !strings.Contains(r.logs.String(), "a BPF program that is not relaunch's?") {
				t.Errorf("the warning does not name the suspect:\n%s", r.logs)
			}
		})
	}
}

// With no generation to take them, held connections are reset (the client
// sees a reset, not a hang), and counted.
func TestRescueReset(t *testing.T) {
	r := newSlotRig(t, RescueAuto)
	r.do(func() { r.l.steerTo(1) })
	c := r.strand(t, 0)
	r.until(t, "held", func() bool { return r.l.rescued.Held == 1 })
	r.do(func() {
		delete(r.l.held, 0) // as the hold's timer does
		r.l.drainSlot(0, 0, true)
	})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the client read %v; want a reset", err)
	}
	r.do(func() {
		if r.l.rescued.Reset != 1 {
			t.Errorf("rescued = %+v; want 1 reset", r.l.rescued)
		}
	})
}

// A holder's shutdown() of its slot is seen at once: the slot listens
// again, at its index, and steering still reaches the slot steered to.
func TestReviveOnShutdown(t *testing.T) {
	r := newSlotRig(t, RescueAuto)
	r.do(func() { r.l.steerTo(2) })
	if err := unix.Shutdown(r.p.Slot(0).Fd(), unix.SHUT_RD); err != nil {
		t.Fatal(err)
	}
	r.until(t, "slot 0 revived", func() bool { return r.l.rescued.Revived == 1 })
	if d := r.p.Dead(); len(d) != 0 {
		t.Fatalf("dead slots %v after the revival", d)
	}
	c, err := net.DialTimeout("tcp", r.p.Addr().Address, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n, _ := r.p.Queued(2); n != 1 {
		t.Errorf("slot 2, steered to, has %d queued; want the new connection", n)
	}
	if !strings.Contains(r.logs.String(), "stopped listening (a process called shutdown() on it") {
		t.Errorf("no warning names the shutdown:\n%s", r.logs)
	}
}
