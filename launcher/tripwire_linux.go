package launcher

import (
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/internal/listenprobe"
	"github.com/relaunch/relaunch/sdlisten"
)

// The tripwire: a child can disturb a steered group, by opening its own
// SO_REUSEPORT socket on the port (harmless until a slot leaves the group:
// the last member then takes that slot's index), or by attaching a program
// of its own (connections then queue on slots nobody receives on, long
// after relaunch steered away from them: slots_linux.go tells these from
// late handshakes). A shutdown() of a slot is repaired (Pool.Revive).
// Checked at each upgrade; on a hit, the address is shared from then on.
//
// The check runs once the new generation has started, not between the
// trigger and its fork: its sock_diag dump took 0.2–2 ms there under the
// benchmark's load (the dump is cheap, ~50 µs idle; the CPU is not). It
// runs tripwireAfter later, while a starting app is usually past its
// runtime's start, or at its readiness if that comes first. A hit then
// finds the new generation holding a slot that steering leaves: it is
// killed and a fresh one started on the shared slot, a cost paid only on
// the rare upgrade that trips.

// tripwireAfter is how long after its start an upgrade's new generation
// is checked: the first scan's slowEvery.
const tripwireAfter = slowEvery

// tripwireLater arms the tripwire check of g, which an upgrade just
// started, when the address is steered.
func (l *launcher) tripwireLater(g *generation) {
	if l.cur == nil || !l.steered() {
		return
	}
	g.tripwire = true
	l.after(g, tripwireAfter, func() { l.checkStarted(g) })
}

// checkStarted runs g's tripwire check if it is still due, and says
// whether g was replaced.
func (l *launcher) checkStarted(g *generation) bool {
	if !g.tripwire || g.exited || g != l.next || l.stopping {
		return false
	}
	g.tripwire = false
	was := slices.Clone(l.frozen)
	l.checkTripwire()
	for i, f := range l.frozen {
		if was[i] < 0 && f >= 0 && slices.ContainsFunc(g.slots(), func(s int) bool { return s != f }) {
			l.replaceStarting(g, f)
			return true
		}
	}
	return false
}

// replaceStarting kills g, a starting generation on a slot that a pool
// no longer steers to (it is shared on slot from now on), and starts a
// fresh one in its place for the same upgrade.
func (l *launcher) replaceStarting(g *generation, slot int) {
	g.replaced = true
	g.failReason = "replaced: it had its own slot when steering stopped"
	// The fresh one runs what g ran: the rollback's file, or the path. A
	// rollback queued behind this upgrade keeps its own file for later.
	queued := l.startFrom
	l.startFrom = nil
	if g.rollback {
		l.startFrom, g.bin = g.bin, nil
	}
	l.killGen(g)
	l.next = nil
	l.log.Info(fmt.Sprintf("%s got slot %d before the check stopped steering: starting a fresh generation on the shared slot %d in its place", g, g.slot, slot),
		"generation", g.id, "pid", g.pid)
	l.startUpgrade(g.why)
	closeFile(l.startFrom) // not taken: the start failed
	l.startFrom = queued
}

// checkTripwire freezes every disturbed pool on the current slot.
func (l *launcher) checkTripwire() {
	l.reviveDead()
	// One sock_diag dump serves every address, and gives the slots' queues.
	var snap listenprobe.Snapshot
	for i, ln := range l.cfg.Listeners {
		if ln.Pool == nil || l.frozen[i] >= 0 {
			continue
		}
		if why := l.disturbedIn(ln.Pool, &snap); why != "" {
			l.freeze(i, why)
		}
	}
}

// freeze stops steering listener i: every generation shares the current
// slot from now on.
func (l *launcher) freeze(i int, why string) {
	p := l.cfg.Listeners[i].Pool
	if l.frozen[i] >= 0 {
		return
	}
	l.frozen[i] = l.steerSlot
	l.log.Warn(fmt.Sprintf("steering %s stopped: %s. From now on every generation shares its slot %d (the shared-socket handover) for this address",
		p.Addr(), why, l.steerSlot), "addr", p.Addr().String(), "reason", why)
}

// disturbed says what is wrong with a pool's group, or "".
func (l *launcher) disturbed(p *sdlisten.Pool) string {
	return l.disturbedIn(p, &listenprobe.Snapshot{})
}

// disturbedIn is disturbed, from snap.
func (l *launcher) disturbedIn(p *sdlisten.Pool, snap *listenprobe.Snapshot) string {
	ours := l.poolInodes(p)
	listeners, port := snap.Listeners(p.Slot(0).Fd())
	var local string // our slots' local address, as /proc prints it
	seen := map[int]bool{}
	queued := map[int]int{} // slot → its accept queue, as the dump says
	for _, ln := range listeners {
		if s, ok := ours[ln.Inode]; ok {
			seen[s], local = true, ln.Local
			queued[s] = ln.Queued
		}
	}
	for s := range p.Members() {
		if !seen[s] {
			return fmt.Sprintf("slot %d no longer listens (a process called shutdown() on the socket it was given?)", s)
		}
	}
	for _, ln := range listeners {
		if _, ok := ours[ln.Inode]; !ok && ln.Local == local {
			who := "a process relaunch cannot see (another user's?)"
			if h := listenprobe.Whose(ln.Inode); h.Pid != 0 {
				who = h.String()
				if g := l.genOfPid(h.Pid); g != nil {
					who += ", " + g.String() + "'s"
				}
			}
			return fmt.Sprintf("a socket relaunch does not hold listens on port %d too (inode %d, held by %s): it opened its own SO_REUSEPORT socket there", port, ln.Inode, who)
		}
	}
	used := l.usedSlots()
	for s := 0; s < p.Len(); s++ {
		// Late handshakes land on a slot steered away from less than a
		// minute ago: the rescue takes them. Held ones wait for the next
		// generation.
		if _, held := l.held[s]; held {
			continue
		}
		if n := queued[s]; n > 0 && !used[s] && !l.lateOK(s) {
			return fmt.Sprintf("%d connection(s) are queued on slot %d, which no generation receives on, %s (a BPF program that is not relaunch's?)", n, s, l.awayFor(s))
		}
	}
	return ""
}

// genOfPid is the generation whose process tree pid is in, or nil.
func (l *launcher) genOfPid(pid int) *generation {
	for _, g := range l.gens {
		if inTree(pid, g.pid) {
			return g
		}
	}
	return nil
}

// poolInodes maps the inodes of p's sockets to their slots (the spare is
// p.Len()). A pool keeps its sockets, so it is read once.
func (l *launcher) poolInodes(p *sdlisten.Pool) map[uint64]int {
	if m, ok := l.inodes[p]; ok {
		return m
	}
	ours := map[uint64]int{}
	for s, m := range p.Members() {
		var st unix.Stat_t
		if unix.Fstat(m.Fd(), &st) == nil {
			ours[st.Ino] = s
		}
	}
	if l.inodes == nil {
		l.inodes = map[*sdlisten.Pool]map[uint64]int{}
	}
	l.inodes[p] = ours
	return ours
}
