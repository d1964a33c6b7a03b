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
// start, nginx's workers as they start), so once a scan has found the
// tree's epoll instances, a goroutine re-reads only their fdinfo every
// fastEvery (a few µs each), for at most fastFor, and asks for a scan at
// once when relaunch's socket shows up there: the scan still decides.

const (
	fastEvery = time.Millisecond
	fastFor   = 2 * time.Second // from the first epoll instance seen: a slower start falls back to the scans alone
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
// instances its last scan saw, or adds those it did not watch yet.
func (l *launcher) watchEpolls(g *generation) {
	eps := g.probe.Epolls()
	if g.fast == nil {
		if len(eps) == 0 {
			return
		}
		f := &fastScan{w: g.probe.NewWatch(), done: make(chan struct{})}
		g.fast = f
		g.timers = append(g.timers, f)
		go f.run(func() {
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

func (f *fastScan) run(found func()) {
	defer f.w.Close()
	tick := time.NewTicker(fastEvery)
	defer tick.Stop()
	deadline := time.NewTimer(fastFor)
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
