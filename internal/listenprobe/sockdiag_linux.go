package listenprobe

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Listeners asks the kernel's sock_diag netlink interface
// (linux/inet_diag.h) for listening sockets only: the kernel then walks only
// its table of listeners. /proc/net/tcp cannot be asked that: to fill a read
// it goes on into the table of connections, and finding their first one
// scans every bucket of it, a few milliseconds of kernel time at each
// upgrade (measured with perf under `make bench`).

// inet_diag structures, as the kernel lays them out.
const (
	diagReqLen  = 56 // struct inet_diag_req_v2
	diagMsgLen  = 72 // struct inet_diag_msg
	diagIDOff   = 4  // inet_diag_msg.id (struct inet_diag_sockid)
	diagRqOff   = 56 // inet_diag_msg.idiag_rqueue: a listener's accept queue
	diagUidOff  = 64 // inet_diag_msg.idiag_uid
	diagInoOff  = 68 // inet_diag_msg.idiag_inode
	tcpListenSt = 10 // TCP_LISTEN
)

// diagListeners lists the listening TCP sockets of family (unix.AF_INET or
// unix.AF_INET6) on port, in relaunch's network namespace.
func diagListeners(family, port int) ([]Listener, error) {
	socks, err := diagSockets(family, unix.IPPROTO_TCP, 1<<tcpListenSt, port)
	if err != nil {
		return nil, err
	}
	out := make([]Listener, len(socks))
	for i, s := range socks {
		out[i] = s.Listener
	}
	return out, nil
}

// diagSocket is one socket sock_diag lists.
type diagSocket struct {
	Listener
	IP   netip.Addr // the local address it is bound to
	Uid  int        // its owner's
	Port int
}

// diagSockets lists the sockets of family and proto (unix.IPPROTO_TCP or
// IPPROTO_UDP) in the states of the mask (1<<state) bound to port; every
// port for port < 0.
func diagSockets(family, proto int, states uint32, port int) ([]diagSocket, error) {
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	defer unix.Close(s)

	req := make([]byte, unix.SizeofNlMsghdr+diagReqLen)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1) // sequence number
	r := req[unix.SizeofNlMsghdr:]
	r[0], r[1] = byte(family), byte(proto)
	ne.PutUint32(r[4:], states)
	if err := unix.Sendto(s, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, os.NewSyscallError("sendto", err)
	}

	var out []diagSocket
	buf := make([]byte, 32<<10)
	for {
		n, _, err := unix.Recvfrom(s, buf, 0)
		if err != nil {
			return nil, os.NewSyscallError("recvfrom", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(ne.Uint32(m.Data)); errno != 0 {
						return nil, fmt.Errorf("sock_diag: %w", unix.Errno(-errno))
					}
				}
				return nil, errors.New("sock_diag: an error reply")
			case unix.SOCK_DIAG_BY_FAMILY:
				if len(m.Data) < diagMsgLen {
					continue
				}
				id := m.Data[diagIDOff:]
				sport := int(binary.BigEndian.Uint16(id[0:]))
				if port >= 0 && sport != port {
					continue
				}
				// The local address, as a key to compare sockets by: the
				// 16 bytes of idiag_src (an IPv4 address in the first 4) and
				// the port.
				local := fmt.Sprintf("%s:%04X", hex.EncodeToString(id[4:20]), sport)
				ip, _ := netip.AddrFromSlice(id[4:20])
				if family == unix.AF_INET {
					ip, _ = netip.AddrFromSlice(id[4:8])
				}
				out = append(out, diagSocket{Listener{Local: local, Inode: uint64(ne.Uint32(m.Data[diagInoOff:])), Queued: int(ne.Uint32(m.Data[diagRqOff:]))},
					ip, int(ne.Uint32(m.Data[diagUidOff:])), sport})
			}
		}
	}
}
