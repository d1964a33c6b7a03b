package sdlisten

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Steer sends every new connection on the pool's address to slot i (the
// route of one slot, SetRoute). Replacing the program is atomic; it belongs
// to the group, so it is attached through any member that listens
// (attaching through one that does not would give that one a group of its
// own).
func (p *Pool) Steer(i int) error {
	if i < 0 || i >= len(p.slots) {
		return fmt.Errorf("steer %s: no slot %d", p.addr, i)
	}
	if err := p.SetRoute(Route{Slots: []int{i}}); err != nil {
		return fmt.Errorf("steer %s to slot %d: %w", p.addr, i, err)
	}
	return nil
}

// Route is the route last set.
func (p *Pool) Route() Route { return p.route }

// attach attaches "ret #k" to the group, k a group index.
func (p *Pool) attach(k int) error {
	return p.attachProg([]unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: uint32(k)}})
}

// attachProg attaches prog to the group.
func (p *Pool) attachProg(prog []unix.SockFilter) error {
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	for _, s := range p.Members() {
		if s.Listening() {
			return os.NewSyscallError("setsockopt SO_ATTACH_REUSEPORT_CBPF",
				unix.SetsockoptSockFprog(s.Fd(), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog))
		}
	}
	return errors.New("no member of the group listens")
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

// Listening says whether the socket still listens: shutdown(SHUT_RD) by any
// process holding it (a common way to wake accept threads at drain) stops a
// TCP listener for every holder, and takes a pool's member out of its group.
func (s *Socket) Listening() bool {
	v, err := unix.GetsockoptInt(s.Fd(), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	return err == nil && v == 1
}

// Relisten makes a stream socket that stopped listening listen again, with
// the backlog Bind gives; its address stays bound. A pool's member goes
// through Pool.Revive instead, which keeps the group's order.
func (s *Socket) Relisten() error {
	if err := unix.Listen(s.Fd(), backlog()); err != nil {
		return fmt.Errorf("listen again on %s: %w", s.addr, os.NewSyscallError("listen", err))
	}
	return nil
}

// Dead lists the slots that no longer listen.
func (p *Pool) Dead() []int {
	var dead []int
	for i, s := range p.slots {
		if !s.Listening() {
			dead = append(dead, i)
		}
	}
	return dead
}

// ErrOrderLost says that after Revive the slots listen again but their
// indices in the group are not known: more than one slot had left the
// group (the order they left in decides where the kernel moved the others),
// or the pool has no spare. Steering by index is then unreliable.
var ErrOrderLost = errors.New("the order of the SO_REUSEPORT group is no longer known")

// Revive makes the slots of dead listen again. With one dead slot and the
// spare it is exact: the slot's shutdown moved the spare (the last member)
// into the slot's index; listen() appends the slot at the end; the spare
// then leaves (the slot, now last, moves back into its index) and joins
// again last. steered is the slot steering points at: while it is dead,
// steering points at the spare, so what queued there is accepted first and
// returned (non-blocking fds) for the caller to serve; one that arrives in
// the microseconds before the spare's shutdown is reset by the kernel.
func (p *Pool) Revive(dead []int, steered int) (rescued []int, err error) {
	if len(dead) == 0 {
		return nil, nil
	}
	for _, i := range dead {
		if err := p.slots[i].Relisten(); err != nil {
			return nil, err
		}
	}
	if len(dead) > 1 || p.spare == nil {
		return nil, ErrOrderLost
	}
	i := dead[0]
	if i == steered {
		// The slot is last now: steer there while the spare moves.
		p.attach(len(p.slots))
	}
	sfd := p.spare.Fd()
	if fl, err := unix.FcntlInt(uintptr(sfd), unix.F_GETFL, 0); err == nil {
		unix.FcntlInt(uintptr(sfd), unix.F_SETFL, fl|unix.O_NONBLOCK) // the spare is relaunch's alone
	}
	for {
		c, _, err := unix.Accept4(sfd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
			continue
		}
		if err != nil {
			break // EAGAIN: the spare is non-blocking
		}
		rescued = append(rescued, c)
	}
	if err := unix.Shutdown(sfd, unix.SHUT_RD); err != nil {
		return rescued, fmt.Errorf("revive %s slot %d: %w", p.addr, i, os.NewSyscallError("shutdown (spare)", err))
	}
	if err := p.spare.Relisten(); err != nil {
		return rescued, err
	}
	if r := p.route; len(r.Slots) > 0 && r.Slots[0] == steered {
		return rescued, p.SetRoute(r) // its canary and probes too
	}
	return rescued, p.Steer(steered)
}
