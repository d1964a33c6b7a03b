package launcher

import (
	"fmt"
	"strings"
	"time"

	"github.com/relaunch/relaunch/internal/listenprobe"
	"github.com/relaunch/relaunch/sdlisten"
)

// Readiness of a starting generation: READY=1 from its processes,
// relaunch's socket seen polled or accepted in procfs, or a delay.

const (
	scanEvery  = 10 * time.Millisecond // procfs scans while a generation starts
	observeFor = 10 * time.Second      // how long a generation ready by the fallback is still watched
)

func (l *launcher) setupProbe() {
	wantListen := l.cfg.Ready.Mode == ReadyListen || l.cfg.Ready.Mode == ReadyAuto
	if !wantListen || len(l.cfg.Listeners) == 0 {
		return
	}
	if !listenprobe.Supported() {
		if l.cfg.Ready.Mode == ReadyListen {
			l.log.Warn("--ready listen: this kernel does not show epoll targets in /proc (Linux ≥ 4.13 does); a generation is taken as ready after 2s alive")
		}
		return
	}
	l.probeOK = true
}

// probeOf recognises the sockets one generation was given.
func probeOf(socks []*sdlisten.Socket) *listenprobe.Probe {
	fds := make([]int, len(socks))
	for i, s := range socks {
		fds[i] = s.Fd()
	}
	return listenprobe.New(fds)
}

// waits says what a starting generation's readiness is taken from now.
// notify and listen both true means either, except where bothLearned says
// both.
func (l *launcher) waits() (notify, listen, fallback bool) {
	canListen := l.probeOK
	switch l.cfg.Ready.Mode {
	case ReadyNotify:
		return true, false, false
	case ReadyListen:
		return false, canListen, !canListen
	case ReadyDelay:
		return false, false, false
	}
	switch { // auto: the most precise signal the app has shown so far
	case l.bothLearned():
		return true, true, false
	case l.learnedNotify:
		return true, false, false
	case l.learnedListen:
		return true, true, false // READY=1 still counts: it teaches auto more
	}
	return true, canListen, true
}

// bothLearned: under auto, the app has sent READY=1 and was seen accepting,
// so a generation is ready only once it has done both. A master that says
// READY=1 before its workers exist (gunicorn) is not taken at its word.
func (l *launcher) bothLearned() bool {
	return l.cfg.Ready.Mode == ReadyAuto && l.learnedNotify && l.learnedListen
}

// observing: under auto, READY=1 is learned but no accepting seen yet, so
// generations are still scanned, to learn it.
func (l *launcher) observing() bool {
	return l.cfg.Ready.Mode == ReadyAuto && l.probeOK && !l.learnedListen
}

func (l *launcher) waitingFor() string {
	if l.cfg.Ready.Mode == ReadyDelay {
		return "the --ready delay"
	}
	notify, listen, fallback := l.waits()
	switch {
	case l.bothLearned():
		return "READY=1 and the app accepting on its socket"
	case fallback && listen:
		return "READY=1, the app accepting on its socket, or 2s alive"
	case fallback:
		return "READY=1 or 2s alive"
	case notify && listen:
		return "the app to accept on its socket (or READY=1)"
	case listen:
		return "the app to accept on its socket"
	}
	return "READY=1 on NOTIFY_SOCKET"
}

// onExec arms what the generation's readiness is taken from, once the
// command runs.
func (l *launcher) onExec(g *generation, err error) {
	if err != nil {
		g.execErr = err
		return // its exit follows
	}
	if g.exited || g.state != starting {
		return
	}
	if l.cfg.Ready.Mode == ReadyDelay {
		l.after(g, l.cfg.Ready.Delay, func() { l.onReady(g, "alive for "+l.cfg.Ready.Delay.String()+" (--ready delay)") })
		return
	}
	_, listen, fallback := l.waits()
	if l.bothLearned() {
		// Looked at from its READY=1 on (onNotify): an app that says it
		// is ready accepts by then, or soon after (workers booting after
		// their master's word). Scanning its whole start-up cost ~35 ms
		// of relaunch's CPU per upgrade for nothing.
		listen = false
	}
	if listen || l.observing() {
		if first := l.firstScanIn(); first > 0 {
			l.rescan(g, first)
		} else {
			l.scan(g)
		}
	}
	if fallback {
		l.after(g, autoFallback, func() {
			if _, _, fallback := l.waits(); !fallback || g.state != starting {
				return // something more precise was learned meanwhile
			}
			l.onReady(g, "alive for 2s")
		})
	}
}

// scan looks for the generation accepting on relaunch's sockets, every
// scanEvery while it is starting. A generation taken as ready by the 2s
// fallback or by READY=1 alone is still watched, more slowly and for a
// bounded time, so that what it shows later (a slow start, workers that
// accept after their master's READY=1) becomes the method for the next ones.
func (l *launcher) scan(g *generation) {
	learning := g.state != starting
	if learning || g.acceptHow != "" {
		stopFast(g) // fastscan_linux.go
	}
	if g.exited || learning && l.learnedListen || g.acceptHow != "" {
		return
	}
	if learning && l.sys.now().Sub(g.started) > observeFor {
		if !l.warnedBlind && !l.learnedNotify && !g.warnedOwn {
			l.warnedBlind = true
			l.log.Info(fmt.Sprintf("readiness: gen %d sent no READY=1 and was not seen accepting on its socket in %s (io_uring, or its memory unreadable?); "+
				"its generations are taken as ready after 2s alive. Pick a precise way with --ready notify or --ready delay=D", g.id, observeFor))
		}
		return
	}
	r := l.sys.scan(g.probe, g.pid)
	if r.OwnSocket != "" && !g.warnedOwn {
		g.warnedOwn = true
		l.warnOwnSocket(g, r)
	}
	if r.Accepting {
		l.seenAccepting(g, r, learning)
		return
	}
	every := 10 * scanEvery
	if !learning {
		every = l.scanPeriod(g) // and checks between the scans: fastscan_linux.go
	}
	l.rescan(g, every)
}

// seenAccepting is what g seen accepting (r) teaches, and makes it ready
// when that is what it waited for; learning: g is ready already.
func (l *launcher) seenAccepting(g *generation, r listenprobe.Result, learning bool) {
	if r.Epoll.Pid == g.pid {
		l.epollFd = r.Epoll.Fd
	}
	l.noteAccepting(g) // fastscan_linux.go
	l.learnListen()
	if learning {
		return
	}
	switch _, listen, _ := l.waits(); {
	case l.bothLearned():
		g.acceptHow = r.How
		if g.notified {
			l.onReady(g, "READY=1, then "+r.How)
		}
	case listen:
		l.onReady(g, r.How)
	}
}

// acceptingAsLast makes g, which sent READY=1 and waits to be seen
// accepting too, ready if its first process polls relaunch's socket with
// the epoll instance the last generation's did, by fd number: one read of
// that instance's fdinfo, where a scan of the tree took 0.3–1.5 ms between
// READY=1 and the switch (the benchmark's load, 2 cores). An app started
// again usually creates it as the same fd; when not, the scan decides.
func (l *launcher) acceptingAsLast(g *generation) bool {
	if l.epollFd <= 0 || g.probe == nil {
		return false
	}
	r := l.sys.polls(g.probe, listenprobe.EpollRef{Pid: g.pid, Fd: l.epollFd})
	if r.Accepting {
		l.seenAccepting(g, r, false)
	}
	return r.Accepting
}

// learnListen: under auto, the app was seen accepting on its socket.
func (l *launcher) learnListen() {
	if l.cfg.Ready.Mode != ReadyAuto || l.learnedListen {
		return
	}
	l.learnedListen = true
	if l.learnedNotify {
		l.log.Info("readiness: the app sends READY=1 and is seen accepting on its socket in /proc, so relaunch waits for both from now on " +
			"(--ready notify takes READY=1 alone)")
	} else {
		l.log.Info("readiness: the app is seen accepting on its socket in /proc, so relaunch waits for that from now on " +
			"(READY=1 would count too; --ready picks another way)")
	}
}

// warnOwnSocket says that the app listens on a socket of its own: on
// relaunch's port beside the one it was given, or anywhere once it closed
// those it was given (puma whose own binding does not match).
func (l *launcher) warnOwnSocket(g *generation, r listenprobe.Result) {
	given := g.probe.Given()
	if !r.Closed || len(given) == 0 {
		l.log.Warn(fmt.Sprintf("%s: %s instead of using the socket relaunch passes as fd 3 (LISTEN_FDS): "+
			"it ignores LISTEN_FDS, so its clients are not relaunch's; make it take its listener from fd 3 (see docs/apps.md, \"Works with\")", g, r.OwnSocket), "generation", g.id, "pid", g.pid)
		return
	}
	addr := ""
	if _, a, ok := strings.Cut(given[0], ", "); ok {
		addr = a
	}
	fix := "make it use the inherited socket (its LISTEN_FDS support, see docs/apps.md, \"Works with\")"
	if addr != "" {
		fix = "make it use the inherited socket: for puma, -b tcp://" + addr + " (relaunch's --listen); otherwise the app's LISTEN_FDS support (see docs/apps.md, \"Works with\")"
	}
	l.log.Warn(fmt.Sprintf("%s: the app closed the socket it was given (%s) and %s, so its clients are not relaunch's; %s",
		g, strings.Join(given, "; "), r.OwnSocket, fix), "generation", g.id, "pid", g.pid)
}

func (l *launcher) onNotify(g *generation, m sdlisten.NotifyMessage, own bool) {
	if !own {
		l.log.Warn(fmt.Sprintf("ignored an sd_notify message from pid %d: not a process of %s", m.Pid, g),
			"generation", g.id, "pid", g.pid, "sender", m.Pid)
		return
	}
	if !m.Has("READY=1") {
		return
	}
	if l.cfg.Ready.Mode == ReadyAuto && !l.learnedNotify {
		l.learnedNotify = true
		if l.learnedListen {
			l.log.Info("readiness: the app sends READY=1 and is seen accepting on its socket in /proc, so relaunch waits for both from now on " +
				"(--ready notify takes READY=1 alone)")
		} else {
			l.log.Info("readiness: the app sends READY=1, so relaunch waits for it from now on (--ready picks another way)")
		}
	}
	g.notified = true
	if l.observing() && l.cur != nil && l.cur != g && !l.cur.exited && l.cur.probe != nil {
		// Not yet seen accepting, maybe only not yet looked at closely
		// (workers that boot after their master's READY=1): the serving
		// generation is looked at once more before READY=1 alone decides.
		if r := l.sys.scan(l.cur.probe, l.cur.pid); r.Accepting {
			l.learnListen()
		}
	}
	switch notify, _, _ := l.waits(); {
	case l.bothLearned():
		if g.acceptHow != "" {
			l.onReady(g, g.acceptHow+", then READY=1")
		} else if g.state == starting && !l.acceptingAsLast(g) {
			l.scan(g) // ready at the first scan that sees it accept
		}
	case notify:
		l.onReady(g, "READY=1")
	}
}
