// Package exechelper starts a generation's process with LISTEN_PID equal
// to the process's own pid. Go's fork/exec sets the child's environment
// before the child has a pid, yet strict readers (libsystemd, go-systemd,
// gunicorn) demand LISTEN_PID == getpid(). Two ways:
//
//   - StartTraced (traced_linux.go), the default: fork and exec the command
//     with a placeholder, stop it at its exec with ptrace, write its pid in.
//   - The exec helper, where ptrace is not to be used: relaunch starts
//     itself (/proc/self/exe) with the variables of Env; in that process
//     this package, from its init, sets LISTEN_PID to the process's own
//     pid, marks every fd past the sockets close-on-exec, and execs the real
//     command. The pid survives execve, so the value is right. A warm
//     helper, started ahead of its order, knows its pid before the order
//     comes: relaunch writes LISTEN_PID into the order (Order), and the
//     helper only execs.
//
// The helper runs from init, and the package imports syscall, errors,
// runtime and unsafe alone, so that the Go runtime initialises the fewest packages
// before it (relaunch's others, with the CLI and its man-page renderer, take
// milliseconds on a busy machine: at every start of a generation). Any
// binary that links it (relaunch, its test binary) is a helper when started
// with these variables.
package exechelper

const (
	pathEnv  = "RELAUNCH_EXEC_PATH"  // the resolved command to exec
	errFdEnv = "RELAUNCH_EXEC_ERRFD" // fd of the pipe that reports an exec failure
	waitEnv  = "RELAUNCH_EXEC_WAIT"  // a warm helper: fd of the pipe its order comes on
)

// WarmArgv is a warm helper's argv, until its order comes: what ps shows.
var WarmArgv = []string{"relaunch-exec-helper", "(waiting for the next generation)"}

// Env returns the environment entries that make a process started from
// relaunch's own binary exec path, reporting a failure to exec on errFd (the
// write end of a close-on-exec pipe passed as that fd number; it is always
// the fd right after the sockets).
func Env(path string, errFd int) []string {
	return []string{pathEnv + "=" + path, errFdEnv + "=" + itoa(errFd)}
}

// WarmEnv returns the environment entries of a warm helper: one started
// ahead of the next generation, its Go runtime up, that waits for its order
// (Order) on fd ctlFd, a pipe, then execs at once, as one started with Env
// would. EOF without an order: it exits 0.
func WarmEnv(errFd, ctlFd int) []string {
	return []string{waitEnv + "=" + itoa(ctlFd), errFdEnv + "=" + itoa(errFd)}
}

// Order is a warm helper's order: exec path with argv and exactly env. pid
// is the helper's: the order carries LISTEN_PID=pid when env has
// LISTEN_FDS (replacing any LISTEN_PID), so that the helper, once woken,
// only execs (see warm in exechelper_linux.go).
func Order(pid int, path string, argv, env []string) []byte {
	var b []byte
	b = append(append(b, path...), 0)
	b = append(append(b, itoa(len(argv))...), 0)
	for _, s := range argv {
		b = append(append(b, s...), 0)
	}
	env, listen := cleanEnv(env)
	for _, kv := range env {
		b = append(append(b, kv...), 0)
	}
	if listen {
		b = append(append(b, "LISTEN_PID="+itoa(pid)...), 0)
	}
	return b
}

// cleanEnv is env without its LISTEN_PID, each variable once with its last
// value, as os/exec does (an order, or a traced start, passes env to execve
// as it is); listen says whether it has LISTEN_FDS, so that the start adds
// LISTEN_PID.
func cleanEnv(env []string) (clean []string, listen bool) {
	last := make(map[string]int, len(env))
	for i, kv := range env {
		last[envKey(kv)] = i
	}
	clean = make([]string, 0, len(env)+1)
	for i, kv := range env {
		switch k := envKey(kv); {
		case last[k] != i || k == "LISTEN_PID":
			continue
		case k == "LISTEN_FDS" && len(kv) > len("LISTEN_FDS="):
			listen = true
		}
		clean = append(clean, kv)
	}
	return clean, listen
}

// envKey is the name of an environment entry "NAME=value".
func envKey(kv string) string {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i]
		}
	}
	return kv
}

// parseOrder splits an order into its fields, each a NUL-terminated string
// in b, as pointers for execve: fields[0] is the path, argv and env are
// nil-terminated. It appends to argv and env (their capacity is kept, so
// that a helper that prepared them allocates nothing here).
func parseOrder(b []byte, argv, env []*byte) (path []byte, av, ev []*byte, ok bool) {
	i := 0
	field := func() []byte { // the next field, without its NUL; nil at the end
		j := i
		for j < len(b) && b[j] != 0 {
			j++
		}
		if j == len(b) {
			return nil // every field ends with a NUL
		}
		f := b[i:j:j]
		i = j + 1
		return f
	}
	if path = field(); len(path) == 0 {
		return nil, nil, nil, false
	}
	f := field()
	n := 0
	for _, c := range f {
		if c < '0' || c > '9' || n > 1<<20 {
			return nil, nil, nil, false
		}
		n = n*10 + int(c-'0')
	}
	if n < 1 {
		return nil, nil, nil, false
	}
	av, ev = argv[:0], env[:0]
	for i < len(b) {
		start := i
		if field() == nil {
			return nil, nil, nil, false
		}
		if len(av) < n {
			av = append(av, &b[start])
		} else {
			ev = append(ev, &b[start])
		}
	}
	if len(av) != n {
		return nil, nil, nil, false
	}
	return path, append(av, nil), append(ev, nil), true
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
