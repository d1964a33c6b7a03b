package sdlisten

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Steer sends every new connection on the pool's address to slot i: it
// attaches the classic BPF program "ret #i" to the group. Replacing the
// program is atomic; it belongs to the group, so it is attached through any
// member that listens (slot 0).
func (p *Pool) Steer(i int) error {
	if i < 0 || i >= len(p.slots) {
		return fmt.Errorf("steer %s: no slot %d", p.addr, i)
	}
	prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: uint32(i)}}
	fprog := unix.SockFprog{Len: 1, Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(p.slots[0].Fd(), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog); err != nil {
		return fmt.Errorf("steer %s to slot %d: %w", p.addr, i, os.NewSyscallError("setsockopt SO_ATTACH_REUSEPORT_CBPF", err))
	}
	return nil
}

// Queued is the length of slot i's accept queue: connections the kernel
// completed that no process has accepted yet (TCP_INFO's tcpi_unacked on a
// listening socket).
func (p *Pool) Queued(i int) (int, error) {
	info, err := unix.GetsockoptTCPInfo(p.slots[i].Fd(), unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, os.NewSyscallError("getsockopt TCP_INFO", err)
	}
	return int(info.Unacked), nil
}
