//go:build linux

package launcher

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"relaunch/sdlisten"
)

// Steered handover (SPEC §1, NOTES.md §8). Each generation takes a slot of
// every pool; when it is ready, the pools steer new connections to it, and
// the old generation is told to drain only once its slots' queues are empty
// and --settle has passed, so even an app whose drain closes connections it
// accepted but had not read loses none.

const (
	queuePoll    = 5 * time.Millisecond
	maxQueueWait = time.Second // after --settle, the old slot's queue is waited for at most this
)

var errNoSlot = errors.New("no free slot")

func (l *launcher) steered() bool {
	for i, ln := range l.cfg.Listeners {
		if ln.Pool != nil && l.frozen[i] < 0 {
			return true
		}
	}
	return false
}

func (l *launcher) hasPools() bool {
	for _, ln := range l.cfg.Listeners {
		if ln.Pool != nil {
			return true
		}
	}
	return false
}

// socketsFor is what a generation on slot gets, in --listen order.
func (l *launcher) socketsFor(slot int) []*sdlisten.Socket {
	socks := make([]*sdlisten.Socket, len(l.cfg.Listeners))
	for i, ln := range l.cfg.Listeners {
		switch {
		case ln.Pool == nil:
			socks[i] = ln.Socket
		case l.frozen[i] >= 0:
			socks[i] = ln.Pool.Slot(l.frozen[i])
		default:
			socks[i] = ln.Pool.Slot(slot)
		}
	}
	return socks
}

// pickSlot chooses the slot of a generation about to start. A restart
// after a crash takes the crashed generation's slot: new connections are
// still steered there, and it serves what queued meanwhile.
func (l *launcher) pickSlot() (int, error) {
	if !l.hasPools() {
		return -1, nil
	}
	used := map[int]bool{}
	for _, g := range l.gens {
		used[g.slot] = true
	}
	if l.cur == nil && !used[l.steerSlot] {
		return l.steerSlot, nil
	}
	// A slot whose stranded connections wait for the next generation,
	// the longest waiting first.
	held := -1
	for s, since := range l.held {
		if !used[s] && (held < 0 || since.Before(l.held[held])) {
			held = s
		}
	}
	if held >= 0 {
		return held, nil
	}
	for s := 0; s < l.cfg.Listeners[l.firstPool()].Pool.Len(); s++ {
		if !used[s] && s != l.steerSlot {
			return s, nil
		}
	}
	return -1, errNoSlot
}

func (l *launcher) firstPool() int {
	for i, ln := range l.cfg.Listeners {
		if ln.Pool != nil {
			return i
		}
	}
	return -1
}

// freeSlot makes room for an upgrade: the oldest draining generation goes
// now; the upgrade runs when it has exited.
func (l *launcher) freeSlot(reason string) {
	l.pending = reason
	for _, g := range l.gens {
		if (g.state == draining || g.state == settling) && g.failReason == "" {
			g.failReason = "killed early: every slot is taken (more generations than --max-draining + 2)"
			l.log.Warn(fmt.Sprintf("no free slot for a new generation: killing %s, the oldest one draining; the upgrade follows when it is gone", g),
				"generation", g.id, "pid", g.pid)
			l.sys.killGroup(g.pid, syscall.SIGKILL)
			return
		}
	}
}

// steerTo sends new connections of every steered pool to slot.
func (l *launcher) steerTo(slot int) {
	for i, ln := range l.cfg.Listeners {
		if ln.Pool == nil || l.frozen[i] >= 0 {
			continue
		}
		if err := ln.Pool.Steer(slot); err != nil {
			l.frozen[i] = l.steerSlot
			l.log.Warn(fmt.Sprintf("cannot steer %s: %v; it is shared by every generation from now on", ln.Pool.Addr(), err))
		}
	}
	if slot != l.steerSlot {
		l.awaySince[l.steerSlot] = l.sys.now()
	}
	delete(l.awaySince, slot)
	l.steerSlot = slot
	l.armSlots()
}

// handOver retires the previous current generation: at once with shared
// sockets; with steering, after --settle and once its slots' accept queues
// are empty (a client's connect-to-request gap, connections the kernel
// completed just before the switch).
func (l *launcher) handOver(old *generation) {
	if !l.steered() {
		l.drain(old)
		return
	}
	old.state = settling
	since := l.sys.now()
	var wait func()
	wait = func() {
		if old.exited || old.state != settling {
			return
		}
		q := 0
		for i, ln := range l.cfg.Listeners {
			if ln.Pool != nil && l.frozen[i] < 0 {
				n, _ := ln.Pool.Queued(old.slot)
				q += n
			}
		}
		if q > 0 && l.sys.now().Sub(since) < l.cfg.Settle+maxQueueWait {
			l.after(old, queuePoll, wait)
			return
		}
		if q > 0 {
			l.log.Warn(fmt.Sprintf("%s still has %d connection(s) queued on its slot %s after the switch; draining it anyway", old, q, ms(l.sys.now().Sub(since))), "generation", old.id, "pid", old.pid)
		}
		l.drain(old)
		l.limitDraining()
	}
	l.after(old, l.cfg.Settle, wait)
}
