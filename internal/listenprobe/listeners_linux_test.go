package listenprobe

import (
	"net"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// sock_diag and /proc/net/tcp name the same listeners: two SO_REUSEPORT
// members of one group on one address (same local key), and only them, not
// a listener on another port or a connection on theirs.
func TestDiagListeners(t *testing.T) {
	for _, tc := range []struct {
		network, addr, table string
		family               int
	}{
		{"tcp4", "127.0.0.1:0", "/proc/net/tcp", unix.AF_INET},
		{"tcp6", "[::1]:0", "/proc/net/tcp6", unix.AF_INET6},
	} {
		t.Run(tc.network, func(t *testing.T) {
			lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
				var serr error
				c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
				return serr
			}}
			a, err := lc.Listen(t.Context(), tc.network, tc.addr)
			if err != nil {
				t.Skipf("%s: %v", tc.network, err) // no IPv6 on this host
			}
			defer a.Close()
			b, err := lc.Listen(t.Context(), tc.network, a.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			other, err := net.Listen(tc.network, tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			conn, err := net.Dial(tc.network, a.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()

			port := a.Addr().(*net.TCPAddr).Port
			var want []uint64
			for _, ln := range []net.Listener{a, b} {
				f, err := ln.(*net.TCPListener).File()
				if err != nil {
					t.Fatal(err)
				}
				var st unix.Stat_t
				err = unix.Fstat(int(f.Fd()), &st)
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, st.Ino)
			}
			slices.Sort(want)
			inos := func(ls []Listener) []uint64 {
				var s []uint64
				for _, l := range ls {
					s = append(s, l.Inode)
				}
				slices.Sort(s)
				return s
			}
			diag, err := diagListeners(tc.family, port)
			if err != nil {
				t.Fatalf("sock_diag: %v", err)
			}
			proc := procListeners(tc.table, port)
			if got := inos(diag); !slices.Equal(got, want) {
				t.Errorf("sock_diag lists inodes %v on port %d; want %v", got, port, want)
			}
			if got := inos(proc); !slices.Equal(got, want) {
				t.Errorf("/proc lists inodes %v on port %d; want %v", got, port, want)
			}
			if len(diag) == 2 && diag[0].Local != diag[1].Local {
				t.Errorf("sock_diag: two sockets on one address have local keys %q and %q", diag[0].Local, diag[1].Local)
			}
			// The one connection waits in one accept queue; both say so.
			queued := func(ls []Listener) (n int) {
				for _, l := range ls {
					n += l.Queued
				}
				return n
			}
			if q, p := queued(diag), queued(proc); q != 1 || p != 1 {
				t.Errorf("queued: sock_diag %d, /proc %d; want 1 each (the connection not accepted)", q, p)
			}
			// One snapshot answers for both ports as one dump per port does.
			var snap Snapshot
			for _, ln := range []net.Listener{a, other} {
				f, err := ln.(*net.TCPListener).File()
				if err != nil {
					t.Fatal(err)
				}
				got, p := snap.Listeners(int(f.Fd()))
				f.Close()
				one, err := diagListeners(tc.family, p)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(inos(got), inos(one)) || queued(got) != queued(one) {
					t.Errorf("port %d: the snapshot lists %v (queued %d); one dump %v (queued %d)", p, inos(got), queued(got), inos(one), queued(one))
				}
			}
		})
	}
}
