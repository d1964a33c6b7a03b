package launcher

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/internal/listenprobe"
)

// Adoption: relaunch took its sockets back after its own death, from the
// service manager's fd store or its keeper (keeper_linux.go), and the
// generations it had started outlived it. They still serve on those
// sockets: relaunch finds them (processes that hold one of its sockets
// and carry RELAUNCH_GENERATION, each generation by its main process, the
// leader of its process group), and manages them as its own. The state
// the dead relaunch saved says which was current (it keeps serving until
// the next trigger) and since when the others were draining (their
// --drain-timeout counts from then); with none current, the newest that
// was starting becomes current; one that was otherwise starting or
// settling is drained now. Without that state the newest is current and the others'
// timeouts count from now. Their exits are seen through pidfds (they are
// not relaunch's children), with an unknown status, taken as a failure.

// adoptable is a generation found holding relaunch's sockets.
type adoptable struct {
	id, pid, slot int
	path          string
	worker        int // its RELAUNCH_WORKER; -1 without
}

// findAdoptable lists the generations of an earlier relaunch that hold
// the sockets of relaunch's listeners, newest first.
func (l *launcher) findAdoptable() []adoptable {
	slots := l.listenerSlots()
	procs, _ := os.ReadDir("/proc")
	var found []adoptable
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, pgrp, ok := procStat(pid); !ok || pgrp != pid {
			continue // a generation is its main process, its group's leader
		}
		slot, holds := -1, false
		for _, ino := range listenprobe.SocketInodes(pid) {
			if s, ok := slots[ino]; ok {
				holds = true
				slot = max(slot, s)
			}
		}
		if !holds {
			continue
		}
		if id, worker := generationOf(pid); id > 0 {
			exe, _ := os.Readlink("/proc/" + p.Name() + "/exe")
			found = append(found, adoptable{id: id, pid: pid, slot: slot, path: strings.TrimSuffix(exe, " (deleted)"), worker: worker})
		}
	}
	slices.SortFunc(found, func(a, b adoptable) int { return b.id - a.id })
	return found
}

// listenerSlots maps the inode of every socket relaunch hands out to its
// slot (-1: a shared socket).
func (l *launcher) listenerSlots() map[uint64]int {
	slots := map[uint64]int{}
	for _, ln := range l.cfg.Listeners {
		switch {
		case ln.Pool != nil:
			for s := range ln.Pool.Len() {
				slots[fdInode(ln.Pool.Slot(s).Fd())] = s
			}
		case ln.Socket != nil:
			slots[fdInode(ln.Socket.Fd())] = -1
		}
	}
	return slots
}

// generationOf is the RELAUNCH_GENERATION of pid's environment, 0 when it
// has none (not an app a relaunch started) or it cannot be read.
func generationOf(pid int) (id, worker int) {
	worker = -1
	env, err := readBounded("/proc/"+strconv.Itoa(pid)+"/environ", 1<<20)
	if err != nil {
		return 0, -1
	}
	for _, kv := range strings.Split(string(env), "\x00") {
		if v, ok := strings.CutPrefix(kv, "RELAUNCH_GENERATION="); ok {
			id, _ = strconv.Atoi(v)
		}
		if v, ok := strings.CutPrefix(kv, "RELAUNCH_WORKER="); ok {
			if w, err := strconv.Atoi(v); err == nil && w >= 0 {
				worker = w
			}
		}
	}
	return id, worker
}

// adopt makes the generations found relaunch's own: the newest current,
// the others draining. It says whether there was a current one.
func (l *launcher) adopt(found []adoptable) (bool, error) {
	now := l.sys.now()
	saved := map[int]savedGen{} // by pid
	cur := 0                    // found's index of the current one; -1: none
	var toDrain []*generation
	if l.state != nil {
		l.lastID = max(l.lastID, l.state.LastID)
		cur = -1
		for _, sg := range l.state.Gens {
			saved[sg.Pid] = sg
		}
		for i, a := range found {
			if sg, ok := saved[a.pid]; ok && sg.ID == a.id && sg.State == current.String() {
				cur = i
			}
		}
		// None current (relaunch died before the first was ready, or
		// while the current one was being replaced after a crash): the
		// newest that was starting serves, as it was started to.
		for i, a := range found {
			if sg, ok := saved[a.pid]; cur < 0 && ok && sg.ID == a.id && sg.State == starting.String() {
				cur = i
			}
		}
	}
	if l.nWorkers > 0 && cur >= 0 {
		// Workers: the first one found of the current generation decides.
		cur = slices.IndexFunc(found, func(a adoptable) bool { return a.id == found[cur].id })
	}
	leads := map[int]*generation{} // --workers: by id, the generations the workers found are of
	var curLead *generation
	for i, a := range found {
		g := &generation{id: a.id, pid: a.pid, path: a.path, slot: a.slot, started: now, readyAt: now, adopted: true}
		if l.nWorkers > 0 {
			lead, seen := leads[a.id]
			if !seen {
				lead = &generation{id: a.id, path: a.path, started: now, readyAt: now, adopted: true}
				leads[a.id] = lead
			}
			g.lead, g.worker, g.state = lead, max(a.worker, 0), current
			if l.hasPools() && g.slot < 0 {
				g.slot = l.steerSlot
			}
			if err := l.adoptWorker(g); err != nil {
				return false, err
			}
			if i == cur {
				curLead = lead
			}
			if seen {
				continue // its generation's state is decided by its first worker
			}
			g = lead
		}
		sg, known := saved[a.pid]
		known = known && sg.ID == a.id
		if known && l.hasPools() && sg.Slot >= 0 {
			g.slot = sg.Slot
		}
		if l.hasPools() && g.slot < 0 {
			g.slot = l.steerSlot
		}
		if g.lead == nil && g.workers == nil {
			var err error
			if g.notify, err = l.notifySocket(g.id); err != nil {
				return false, err
			}
			if err := l.watchAdopted(g); err != nil {
				g.notify.Close()
				return false, err
			}
			l.roots.add(g.id, g.pid)
		}
		l.gens = append(l.gens, g)
		l.lastID = max(l.lastID, g.id)
		switch {
		case i == cur && g.workers != nil:
			g.state = current
			l.cur, l.everUp = g, true // steered to once all its workers are in
			l.handoff.SetCurrent(g.id)
		case i == cur:
			g.state = current
			l.cur, l.everUp = g, true
			if g.slot >= 0 {
				l.steerTo(g.slot)
			}
			l.handoff.SetCurrent(g.id)
			l.watchHealth(g) // --health-interval
		case known && sg.State == draining.String() && !sg.DrainAt.IsZero():
			// Told before relaunch died: its timeout counts from then.
			g.state, g.drainAt = draining, sg.DrainAt
			if l.cfg.DrainTimeout > 0 {
				l.drainTimer(g, l.cfg.DrainTimeout-now.Sub(sg.DrainAt))
			}
		case known && sg.State != draining.String() && sg.State != stopping.String():
			// Starting or settling when relaunch died: never told.
			g.state = settling
			toDrain = append(toDrain, g)
		default:
			g.state, g.drainAt = draining, now
			if l.cfg.DrainTimeout > 0 {
				l.drainTimer(g, l.cfg.DrainTimeout)
			}
		}
		if g.workers == nil {
			l.log.Info(fmt.Sprintf("adopted %s, %s, which outlived the relaunch that started it", g, g.state),
				"generation", g.id, "pid", g.pid, "state", g.state.String())
		}
	}
	for _, lead := range leads {
		slices.SortFunc(lead.workers, func(a, b *generation) int { return a.worker - b.worker })
		lead.pid, lead.slot = lead.workers[0].pid, lead.workers[0].slot
		l.log.Info(fmt.Sprintf("adopted %s, %s, with %d workers, which outlived the relaunch that started it", lead, lead.state, len(lead.workers)),
			"generation", lead.id, "pid", lead.pid, "state", lead.state.String())
	}
	if curLead != nil && l.hasPools() {
		l.steerGen(curLead)
		l.watchHealth(curLead)
	}
	slices.SortFunc(l.gens, func(a, b *generation) int { return a.id - b.id }) // oldest first, as always
	for _, g := range toDrain {
		l.drain(g)
	}
	l.limitDraining()
	l.armSlots()
	if l.cur != nil {
		l.outer.ready(fmt.Sprintf("%s serving (adopted)", l.cur))
	}
	return l.cur != nil, nil
}

// watchAdopted posts g's exit when its process exits, seen through a
// pidfd: it is not relaunch's child, so wait4 cannot see it.
func (l *launcher) watchAdopted(g *generation) error {
	err := l.sys.watchExit(g.pid, func() {
		l.post(func() {
			// Its status is not relaunch's to read: a failure, unless
			// relaunch is stopping it.
			ws := syscall.WaitStatus(1 << 8)
			if l.stopping {
				ws = 0
			} else if g.failReason == "" && g.lead == nil {
				// (A worker's failReason would say relaunch ended it: it
				// would not be restarted.)
				g.failReason = "its exit status is unknown (adopted: not relaunch's child)"
			}
			l.onExit(g, exitStatus{ws})
		})
	})
	if err != nil {
		return fmt.Errorf("cannot watch %s, which outlived the relaunch that started it: %v", g, err)
	}
	return nil
}

// watchPidfd calls exited when pid is gone, seen through a pidfd.
func watchPidfd(pid int, exited func()) error {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return os.NewSyscallError("pidfd_open", err)
	}
	go func() {
		waitPidfd(pfd)
		exited()
	}()
	return nil
}

// waitPidfd blocks until the process of pidfd exits, then closes it.
func waitPidfd(pidfd int) {
	defer unix.Close(pidfd)
	for {
		_, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, -1)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

func fdInode(fd int) uint64 {
	var st unix.Stat_t
	unix.Fstat(fd, &st)
	return st.Ino
}

// adoptWorker makes g, a worker of a generation being adopted, relaunch's:
// a notify socket of its own for a restart's sake, its exit watched.
func (l *launcher) adoptWorker(g *generation) error {
	lead := g.lead
	var err error
	l.notifySeq++
	if g.notify, err = l.notifySocketNamed(fmt.Sprintf("gen%d-w%d-%d", g.id, g.worker, l.notifySeq)); err != nil {
		return err
	}
	if err := l.watchAdopted(g); err != nil {
		g.notify.Close()
		return err
	}
	l.roots.add(g.id, g.pid)
	lead.workers = append(lead.workers, g)
	return nil
}
