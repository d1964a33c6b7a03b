package listenprobe

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// InUse lists the sockets bound where ap would be: TCP listeners (or, with
// udp, any UDP socket) on its port whose address overlaps it (the same
// address, or the wildcard on either side; dual is a dual-stack IPv6
// wildcard, which takes IPv4 too). An IPv6 wildcard found is taken as
// dual-stack: an IPv6-only one is reported too (a blind spot, on the safe
// side). The holders' pids come from a walk of /proc/*/fd.
func InUse(udp bool, ap netip.AddrPort, dual bool) ([]Holder, error) {
	proto, states := unix.IPPROTO_TCP, uint32(1<<tcpListenSt)
	if udp {
		proto, states = unix.IPPROTO_UDP, ^uint32(0)
	}
	ours := ap.Addr()
	var found []Holder
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		socks, err := boundSockets(family, proto, states, int(ap.Port()))
		if err != nil {
			return nil, err
		}
		for _, s := range socks {
			if overlaps(ours, dual, s.IP) {
				found = append(found, Holder{Addr: netip.AddrPortFrom(s.IP, ap.Port()), Inode: s.Inode, Uid: s.Uid})
			}
		}
	}
	if len(found) > 0 {
		findHolders(found)
	}
	return found, nil
}

// overlaps says whether a socket bound to theirs takes connections for
// ours (dual: ours is a dual-stack IPv6 wildcard).
func overlaps(ours netip.Addr, dual bool, theirs netip.Addr) bool {
	if dual {
		return true // every address of the port, both families
	}
	if theirs.Is4In6() {
		theirs = theirs.Unmap()
	}
	switch {
	case ours.Is4() && theirs.Is6():
		return theirs.IsUnspecified() // a dual-stack wildcard takes IPv4 too
	case ours.Is6() && theirs.Is4():
		return false // ours is IPv6-only
	}
	return ours == theirs || ours.IsUnspecified() || theirs.IsUnspecified()
}

// boundSockets is diagSockets, or where sock_diag is missing (no tcp_diag
// or udp_diag module), /proc/net/{tcp,udp}{,6}.
func boundSockets(family, proto int, states uint32, port int) ([]diagSocket, error) {
	if out, err := diagSockets(family, proto, states, port); err == nil {
		return out, nil
	}
	table := "/proc/net/tcp"
	if proto == unix.IPPROTO_UDP {
		table = "/proc/net/udp"
	}
	if family == unix.AF_INET6 {
		table += "6"
	}
	f, err := os.Open(table)
	if os.IsNotExist(err) {
		return nil, nil // no IPv6 here
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []diagSocket
	sc := bufio.NewScanner(io.LimitReader(f, 64<<20))
	sc.Scan() // the header
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 10 {
			continue
		}
		st, _ := strconv.ParseUint(fl[3], 16, 8)
		if states&(1<<st) == 0 {
			if proto == unix.IPPROTO_TCP {
				break // listeners come first
			}
			continue
		}
		ip, p, ok := procAddr(fl[1])
		if !ok || p != port {
			continue
		}
		ino, _ := strconv.ParseUint(fl[9], 10, 64)
		uid, _ := strconv.Atoi(fl[7])
		out = append(out, diagSocket{Listener{Local: fl[1], Inode: ino}, ip, uid, port})
	}
	return out, sc.Err()
}

// procAddr parses /proc/net/tcp's "0100007F:1F90": the address in 32-bit
// words of host order, then the port.
func procAddr(s string) (netip.Addr, int, bool) {
	h, p, ok := strings.Cut(s, ":")
	b, err := hex.DecodeString(h)
	port, perr := strconv.ParseUint(p, 16, 16)
	if !ok || err != nil || perr != nil || len(b)%4 != 0 {
		return netip.Addr{}, 0, false
	}
	for i := 0; i < len(b); i += 4 {
		// Each word is printed as the number its bytes make in host order.
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(b[i:]))
	}
	ip, _ := netip.AddrFromSlice(b)
	return ip, int(port), true
}

// maxFdsWalked bounds the walk of /proc/*/fd: a host with millions of
// open files is walked that far, and the rest is not named.
const maxFdsWalked = 1 << 20

// findHolders fills in the pid and command of each holder's process: the
// first, by pid, with an fd on its socket.
func findHolders(hs []Holder) {
	want := map[uint64][]int{}
	for i, h := range hs {
		want[h.Inode] = append(want[h.Inode], i)
	}
	procs, _ := os.ReadDir("/proc")
	walked := 0
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		inodes, n := socketInodes(pid, maxFdsWalked-walked)
		if walked += n; walked >= maxFdsWalked {
			return
		}
		for _, ino := range inodes {
			for _, i := range want[ino] {
				if hs[i].Pid == 0 {
					hs[i].Pid, hs[i].Cmd = pid, command(pid)
				}
			}
		}
	}
}

// command is pid's argv[0], or its comm.
func command(pid int) string {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err == nil {
		b := make([]byte, 4096)
		n, _ := io.ReadFull(f, b)
		f.Close()
		if arg0, _, _ := strings.Cut(string(b[:n]), "\x00"); arg0 != "" {
			return arg0
		}
	}
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return strings.TrimSpace(string(b))
}

// Whose names the process holding the socket with inode (Pid 0: none
// visible).
func Whose(inode uint64) Holder {
	h := []Holder{{Inode: inode}}
	findHolders(h)
	return h[0]
}

// SocketInodes lists the inodes of the sockets pid has open (an fd's
// /proc link "socket:[N]"), from at most its first 65536 fds.
func SocketInodes(pid int) []uint64 {
	inodes, _ := socketInodes(pid, 1<<16)
	return inodes
}

// socketInodes reads at most max of pid's fds and says how many it read.
func socketInodes(pid, max int) ([]uint64, int) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	f, err := os.Open(dir)
	if err != nil {
		return nil, 0
	}
	defer f.Close()
	var inodes []uint64
	read := 0
	for read < max {
		names, err := f.Readdirnames(256)
		for _, n := range names {
			read++
			link, _ := os.Readlink(dir + n)
			if s, ok := strings.CutPrefix(link, "socket:["); ok {
				if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
					inodes = append(inodes, ino)
				}
			}
		}
		if err != nil {
			break
		}
	}
	return inodes, read
}
