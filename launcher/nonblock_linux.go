package launcher

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/sdlisten"
)

// --nonblocking (systemd's NonBlocking=): the sockets the generations get
// are non-blocking. O_NONBLOCK belongs to the open file description, which
// relaunch's own fd shares with every generation's, so it is set once on
// relaunch's copies, before the first start (a reexec's Run sets it again).
// relaunch's own accept on a slot (drainSlot) leaves a socket that is
// non-blocking already as it is, so a rescue keeps the flag. A pool's spare
// is relaunch's alone, never handed out: left as it is.

func (l *launcher) setNonblocking() error {
	for _, ln := range l.cfg.Listeners {
		socks := []*sdlisten.Socket{ln.Socket}
		if ln.Pool != nil {
			socks = socks[:0]
			for i := range ln.Pool.Len() {
				socks = append(socks, ln.Pool.Slot(i))
			}
		}
		for _, s := range socks {
			if s == nil {
				continue
			}
			if err := unix.SetNonblock(s.Fd(), true); err != nil {
				return fmt.Errorf("--nonblocking: cannot make %s non-blocking: %w", s.Addr(), os.NewSyscallError("fcntl", err))
			}
		}
	}
	return nil
}
