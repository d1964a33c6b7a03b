package sdlisten

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openFds counts this process's open fds.
func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// checkNoLeak runs f and fails if it leaves fds open.
func checkNoLeak(t *testing.T, f func()) {
	t.Helper()
	openFds(t) // the first call may set up the runtime's poller
	before := openFds(t)
	f()
	if after := openFds(t); after != before {
		t.Errorf("%d fds open before, %d after", before, after)
	}
}

func mustParse(t *testing.T, s string) Addr {
	t.Helper()
	a, err := ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustBind(t *testing.T, s string) *Socket {
	t.Helper()
	sock, err := Bind(mustParse(t, s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	return sock
}

// checkFlags: close-on-exec, blocking, of the given type.
func checkFlags(t *testing.T, fd, typ int) {
	t.Helper()
	if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("fd %d: F_GETFD = %#x, %v; want FD_CLOEXEC", fd, fl, err)
	}
	if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
		t.Errorf("fd %d: F_GETFL = %#x, %v; want blocking", fd, fl, err)
	}
	if got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || got != typ {
		t.Errorf("fd %d: SO_TYPE = %d, %v; want %d", fd, got, err, typ)
	}
	if got, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT); got != 0 {
		t.Errorf("fd %d has SO_REUSEPORT", fd)
	}
	if typ == unix.SOCK_STREAM {
		if got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || got != 1 {
			t.Errorf("fd %d: SO_ACCEPTCONN = %d, %v; want listening", fd, got, err)
		}
	}
}

// checkAccepts dials addr and accepts the connection on fd.
func checkAccepts(t *testing.T, fd int, network, addr string) {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, addr, err)
	}
	defer c.Close()
	// The connection is queued already, so a blocking accept returns at once.
	nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatalf("accept on fd %d: %v", fd, err)
	}
	unix.Close(nfd)
}

func port(t *testing.T, s *Socket) int {
	t.Helper()
	_, ps, err := net.SplitHostPort(s.Addr().Address)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(ps)
	if p == 0 {
		t.Fatalf("%s: port 0 not resolved", s.Addr())
	}
	return p
}

// haveIPv6Loopback tells whether [::1] can be bound here.
func haveIPv6Loopback() bool {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func TestBindTCPLoopback(t *testing.T) {
	s := mustBind(t, "web=tcp://127.0.0.1:0")
	p := port(t, s)
	if want := (Addr{"web", "tcp", "127.0.0.1:" + strconv.Itoa(p)}); s.Addr() != want {
		t.Errorf("Addr() = %#v, want %#v", s.Addr(), want)
	}
	checkFlags(t, s.Fd(), unix.SOCK_STREAM)
	if v, _ := unix.GetsockoptInt(s.Fd(), unix.SOL_SOCKET, unix.SO_REUSEADDR); v != 1 {
		t.Errorf("SO_REUSEADDR = %d, want 1", v)
	}
	checkAccepts(t, s.Fd(), "tcp", s.Addr().Address)
}

func TestBindHostName(t *testing.T) {
	s := mustBind(t, "tcp4://localhost:0")
	if want := "127.0.0.1:" + strconv.Itoa(port(t, s)); s.Addr().Address != want {
		t.Errorf("Address = %q, want %q", s.Addr().Address, want)
	}
}

func TestBindDualStack(t *testing.T) {
	s := mustBind(t, ":0")
	p := port(t, s)
	if want := ":" + strconv.Itoa(p); s.Addr().Address != want {
		t.Errorf("Address = %q, want %q", s.Addr().Address, want)
	}
	checkFlags(t, s.Fd(), unix.SOCK_STREAM)
	checkAccepts(t, s.Fd(), "tcp4", "127.0.0.1:"+strconv.Itoa(p))
	if !haveIPv6Loopback() {
		t.Log("no IPv6 loopback: IPv4 checked only")
		return
	}
	if v, err := unix.GetsockoptInt(s.Fd(), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); err != nil || v != 0 {
		t.Errorf("IPV6_V6ONLY = %d, %v; want 0", v, err)
	}
	checkAccepts(t, s.Fd(), "tcp6", "[::1]:"+strconv.Itoa(p))
}

func TestBindTCP6(t *testing.T) {
	if !haveIPv6Loopback() {
		t.Skip("no IPv6 loopback on this machine")
	}
	s := mustBind(t, "tcp6://[::1]:0")
	checkFlags(t, s.Fd(), unix.SOCK_STREAM)
	if v, err := unix.GetsockoptInt(s.Fd(), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); err != nil || v != 1 {
		t.Errorf("IPV6_V6ONLY = %d, %v; want 1", v, err)
	}
	checkAccepts(t, s.Fd(), "tcp6", s.Addr().Address)

	// An explicit [::] is IPv6 only too: 0.0.0.0 on the same port stays free.
	s6 := mustBind(t, "tcp://[::]:0")
	mustBind(t, "tcp4://0.0.0.0:"+strconv.Itoa(port(t, s6)))
}

func TestBindUDP(t *testing.T) {
	for _, addr := range []string{"udp4://127.0.0.1:0", "udp://:0"} {
		s := mustBind(t, addr)
		checkFlags(t, s.Fd(), unix.SOCK_DGRAM)
		c, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(port(t, s)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		c.Close()
		buf := make([]byte, 16)
		n, _, err := unix.Recvfrom(s.Fd(), buf, 0)
		if err != nil || string(buf[:n]) != "ping" {
			t.Errorf("%s: recvfrom = %q, %v", addr, buf[:n], err)
		}
	}
	// No SO_REUSEADDR on udp: a second socket cannot take the port.
	s := mustBind(t, "udp4://127.0.0.1:0")
	if _, err := Bind(s.Addr()); !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("second udp Bind: %v, want EADDRINUSE", err)
	}
}

func TestBindUnixAbsolute(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	s := mustBind(t, "unix://"+path)
	if want := (Addr{"", "unix", path}); s.Addr() != want {
		t.Errorf("Addr() = %#v, want %#v", s.Addr(), want)
	}
	checkFlags(t, s.Fd(), unix.SOCK_STREAM)
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("%s: %v, %v", path, fi, err)
	}
	checkAccepts(t, s.Fd(), "unix", path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Close left %s: %v", path, err)
	}
	if s.Fd() != -1 {
		t.Errorf("Fd() after Close = %d", s.Fd())
	}
	if err := s.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}

func TestBindUnixRelative(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	os.Mkdir("sub", 0o755)
	s := mustBind(t, "unix://sub/app.sock")
	if s.Addr().Address != "sub/app.sock" {
		t.Errorf("Address = %q, want the relative path", s.Addr().Address)
	}
	checkAccepts(t, s.Fd(), "unix", filepath.Join(dir, "sub/app.sock"))
	// Close removes the file it created even after a chdir.
	t.Chdir(t.TempDir())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "sub/app.sock")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Close left the socket file: %v", err)
	}
}

func TestBindUnixAbstract(t *testing.T) {
	name := "@relaunch-test-" + strconv.Itoa(os.Getpid())
	s := mustBind(t, "unix://"+name)
	checkAccepts(t, s.Fd(), "unix", name)
	if _, err := Bind(s.Addr()); !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("second Bind: %v, want EADDRINUSE", err)
	}
}

func TestBindUnixStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close() // the file stays, nobody listens: stale
	s := mustBind(t, "unix://"+path)
	checkAccepts(t, s.Fd(), "unix", path)
}

func TestBindUnixLive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	before, _ := os.Lstat(path)
	checkNoLeak(t, func() {
		_, err = Bind(mustParse(t, "unix://"+path))
	})
	if !errors.Is(err, unix.EADDRINUSE) || !strings.Contains(err.Error(), "live process") || !strings.Contains(err.Error(), path) {
		t.Errorf("Bind on a live socket: %v", err)
	}
	after, lerr := os.Lstat(path)
	if lerr != nil || !os.SameFile(before, after) {
		t.Errorf("the live socket file was touched: %v", lerr)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the live socket no longer works: %v", err)
	}
	c.Close()

	// A live datagram socket is in use too.
	gpath := filepath.Join(t.TempDir(), "g.sock")
	g, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: gpath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := Bind(mustParse(t, "unix://"+gpath)); !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("Bind on a live unixgram socket: %v", err)
	}
}

func TestBindUnixNotSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.sock")
	if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	var err error
	checkNoLeak(t, func() {
		_, err = Bind(mustParse(t, "unix://"+path))
	})
	if err == nil || !strings.Contains(err.Error(), "not a socket") || !errors.Is(err, fs.ErrExist) {
		t.Errorf("Bind on a regular file: %v", err)
	}
	if b, rerr := os.ReadFile(path); rerr != nil || string(b) != "keep me" {
		t.Errorf("the file was touched: %q, %v", b, rerr)
	}
	// Nor a symlink to a socket, nor a directory.
	os.Symlink(path, filepath.Join(dir, "link.sock"))
	os.Mkdir(filepath.Join(dir, "dir.sock"), 0o755)
	for _, p := range []string{"link.sock", "dir.sock"} {
		p = filepath.Join(dir, p)
		if _, err := Bind(Addr{Network: "unix", Address: p}); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("Bind on %s: %v", p, err)
		}
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s was removed", p)
		}
	}
}

func TestBindUnixReplacedFileKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	s := mustBind(t, "unix://"+path)
	os.Remove(path)
	os.WriteFile(path, []byte("new"), 0o644)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Errorf("Close removed a file it did not create")
	}
}

func TestBindUnixTooLong(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, strings.Repeat("x", 120))
	var err error
	checkNoLeak(t, func() {
		_, err = Bind(Addr{Network: "unix", Address: path})
	})
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), strconv.Itoa(len(path))+" bytes") {
		t.Errorf("Bind with a long path: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("files left: %v", ents)
	}
}

func TestBindUnixNoDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "app.sock")
	_, err := Bind(Addr{Network: "unix", Address: path})
	if !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Bind in a missing directory: %v", err)
	}
}

func TestBindAddrInUse(t *testing.T) {
	s := mustBind(t, "tcp://127.0.0.1:0")
	var err error
	checkNoLeak(t, func() {
		_, err = Bind(s.Addr())
	})
	var be *BindError
	if !errors.As(err, &be) || be.Addr != s.Addr() {
		t.Fatalf("Bind twice: %#v, want a *BindError for %s", err, s.Addr())
	}
	msg := err.Error()
	p := strconv.Itoa(port(t, s))
	for _, want := range []string{"127.0.0.1:" + p, "ss -ltnp 'sport = :" + p + "'", "orphaned child"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("error %v is not EADDRINUSE", err)
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line: %q", msg)
	}
}

func TestBindAddrNotAvail(t *testing.T) {
	var err error
	checkNoLeak(t, func() {
		_, err = Bind(mustParse(t, "tcp://192.0.2.1:0")) // TEST-NET-1
	})
	if !errors.Is(err, unix.EADDRNOTAVAIL) || !strings.Contains(err.Error(), "not an address of this machine") {
		t.Errorf("Bind on a foreign address: %v", err)
	}
}

func TestBindBadAddr(t *testing.T) {
	for _, a := range []Addr{{Network: "sctp", Address: ":1"}, {Network: "tcp", Address: "x"}, {Network: "unix"}} {
		checkNoLeak(t, func() {
			if s, err := Bind(a); err == nil {
				s.Close()
				t.Errorf("Bind(%#v) succeeded", a)
			}
		})
	}
}

func TestExplainPrivilegedPort(t *testing.T) {
	err := explainInet(unix.SOCK_STREAM, "", 80, os.NewSyscallError("bind", unix.EACCES))
	if !errors.Is(err, unix.EACCES) || !strings.Contains(err.Error(), "CAP_NET_BIND_SERVICE") ||
		!strings.Contains(err.Error(), "setcap cap_net_bind_service=+ep") || !strings.Contains(err.Error(), "1024") {
		t.Errorf("EACCES on port 80: %v", err)
	}
}
