package launcher

import (
	"sync"
	"time"

	"github.com/relaunch/relaunch/internal/listenprobe"
)

// The fast scan. A scan walks the generation's whole tree in /proc
// (~0.1–0.4 ms of CPU), so it runs every scanEvery, and sees the app
// accepting up to scanEvery late. Most servers create their epoll instance
// well before they add the listener to it (Go's runtime and libuv at their
// start, nginx's workers as they start), so a goroutine can re-read only
// the fdinfo of the epoll instances a scan found, every fastEvery, and ask
// for a scan at once when relaunch's socket shows up there: the scan still
// decides. Each check costs a timer's wake-up and a read (~20 µs, ~70 µs
// on a busy 2-core VM), too much for a whole start of hundreds of ms; but
// an app starts in about the same time each time, so the checks run only
// around the time the previous generation was seen accepting: from
// fastLead before to fastTail after it. A first start, or one slower than
// that, has the scans alone.

const (
	fastEvery = time.Millisecond
	fastLead  = 2 * scanEvery
	fastTail  = 100 * time.Millisecond
)

// fastScan is the goroutine of one generation; a timer to its generation,
// stopped when it exits.
type fastScan struct {
	w    *listenprobe.Watch
	done chan struct{}
	once sync.Once
}

func (f *fastScan) Stop() bool {
	f.once.Do(func() { close(f.done) })
	return true
}

// watchEpolls starts the fast scan of a starting generation on the epoll
// instances its last scan saw, when the time it is expected to accept is
// near, or adds those it did not watch yet.
func (l *launcher) watchEpolls(g *generation) {
	if g.probe == nil {
		return
	}
	eps := g.probe.Epolls()
	if g.fast == nil {
		elapsed := l.sys.now().Sub(g.started)
		if len(eps) == 0 || l.acceptedIn == 0 || elapsed < l.acceptedIn-fastLead || elapsed >= l.acceptedIn+fastTail {
			return
		}
		f := &fastScan{w: g.probe.NewWatch(), done: make(chan struct{})}
		g.fast = f
		g.timers = append(g.timers, f)
		go f.run(l.acceptedIn+fastTail-elapsed, func() {
			l.post(func() {
				if !g.exited && g.state == starting {
					l.scan(g)
				}
			})
		})
	}
	g.fast.w.Add(eps)
}

// stopFast ends the fast scan of a generation that is no longer starting.
func stopFast(g *generation) {
	if g.fast != nil {
		g.fast.Stop()
	}
}

// scanPeriod is when a starting generation's next scan runs: every
// scanEvery, but every slowEvery while the time the previous generation
// was seen accepting is still far (a whole scan costs 0.1–1 ms of CPU).
// It also starts the fast scan when that time is near.
func (l *launcher) scanPeriod(g *generation) time.Duration {
	l.watchEpolls(g)
	if l.acceptedIn > 0 && l.sys.now().Sub(g.started)+slowEvery < l.acceptedIn-fastLead {
		return slowEvery
	}
	return scanEvery
}

// firstScanIn is when a generation that just exec'd is first scanned: at
// once when nothing is known, else no sooner than the previous generation
// took, less fastLead, and slowEvery at most. A scan walks the new tree in
// /proc while its runtime starts, and competes with that start for the
// CPU and for the process's own locks.
func (l *launcher) firstScanIn() time.Duration {
	if l.acceptedIn == 0 {
		return 0
	}
	return max(0, min(slowEvery, l.acceptedIn-fastLead))
}

// slowEvery is the scans' period while the expected time is far.
const slowEvery = 3 * scanEvery

// noteAccepting remembers how long g took to be seen accepting: when the
// next generation's fast scan runs.
func (l *launcher) noteAccepting(g *generation) {
	if g.state == starting {
		l.acceptedIn = l.sys.now().Sub(g.started)
	}
}

func (f *fastScan) run(d time.Duration, found func()) {
	defer f.w.Close()
	tick := time.NewTicker(fastEvery)
	defer tick.Stop()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		select {
		case <-f.done:
			return
		case <-deadline.C:
			return
		case <-tick.C:
			if f.w.Polled() {
				found()
				return
			}
		}
	}
}

// rescan runs the next scan of g in d. A scan asked for by the fast scan
// runs at once, and the one that was due is then skipped: one chain of
// scans per generation.
func (l *launcher) rescan(g *generation, d time.Duration) {
	g.scanSeq++
	seq := g.scanSeq
	l.after(g, d, func() {
		if seq == g.scanSeq {
			l.scan(g)
		}
	})
}
