package launcher

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/sdlisten"
)

// Health checks (--health): a generation is ready once its --ready
// condition holds and GET PATH, sent to the address clients use, answers
// 2xx. The probe is steered: relaunch binds the probe's socket to a port
// of its own first, and the steering program sends that exact source to
// the slot of the generation under test (sdlisten.Route.Probes), so the
// old generation never answers a probe and no client reaches the new one
// before it passed. The probe's network I/O runs off the loop
// (system.probe); its answer comes back as an event.
//
// --health-interval probes the current generation (liveness) and a canary;
// failsInARow failures in a row replace the current one by a fresh
// generation, or end the canary.

const (
	healthRetry  = 100 * time.Millisecond // between a starting generation's probes
	probeTimeout = 2 * time.Second        // one probe: connect, request, status line
	failsInARow  = 3
	canaryProbe  = time.Second // a canary's probe interval without --health-interval
	maxAnswer    = 64 << 10    // of a probe's answer, what is read at most
)

// probeSpec is one probe: fd, bound to its source already, connects to
// to and asks GET path.
type probeSpec struct {
	fd      int
	to      unix.Sockaddr
	host    string // the Host header
	path    string
	timeout time.Duration
	slot    int // the slot it is steered to
}

// probeResult is a probe's answer: an HTTP status, or why there is none.
type probeResult struct {
	status int
	err    error
}

func (r probeResult) ok() bool { return r.err == nil && r.status >= 200 && r.status < 300 }

func (r probeResult) String() string {
	if r.err != nil {
		return r.err.Error()
	}
	return strconv.Itoa(r.status) + " " + http.StatusText(r.status)
}

// healthTarget is where the probes of listener ln connect to, and from:
// the listener's own IP, or loopback for a wildcard.
func healthTarget(a sdlisten.Addr) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(a.Address)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ip := netip.IPv4Unspecified()
	if host != "" {
		if ip, err = netip.ParseAddr(host); err != nil {
			return netip.AddrPort{}, fmt.Errorf("health checks of %s: %v", a, err)
		}
	} else if a.Network == "tcp6" {
		ip = netip.IPv6Unspecified()
	}
	switch {
	case ip.IsUnspecified() && ip.Is4():
		ip = netip.MustParseAddr("127.0.0.1")
	case ip.IsUnspecified():
		ip = netip.IPv6Loopback()
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p)), nil
}

func sockaddrOf(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

// probeSocket is a TCP socket bound to ip and a port the kernel picks,
// and that source.
func probeSocket(ip netip.Addr) (int, netip.AddrPort, error) {
	family := unix.AF_INET
	if ip.Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, netip.AddrPort{}, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, sockaddrOf(netip.AddrPortFrom(ip, 0))); err != nil {
		unix.Close(fd)
		return -1, netip.AddrPort{}, os.NewSyscallError("bind", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, netip.AddrPort{}, os.NewSyscallError("getsockname", err)
	}
	var port int
	switch s := sa.(type) {
	case *unix.SockaddrInet4:
		port = s.Port
	case *unix.SockaddrInet6:
		port = s.Port
	}
	return fd, netip.AddrPortFrom(ip, uint16(port)), nil
}

// httpProbe connects p.fd and asks GET p.path; it owns and closes p.fd.
// Every step is bounded by p.timeout, the answer read by maxAnswer.
func httpProbe(p probeSpec) probeResult {
	deadline := time.Now().Add(p.timeout)
	err := unix.Connect(p.fd, p.to)
	if errors.Is(err, unix.EINPROGRESS) {
		err = waitConnected(p.fd, deadline)
	}
	if err != nil {
		unix.Close(p.fd)
		return probeResult{err: fmt.Errorf("connect: %w", err)}
	}
	f := os.NewFile(uintptr(p.fd), "health probe")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return probeResult{err: err}
	}
	defer c.Close()
	c.SetDeadline(deadline)
	req := "GET " + p.path + " HTTP/1.1\r\nHost: " + p.host + "\r\nUser-Agent: relaunch-health\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return probeResult{err: err}
	}
	resp, err := http.ReadResponse(bufio.NewReader(io.LimitReader(c, maxAnswer)), nil)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return probeResult{err: fmt.Errorf("no answer within %s", p.timeout)}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return probeResult{err: errors.New("the connection closed without an answer")}
		}
		return probeResult{err: err}
	}
	resp.Body.Close()
	return probeResult{status: resp.StatusCode}
}

// waitConnected waits for a non-blocking connect to end.
func waitConnected(fd int, deadline time.Time) error {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return errors.New("timed out")
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return os.NewSyscallError("poll", err)
		}
		if n == 0 {
			continue
		}
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return os.NewSyscallError("getsockopt SO_ERROR", err)
		}
		if v != 0 {
			return unix.Errno(v)
		}
		return nil
	}
}

// healthPool is the pool the health probes go through, or nil when the
// address is not steered (any more).
func (l *launcher) healthPool() *sdlisten.Pool {
	h := l.cfg.Health
	if h == nil || h.Listener < 0 || h.Listener >= len(l.cfg.Listeners) || l.frozen[h.Listener] >= 0 {
		return nil
	}
	return l.cfg.Listeners[h.Listener].Pool
}

// probe sends one health probe to g, steered to its slot, and calls done
// on the loop with the answer.
func (l *launcher) probe(g *generation, done func(probeResult)) {
	failed := func(err error) {
		r := probeResult{err: err}
		g.health = r.String()
		done(r)
	}
	p := l.healthPool()
	if p == nil {
		failed(errors.New("the address is no longer steered, so a probe cannot be sent to one generation"))
		return
	}
	to, err := healthTarget(p.Addr())
	if err != nil {
		failed(err)
		return
	}
	fd, src, err := probeSocket(to.Addr())
	if err != nil {
		failed(err)
		return
	}
	if l.probes == nil {
		l.probes = map[netip.AddrPort]int{}
	}
	l.probes[src] = g.slot
	l.applyRoute()
	g.probing = true
	spec := probeSpec{fd: fd, to: sockaddrOf(to), host: net.JoinHostPort(to.Addr().String(), strconv.Itoa(int(to.Port()))),
		path: l.cfg.Health.Path, timeout: probeTimeout, slot: g.slot}
	l.sys.probe(spec, func(r probeResult) {
		l.post(func() {
			delete(l.probes, src)
			l.applyRoute()
			g.probing = false
			g.health = r.String()
			done(r)
		})
	})
}

// healthCheck probes a starting generation whose --ready condition holds,
// every healthRetry until it answers 2xx (then it is ready) or
// --ready-timeout ends it.
func (l *launcher) healthCheck(g *generation) {
	if g.exited || g.state != starting || g.probing {
		return
	}
	l.probe(g, func(r probeResult) {
		if g.exited || g.state != starting {
			return
		}
		if !r.ok() {
			l.after(g, healthRetry, func() { l.healthCheck(g) })
			return
		}
		g.healthy = true
		l.onReady(g, fmt.Sprintf("%s, then GET %s answered %s", g.readyBy, l.cfg.Health.Path, r))
	})
}

// probeEvery is how often a serving generation is probed: 0 for never.
func (l *launcher) probeEvery(g *generation) time.Duration {
	switch {
	case l.cfg.Health == nil:
		return 0
	case l.cfg.HealthInterval > 0:
		return l.cfg.HealthInterval
	case g == l.canary:
		return canaryProbe
	}
	return 0
}

// watchHealth probes a serving generation (current, or a canary) every
// interval from now on.
func (l *launcher) watchHealth(g *generation) {
	if every := l.probeEvery(g); every > 0 {
		l.after(g, every, func() { l.liveness(g) })
	}
}

func (l *launcher) liveness(g *generation) {
	if g.exited || (g != l.cur && g != l.canary) || l.stopping {
		return
	}
	l.probe(g, func(r probeResult) {
		if g.exited || (g != l.cur && g != l.canary) || l.stopping {
			return
		}
		defer l.watchHealth(g)
		if r.ok() {
			if g.fails > 0 {
				l.log.Info(fmt.Sprintf("%s answers its health check again (%s)", g, r), "generation", g.id, "pid", g.pid)
			}
			g.fails = 0
			return
		}
		g.fails++
		l.log.Warn(fmt.Sprintf("%s failed its health check (%d in a row): GET %s: %s", g, g.fails, l.cfg.Health.Path, r),
			"generation", g.id, "pid", g.pid, "fails", g.fails, "health", r.String())
		if g.fails < failsInARow {
			return
		}
		if g == l.cur && l.next != nil {
			// A generation is starting already: once healthy it replaces
			// this one; another upgrade queued now would replace it in turn.
			g.fails = 0
			return
		}
		why := fmt.Sprintf("%d health checks failed in a row (last: %s)", g.fails, r)
		g.fails = 0 // a fresh generation that fails too gets another try after as many
		if g == l.canary {
			l.abortCanary(why)
			return
		}
		g.unhealthy = why
		l.log.Error(fmt.Sprintf("%s: %s; starting a fresh generation, and %s drains once it is healthy", g, why, g),
			"generation", g.id, "pid", g.pid, "reason", why)
		l.upgrade(fmt.Sprintf("%s is unhealthy: %s", g, why))
	})
}

// dropProbes takes g's probes out of the route: it is gone, and its slot
// may soon be another generation's.
func (l *launcher) dropProbes(g *generation) {
	n := len(l.probes)
	for src, s := range l.probes {
		if slices.Contains(g.slots(), s) {
			delete(l.probes, src)
		}
	}
	if len(l.probes) != n {
		l.applyRoute()
	}
}
