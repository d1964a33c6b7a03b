package launcher

import (
	"errors"

	"github.com/relaunch/relaunch/sdlisten"
)

// Steered handover. Each generation takes a slot of
// every pool; when it is ready, the pools steer new connections to it, and
// the old generation is told to drain only once its slots' queues are empty
// and --settle has passed, so even an app whose drain closes connections it
// accepted but had not read loses none.

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

// pickSlots chooses the n slots of a generation about to start (one per
// worker); -1 each without pools.
func (l *launcher) pickSlots(n int) ([]int, error) {
	var got []int
	for range n {
		s, err := l.pickSlot(got)
		if err != nil {
			return nil, err
		}
		got = append(got, s)
	}
	return got, nil
}

// pickSlot chooses a slot of a generation about to start, other than
// taken. A restart after a crash takes the crashed generation's slot: new
// connections are still steered there, and it serves what queued meanwhile.
func (l *launcher) pickSlot(taken []int) (int, error) {
	if !l.hasPools() {
		return -1, nil
	}
	used := map[int]bool{}
	for _, g := range l.gens {
		for _, s := range g.slots() {
			used[s] = true
		}
	}
	for _, s := range taken {
		used[s] = true
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

// steerTo sends new connections of every steered pool to slot.
func (l *launcher) steerTo(slot int) {
	prev := l.steerSlot
	l.steerSlot = slot
	l.applyRoute()
	if slot != prev {
		l.awaySince[prev] = l.sys.now()
	}
	delete(l.awaySince, slot)
	l.armSlots()
}
