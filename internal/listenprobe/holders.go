package listenprobe

import (
	"net/netip"
	"strconv"
)

// Holder is a socket already bound where relaunch would bind, and the
// process that holds it.
type Holder struct {
	Addr  netip.AddrPort // what it is bound to
	Inode uint64
	Uid   int    // the socket's owner
	Pid   int    // 0 when no visible process holds it (another user's, seen without root)
	Cmd   string // the holder's command (its argv[0]), "" with Pid 0
}

// String names the holder for an error: "pid 4242 (./app)".
func (h Holder) String() string {
	if h.Pid == 0 {
		return "a process of uid " + strconv.Itoa(h.Uid) + " that relaunch cannot see"
	}
	return "pid " + strconv.Itoa(h.Pid) + " (" + h.Cmd + ")"
}
