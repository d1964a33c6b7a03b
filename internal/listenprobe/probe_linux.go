package listenprobe

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Probe recognises relaunch's sockets in a process tree, from /proc: a
// process polls one when the socket's inode is in one of its epoll sets
// (fdinfo of the epoll fd) or a thread waits in select/poll with an fd that
// is the socket in its read set (pollwait_linux.go), or accepts on one when
// a thread sits in accept(2) on such an fd. io_uring leaves no trace there:
// the probe never sees it.
//
// One scan runs every few ms while a generation starts, so it reads only
// what it must and reuses its buffers. Not safe for concurrent use.
type Probe struct {
	socks []socket

	buf    []byte // file contents, dirents
	pids   []int  // the tree, in the order walked
	ints   []int  // fds or tids of one directory
	epfds  []int  // one process's epoll fds
	held   []heldSocket
	other  []otherSocket // the tree's TCP sockets that are not relaunch's
	given  bool          // some process of the tree holds one of relaunch's sockets
	epolls []EpollRef    // the tree's epoll instances seen by the last Scan (Watch)

	lastSyscall []byte // the thread's syscall file, as first read
	sysline     []byte // the same, read again
	mem         []byte // read from a process's memory
	class       int    // the scanned process's ELF class: 0 not read yet, 1 not 64-bit, 2 64-bit
}

// socket is one of relaunch's sockets.
type socket struct {
	ino  uint64
	dev  uint64 // sockfs, encoded as the kernel prints it in fdinfo (sdev:)
	fd   int    // the fd the children get it as: 3, 4, …
	port int    // the local port of a TCP socket, 0 for any other
	addr string // its local address, for messages
}

// heldSocket is one of relaunch's sockets as an fd of the process scanned.
type heldSocket struct{ fd, sock int }

// otherSocket is a TCP socket of the tree that is not one of relaunch's.
type otherSocket struct {
	pid int
	ino uint64
}

// Result is what one scan saw.
type Result struct {
	Accepting bool   // some process polls (epoll) or blocks in accept on one of the sockets
	How       string // for the log: "pid 123 polls fd 3 (epoll)", "pid 123 blocks in accept on fd 3"
	// OwnSocket is set when a process of the tree listens on a TCP socket
	// of its own with the port of one of relaunch's: it ignores LISTEN_FDS.
	// With Closed, on any port. Only looked for while nothing is Accepting.
	OwnSocket string
	// Closed: no process of the tree holds any of relaunch's sockets any
	// more, and it has TCP sockets of its own (an app that closes what it
	// was given and binds elsewhere). Only looked for while nothing is
	// Accepting.
	Closed bool
	// Epoll is the epoll instance a process was seen polling the socket
	// with, when that is how it was seen Accepting (Pid 0 otherwise).
	Epoll EpollRef
}

// Bounds against a runaway tree or a file that never ends; a generation
// that starts has far less.
const (
	maxPids  = 1024
	maxBytes = 1 << 20
)

// New takes the raw fds of relaunch's sockets, in the order the children
// get them (fd 3, 4, …). A socket it cannot stat is never seen.
func New(fds []int) *Probe {
	p := &Probe{buf: make([]byte, 16<<10)}
	for i, fd := range fds {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil {
			continue
		}
		s := socket{
			ino: st.Ino,
			dev: uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev)),
			fd:  3 + i,
		}
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err == nil && typ == unix.SOCK_STREAM {
			switch sa, _ := unix.Getsockname(fd); sa := sa.(type) {
			case *unix.SockaddrInet4:
				s.port = sa.Port
				s.addr = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)).String()
			case *unix.SockaddrInet6:
				s.port = sa.Port
				s.addr = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)).String()
			}
		}
		p.socks = append(p.socks, s)
	}
	return p
}

// Given names the sockets the probe recognises, for a message: "fd 3,
// 127.0.0.1:8080", TCP ones with their address.
func (p *Probe) Given() []string {
	var out []string
	for _, s := range p.socks {
		name := "fd " + strconv.Itoa(s.fd)
		if s.addr != "" {
			name += ", " + s.addr
		}
		out = append(out, name)
	}
	return out
}

// Scan walks root and all its descendants once. It stops at the first
// process seen polling or accepting. Any process that vanishes or cannot be
// read is skipped.
func (p *Probe) Scan(root int) Result {
	if root <= 0 || len(p.socks) == 0 {
		return Result{}
	}
	p.pids = append(p.pids[:0], root)
	p.other = p.other[:0]
	p.epolls = p.epolls[:0]
	p.given = false
	for i := 0; i < len(p.pids) && i < maxPids; i++ {
		if how, ep := p.scanProcess(p.pids[i]); how != "" {
			return Result{Accepting: true, How: how, Epoll: ep}
		}
	}
	if len(p.other) == 0 {
		return Result{} // the cheap path: no socket of the app's own
	}
	if !p.given {
		// Not one process still holds relaunch's sockets: the app closed
		// them. Whatever it listens on is its own.
		return Result{Closed: true, OwnSocket: p.ownListener(true)}
	}
	return Result{OwnSocket: p.ownListener(false)}
}

// scanProcess looks at one process and appends its children to p.pids. It
// says how the process accepts ("" if not seen to), and the epoll instance
// when that is how.
// Every path is opened relative to /proc/P, so a pid reused mid-scan
// cannot mix two processes: the old directory then just fails to read.
func (p *Probe) scanProcess(pid int) (how string, ep EpollRef) {
	dir, err := unix.Open("/proc/"+strconv.Itoa(pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", EpollRef{}
	}
	defer unix.Close(dir)

	// The fds: relaunch's sockets, other TCP sockets, epoll instances.
	p.held, p.epfds, p.class = p.held[:0], p.epfds[:0], 0
	if fdDir, err := unix.Openat(dir, "fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
		p.ints = p.readDirInts(fdDir, p.ints[:0])
		for _, fd := range p.ints {
			p.classifyFd(pid, fdDir, fd)
		}
		unix.Close(fdDir)
	}
	p.given = p.given || len(p.held) > 0
	for _, fd := range p.epfds {
		ref := EpollRef{pid, fd}
		p.epolls = append(p.epolls, ref)
		if s, tfd := p.epollTarget(dir, fd); s >= 0 {
			return "pid " + strconv.Itoa(pid) + " polls " + p.fdName(s, tfd, "epoll"), ref
		}
	}

	// The threads: their children, and accept(2), select or poll when the
	// process has one of relaunch's sockets (otherwise no thread can be
	// waiting on it).
	taskDir, err := unix.Openat(dir, "task", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", EpollRef{}
	}
	p.ints = p.readDirInts(taskDir, p.ints[:0])
	unix.Close(taskDir)
	for _, tid := range p.ints {
		task := "task/" + strconv.Itoa(tid) + "/"
		if len(p.held) > 0 {
			if how := p.threadWaits(dir, pid, task+"syscall"); how != "" {
				return how, EpollRef{}
			}
		}
		if b := p.readAt(dir, task+"children"); b != nil {
			for f := range bytes.FieldsSeq(b) {
				if c, ok := atoi(f); ok && len(p.pids) < maxPids && !slices.Contains(p.pids, c) {
					p.pids = append(p.pids, c)
				}
			}
		}
	}
	return "", EpollRef{}
}

// classifyFd reads where one fd of pid points.
func (p *Probe) classifyFd(pid, fdDir, fd int) {
	name := strconv.Itoa(fd)
	n, err := unix.Readlinkat(fdDir, name, p.buf)
	if err != nil {
		return
	}
	link := p.buf[:n]
	switch {
	case bytes.Equal(link, []byte("anon_inode:[eventpoll]")):
		p.epfds = append(p.epfds, fd)
	case bytes.HasPrefix(link, []byte("socket:[")) && link[len(link)-1] == ']':
		// The link's number is the inode, in decimal; all sockets are on
		// sockfs, so it alone names one.
		ino, err := strconv.ParseUint(string(link[len("socket:["):len(link)-1]), 10, 64)
		if err != nil {
			return
		}
		if s := p.sockByIno(ino, 0); s >= 0 {
			p.held = append(p.held, heldSocket{fd, s})
			return
		}
		// Keep only TCP ones for the OwnSocket lookup: sockfs names the
		// protocol ("TCP", "TCPv6", "UNIX", …) without reading any table.
		// Go ≥ 1.24 listens with MPTCP by default; its listener shows in
		// /proc/net/tcp under the same inode.
		var proto [16]byte
		if m, err := unix.Getxattr("/proc/"+strconv.Itoa(pid)+"/fd/"+name, "system.sockprotoname", proto[:]); err == nil &&
			(bytes.HasPrefix(proto[:m], []byte("TCP")) || bytes.HasPrefix(proto[:m], []byte("MPTCP"))) {
			p.other = append(p.other, otherSocket{pid, ino})
		}
	}
}

// epollTarget finds one of relaunch's sockets among an epoll instance's
// targets, fdinfo lines like
//
//	tfd:        3 events:       19 data:                3  pos:0 ino:2d51a sdev:9
//
// (Linux ≥ 4.13). tfd is the fd number the socket had when it was added, in
// the process that added it, so the match is on the inode (hex here) and
// the device, never on the number. It returns the socket's index and tfd, or
// -1.
func (p *Probe) epollTarget(dir, epfd int) (sock, tfd int) {
	return p.epollTargetIn(p.readAt(dir, "fdinfo/"+strconv.Itoa(epfd)))
}

// epollTargetIn is epollTarget on the fdinfo text b.
func (p *Probe) epollTargetIn(b []byte) (sock, tfd int) {
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		rest, ok := bytes.CutPrefix(line, []byte("tfd:"))
		if !ok {
			continue
		}
		ino, ok := hexField(rest, " ino:")
		if !ok {
			continue
		}
		dev, ok := hexField(rest, " sdev:")
		if !ok {
			dev = 0 // not printed: trust the inode
		}
		if s := p.sockByIno(ino, dev); s >= 0 {
			f := bytes.TrimLeft(rest, " \t")
			n, _ := atoi(f[:max(0, bytes.IndexAny(f, " \t"))])
			return s, n
		}
	}
	return -1, 0
}

// threadWaits reads a thread's /proc/P/task/T/syscall, "288 0x3 0x7ffd…"
// (the number, then the arguments in hex) while it is in a system call,
// "running" otherwise, and says how it waits for one of relaunch's
// sockets: in accept or accept4 the first argument is the fd (this sees any
// family, where wchan, inet_csk_accept, shows only TCP's); select and poll
// are decoded from the process's memory (pollwait_linux.go).
func (p *Probe) threadWaits(dir, pid int, path string) string {
	b := p.readAt(dir, path)
	var args [6]uint64
	nr, ok := syscallArgs(b, &args)
	if !ok {
		return ""
	}
	if nr == unix.SYS_ACCEPT4 || nr == sysAccept {
		for _, h := range p.held {
			if uint64(h.fd) == args[0] {
				return "pid " + strconv.Itoa(pid) + " blocks in accept on " + p.fdName(h.sock, h.fd, "")
			}
		}
		return ""
	}
	call := waitCallOf(nr)
	if call == notWaiting {
		return ""
	}
	p.lastSyscall = append(p.lastSyscall[:0], b...)
	if s, fd := p.pollTarget(dir, pid, path, call, args[:]); s >= 0 {
		kind := "select"
		if call == callPoll {
			kind = "poll"
		}
		return "pid " + strconv.Itoa(pid) + " polls " + p.fdName(s, fd, kind)
	}
	return ""
}

// sysAccept is accept(2)'s own number; -1 where libc reaches it only
// through socketcall(2) (386, s390x), whose arguments /proc does not show.
var sysAccept = func() int {
	switch runtime.GOARCH {
	case "amd64":
		return 43
	case "arm64", "loong64", "riscv64":
		return 202
	case "arm":
		return 285
	case "ppc", "ppc64", "ppc64le":
		return 330
	case "mips", "mipsle":
		return 4168
	case "mips64", "mips64le":
		return 5042
	case "sparc64":
		return 99
	}
	return -1
}()

// fdName names relaunch's socket s by the fd the app got it as, and by the
// app's own number when it dup'd it (Go's net.FileListener does).
// poller is "epoll", "select", "poll", or "" for accept.
func (p *Probe) fdName(s, fd int, poller string) string {
	name := "fd " + strconv.Itoa(p.socks[s].fd)
	switch {
	case poller != "" && fd != p.socks[s].fd:
		return name + " (" + poller + ", as its fd " + strconv.Itoa(fd) + ")"
	case poller != "":
		return name + " (" + poller + ")"
	case fd != p.socks[s].fd:
		return name + " (as its fd " + strconv.Itoa(fd) + ")"
	}
	return name
}

// sockByIno returns the index of relaunch's socket with that inode (and
// device, when known), or -1.
func (p *Probe) sockByIno(ino, dev uint64) int {
	for i, s := range p.socks {
		if s.ino == ino && (dev == 0 || s.dev == dev) {
			return i
		}
	}
	return -1
}

// ownListener looks the tree's other TCP sockets up in their process's
// /proc/P/net/tcp and tcp6 (its network namespace's tables) and names the
// first that listens on one of relaunch's ports, or with anyPort on any.
func (p *Probe) ownListener(anyPort bool) string {
	for i, o := range p.other {
		if slices.ContainsFunc(p.other[:i], func(x otherSocket) bool { return x.pid == o.pid }) {
			continue // that process's tables are read already
		}
		for _, table := range [...]string{"tcp", "tcp6"} {
			if addr := p.listenerIn(o.pid, table, anyPort); addr != "" {
				return "pid " + strconv.Itoa(o.pid) + " listens on " + addr + " itself"
			}
		}
	}
	return ""
}

// listenerIn reads /proc/P/net/<table>, lines like
//
//	0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000  0 185626 …
//
// (local address:port in hex, state 0A = LISTEN, the inode 10th), for one of
// pid's other sockets listening on one of relaunch's ports. The kernel lists
// listening sockets first, so reading stops at the first line in another
// state: a busy host's connections are never read.
func (p *Probe) listenerIn(pid int, table string, anyPort bool) string {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/net/"+table, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	have, header := 0, true
	for {
		n, err := unix.Read(fd, p.buf[have:])
		if err != nil || n <= 0 {
			return ""
		}
		have += n
		b := p.buf[:have]
		for {
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				break
			}
			line := b[:i]
			b = b[i+1:]
			if header {
				header = false
				continue
			}
			var f [10][]byte
			k := 0
			for field := range bytes.FieldsSeq(line) {
				if k == len(f) {
					break
				}
				f[k] = field
				k++
			}
			if k < len(f) || !bytes.Equal(f[3], []byte("0A")) {
				return "" // past the listeners
			}
			if addr := p.ownAddr(pid, f[1], f[9], anyPort); addr != "" {
				return addr
			}
		}
		have = copy(p.buf, b)
		if have == len(p.buf) {
			return "" // a line longer than the buffer: not a table we know
		}
	}
}

// ownAddr returns local ("0100007F:1F90") as an address when the socket
// with inode ino is one of pid's other sockets and its port is one of
// relaunch's (or, with anyPort, any).
func (p *Probe) ownAddr(pid int, local, ino []byte, anyPort bool) string {
	hexAddr, hexPort, ok := bytes.Cut(local, []byte{':'})
	if !ok {
		return ""
	}
	port, err := strconv.ParseUint(string(hexPort), 16, 16)
	if err != nil || !anyPort && !slices.ContainsFunc(p.socks, func(s socket) bool { return s.port != 0 && s.port == int(port) }) {
		return ""
	}
	i, err := strconv.ParseUint(string(ino), 10, 64)
	if err != nil || !slices.Contains(p.other, otherSocket{pid, i}) {
		return ""
	}
	// The address is printed as 32-bit words in the kernel's byte order.
	var a [16]byte
	if len(hexAddr) != 8 && len(hexAddr) != 32 {
		return ""
	}
	for w := 0; w*8 < len(hexAddr); w++ {
		v, err := strconv.ParseUint(string(hexAddr[w*8:w*8+8]), 16, 32)
		if err != nil {
			return ""
		}
		binary.NativeEndian.PutUint32(a[w*4:], uint32(v))
	}
	ip := netip.AddrFrom16(a)
	if len(hexAddr) == 8 {
		ip = netip.AddrFrom4([4]byte(a[:4]))
	}
	return netip.AddrPortFrom(ip, uint16(port)).String()
}

// readAt reads a small /proc file relative to dir into p.buf; nil when it
// cannot. The slice is valid until the next read.
func (p *Probe) readAt(dir int, path string) []byte {
	fd, err := unix.Openat(dir, path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	have := 0
	for {
		if have == len(p.buf) {
			if len(p.buf) >= maxBytes {
				return nil
			}
			p.buf = append(p.buf, make([]byte, len(p.buf))...)
		}
		n, err := unix.Read(fd, p.buf[have:])
		if err != nil {
			return nil
		}
		if n == 0 {
			return p.buf[:have]
		}
		have += n
	}
}

// readDirInts lists a /proc directory of numbers (fd/, task/) into dst,
// from the raw dirents: no string per entry.
func (p *Probe) readDirInts(dirfd int, dst []int) []int {
	for {
		n, err := unix.Getdents(dirfd, p.buf)
		if err != nil || n <= 0 {
			return dst
		}
		// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
		for b := p.buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				break
			}
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			if v, ok := atoi(name); ok {
				dst = append(dst, v)
			}
			b = b[reclen:]
		}
	}
}

// atoi parses a non-negative decimal number.
func atoi(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	v := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, true
}

// hexField finds key (" ino:") in line and parses the hex number after it.
func hexField(line []byte, key string) (uint64, bool) {
	i := bytes.Index(line, []byte(key))
	if i < 0 {
		return 0, false
	}
	v := line[i+len(key):]
	if j := bytes.IndexAny(v, " \t"); j >= 0 {
		v = v[:j]
	}
	n, err := strconv.ParseUint(string(v), 16, 64)
	return n, err == nil
}

// Supported reports whether this kernel shows epoll targets in fdinfo
// (Linux ≥ 4.13): relaunch watches a pipe of its own and looks, once.
func Supported() bool { return supportedOnce() }

var supportedOnce = sync.OnceValue(func() bool {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return false
	}
	defer unix.Close(ep)
	var pipe [2]int
	if unix.Pipe2(pipe[:], unix.O_CLOEXEC) != nil {
		return false
	}
	defer unix.Close(pipe[0])
	defer unix.Close(pipe[1])
	var st unix.Stat_t
	if unix.Fstat(pipe[0], &st) != nil ||
		unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, pipe[0], &unix.EpollEvent{Events: unix.EPOLLIN}) != nil {
		return false
	}
	p := &Probe{buf: make([]byte, 4096)}
	self, err := unix.Open("/proc/self", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(self)
	b := p.readAt(self, "fdinfo/"+strconv.Itoa(ep))
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		if rest, ok := bytes.CutPrefix(line, []byte("tfd:")); ok {
			if ino, ok := hexField(rest, " ino:"); ok && ino == st.Ino {
				return true
			}
		}
	}
	return false
})
