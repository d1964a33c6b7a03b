// Package exechelper is relaunch's exec helper. Go's fork/exec sets the
// child's environment before the child has a pid, yet strict readers
// (libsystemd, go-systemd, gunicorn) demand LISTEN_PID == getpid(). So
// relaunch starts itself (/proc/self/exe) with the variables of Env; in that
// process this package, from its init, sets LISTEN_PID to the process's own
// pid, marks every fd past the sockets close-on-exec, and execs the real
// command. The pid survives execve, so the value is right.
//
// It runs from init, and imports syscall alone, so that the Go runtime
// initialises the fewest packages before it (relaunch's others, with the CLI
// and its man-page renderer, take milliseconds on a busy machine: at every
// start of a generation). Any binary that links it (relaunch, its test
// binary) is a helper when started with these variables.
package exechelper

const (
	pathEnv  = "RELAUNCH_EXEC_PATH"  // the resolved command to exec
	errFdEnv = "RELAUNCH_EXEC_ERRFD" // fd of the pipe that reports an exec failure
)

// Env returns the environment entries that make a process started from
// relaunch's own binary exec path, reporting a failure to exec on errFd (the
// write end of a close-on-exec pipe passed as that fd number; it is always
// the fd right after the sockets).
func Env(path string, errFd int) []string {
	return []string{pathEnv + "=" + path, errFdEnv + "=" + itoa(errFd)}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var b [20]byte
	i := len(b)
	for ; n > 0; n /= 10 {
		i--
		b[i] = byte('0' + n%10)
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

func atoi(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
