package sdlisten

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Kept is a socket carried across relaunch's exec of itself (relaunch
// reexec): the fd stays open through the exec, and Adopt makes it a Socket
// again in the new program.
type Kept struct {
	Addr   string `json:"addr"`            // Addr.String()
	Fd     int    `json:"fd"`              // open in the new program, same number
	Unlink string `json:"unlink"`          // the socket file Close removes; "" for none
	Spare  bool   `json:"spare,omitempty"` // a pool's spare member (Pool)
}

// Keep describes s for Adopt. The caller clears close-on-exec on the fd.
func (s *Socket) Keep() Kept {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Kept{Addr: s.addr.String(), Fd: s.fd, Unlink: s.unlink}
}

// Adopt takes a kept socket back: close-on-exec again, and the socket file
// it removes at Close is the one at its path now.
func Adopt(k Kept) (*Socket, error) {
	a, err := ParseAddr(k.Addr)
	if err != nil {
		return nil, err
	}
	if _, err := unix.FcntlInt(uintptr(k.Fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return nil, fmt.Errorf("adopt %s (fd %d): %w", a, k.Fd, os.NewSyscallError("fcntl", err))
	}
	s := &Socket{addr: a, fd: k.Fd, unlink: k.Unlink}
	if k.Unlink != "" {
		if s.file, err = os.Lstat(k.Unlink); err != nil {
			s.unlink = "" // gone already: nothing to remove
		}
	}
	return s, nil
}

// Keep describes every slot, in order, then the spare.
func (p *Pool) Keep() []Kept {
	var ks []Kept
	for _, s := range p.slots {
		ks = append(ks, s.Keep())
	}
	if p.spare != nil {
		k := p.spare.Keep()
		k.Spare = true
		ks = append(ks, k)
	}
	return ks
}

// AdoptPool takes a kept pool back. Its steering program stays attached to
// the group: the kernel keeps it.
func AdoptPool(ks []Kept) (*Pool, error) {
	if len(ks) == 0 {
		return nil, fmt.Errorf("adopt pool: no slot")
	}
	p := &Pool{}
	for _, k := range ks {
		s, err := Adopt(k)
		if err != nil {
			return nil, err
		}
		if k.Spare {
			p.spare = s
			continue
		}
		p.slots = append(p.slots, s)
	}
	if len(p.slots) == 0 {
		return nil, fmt.Errorf("adopt pool: no slot")
	}
	p.addr = p.slots[0].addr
	return p, nil
}

// AdoptNotify takes a kept notify socket back (its fd, SO_PASSCRED set).
func AdoptNotify(fd int, path string) (*NotifyListener, error) {
	f := os.NewFile(uintptr(fd), path)
	c, err := net.FileConn(f) // a dup, close-on-exec
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("adopt the notify socket %s: %w", path, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("adopt the notify socket %s: not a unix socket", path)
	}
	bind := path // Close removes the name it was bound at (ListenNotifyAt)
	if a, ok := uc.LocalAddr().(*net.UnixAddr); ok && a.Name != "" {
		bind = a.Name
	}
	return &NotifyListener{path: path, bind: bind, conn: uc}, nil
}

// Fd is the notify socket's fd, for Keep across an exec.
func (l *NotifyListener) Fd() int {
	fd := -1
	if rc, err := l.conn.SyscallConn(); err == nil {
		rc.Control(func(f uintptr) { fd = int(f) })
	}
	return fd
}
