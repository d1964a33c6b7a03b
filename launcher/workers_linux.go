package launcher

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/relaunch/relaunch/handoff"
	"github.com/relaunch/relaunch/sdlisten"
)

// Workers (--workers N): each generation is N processes of the same
// command, given the same fds and RELAUNCH_WORKER=0..N-1. With steered
// pools each worker has a slot of its own and the route spreads new
// connections among the current generation's serving workers by hash;
// shared sockets are shared by every worker.
//
// A generation of workers is a *generation with no process of its own
// (its pid and slot are worker 0's, for status and the log); each worker
// is a *generation too, with lead set, whose process, notify socket and
// readiness are its own. The generation is ready once every worker is.
// A worker of the current generation that exits by itself is restarted
// alone on its slot, with a backoff of its own, its slot out of the route
// until it is ready again (what queued there waits for it). A worker of a
// starting generation that exits fails the upgrade: the others are
// stopped. Signals and kills go to every worker; the generation is over
// when its last worker is.

// procs are g's processes: its workers, or g itself.
func (g *generation) procs() []*generation {
	if g.workers != nil {
		return append(slices.Clip(g.workers), g.retired...)
	}
	return []*generation{g}
}

// slots are the slots g's processes hold.
func (g *generation) slots() []int {
	var s []int
	for _, p := range g.procs() {
		if p.slot >= 0 {
			s = append(s, p.slot)
		}
	}
	return s
}

// upSlots are the slots new connections to g go to: its workers that
// serve, or every slot when none does (what queues waits for a restart).
func (g *generation) upSlots() []int {
	if g.workers == nil {
		return g.slots()
	}
	var up, all []int
	for _, w := range g.workers {
		if w.slot >= 0 {
			all = append(all, w.slot)
			if !w.exited && w.state == current {
				up = append(up, w.slot)
			}
		}
	}
	if len(up) == 0 {
		return all
	}
	return up
}

// workerCount is how many workers the next generation gets.
func (l *launcher) workerCount() int {
	return max(l.nWorkers, 1)
}

// startProc starts p's process (a generation's, or a worker's) on its
// slot; from, when set, is the open file it runs instead of its path.
func (l *launcher) startProc(p *generation, from *os.File) error {
	socks := l.socketsFor(p.slot)
	if l.probeOK {
		p.probe = probeOf(socks)
	}
	name := "gen" + strconv.Itoa(p.id)
	if p.lead != nil {
		l.notifySeq++ // a worker scaled away may still hold its index's last name
		name += fmt.Sprintf("-w%d-%d", p.worker, l.notifySeq)
	}
	var err error
	if p.notify, err = l.takeNotify(name); err != nil {
		return err
	}
	env := append(sdlisten.ChildEnv(l.env, socks),
		"NOTIFY_SOCKET="+p.notify.Path(),
		"RELAUNCH_GENERATION="+strconv.Itoa(p.id),
		handoff.Env+"="+l.handoff.Path())
	if p.lead != nil {
		env = append(env, "RELAUNCH_WORKER="+strconv.Itoa(p.worker))
	}
	// Read before the start: the traced start lets the app run before it
	// returns, and what it forks then is its own.
	ticks := startTicksNow() // daemon_linux.go
	pid, err := l.sys.start(procSpec{path: p.path, argv: l.cfg.Command, env: env, socks: socks, stdin: l.stdin, bin: from},
		func(err error) { l.post(func() { l.onExec(p, err) }) },
		func(ws syscall.WaitStatus) { l.post(func() { l.onExit(p, exitStatus{ws}) }) })
	if err != nil {
		p.notify.Close()
		return err
	}
	p.pid = pid
	p.startTicks = ticks
	l.roots.add(p.id, pid)
	go l.readNotify(p, p.notify)
	return nil
}

// startWorkers starts the n workers of g, a generation being started on
// slots. A worker that cannot be started fails the generation.
func (l *launcher) startWorkers(g *generation, slots []int, from *os.File) error {
	g.workers = make([]*generation, len(slots))
	for i, s := range slots {
		g.workers[i] = &generation{id: g.id, path: g.path, slot: s, state: starting, started: g.started, lead: g, worker: i}
	}
	for i, w := range g.workers {
		if err := l.startProc(w, from); err != nil {
			if i == 0 {
				return err
			}
			for _, v := range g.workers[i:] {
				v.exited = true // never started
			}
			st := exitStatus{syscall.WaitStatus(127 << 8)}
			g.failReason, g.failSt = fmt.Sprintf("its worker %d cannot start: %v", i, err), &st
			l.killGen(g)
			break
		}
	}
	g.pid = g.workers[0].pid
	return nil
}

// onWorkerExit: one worker's process is gone.
func (l *launcher) onWorkerExit(w *generation, st exitStatus) {
	g := w.lead
	w.exited, w.failSt = true, &st
	l.roots.removePid(g.id, w.pid)
	for _, t := range w.timers {
		t.Stop()
	}
	w.timers = nil
	w.notify.Close()
	l.dropProbes(w)
	l.sys.killGroup(w.pid, syscall.SIGKILL) // what it left in its group goes with it
	if l.slots == nil {
		l.reviveDead() // else the slot watch says when a drain shut a listener down
	}
	how := st.String()
	if w.failReason != "" {
		how = w.failReason + ", " + how
	}
	attrs := []any{"generation", g.id, "worker", w.worker, "pid", w.pid, "status", st.code()}
	byItself := !l.stopping && !g.exited && w.failReason == "" && g.failReason == "" && w.state != draining &&
		(g.state == starting || g.state == current || g.state == canary)
	if i := slices.Index(g.retired, w); i >= 0 {
		g.retired = slices.Delete(g.retired, i, i+1) // its exit ends its part
	}
	switch {
	case !byItself:
		l.log.Info(fmt.Sprintf("%s exited: %s", w, how), attrs...)
	case g.state == starting:
		// One worker that fails fails its generation.
		if w.execErr != nil {
			g.execErr = w.execErr
		}
		g.failReason, g.failSt = fmt.Sprintf("its worker %d (pid %d) exited before it was ready", w.worker, w.pid), &st
		l.log.Info(fmt.Sprintf("%s exited before it was ready (%s): stopping the other workers of gen %d", w, how, g.id), attrs...)
		l.killGen(g)
	case g.state == canary:
		l.log.Warn(fmt.Sprintf("%s, a worker of a canary, exited: %s", w, how), attrs...)
		g.failSt = &st
		l.onCanaryExit(g, fmt.Sprintf("its worker %d exited (%s)", w.worker, how))
	default: // current
		l.log.Warn(fmt.Sprintf("%s exited by itself: %s", w, how), attrs...)
		l.applyRoute() // its slot is out of the route until it is back
		failed := st.ws.Signaled() || st.ws.ExitStatus() != 0
		if l.cfg.Restart == RestartAlways || l.cfg.Restart == RestartOnFailure && failed {
			l.restartWorker(w)
			return
		}
		l.log.Info(fmt.Sprintf("%s is not restarted: --restart is %s", w, restartName(l.cfg.Restart)))
	}
	l.endIfEmpty(g)
}

// endIfEmpty ends g once no worker runs nor waits for a restart.
func (l *launcher) endIfEmpty(g *generation) {
	if g.exited || g.workers == nil {
		return
	}
	var st *exitStatus
	for _, w := range g.procs() {
		if !w.exited || w.restartT != nil {
			return
		}
		if w.failSt != nil {
			st = w.failSt
		}
	}
	if g.failSt != nil {
		st = g.failSt
	}
	if st == nil {
		st = &exitStatus{}
	}
	l.onExit(g, *st)
}

// restartWorker starts w again on its slot after its backoff, which
// doubles with each crash and starts over after one that served for
// healthyAfter.
func (l *launcher) restartWorker(w *generation) {
	g := w.lead
	if w.backoff == 0 || !w.readyAt.IsZero() && l.sys.now().Sub(w.readyAt) >= healthyAfter {
		w.backoff = backoffMin
	}
	d := w.backoff
	w.backoff = min(2*d, backoffMax)
	l.log.Info(fmt.Sprintf("restarting %s alone in %s; the other workers of gen %d serve", w, ms(d), g.id),
		"generation", g.id, "worker", w.worker, "backoff_ms", d.Milliseconds())
	var t timer
	t = l.sys.afterFunc(d, func() {
		l.post(func() {
			if w.restartT != t {
				return // cancelled
			}
			w.restartT = nil
			if g.exited || l.stopping || g.state != current {
				l.endIfEmpty(g)
				return
			}
			if err := l.runWorker(w, true); err != nil {
				l.log.Error(fmt.Sprintf("cannot restart %s: %v", w, err), "generation", g.id, "worker", w.worker)
				l.restartWorker(w)
			}
		})
	})
	w.restartT = t
}

// runWorker starts w's process (again, if restart), as its generation's
// binary, in a generation that serves.
func (l *launcher) runWorker(w *generation, restart bool) error {
	g := w.lead
	var from *os.File
	if g.bin != nil && !samePath(g.bin, g.path) && !isScript(g.bin) {
		from = g.bin // the path no longer holds what the generation runs
	}
	if restart {
		w.restarts++
	}
	w.exited, w.state, w.started = false, starting, l.sys.now()
	w.notified, w.acceptHow, w.execErr, w.failReason = false, "", nil, ""
	w.readyBy, w.healthy, w.probing, w.readyHow = "", false, false, ""
	w.failSt, w.fast = nil, nil // its fast scan was its old process's, stopped at its exit
	if err := l.startProc(w, from); err != nil {
		w.exited = true
		return err
	}
	g.pid = g.workers[0].pid
	if restart {
		l.log.Info(fmt.Sprintf("%s started again (restart %d)", w, w.restarts), "generation", g.id, "worker", w.worker, "pid", w.pid)
	} else {
		l.log.Info(fmt.Sprintf("%s started (relaunch scale)", w), "generation", g.id, "worker", w.worker, "pid", w.pid)
	}
	if l.cfg.ReadyTimeout > 0 {
		l.after(w, l.cfg.ReadyTimeout, func() {
			if !w.exited && w.state == starting {
				l.log.Warn(fmt.Sprintf("%s not ready after %s (--ready-timeout): killing it; it is restarted", w, l.cfg.ReadyTimeout))
				l.sys.killGroup(w.pid, syscall.SIGKILL)
			}
		})
	}
	return nil
}

// workerReady: w is ready (and healthy, with --health). Its generation is
// once every worker is; a worker restarted alone gets its slot back.
func (l *launcher) workerReady(w *generation, how string) {
	g := w.lead
	if w.exited || w.state != starting || g.exited {
		return
	}
	w.state, w.readyAt, w.readyHow = current, l.sys.now(), how
	stopFast(w)
	if g.state == starting {
		for _, v := range g.workers {
			if v.state != current || v.exited {
				return
			}
		}
		g.healthy = true // each one was, if --health asks
		if len(g.workers) > 1 {
			how = fmt.Sprintf("%d workers ready (the last: %s)", len(g.workers), how)
		}
		l.onReady(g, how)
		return
	}
	again := " again"
	if w.restarts == 0 {
		again = "" // added by relaunch scale
	}
	l.log.Info(fmt.Sprintf("%s ready%s in %s: %s; it gets new connections", w, again, ms(w.readyAt.Sub(w.started)), how),
		"generation", g.id, "worker", w.worker, "pid", w.pid)
	l.applyRoute()
}

// signalGen sends sig to every process of g.
func (l *launcher) signalGen(g *generation, sig syscall.Signal) {
	for _, p := range g.procs() {
		if !p.exited && p.pid > 0 {
			l.sys.signal(p.pid, sig)
		}
	}
}

// killGen kills every process group of g.
func (l *launcher) killGen(g *generation) {
	for _, p := range g.procs() {
		if !p.exited && p.pid > 0 {
			l.sys.killGroup(p.pid, syscall.SIGKILL)
		}
	}
}

// retire cancels the restarts g's workers wait for: g is being stopped or
// drained. It ends g now if none of them runs.
func (l *launcher) retire(g *generation) {
	if g.workers == nil {
		return
	}
	for _, w := range g.workers {
		if w.restartT != nil {
			w.restartT.Stop()
			w.restartT = nil
		}
	}
	l.endIfEmpty(g)
}

// steerGen sends the new connections of every steered pool to g's
// workers.
func (l *launcher) steerGen(g *generation) {
	l.steerSlot = g.slot
	l.applyRoute()
	l.armSlots()
}

// routedTo keeps awaySince for the slots of a generation of workers as
// its route changes (a worker down, back, a new generation).
func (l *launcher) routedTo(slots []int) {
	now := l.sys.now()
	for _, s := range l.routed {
		if !slices.Contains(slots, s) {
			l.awaySince[s] = now
		}
	}
	for _, s := range slots {
		delete(l.awaySince, s)
	}
	l.routed = slices.Clone(slots)
}

// workersStatus is g's workers, for status.
func workersStatus(g *generation) []WorkerStatus {
	var ws []WorkerStatus
	for _, w := range g.procs() {
		if w == g {
			return nil
		}
		state := "serving"
		switch {
		case w.restartT != nil:
			state = "restarting"
		case w.exited:
			state = "exited"
		case w.state == starting:
			state = "starting"
		case w.state == draining:
			state = "draining"
		case g.state != current && g.state != canary:
			state = g.state.String()
		}
		ws = append(ws, WorkerStatus{Worker: w.worker, Pid: w.pid, Slot: w.slot, State: state, Restarts: w.restarts})
	}
	return ws
}

// workersWaiting names the workers of g not ready yet.
func (l *launcher) workersWaiting(g *generation) string {
	var ws []string
	for _, w := range g.workers {
		if w.state == starting {
			ws = append(ws, strconv.Itoa(w.worker))
		}
	}
	return fmt.Sprintf("worker(s) %s still waiting for %s", strings.Join(ws, ", "), l.waitingFor())
}

// sayWorkers logs the workers per generation and what they cost in slots.
func (l *launcher) sayWorkers() {
	if l.nWorkers == 0 {
		return
	}
	msg := fmt.Sprintf("workers: %d per generation", l.nWorkers)
	if p := l.firstPool(); p >= 0 {
		gens := "8 generations (--max-draining unbounded)"
		if l.cfg.MaxDraining >= 0 {
			gens = fmt.Sprintf("--max-draining %d + 2 generations", l.cfg.MaxDraining)
		}
		msg += fmt.Sprintf("; each steered address has a pool of %d slots: %d workers × %s", l.cfg.Listeners[p].Pool.Len(), l.nWorkers, gens)
	}
	l.log.Info(msg)
}

// scale changes the current generation's worker count to n (relaunch
// scale): new workers start on free slots and get new connections once
// ready; the last ones are steered away from, then drained. The next
// generation has n workers too.
func (l *launcher) scale(n int) Answer {
	switch {
	case l.nWorkers == 0:
		return Answer{Error: "relaunch was started without --workers, so each generation is one process: start it with --workers N to scale"}
	case n < 1 || n > MaxWorkers:
		return Answer{Error: fmt.Sprintf("bad worker count %d: use 1 to %d", n, MaxWorkers)}
	case l.stopping:
		return Answer{Error: "relaunch is stopping"}
	case l.next != nil:
		return Answer{Error: fmt.Sprintf("%s is starting: scale once its upgrade is over", l.next)}
	case l.canary != nil:
		return Answer{Error: fmt.Sprintf("%s is a canary: scale once it is promoted or aborted", l.canary)}
	}
	if p := l.firstPool(); p >= 0 {
		gens, what := 2, "the current generation and a starting one"
		if l.cfg.MaxDraining >= 0 {
			gens, what = l.cfg.MaxDraining+2, fmt.Sprintf("--max-draining %d + 2 generations", l.cfg.MaxDraining)
		}
		if size := l.cfg.Listeners[p].Pool.Len(); n*gens > size {
			return Answer{Error: fmt.Sprintf("%d workers do not fit the pool of %d slots per address bound at start (%s need %d): at most %d; restart relaunch with a larger --workers to go further",
				n, size, what, n*gens, size/gens)}
		}
	}
	l.nWorkers = n
	g := l.cur
	if g == nil || g.workers == nil {
		return Answer{Said: fmt.Sprintf("no generation serves now: the next one gets %d workers", n)}
	}
	from := len(g.workers)
	var said string
	switch {
	case n > from:
		for i := from; i < n; i++ {
			slots, err := l.pickSlots(1)
			if err != nil {
				return Answer{Error: fmt.Sprintf("worker %d: %v", i, err)}
			}
			delete(l.held, slots[0])
			delete(l.abandoned, slots[0])
			w := &generation{id: g.id, path: g.path, slot: slots[0], state: starting, started: l.sys.now(), lead: g, worker: i}
			g.workers = append(g.workers, w)
			if err := l.runWorker(w, false); err != nil {
				g.workers = g.workers[:i]
				return Answer{Error: fmt.Sprintf("cannot start worker %d: %v", i, err)}
			}
		}
		l.armSlots()
		said = fmt.Sprintf("%s: %d workers, %d starting", g, n, n-from)
	case n < from:
		for _, w := range g.workers[n:] {
			if w.restartT != nil { // down, waiting for its restart: not started again
				w.restartT.Stop()
				w.restartT = nil
			}
			if !w.exited {
				g.retired = append(g.retired, w)
				l.retireWorker(w)
			}
		}
		g.workers = g.workers[:n]
		g.pid = g.workers[0].pid
		l.applyRoute()
		said = fmt.Sprintf("%s: %d workers, %d draining", g, n, from-n)
	default:
		said = fmt.Sprintf("%s has %d workers already", g, n)
	}
	l.log.Info("relaunch scale: " + said)
	return Answer{Said: said}
}

// retireWorker drains w, which relaunch scale took away: with steering,
// once it is out of the route, --settle has passed and its slot's queue
// is empty, as handOver does for a generation.
func (l *launcher) retireWorker(w *generation) {
	w.state = draining
	drain := func() {
		if w.exited {
			return
		}
		w.drainAt = l.sys.now()
		l.sys.signal(w.pid, l.cfg.DrainSignal)
		l.log.Info(fmt.Sprintf("%s draining (relaunch scale): sent %s", w, signalName(l.cfg.DrainSignal)), "generation", w.id, "worker", w.worker, "pid", w.pid)
		if d := l.cfg.DrainTimeout; d > 0 {
			l.after(w, d, func() {
				if !w.exited {
					w.failReason = fmt.Sprintf("still draining after %s (--drain-timeout)", d)
					l.sys.killGroup(w.pid, syscall.SIGKILL)
				}
			})
		}
	}
	if !l.steered() {
		drain()
		return
	}
	l.afterQueue(w, func() []int { return []int{w.slot} }, func() bool { return true }, func(int, time.Duration) { drain() })
}
