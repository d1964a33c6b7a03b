package sdlisten

import "golang.org/x/sys/unix"

// socket creates a blocking socket that is close-on-exec from birth, so no
// fork can leak it; children get it only through ExtraFiles.
func socket(domain, typ int) (int, error) {
	return unix.Socket(domain, typ|unix.SOCK_CLOEXEC, 0)
}
