package launcher

import (
	"runtime/debug"
	"sync"
	"time"
)

// Go's garbage collector is put off from a generation's start until the
// next one is prepared (--settle + 250 ms after it is ready), or gcHoldMax:
// GOGC is gcHoldPercent meanwhile. A cycle takes a P for its mark workers:
// one that the start's own allocations set off left the goroutine of a
// traced start, locked to its thread, without a P for up to 3 ms (perf
// sched, under the benchmark's load on 2 cores) while the app sat stopped
// at its exec. The heap may grow meanwhile by what a start allocates, some
// hundred KiB; the cycle put off runs once the switch is over. Not GOGC=off:
// turning the collector off waits for a cycle under way to end (2 ms at the
// trigger, measured), raising GOGC does not.
const (
	gcHoldMax     = 10 * time.Second
	gcHoldPercent = 400
)

// holdGC puts the collector off, from a start on.
func (l *launcher) holdGC() {
	if !l.gcHeld {
		gcHolds.hold()
		l.gcHeld = true
	}
	l.gcHeldAt = l.sys.now()
	l.after(nil, gcHoldMax, func() {
		if l.sys.now().Sub(l.gcHeldAt) >= gcHoldMax {
			l.releaseGC() // a start that never got ready
		}
	})
}

// releaseGC lets the collector run again, as relaunch set it.
func (l *launcher) releaseGC() {
	if l.gcHeld {
		gcHolds.release()
		l.gcHeld = false
	}
}

// gcHolds counts the launchers holding the collector off: one in relaunch,
// several in tests.
var gcHolds gcHoldCount

type gcHoldCount struct {
	mu      sync.Mutex
	n       int
	percent int // GOGC before the first hold
}

func (c *gcHoldCount) hold() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n++; c.n == 1 {
		c.percent = debug.SetGCPercent(gcHoldPercent)
		if c.percent < 0 || c.percent > gcHoldPercent {
			debug.SetGCPercent(c.percent) // GOGC=off, or higher: as it is
		}
	}
}

func (c *gcHoldCount) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n--; c.n == 0 {
		debug.SetGCPercent(c.percent)
	}
}
