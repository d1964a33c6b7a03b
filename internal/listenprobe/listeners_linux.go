package listenprobe

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Listener is a listening TCP socket.
type Listener struct {
	// Local is the local address and port, as a key that is equal for two
	// sockets of one SO_REUSEPORT group: the same in one call's list, not
	// meant to be parsed.
	Local string
	Inode uint64
	// Queued is its accept queue: connections the kernel completed that
	// no process has accepted yet.
	Queued int
}

// Listeners lists the listening TCP sockets on fd's port, of fd's family,
// in this process's network namespace, and returns that port: from
// sock_diag, or, where that is missing (no tcp_diag module), from
// /proc/net/tcp or tcp6.
func Listeners(fd int) ([]Listener, int) {
	return (&Snapshot{}).Listeners(fd)
}

// A Snapshot answers Listeners for any number of sockets from one
// sock_diag dump per family, taken at its first use: checking every
// address of a relaunch costs one dump, not one per address. Its zero
// value is ready to use.
type Snapshot struct {
	dumped map[int][]diagSocket // family → its listeners; absent: not dumped yet
	failed map[int]bool         // family → sock_diag failed: /proc/net per port
}

// Listeners is the package's Listeners, from the snapshot.
func (s *Snapshot) Listeners(fd int) ([]Listener, int) {
	// Only the table of the socket's own family: reading one with no
	// listener makes the kernel walk its whole connection table.
	port, table, family := 0, "/proc/net/tcp", unix.AF_INET
	switch sa, _ := unix.Getsockname(fd); sa := sa.(type) {
	case *unix.SockaddrInet4:
		port = sa.Port
	case *unix.SockaddrInet6:
		port, table, family = sa.Port, "/proc/net/tcp6", unix.AF_INET6
	}
	if s.dumped == nil {
		s.dumped, s.failed = map[int][]diagSocket{}, map[int]bool{}
	}
	if _, ok := s.dumped[family]; !ok && !s.failed[family] {
		socks, err := diagSockets(family, unix.IPPROTO_TCP, 1<<tcpListenSt, -1)
		if err != nil {
			s.failed[family] = true
		} else {
			s.dumped[family] = socks
		}
	}
	if s.failed[family] {
		return procListeners(table, port), port
	}
	var out []Listener
	for _, d := range s.dumped[family] {
		if d.Port == port {
			out = append(out, d.Listener)
		}
	}
	return out, port
}

// procListeners reads the listening sockets on port from table, a
// /proc/net/tcp file.
func procListeners(table string, port int) []Listener {
	suffix := fmt.Sprintf(":%04X", port)
	var out []Listener
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
				_, rx, _ := strings.Cut(fl[4], ":") // tx_queue:rx_queue, rx a listener's accept queue
				q, _ := strconv.ParseUint(rx, 16, 32)
				out = append(out, Listener{Local: fl[1], Inode: ino, Queued: int(q)})
			}
		}
		f.Close()
	}
	return out
}
