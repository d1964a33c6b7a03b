package launcher

import (
	"fmt"
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
	case l.learnedNotify:
		return true, false, false
	case l.learnedListen:
		return true, true, false // READY=1 still counts: it teaches auto more
	}
	return true, canListen, true
}

func (l *launcher) waitingFor() string {
	if l.cfg.Ready.Mode == ReadyDelay {
		return "the --ready delay"
	}
	notify, listen, fallback := l.waits()
	switch {
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
	if listen {
		l.scan(g)
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
// fallback is still watched, more slowly and for a bounded time, so that
// what it shows later (a slow start) becomes the method for the next ones.
func (l *launcher) scan(g *generation) {
	learning := g.state != starting
	if learning {
		stopFast(g) // fastscan_linux.go
	}
	if g.exited || learning && (l.learnedListen || l.learnedNotify) {
		return
	}
	if learning && l.sys.now().Sub(g.started) > observeFor {
		if !l.warnedBlind {
			l.warnedBlind = true
			l.log.Info(fmt.Sprintf("readiness: gen %d sent no READY=1 and was not seen accepting on its socket in %s (a select/poll server?); "+
				"its generations are taken as ready after 2s alive. Pick a precise way with --ready notify or --ready delay=D", g.id, observeFor))
		}
		return
	}
	r := g.probe.Scan(g.pid)
	if r.OwnSocket != "" && !g.warnedOwn {
		g.warnedOwn = true
		l.log.Warn(fmt.Sprintf("%s: %s instead of using the socket relaunch passes as fd 3 (LISTEN_FDS): "+
			"it ignores LISTEN_FDS, so its clients are not relaunch's; make it take its listener from fd 3 (see docs/apps.md, \"Works with\")", g, r.OwnSocket), "generation", g.id, "pid", g.pid)
	}
	if r.Accepting {
		l.noteAccepting(g) // fastscan_linux.go
		if l.cfg.Ready.Mode == ReadyAuto && !l.learnedListen && !l.learnedNotify {
			l.learnedListen = true
			l.log.Info("readiness: the app is seen accepting on its socket in /proc, so relaunch waits for that from now on " +
				"(READY=1 would take precedence; --ready picks another way)")
		}
		if _, listen, _ := l.waits(); !learning && listen {
			l.onReady(g, r.How)
		}
		return
	}
	every := 10 * scanEvery
	if !learning {
		every = l.scanPeriod(g) // and checks between the scans: fastscan_linux.go
	}
	l.rescan(g, every)
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
		l.log.Info("readiness: the app sends READY=1, so relaunch waits for it from now on (--ready picks another way)")
	}
	if notify, _, _ := l.waits(); notify {
		l.onReady(g, "READY=1")
	}
}
