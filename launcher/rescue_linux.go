package launcher

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"relaunch/sdlisten"
)

// Rescue of stranded connections (steered pools only). A connection the
// kernel queued on a slot stays there when the generation holding the slot
// exits without accepting it: a generation stopped or stuck when it was
// killed (--max-draining, --drain-timeout), or a handshake that completed
// just after the switch. With a shared socket the next generation would
// accept it; with steering nobody would, since new generations get other
// slots. So for a while after a slot loses its last holder relaunch accepts
// what queues there and relays it, byte for byte, to the address, which
// steers it to the current generation. The app sees relaunch as the peer of
// these few connections; none is lost.

const (
	rescueWindow = 3 * time.Second // covers a late handshake (the SYN-ACK is resent at 1 s)
	// Sweeps come at once, then 25 ms later, doubling up to 1 s: the
	// leftovers are there at once, late handshakes are rare, and relaunch
	// at rest must not keep waking up (~8 sweeps per window).
	rescuePollMin = 25 * time.Millisecond
	rescuePollMax = time.Second
	maxRelays     = 256 // relayed connections open at once; more wait in the queue
	relayLinger   = 30 * time.Second
)

// usedSlots are the slots a generation holds, and the one new connections
// go to (a crash restart takes it).
func (l *launcher) usedSlots() map[int]bool {
	used := map[int]bool{l.steerSlot: true}
	for _, g := range l.gens {
		used[g.slot] = true
	}
	return used
}

// updateIdle notes the slots that have just lost their last holder, and
// sweeps them for the rescue window.
func (l *launcher) updateIdle() {
	p := l.firstPool()
	if p < 0 {
		return
	}
	if l.idleSince == nil {
		// Slots never held are idle since forever: a queue there is not
		// a leftover but a sign the group is disturbed (the tripwire).
		l.idleSince = map[int]time.Time{}
		for s := 0; s < l.cfg.Listeners[p].Pool.Len(); s++ {
			l.idleSince[s] = time.Time{}
		}
	}
	used := l.usedSlots()
	fresh := false
	for s := 0; s < l.cfg.Listeners[p].Pool.Len(); s++ {
		_, idle := l.idleSince[s]
		switch {
		case used[s]:
			delete(l.idleSince, s)
		case !idle:
			l.idleSince[s] = time.Now()
			fresh = true
		}
	}
	if fresh {
		l.sweepEvery = rescuePollMin
		if !l.sweeping {
			l.sweep()
		}
	}
}

// recentlyIdle says whether slot lost its holder within the rescue window.
func (l *launcher) recentlyIdle(slot int) bool {
	since, ok := l.idleSince[slot]
	return ok && time.Since(since) <= rescueWindow
}

// sweep rescues what queued on recently idle slots, and comes back while
// there are any.
func (l *launcher) sweep() {
	l.sweeping = false
	if l.stopping {
		return // relaunch closes every slot soon, as it would a shared socket
	}
	again := false
	for s := range l.idleSince {
		if !l.recentlyIdle(s) {
			continue
		}
		again = true
		for i, ln := range l.cfg.Listeners {
			if ln.Pool != nil && l.frozen[i] < 0 {
				l.rescue(ln.Pool, s)
			}
		}
	}
	if again {
		l.sweeping = true
		time.AfterFunc(l.sweepEvery, func() { l.post(l.sweep) })
		l.sweepEvery = min(2*l.sweepEvery, rescuePollMax)
	}
}

// rescue accepts what is queued on p's slot and relays each connection.
// relaunch is the slot's only holder, so accepting does not race an app;
// the slot is made non-blocking only meanwhile, since the next generation
// to hold it may expect a blocking socket.
func (l *launcher) rescue(p *sdlisten.Pool, slot int) {
	if n, err := p.Queued(slot); err != nil || n == 0 {
		return
	}
	fd := p.Slot(slot).Fd()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return
	}
	if flags&unix.O_NONBLOCK == 0 {
		unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags|unix.O_NONBLOCK)
		defer unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags)
	}
	to := relayTarget(fd)
	n := 0
	for l.relays < maxRelays {
		c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
			continue
		}
		if err != nil {
			break // EAGAIN: the queue is empty
		}
		n++
		l.relays++
		go func() {
			relay(c, to)
			l.post(func() { l.relays-- })
		}()
	}
	if n > 0 {
		to := "the current generation"
		if l.cur != nil {
			to = fmt.Sprintf("gen %d (pid %d)", l.cur.id, l.cur.pid)
		}
		l.log.Warn(fmt.Sprintf("%d connection(s) were left queued on %s slot %d after its generation exited: relaunch relays them to %s",
			n, p.Addr(), slot, to), "addr", p.Addr().String(), "slot", slot, "relayed", n)
	}
}

// relayTarget is the address a relayed connection is made to: the slot's
// own, with a wildcard host replaced by loopback. The pool's steering sends
// it to the current generation.
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
	// The app has finished; a client that never closes its side is not
	// waited for forever.
	c.SetReadDeadline(time.Now().Add(relayLinger))
	<-up
}
