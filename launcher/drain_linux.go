package launcher

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The drain policy: when a generation that served is told to stop, and
// what happens when it does not. In order:
//
//   - handOver: once a new generation is ready, the old one is retired. With
//     shared sockets it is told to drain at once (both accept from one
//     queue). With steering, new connections go to the new generation first;
//     the old one is told only after --settle and once its slot's accept
//     queue is empty, so it has nothing unread when it stops accepting.
//   - drain: the drain signal (--drain-signal), then SIGKILL to its group at
//     --drain-timeout.
//   - limitDraining: more generations draining than --max-draining: the
//     oldest is killed. One that is settling (steered away from, not yet
//     told) does not count: killing it would strand what its slot queued.
//   - freeSlot: every slot of the pool is held: the oldest draining
//     generation is killed, and the upgrade waits for its exit.
//   - warnDrainSignal: a draining generation whose process had the drain
//     signal's default action when it was sent (not caught, ignored or
//     blocked: /proc/P/status, read just before) and died of it does not
//     drain; said once, with the remedy. An app that drains and then
//     re-raises the signal (Ruby's convention: puma) dies of it too, but
//     it caught it.
//
// What a generation left on its slot when it exits is the slots' care
// (slots_linux.go).

const (
	queuePoll    = 5 * time.Millisecond
	maxQueueWait = time.Second // after --settle, the old slot's queue is waited for at most this
)

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
	l.afterQueue(old, old.slots, func() bool { return old.state == settling }, func(q int, waited time.Duration) {
		if q > 0 {
			l.log.Warn(fmt.Sprintf("%s still has %d connection(s) queued on its slot %s after the switch; draining it anyway", old, q, ms(waited)), "generation", old.id, "pid", old.pid)
		}
		l.drain(old)
		l.limitDraining()
	})
}

// afterQueue runs then once --settle has passed and the steered pools'
// queues on owner's slots are empty, or maxQueueWait after that with q
// still queued; not once owner has exited or still says no. An old slot's
// queue is what the new route no longer sends anywhere else.
func (l *launcher) afterQueue(owner *generation, slots func() []int, still func() bool, then func(q int, waited time.Duration)) {
	since := l.sys.now()
	var wait func()
	wait = func() {
		if owner.exited || !still() {
			return
		}
		q := 0
		for i, ln := range l.cfg.Listeners {
			if ln.Pool != nil && l.frozen[i] < 0 {
				for _, s := range slots() {
					n, _ := ln.Pool.Queued(s)
					q += n
				}
			}
		}
		if waited := l.sys.now().Sub(since); q == 0 || waited >= l.cfg.Settle+maxQueueWait {
			then(q, waited)
			return
		}
		l.after(owner, queuePoll, wait)
	}
	l.after(owner, l.cfg.Settle, wait)
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
			l.killGen(g)
			return
		}
	}
}

func (l *launcher) drain(g *generation) {
	g.state, g.drainAt = draining, l.sys.now()
	pid := g.pid
	for _, p := range g.procs() {
		if !p.exited {
			pid = p.pid // a worker that runs tells how its generation takes the signal
			break
		}
	}
	if handled, known := l.sys.handles(pid, l.cfg.DrainSignal); known {
		g.drainDefault = !handled
	} else {
		g.drainDefault = true // unreadable: judged by how it dies
	}
	l.signalGen(g, l.cfg.DrainSignal)
	defer l.retire(g) // workers waiting for a restart are not restarted
	l.log.Info(fmt.Sprintf("%s draining: sent %s", g, signalName(l.cfg.DrainSignal)), "generation", g.id, "pid", g.pid)
	if l.cfg.DrainTimeout > 0 {
		l.drainTimer(g, l.cfg.DrainTimeout)
	}
}

// drainTimer kills g in d unless it has exited.
func (l *launcher) drainTimer(g *generation, d time.Duration) {
	l.after(g, max(d, 0), func() {
		if !g.exited {
			g.failReason = fmt.Sprintf("still draining after %s (--drain-timeout)", l.cfg.DrainTimeout)
			l.killGen(g)
		}
	})
}

func (l *launcher) limitDraining() {
	if l.cfg.MaxDraining < 0 {
		return
	}
	var ds []*generation
	for _, g := range l.gens {
		// A settling generation is not counted: killing it would strand
		// the connections queued on its slot. It drains, then counts.
		if g.state == draining && g.failReason == "" {
			ds = append(ds, g)
		}
	}
	for i := 0; i < len(ds)-l.cfg.MaxDraining; i++ {
		ds[i].failReason = fmt.Sprintf("more than %d generations draining (--max-draining)", l.cfg.MaxDraining)
		l.killGen(ds[i])
	}
}

// warnDrainSignal says once when a draining generation died of the drain
// signal's default action: the app does not handle it. Go catches SIGQUIT
// whether the app handles it or not, and exits 2 when the app does not:
// that one is told by its exit.
func (l *launcher) warnDrainSignal(g *generation, st exitStatus) {
	sig := l.cfg.DrainSignal
	killed := g.drainDefault && st.ws.Signaled() && st.ws.Signal() == sig && g.failReason == ""
	goQuit := sig == syscall.SIGQUIT && st.ws.Exited() && st.ws.ExitStatus() == 2
	if l.warnedDrain || !(killed || goQuit) {
		return
	}
	l.warnedDrain = true
	what := "was killed by " + signalName(sig)
	if goQuit {
		what = "exited with status 2 right after SIGQUIT, as a Go program that does not handle SIGQUIT does"
	}
	l.log.Warn(fmt.Sprintf("%s %s: the app does not drain on %s, so its open requests were cut. "+
		"Use the app's graceful signal: --drain-signal TERM (gunicorn, uvicorn, most Go and node apps), USR1 (haproxy), QUIT (nginx)", g, what, signalName(sig)), "generation", g.id, "pid", g.pid)
}

// signalHandled reads SigBlk, SigIgn and SigCgt from /proc/P/status (hex
// masks, bit sig-1): whether pid catches, ignores or blocks sig (a blocked
// one is waited for with sigwait or a signalfd). SigBlk is the main
// thread's.
func signalHandled(pid int, sig syscall.Signal) (handled, known bool) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false, false
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 64<<10))
	seen := 0
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != "SigBlk" && k != "SigIgn" && k != "SigCgt" {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil || sig < 1 || sig > 64 {
			return false, false
		}
		seen++
		handled = handled || mask&(1<<(sig-1)) != 0
	}
	return handled, seen == 3
}
