package launcher

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/sdlisten"
)

// The slots' care: what relaunch does for listening sockets between the
// generations' uses of them.
//
//   - Leftovers. A connection the kernel queued on a slot stays there when
//     the generation holding the slot exits without accepting it (it was
//     stopped or stuck when --max-draining or --drain-timeout killed it), or
//     when its handshake completes late (the SYN came before the switch, the
//     ACK after a lost SYN-ACK: up to a minute later). New generations get
//     other slots, so nobody would accept it. relaunch watches every slot no
//     generation holds, for as long as it holds none, and rescues what
//     queues there (rescueConn says how).
//   - Dead listeners. shutdown() of a listening socket, a common way to wake
//     accept threads at drain, stops it for every process holding it, and
//     takes a pool's slot out of its SO_REUSEPORT group. relaunch sees it at
//     once and makes the socket listen again (Pool.Revive keeps the group's
//     order, so steering stays right).
//
// One goroutine waits in epoll on every socket (slotWatch) and posts to the
// loop; registrations are one-shot, re-armed by the loop once it has acted,
// so a queue relaunch leaves for the next generation does not spin.

const (
	// holdFor bounds the wait of leftovers kept for the next generation
	// (RescueAuto, when the current generation takes no handoffs): then
	// they are reset, as the kernel resets a closed listener's queue.
	holdFor   = 10 * time.Second
	maxRelays = 256 // RescueRelay: relayed connections open at once; more wait in the queue
	// relayLinger: once the app has finished, a client that never closes
	// its side is not waited for forever.
	relayLinger = 30 * time.Second
)

// slotWatch waits in epoll on the listening sockets and calls back with
// the listener's index and the slot (-1: a shared socket).
type slotWatch struct {
	epfd, wake int
	stop, done chan struct{}
	armed      map[int]unix.EpollEvent // fd → how it is armed; the loop's
}

// fired: fd's one-shot registration went off, so it is disarmed.
func (w *slotWatch) fired(fd int) { delete(w.armed, fd) }

func newSlotWatch() (*slotWatch, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	w := &slotWatch{epfd: epfd, wake: wake, stop: make(chan struct{}), done: make(chan struct{})}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1, Pad: -1}); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return w, nil
}

// run calls on for each event until close; on must return once w.stop is
// closed.
func (w *slotWatch) run(on func(ln, slot int)) {
	defer close(w.done)
	evs := make([]unix.EpollEvent, 16)
	for {
		n, err := unix.EpollWait(w.epfd, evs, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range evs[:n] {
			if ev.Fd == -1 {
				return
			}
			on(int(ev.Fd), int(ev.Pad))
		}
	}
}

// arm (re)registers fd for one event: its hang-up (it stopped listening)
// always, a connection queued when queue is set.
func (w *slotWatch) arm(fd, ln, slot int, queue bool) {
	ev := unix.EpollEvent{Events: unix.EPOLLONESHOT | unix.EPOLLRDHUP, Fd: int32(ln), Pad: int32(slot)}
	if queue {
		ev.Events |= unix.EPOLLIN
	}
	// Armed as wanted and not fired since: an epoll_ctl per slot and
	// address at every start and exit would grow with workers × addresses.
	if w.armed == nil {
		w.armed = map[int]unix.EpollEvent{}
	}
	if w.armed[fd] == ev {
		return
	}
	w.armed[fd] = ev
	if unix.EpollCtl(w.epfd, unix.EPOLL_CTL_MOD, fd, &ev) != nil {
		unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
	}
}

func (w *slotWatch) close() {
	close(w.stop)
	unix.Write(w.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	<-w.done
	unix.Close(w.epfd)
	unix.Close(w.wake)
}

// watchSlots starts the watch of every TCP listener and returns its stop.
// Without it (epoll failed), dead listeners are still found at each start
// and exit.
func (l *launcher) watchSlots() func() {
	w, err := newSlotWatch()
	if err != nil {
		l.log.Warn("cannot watch the listening sockets: " + err.Error())
		return func() {}
	}
	go w.run(func(ln, slot int) {
		select {
		case l.events <- func() { l.onSlot(ln, slot) }:
		case <-l.quit:
		case <-w.stop:
		}
	})
	l.slots = w
	l.armSlots()
	return w.close
}

// armSlots re-arms every socket's watch: the queue of the slots no
// generation holds, the hang-up of all.
func (l *launcher) armSlots() {
	if l.slots == nil {
		return
	}
	used := l.usedSlots()
	for i, ln := range l.cfg.Listeners {
		switch {
		case ln.Pool != nil:
			for s := 0; s < ln.Pool.Len(); s++ {
				_, held := l.held[s]
				l.slots.arm(ln.Pool.Slot(s).Fd(), i, s, !used[s] && !held && l.relays < maxRelays)
			}
		case isTCP(ln.Socket):
			l.slots.arm(ln.Socket.Fd(), i, -1, false)
		}
	}
}

// onSlot: a watched socket hung up or has a connection queued.
func (l *launcher) onSlot(ln, slot int) {
	if l.slots != nil {
		if p := l.cfg.Listeners[ln].Pool; p != nil && slot >= 0 {
			l.slots.fired(p.Slot(slot).Fd())
		} else if s := l.cfg.Listeners[ln].Socket; s != nil {
			l.slots.fired(s.Fd())
		}
	}
	if l.stopping {
		return // relaunch closes every socket soon
	}
	l.reviveDead()
	if p := l.cfg.Listeners[ln].Pool; p != nil && slot >= 0 {
		if _, held := l.held[slot]; !l.usedSlots()[slot] && !held {
			l.rescue(ln, slot)
		}
	}
	l.armSlots()
}

func isTCP(s *sdlisten.Socket) bool {
	return s != nil && strings.HasPrefix(s.Addr().Network, "tcp")
}

// usedSlots are the slots a generation holds, and the one new connections
// go to (a crash restart takes it).
func (l *launcher) usedSlots() map[int]bool {
	used := map[int]bool{l.steerSlot: true}
	for _, g := range l.gens {
		for _, s := range g.slots() {
			used[s] = true
		}
	}
	for i := range l.cfg.Listeners {
		if l.frozen[i] >= 0 {
			used[l.frozen[i]] = true
		}
	}
	return used
}

// reviveDead makes every TCP listener that stopped listening listen again.
func (l *launcher) reviveDead() {
	for i, ln := range l.cfg.Listeners {
		switch {
		case ln.Pool != nil:
			dead := ln.Pool.Dead()
			if len(dead) == 0 {
				continue
			}
			steer := l.steerSlot
			if l.frozen[i] >= 0 {
				steer = l.frozen[i]
			}
			fds, err := ln.Pool.Revive(dead, steer)
			l.saidRevived(ln.Pool.Addr(), fmt.Sprintf("slot %s", joinInts(dead)), len(dead))
			for _, fd := range fds {
				l.rescueConn(i, fd, -1)
			}
			if len(fds) > 0 {
				l.log.Warn(fmt.Sprintf("%d connection(s) came while %s's slot steered to was not listening: %s",
					len(fds), ln.Pool.Addr(), l.rescueSaid), "addr", ln.Pool.Addr().String(), "connections", len(fds))
			}
			switch {
			case errors.Is(err, sdlisten.ErrOrderLost):
				l.freeze(i, fmt.Sprintf("slots %s stopped listening at once and listen again, but their order in the group is no longer known", joinInts(dead)))
			case err != nil:
				l.freeze(i, err.Error())
			}
		case isTCP(ln.Socket) && !ln.Socket.Listening():
			if err := ln.Socket.Relisten(); err != nil {
				l.log.Error(err.Error() + "; new connections to it are refused until relaunch restarts")
				continue
			}
			l.saidRevived(ln.Socket.Addr(), "its socket", 1)
		}
	}
}

// saidRevived counts a revival and says so, once per address: an app that
// does this does it at every drain.
func (l *launcher) saidRevived(a sdlisten.Addr, what string, n int) {
	l.rescued.Revived += n
	if l.warnedRevive == nil {
		l.warnedRevive = map[string]bool{}
	}
	if l.warnedRevive[a.String()] {
		return
	}
	l.warnedRevive[a.String()] = true
	l.log.Warn(fmt.Sprintf("%s: %s stopped listening (a process called shutdown() on it, perhaps at its drain): relaunch made it listen again. "+
		"shutdown() of an inherited listener stops it for every generation; close it instead", a, what), "addr", a.String())
}

// rescue takes what is queued on slot of listener ln, which no generation
// holds.
func (l *launcher) rescue(ln, slot int) {
	p := l.cfg.Listeners[ln].Pool
	queued, err := p.Queued(slot)
	if err != nil || queued == 0 {
		return
	}
	if l.cfg.Rescue == RescueAuto && !l.takesHandoffs() && l.abandoned[slot] && l.pending == "" {
		// An aborted canary's: no generation is coming for them, and a
		// client had better hear it now than in holdFor.
		if n := l.drainSlot(ln, slot, true); n > 0 {
			l.log.Warn(fmt.Sprintf("%d connection(s) were left queued on %s slot %d by the aborted canary: reset (--rescue relay would relay them to %s)",
				n, p.Addr(), slot, l.curName()), "addr", p.Addr().String(), "slot", slot, "reset", n)
		}
		return
	}
	if l.cfg.Rescue == RescueAuto && !l.takesHandoffs() {
		// Kept, queue and all, for the next generation; reset if none
		// comes in time.
		l.held[slot] = l.sys.now()
		n := queued
		l.rescued.Held += n
		l.log.Warn(fmt.Sprintf("%d connection(s) were left queued on %s slot %d, which no generation receives on: kept for the next generation to start (at most %s), then reset. "+
			"An app that takes handoffs gets them at once; --rescue relay relays them (the app then sees them from 127.0.0.1)",
			n, p.Addr(), slot, holdFor), "addr", p.Addr().String(), "slot", slot, "held", n)
		l.suspect(ln, slot, n)
		at := l.held[slot]
		l.sys.afterFunc(holdFor, func() {
			l.post(func() {
				if t, ok := l.held[slot]; ok && t == at {
					delete(l.held, slot)
					if !l.usedSlots()[slot] {
						if n := l.drainSlot(ln, slot, true); n > 0 {
							l.log.Warn(fmt.Sprintf("%d connection(s) left queued on %s slot %d were reset: no generation took them within %s", n, p.Addr(), slot, holdFor),
								"addr", p.Addr().String(), "slot", slot, "reset", n)
						}
					}
					l.armSlots()
				}
			})
		})
		return
	}
	n := l.drainSlot(ln, slot, false)
	if n > 0 {
		l.log.Warn(fmt.Sprintf("%d connection(s) were left queued on %s slot %d, which no generation receives on: %s",
			n, p.Addr(), slot, l.rescueSaid), "addr", p.Addr().String(), "slot", slot, "connections", n)
		l.suspect(ln, slot, n)
	}
}

// drainSlot accepts everything queued on a slot no generation holds (so
// accepting does not race an app) and rescues it, or resets it. The slot is
// made non-blocking only meanwhile: the next generation to hold it may
// expect a blocking socket.
func (l *launcher) drainSlot(ln, slot int, reset bool) int {
	p := l.cfg.Listeners[ln].Pool
	fd := p.Slot(slot).Fd()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return 0
	}
	if flags&unix.O_NONBLOCK == 0 {
		unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags|unix.O_NONBLOCK)
		defer unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags)
	}
	n := 0
	for l.relays < maxRelays {
		// Blocking, as an app's accept would give it.
		c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
			continue
		}
		if err != nil {
			break // EAGAIN: the queue is empty
		}
		n++
		if reset {
			resetConn(c)
			l.rescued.Reset++
			continue
		}
		l.rescueConn(ln, c, slot)
	}
	return n
}

// rescueConn serves one stranded connection (an accepted fd) as --rescue
// says, and notes in l.rescueSaid what became of it.
func (l *launcher) rescueConn(ln, fd, slot int) {
	switch {
	case l.cfg.Rescue == RescueRelay:
		to := relayTarget(fd)
		if slot >= 0 {
			to = relayTarget(l.cfg.Listeners[ln].Pool.Slot(slot).Fd())
		}
		l.relays++
		l.rescued.Relayed++
		go func() {
			relay(fd, to)
			l.post(func() {
				l.relays--
				l.armSlots()
			})
		}()
		l.rescueSaid = "relaunch relays them to " + l.curName()
	case l.takesHandoffs():
		if why := l.handoff.Push(fd); why != "" {
			resetConn(fd)
			l.rescued.Reset++
			l.rescueSaid = "reset: " + why
			return
		}
		l.rescued.HandedOver++
		l.rescueSaid = "handed over to " + l.curName() + " through the handoff"
	default:
		resetConn(fd)
		l.rescued.Reset++
		l.rescueSaid = "reset: no generation takes handoffs (--rescue relay would relay them from 127.0.0.1)"
	}
}

func (l *launcher) curName() string {
	if l.cur == nil {
		return "the current generation"
	}
	return l.cur.String()
}

// takesHandoffs says whether the current generation receives handed-over
// connections.
func (l *launcher) takesHandoffs() bool {
	if l.cur == nil || l.handoff == nil {
		return false
	}
	cur, _, ok := l.handoff.Receiving()
	return ok && cur == l.cur.id
}

// resetConn closes an accepted connection with a reset (SO_LINGER 0), as
// the kernel resets the queue of a listener that closes.
func resetConn(fd int) {
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(fd)
}

// suspect freezes listener ln's pool when connections came to a slot too
// long after steering left it to be late handshakes: something other than
// relaunch's program steers there.
func (l *launcher) suspect(ln, slot, n int) {
	if l.lateOK(slot) || l.frozen[ln] >= 0 {
		return
	}
	l.freeze(ln, fmt.Sprintf("%d connection(s) came to slot %d, which no generation receives on, %s (a BPF program that is not relaunch's?)",
		n, slot, l.awayFor(slot)))
}

// lateOK says whether a connection may still come to slot as a late
// handshake: steering left it less than lateHandshake ago.
func (l *launcher) lateOK(slot int) bool {
	since, ok := l.awaySince[slot]
	return ok && l.sys.now().Sub(since) <= lateHandshake()
}

func (l *launcher) awayFor(slot int) string {
	since, ok := l.awaySince[slot]
	if !ok {
		return "although relaunch never steered there"
	}
	return ms(l.sys.now().Sub(since)) + " after relaunch steered away from it"
}

// lateHandshake is how long after the SYN a handshake may still complete:
// the server resends its SYN-ACK net.ipv4.tcp_synack_retries times,
// doubling from 1 s, and gives up one more doubling later (63 s for the
// default 5).
var lateHandshake = sync.OnceValue(func() time.Duration {
	r := 5
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_synack_retries"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= 0 && n < 10 {
			r = n
		}
	}
	return time.Duration(1<<(r+1)-1)*time.Second + 2*time.Second
})

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ", ")
}

// relayTarget is the address a relayed connection is made to: the
// socket's own, with a wildcard host replaced by loopback. The pool's
// steering sends it to the current generation.
func relayTarget(fd int) string {
	switch sa, _ := unix.Getsockname(fd); sa := sa.(type) {
	case *unix.SockaddrInet4:
		ip := net.IP(sa.Addr[:])
		if ip.IsUnspecified() {
			ip = net.IPv4(127, 0, 0, 1)
		}
		return net.JoinHostPort(ip.String(), strconv.Itoa(sa.Port))
	case *unix.SockaddrInet6:
		ip := net.IP(sa.Addr[:])
		if ip.IsUnspecified() {
			ip = net.IPv6loopback
		}
		return net.JoinHostPort(ip.String(), strconv.Itoa(sa.Port))
	}
	return ""
}

// relay copies between the accepted connection fd and a new connection to
// addr until both sides are done. If addr cannot be reached the client's
// connection is closed: it sees a reset, as it would have without relaunch.
func relay(fd int, addr string) {
	f := os.NewFile(uintptr(fd), "rescued")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return
	}
	defer c.Close()
	u, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return
	}
	defer u.Close()
	up := make(chan struct{})
	go func() {
		io.Copy(u, c)
		u.(*net.TCPConn).CloseWrite()
		close(up)
	}()
	io.Copy(c, u)
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(relayLinger))
	<-up
}
