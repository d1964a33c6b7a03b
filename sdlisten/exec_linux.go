package sdlisten

import (
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The exec helper. Go's fork/exec sets the child's environment before the
// child has a pid, yet strict readers (libsystemd, go-systemd, gunicorn)
// demand LISTEN_PID == getpid(). So relaunch starts itself (/proc/self/exe)
// with these two variables; RunExecHelper, at the very top of main, sets
// LISTEN_PID to its own pid, marks every fd past the sockets close-on-exec,
// and execs the real command. The pid survives execve, so the value is right.
const (
	execPathEnv  = "RELAUNCH_EXEC_PATH"  // the resolved command to exec
	execErrFdEnv = "RELAUNCH_EXEC_ERRFD" // fd of the pipe that reports an exec failure
)

// HelperEnv returns the environment entries that make a process started from
// relaunch's own binary exec path, reporting a failure to exec on errFd (the
// write end of a close-on-exec pipe passed as that fd number; it is always
// the fd right after the sockets).
func HelperEnv(path string, errFd int) []string {
	return []string{execPathEnv + "=" + path, execErrFdEnv + "=" + strconv.Itoa(errFd)}
}

// RunExecHelper returns at once unless this process is relaunch's exec
// helper; then it never returns: it execs the command, or writes why it could
// not to the error pipe and exits 127 (126 when the file is not executable),
// as a shell does.
func RunExecHelper() {
	path, ok := os.LookupEnv(execPathEnv)
	if !ok {
		return
	}
	errFd, err := strconv.Atoi(os.Getenv(execErrFdEnv))
	if err != nil || errFd < 3 {
		os.Stderr.WriteString("relaunch: bad " + execErrFdEnv + " in the exec helper\n")
		os.Exit(127)
	}
	os.Unsetenv(execPathEnv)
	os.Unsetenv(execErrFdEnv)
	if os.Getenv("LISTEN_FDS") != "" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	// fds 0..errFd-1 are what the child gets; everything from the error pipe
	// up (the pipe, fds relaunch itself inherited without close-on-exec, the
	// Go runtime's own) must not survive the exec.
	closeOnExecFrom(errFd)
	err = unix.Exec(path, os.Args, os.Environ())
	// "Text file busy": a deploy still has the new file open for writing
	// (closed just after its last write). Its close sends no event relaunch
	// would see again, so wait for it here, briefly, rather than fail.
	for deadline := time.Now().Add(3 * time.Second); err == unix.ETXTBSY && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		err = unix.Exec(path, os.Args, os.Environ())
	}
	// Still here: exec failed. The pipe tells relaunch why; stderr is the
	// fallback when the pipe is unusable.
	msg := []byte(path + ": " + err.Error())
	if _, werr := unix.Write(errFd, msg); werr != nil {
		os.Stderr.WriteString("relaunch: cannot run " + string(msg) + "\n")
	}
	if err == syscall.EACCES || err == syscall.ENOEXEC {
		os.Exit(126)
	}
	os.Exit(127)
}

func closeOnExecFrom(first int) {
	if unix.CloseRange(uint(first), ^uint(0), unix.CLOSE_RANGE_CLOEXEC) == nil {
		return
	}
	// Kernels before 5.11: walk the fd table instead.
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	for _, n := range names {
		if fd, err := strconv.Atoi(n); err == nil && fd >= first {
			unix.CloseOnExec(fd)
		}
	}
}
