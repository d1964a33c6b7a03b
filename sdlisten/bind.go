package sdlisten

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Socket is one listening (or, for udp, bound) socket: a raw fd that
// relaunch owns for its whole life and hands to every generation. It is
// never wrapped in an os.File or net.Listener (see the package doc).
type Socket struct {
	addr Addr

	mu sync.Mutex
	fd int // -1 once closed

	// The socket file Bind created (absolute, so a later chdir does not
	// matter) and its identity: Close removes only that very file.
	unlink string
	file   fs.FileInfo
}

// Fd returns the raw fd: close-on-exec and blocking. It is -1 after Close.
func (s *Socket) Fd() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fd
}

// Addr returns the address the socket is bound to. For tcp and udp the port
// is the one actually bound (port 0 resolved) and a host name is replaced by
// the IP it resolved to; an empty host (all addresses) stays empty.
func (s *Socket) Addr() Addr { return s.addr }

// Close closes the fd and, for a unix socket file that Bind created, removes
// the file if the path still holds the same inode.
func (s *Socket) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return fmt.Errorf("close %s: %w", s.addr, os.ErrClosed)
	}
	var err error
	// Remove before closing: while the socket is open its inode cannot be
	// reused, so the identity check cannot match a newer file.
	if s.unlink != "" {
		if fi, lerr := os.Lstat(s.unlink); lerr == nil && os.SameFile(fi, s.file) {
			err = os.Remove(s.unlink)
		}
	}
	if cerr := unix.Close(s.fd); err == nil && cerr != nil {
		err = os.NewSyscallError("close", cerr)
	}
	s.fd = -1
	return err
}

// BindError is why Bind failed. Err wraps the errno, so
// errors.Is(err, unix.EADDRINUSE) works.
type BindError struct {
	Addr Addr
	Err  error
}

func (e *BindError) Error() string {
	a := e.Addr.String()
	if strings.ContainsFunc(a, isControl) { // one line, even for a hand-made Addr
		a = strconv.Quote(a)
	}
	return "cannot listen on " + a + ": " + e.Err.Error()
}
func (e *BindError) Unwrap() error { return e.Err }

// detail is an error whose text explains what to do while it still wraps the
// underlying errno.
type detail struct {
	msg string
	err error
}

func (d *detail) Error() string { return d.msg }
func (d *detail) Unwrap() error { return d.err }

// Bind creates, binds and (unless udp) listens on a socket for a, with raw
// syscalls: SOCK_CLOEXEC, blocking, SO_REUSEADDR for tcp (not udp), never
// SO_REUSEPORT, backlog net.core.somaxconn. On error (a *BindError) no fd
// stays open and no file stays on disk.
func Bind(a Addr) (*Socket, error) {
	var s *Socket
	var err error
	switch a.Network {
	case "unix":
		s, err = bindUnix(a)
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		s, err = bindInet(a, false)
	default:
		err = fmt.Errorf("unknown network %q; use tcp, tcp4, tcp6, udp, udp4, udp6 or unix", a.Network)
	}
	if err != nil {
		return nil, &BindError{Addr: a, Err: err}
	}
	return s, nil
}

// bindInet binds a tcp or udp socket; with reusePort, one member of a
// SO_REUSEPORT group (see Pool).
func bindInet(a Addr, reusePort bool) (*Socket, error) {
	hp, err := parseHostPort(a.Network, a.Address)
	if err != nil {
		return nil, err
	}
	host, ps, _ := net.SplitHostPort(hp)
	port, _ := strconv.Atoi(ps)
	typ := unix.SOCK_STREAM
	if strings.HasPrefix(a.Network, "udp") {
		typ = unix.SOCK_DGRAM
	}
	last := a.Network[len(a.Network)-1]
	var fd int
	switch {
	case host == "" && last == '4':
		fd, err = inetSocket(typ, netip.IPv4Unspecified(), port, false, reusePort)
	case host == "" && last == '6':
		fd, err = inetSocket(typ, netip.IPv6Unspecified(), port, true, reusePort)
	case host == "":
		// Both stacks on one socket; IPv4 alone where the kernel has no IPv6.
		fd, err = inetSocket(typ, netip.IPv6Unspecified(), port, false, reusePort)
		if errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EADDRNOTAVAIL) {
			fd, err = inetSocket(typ, netip.IPv4Unspecified(), port, false, reusePort)
		}
	default:
		var ip netip.Addr
		if ip, err = resolve(a.Network, host); err != nil {
			return nil, err
		}
		host = ip.String()
		fd, err = inetSocket(typ, ip, port, true, reusePort)
	}
	if err != nil {
		return nil, explainInet(typ, host, port, err)
	}
	if port == 0 {
		if port, err = boundPort(fd); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	return &Socket{fd: fd, addr: Addr{Name: a.Name, Network: a.Network, Address: net.JoinHostPort(host, strconv.Itoa(port))}}, nil
}

// resolve turns a host (IP literal or name) into the address to bind:
// IPv4 first for tcp, tcp4, udp and udp4, IPv6 for tcp6 and udp6.
func resolve(network, host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap(), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("cannot resolve host %q (%v); use an IP address, or a name in /etc/hosts or DNS", host, err)
	}
	var v4, v6 netip.Addr
	for _, ip := range ips {
		if ip = ip.Unmap(); ip.Is4() && !v4.IsValid() {
			v4 = ip
		} else if ip.Is6() && !v6.IsValid() {
			v6 = ip
		}
	}
	switch network[len(network)-1] {
	case '6':
		if v6.IsValid() {
			return v6, nil
		}
		return netip.Addr{}, fmt.Errorf("host %q has no IPv6 address; use %s:// or an IPv6 address", host, network[:3])
	case '4':
		if v4.IsValid() {
			return v4, nil
		}
		return netip.Addr{}, fmt.Errorf("host %q has no IPv4 address; use %s:// or an IPv4 address", host, network[:3])
	}
	if v4.IsValid() {
		return v4, nil
	}
	if v6.IsValid() {
		return v6, nil
	}
	return netip.Addr{}, fmt.Errorf("host %q has no address; use an IP address", host)
}

// inetSocket returns a bound (and, for a stream, listening) socket on ip and
// port. An IPv6 socket is IPv6-only when v6only is set, dual-stack otherwise.
func inetSocket(typ int, ip netip.Addr, port int, v6only, reusePort bool) (int, error) {
	var sa unix.Sockaddr
	domain := unix.AF_INET
	if ip.Is4() {
		sa = &unix.SockaddrInet4{Port: port, Addr: ip.As4()}
	} else {
		domain = unix.AF_INET6
		sa6 := &unix.SockaddrInet6{Port: port, Addr: ip.As16()}
		if z := ip.Zone(); z != "" {
			if n, err := strconv.Atoi(z); err == nil {
				sa6.ZoneId = uint32(n)
			} else if ifi, err := net.InterfaceByName(z); err == nil {
				sa6.ZoneId = uint32(ifi.Index)
			} else {
				return -1, fmt.Errorf("unknown network interface %q (see: ip link)", z)
			}
		}
		sa = sa6
	}
	fd, err := socket(domain, typ)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err = setupInet(fd, domain, typ, sa, v6only, reusePort); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func setupInet(fd, domain, typ int, sa unix.Sockaddr, v6only, reusePort bool) error {
	// SO_REUSEADDR on tcp: a restarted relaunch can bind while connections
	// of the previous one are in TIME_WAIT. Not on udp, which has no
	// TIME_WAIT and where Linux lets a second SO_REUSEADDR socket bind the
	// same port and take its traffic. SO_REUSEPORT only for a Pool's
	// members, whose group relaunch steers: on a shared socket it would
	// split the one accept queue every generation shares.
	if typ == unix.SOCK_STREAM {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return os.NewSyscallError("setsockopt SO_REUSEADDR", err)
		}
	}
	if reusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return os.NewSyscallError("setsockopt SO_REUSEPORT", err)
		}
	}
	if domain == unix.AF_INET6 {
		v := 0
		if v6only {
			v = 1
		}
		// Set either way: net.ipv6.bindv6only must not decide.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v); err != nil {
			return os.NewSyscallError("setsockopt IPV6_V6ONLY", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return os.NewSyscallError("bind", err)
	}
	if typ == unix.SOCK_STREAM && sockaddrPort(sa) == 0 {
		return pinPort(fd, domain, typ, sa, v6only, reusePort)
	}
	if typ == unix.SOCK_STREAM {
		if err := unix.Listen(fd, backlog()); err != nil {
			return os.NewSyscallError("listen", err)
		}
	}
	return nil
}

func sockaddrPort(sa unix.Sockaddr) int {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return sa.Port
	case *unix.SockaddrInet6:
		return sa.Port
	}
	return -1
}

func boundPort(fd int) (int, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, os.NewSyscallError("getsockname", err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return sa.Port, nil
	case *unix.SockaddrInet6:
		return sa.Port, nil
	}
	return 0, fmt.Errorf("getsockname: unexpected address %T", sa)
}

// backlog is net.core.somaxconn, the most the kernel allows, so that a queue
// fills as late as possible while no generation is accepting.
func backlog() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			return n
		}
	}
	return 4096
}

func explainInet(typ int, host string, port int, err error) error {
	switch {
	case errors.Is(err, unix.EADDRINUSE):
		flags := "-ltnp"
		if typ == unix.SOCK_DGRAM {
			flags = "-lunp"
		}
		return &detail{fmt.Sprintf("address already in use: some process holds it (see which with: ss %s 'sport = :%d'); it may be an orphaned child of an earlier relaunch that still has the socket: stop it, or use another address", flags, port), err}
	case errors.Is(err, unix.EACCES) && port > 0 && port < 1024:
		exe, xerr := os.Executable()
		if xerr != nil {
			exe = "/path/to/relaunch"
		}
		return &detail{fmt.Sprintf("permission denied: port %d needs root or CAP_NET_BIND_SERVICE (e.g. sudo setcap cap_net_bind_service=+ep %s), or use a port of 1024 or more", port, exe), err}
	case errors.Is(err, unix.EINVAL) && strings.HasPrefix(host, "fe80:") && !strings.Contains(host, "%"):
		return &detail{fmt.Sprintf("a link-local address needs its interface, as in [%s%%eth0]:%d", host, port), err}
	case errors.Is(err, unix.EADDRNOTAVAIL):
		return &detail{fmt.Sprintf("address not available: %s is not an address of this machine (see: ip addr); use one of its addresses, or :%d for all of them", host, port), err}
	}
	return err
}

func bindUnix(a Addr) (*Socket, error) {
	path := a.Address
	if err := checkUnixPath(path); err != nil {
		return nil, err
	}
	// "@name" is an abstract socket on Linux: no file to check or remove.
	abstract := path[0] == '@' && runtime.GOOS == "linux"
	if !abstract {
		if err := clearStale(path); err != nil {
			return nil, err
		}
	}
	fd, err := socket(unix.AF_UNIX, unix.SOCK_STREAM)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, explainUnix(path, os.NewSyscallError("bind", err))
	}
	s := &Socket{fd: fd, addr: a}
	if !abstract {
		// Record the file now, while nobody else can have replaced it.
		abs, aerr := filepath.Abs(path)
		fi, lerr := os.Lstat(path)
		if err := errors.Join(aerr, lerr); err != nil {
			unix.Close(fd)
			os.Remove(path)
			return nil, err
		}
		s.unlink, s.file = abs, fi
	}
	if err := unix.Listen(fd, backlog()); err != nil {
		s.Close()
		return nil, os.NewSyscallError("listen", err)
	}
	return s, nil
}

// clearStale makes way for binding path: a socket file nobody listens on is
// removed; a live socket or any other file is an error and left alone.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return explainUnix(path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return &detail{fmt.Sprintf("the path exists and is not a socket (%s); relaunch never deletes it: remove it yourself or choose another path", fileKind(fi)), unix.EEXIST}
	}
	live, err := probeUnix(path)
	if err != nil {
		return fmt.Errorf("cannot tell whether the socket file is in use (%w); remove it if it is stale, or choose another path", err)
	}
	if live {
		return &detail{"the socket file is in use by a live process (a connect to it succeeded); stop that process or choose another path", unix.EADDRINUSE}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return explainUnix(path, err)
	}
	return nil
}

// probeUnix tells whether a process listens on the socket file at path.
// The kernel refuses a connect to a socket file no socket is bound to, of
// whatever type; EPROTOTYPE means a live socket of another type, EAGAIN a
// live one with a full backlog (the probe is non-blocking).
func probeUnix(path string) (bool, error) {
	fd, err := socket(unix.AF_UNIX, unix.SOCK_STREAM)
	if err != nil {
		return false, os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		return false, os.NewSyscallError("fcntl", err)
	}
	switch err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err {
	case nil, unix.EAGAIN, unix.EINPROGRESS, unix.EPROTOTYPE:
		return true, nil
	case unix.ECONNREFUSED:
		return false, nil
	default:
		return false, os.NewSyscallError("connect", err)
	}
}

func explainUnix(path string, err error) error {
	switch {
	case errors.Is(err, unix.EADDRINUSE):
		return &detail{fmt.Sprintf("address already in use: some process holds %s (see which with: ss -lxp | grep -F '%s'); it may be an orphaned child of an earlier relaunch: stop it, or choose another path", path, path), err}
	case errors.Is(err, unix.EACCES):
		return &detail{fmt.Sprintf("permission denied: this user needs write and search access to the directory %s", filepath.Dir(path)), err}
	case errors.Is(err, unix.ENOENT):
		return &detail{fmt.Sprintf("directory %s does not exist: create it first", filepath.Dir(path)), err}
	}
	return err
}

func fileKind(fi fs.FileInfo) string {
	switch t := fi.Mode().Type(); {
	case t == 0:
		return "a regular file"
	case t&fs.ModeDir != 0:
		return "a directory"
	case t&fs.ModeSymlink != 0:
		return "a symbolic link"
	default:
		return "mode " + t.String()
	}
}

// Endpoint is the IP and port an inet address binds, as Bind would bind
// it (a host name resolved), and whether the socket would be dual-stack
// (the IPv6 wildcard that also takes IPv4). ok is false for unix addresses.
func (a Addr) Endpoint() (ap netip.AddrPort, dual bool, err error) {
	if a.Network == "unix" {
		return ap, false, errors.New("a unix address has no IP endpoint")
	}
	hp, err := parseHostPort(a.Network, a.Address)
	if err != nil {
		return ap, false, err
	}
	host, ps, _ := net.SplitHostPort(hp)
	port, _ := strconv.Atoi(ps)
	var ip netip.Addr
	switch last := a.Network[len(a.Network)-1]; {
	case host == "" && last == '4':
		ip = netip.IPv4Unspecified()
	case host == "" && last == '6':
		ip = netip.IPv6Unspecified()
	case host == "":
		ip, dual = netip.IPv6Unspecified(), true
	default:
		if ip, err = resolve(a.Network, host); err != nil {
			return ap, false, err
		}
	}
	return netip.AddrPortFrom(ip, uint16(port)), dual, nil
}
