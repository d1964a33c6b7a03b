package sdlisten

import (
	"os"

	"golang.org/x/sys/unix"
)

// pinPort replaces fd, bound to the port the kernel picked, by a socket
// bound to that port by number, listening. A port the kernel picked is
// given back when the socket stops listening (a shutdown() by an app), and
// listen() would then pick another; one asked for by number stays bound.
// Both sockets have SO_REUSEADDR and the first never listens, so the
// second may bind the same port.
func pinPort(fd, domain, typ int, sa unix.Sockaddr, v6only, reusePort bool) error {
	port, err := boundPort(fd)
	if err != nil {
		return err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		c := *a
		c.Port = port
		sa = &c
	case *unix.SockaddrInet6:
		c := *a
		c.Port = port
		sa = &c
	}
	fd2, err := socket(domain, typ)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd2)
	if err := setupInet(fd2, domain, typ, sa, v6only, reusePort); err != nil {
		return err
	}
	return os.NewSyscallError("dup3", unix.Dup3(fd2, fd, unix.O_CLOEXEC))
}
