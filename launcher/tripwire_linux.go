package launcher

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"relaunch/sdlisten"
)

// The tripwire: a child can disturb a steered group, by opening its own
// SO_REUSEPORT socket on the port (harmless until a slot leaves the group:
// the last member then takes that slot's index), or by attaching a program
// of its own (connections then queue on slots nobody receives on, long
// after relaunch steered away from them: slots_linux.go tells these from
// late handshakes). A shutdown() of a slot is repaired (Pool.Revive).
// Checked at each upgrade; on a hit, the address is shared from then on.

// checkTripwire freezes every disturbed pool on the current slot.
func (l *launcher) checkTripwire() {
	l.reviveDead()
	for i, ln := range l.cfg.Listeners {
		if ln.Pool == nil || l.frozen[i] >= 0 {
			continue
		}
		if why := l.disturbed(ln.Pool); why != "" {
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
	ours := map[uint64]int{}        // inode → slot
	for s, m := range p.Members() { // the spare is p.Len()
		var st unix.Stat_t
		if unix.Fstat(m.Fd(), &st) == nil {
			ours[st.Ino] = s
		}
	}
	listeners, port := tcpListeners(p.Slot(0).Fd())
	var local string // our slots' local address, as /proc prints it
	seen := map[int]bool{}
	for _, ln := range listeners {
		if s, ok := ours[ln.ino]; ok {
			seen[s], local = true, ln.local
		}
	}
	for s := range p.Members() {
		if !seen[s] {
			return fmt.Sprintf("slot %d no longer listens (a process called shutdown() on the socket it was given?)", s)
		}
	}
	for _, ln := range listeners {
		if _, ok := ours[ln.ino]; !ok && ln.local == local {
			return fmt.Sprintf("a socket relaunch does not hold listens on port %d too (inode %d): the app opened its own SO_REUSEPORT socket there", port, ln.ino)
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
		if n, err := p.Queued(s); err == nil && n > 0 && !used[s] && !l.lateOK(s) {
			return fmt.Sprintf("%d connection(s) are queued on slot %d, which no generation receives on, %s (a BPF program that is not relaunch's?)", n, s, l.awayFor(s))
		}
	}
	return ""
}

type tcpListener struct {
	local string // "0100007F:1F90"
	ino   uint64
}

// tcpListeners lists the listening TCP sockets on fd's port, of fd's
// family, in relaunch's network namespace: from sock_diag, or, where that
// is missing (no tcp_diag module), from /proc/net/tcp or tcp6.
func tcpListeners(fd int) ([]tcpListener, int) {
	// Only the table of the socket's own family: reading one with no
	// listener makes the kernel walk its whole connection table.
	port, table, family := 0, "/proc/net/tcp", unix.AF_INET
	switch sa, _ := unix.Getsockname(fd); sa := sa.(type) {
	case *unix.SockaddrInet4:
		port = sa.Port
	case *unix.SockaddrInet6:
		port, table, family = sa.Port, "/proc/net/tcp6", unix.AF_INET6
	}
	if out, err := diagListeners(family, port); err == nil {
		return out, port
	}
	return procListeners(table, port), port
}

// procListeners reads the listening sockets on port from table, a
// /proc/net/tcp file.
func procListeners(table string, port int) []tcpListener {
	suffix := fmt.Sprintf(":%04X", port)
	var out []tcpListener
	{
		f, err := os.Open(table)
		if err != nil {
			return nil
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			// The kernel lists listening sockets first: stop at the first
			// other one, so that the table of a busy host's connections
			// (slow to read, and read with the loop waiting) is not read.
			if len(fl) < 10 || fl[3] != "0A" {
				break
			}
			if !strings.HasSuffix(fl[1], suffix) {
				continue
			}
			if ino, err := strconv.ParseUint(fl[9], 10, 64); err == nil {
				out = append(out, tcpListener{local: fl[1], ino: ino})
			}
		}
		f.Close()
	}
	return out
}
