//go:build !linux

package sdlisten

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// socket creates a blocking close-on-exec socket. Without SOCK_CLOEXEC the
// fork lock keeps a concurrent fork from inheriting it before the flag is set.
func socket(domain, typ int) (int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fd, err := unix.Socket(domain, typ, 0)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	return fd, err
}
