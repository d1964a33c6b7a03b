package launcher

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

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
		return g.workers
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
	var s []int
	for _, p := range g.procs() {
		if p.slot >= 0 && !p.exited && (p.lead == nil || p.state == current) {
			s = append(s, p.slot)
		}
	}
	if len(s) == 0 {
		return g.slots()
	}
	return s
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
		name += fmt.Sprintf("-w%d-%d", p.worker, p.restarts)
	}
	var err error
	if p.notify, err = l.notifySocketNamed(name); err != nil {
		return err
	}
	env := append(sdlisten.ChildEnv(l.env, socks),
		"NOTIFY_SOCKET="+p.notify.Path(),
		"RELAUNCH_GENERATION="+strconv.Itoa(p.id),
		handoff.Env+"="+l.handoff.Path())
	if p.lead != nil {
		env = append(env, "RELAUNCH_WORKER="+strconv.Itoa(p.worker))
	}
	pid, err := l.sys.start(procSpec{path: p.path, argv: l.cfg.Command, env: env, socks: socks, stdin: l.stdin, bin: from},
		func(err error) { l.post(func() { l.onExec(p, err) }) },
		func(ws syscall.WaitStatus) { l.post(func() { l.onExit(p, exitStatus{ws}) }) })
	if err != nil {
		p.notify.Close()
		return err
	}
	p.pid = pid
	p.startTicks, _ = procStartTicks(pid)
	l.roots.add(p.id, pid)
	go l.readNotify(p)
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
	l.reviveDead()
	how := st.String()
	if w.failReason != "" {
		how = w.failReason + ", " + how
	}
	attrs := []any{"generation", g.id, "worker", w.worker, "pid", w.pid, "status", st.code()}
	byItself := !l.stopping && !g.exited && w.failReason == "" && g.failReason == "" &&
		(g.state == starting || g.state == current || g.state == canary)
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
	for _, w := range g.workers {
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
			if err := l.restartProc(w); err != nil {
				l.log.Error(fmt.Sprintf("cannot restart %s: %v", w, err), "generation", g.id, "worker", w.worker)
				l.restartWorker(w)
			}
		})
	})
	w.restartT = t
}

// restartProc starts w's process again, as its generation's binary.
func (l *launcher) restartProc(w *generation) error {
	g := w.lead
	var from *os.File
	if g.bin != nil && !samePath(g.bin, g.path) && !isScript(g.bin) {
		from = g.bin // the path no longer holds what the generation runs
	}
	w.restarts++
	w.exited, w.state, w.started = false, starting, l.sys.now()
	w.notified, w.acceptHow, w.execErr, w.failReason = false, "", nil, ""
	w.readyBy, w.healthy, w.probing, w.readyHow = "", false, false, ""
	w.failSt = nil
	if err := l.startProc(w, from); err != nil {
		w.exited = true
		return err
	}
	g.pid = g.workers[0].pid
	l.log.Info(fmt.Sprintf("%s started again (restart %d)", w, w.restarts), "generation", g.id, "worker", w.worker, "pid", w.pid)
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
	l.log.Info(fmt.Sprintf("%s ready again in %s: %s; it gets new connections again", w, ms(w.readyAt.Sub(w.started)), how),
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
	for _, w := range g.workers {
		state := "serving"
		switch {
		case w.restartT != nil:
			state = "restarting"
		case w.exited:
			state = "exited"
		case w.state == starting:
			state = "starting"
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
