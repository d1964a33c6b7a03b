//go:build !linux

package sdlisten

import (
	"os"

	"golang.org/x/sys/unix"
)

// pinPort only listens: relaunch runs on Linux alone (see pinport_linux.go).
func pinPort(fd, domain, typ int, sa unix.Sockaddr, v6only, reusePort bool) error {
	return os.NewSyscallError("listen", unix.Listen(fd, backlog()))
}
