package sdlisten

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// listenFdsStart is SD_LISTEN_FDS_START: the first passed fd.
const listenFdsStart = 3

// Inherited returns the sockets systemd passed to relaunch itself: when
// LISTEN_PID is this process and LISTEN_FDS=N>0, fds 3..3+N-1, named from
// LISTEN_FDNAMES. They are made close-on-exec (children get them through
// ExtraFiles like the others); their O_NONBLOCK is left alone. Close on them
// never removes a file. No LISTEN_PID, or another process's, gives (nil, nil).
func Inherited() ([]*Socket, error) {
	return inherited(os.LookupEnv, os.Getpid(), listenFdsStart)
}

// inherited is Inherited with the environment, pid and first fd given, so
// that tests need not clobber the test binary's own fd 3.
func inherited(lookup func(string) (string, bool), pid, base int) ([]*Socket, error) {
	ps, ok := lookup("LISTEN_PID")
	if !ok {
		return nil, nil
	}
	if p, err := strconv.Atoi(ps); err != nil || p <= 0 {
		return nil, fmt.Errorf("bad LISTEN_PID=%q in relaunch's environment: not a process id", ps)
	} else if p != pid {
		return nil, nil // meant for another process (an ancestor)
	}
	ns, ok := lookup("LISTEN_FDS")
	if !ok {
		return nil, nil // as sd_listen_fds: nothing passed
	}
	n, err := strconv.Atoi(ns)
	if err != nil || n < 0 || n > 1<<16 {
		return nil, fmt.Errorf("bad LISTEN_FDS=%q in relaunch's environment: not a count of file descriptors", ns)
	}
	if n == 0 {
		return nil, nil
	}
	names := make([]string, n)
	if s, ok := lookup("LISTEN_FDNAMES"); ok {
		parts := strings.Split(s, ":")
		if len(parts) != n {
			return nil, fmt.Errorf("bad LISTEN_FDNAMES=%q in relaunch's environment: %d names for LISTEN_FDS=%d", s, len(parts), n)
		}
		copy(names, parts)
	}
	socks := make([]*Socket, n)
	for i := range socks {
		fd := base + i
		// Close-on-exec: relaunch passes them on explicitly, and nothing
		// else it starts should hold them.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			return nil, fmt.Errorf("LISTEN_FDS=%d in relaunch's environment but fd %d is not open: %v", n, fd, err)
		}
		a := fdAddr(fd)
		a.Name = names[i]
		socks[i] = &Socket{fd: fd, addr: a}
	}
	return socks, nil
}

// fdAddr describes the socket on fd as well as the kernel tells: Network
// and Address stay empty for what is not a tcp, udp or unix socket (systemd
// can pass FIFOs and other files too).
func fdAddr(fd int) Addr {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return Addr{}
	}
	if sa, ok := sa.(*unix.SockaddrUnix); ok {
		return Addr{Network: "unix", Address: sa.Name}
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return Addr{}
	}
	var network string
	switch typ {
	case unix.SOCK_STREAM:
		network = "tcp"
	case unix.SOCK_DGRAM:
		network = "udp"
	default:
		return Addr{}
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return Addr{Network: network, Address: net.JoinHostPort(netip.AddrFrom4(sa.Addr).String(), strconv.Itoa(sa.Port))}
	case *unix.SockaddrInet6:
		host := ""
		ip := netip.AddrFrom16(sa.Addr)
		v6only, _ := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		// A dual-stack wildcard is what an empty host means here.
		if !ip.IsUnspecified() || v6only == 1 {
			if sa.ZoneId != 0 {
				zone := strconv.Itoa(int(sa.ZoneId))
				if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
					zone = ifi.Name
				}
				ip = ip.WithZone(zone)
			}
			host = ip.String()
		}
		return Addr{Network: network, Address: net.JoinHostPort(host, strconv.Itoa(sa.Port))}
	}
	return Addr{}
}

// Rename gives s the name an app sees in LISTEN_FDNAMES: a socket taken
// back from a store comes named by its place there. Only before s is in
// use.
func (s *Socket) Rename(name string) { s.addr.Name = name }

// Received makes a Socket of fd, a socket relaunch was handed (by its
// keeper, internal/keeper) under name, the way Inherited names what
// systemd passes: close-on-exec, and Close never removes a file.
func Received(fd int, name string) *Socket {
	unix.CloseOnExec(fd)
	a := fdAddr(fd)
	a.Name = name
	return &Socket{fd: fd, addr: a}
}
