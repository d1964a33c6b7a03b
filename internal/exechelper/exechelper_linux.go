package exechelper

import (
	"syscall"
	"unsafe"
)

func init() { run() }

// run returns at once unless this process is relaunch's exec helper; then it
// never returns: it execs the command, or writes why it could not to the
// error pipe and exits 127 (126 when the file is not executable), as a shell
// does.
func run() {
	path, ok := syscall.Getenv(pathEnv)
	ctl, warm := syscall.Getenv(waitEnv)
	if !ok && !warm {
		return
	}
	v, _ := syscall.Getenv(errFdEnv)
	errFd, ok := atoi(v)
	if !ok || errFd < 3 {
		fail(-1, "bad "+errFdEnv+" in the exec helper", 127)
	}
	if warm {
		ctlFd, ok := atoi(ctl)
		if !ok || ctlFd <= errFd {
			fail(errFd, "bad "+waitEnv+" in the exec helper", 127)
		}
		warmExec(ctlFd, errFd)
	}
	// os.Args is not set yet (os is not initialised): the kernel's copy.
	argv, err := args()
	if err != nil {
		fail(errFd, "cannot read /proc/self/cmdline: "+err.Error(), 127)
	}
	syscall.Unsetenv(pathEnv)
	syscall.Unsetenv(errFdEnv)
	if fds, _ := syscall.Getenv("LISTEN_FDS"); fds != "" {
		syscall.Setenv("LISTEN_PID", itoa(syscall.Getpid()))
	}
	// fds 0..errFd-1 are what the child gets; everything from the error pipe
	// up (the pipe, fds relaunch itself inherited without close-on-exec, the
	// Go runtime's own) must not survive the exec.
	CloseOnExecFrom(errFd)
	err = syscall.Exec(path, argv, syscall.Environ())
	// "Text file busy": a deploy still has the new file open for writing
	// (closed just after its last write). Its close sends no event relaunch
	// would see again, so wait for it here, briefly (3s), rather than fail.
	for i := 0; err == syscall.ETXTBSY && i < 150; i++ {
		syscall.Nanosleep(&syscall.Timespec{Nsec: 20e6}, nil)
		err = syscall.Exec(path, argv, syscall.Environ())
	}
	execFailed(errFd, path, err)
}

// Sizes a warm helper prepares before its wait: an order (path, argv and
// environment) up to orderBuf bytes, with up to orderFields fields, takes no
// allocation once it has come. A larger one still works, more slowly.
const (
	orderBuf    = 64 << 10
	orderFields = 2048
)

// warmExec waits for the order on ctlFd, until EOF, and execs it. No order
// (relaunch did not need it, or is gone): it exits quietly. Everything the
// exec needs is allocated and touched before the wait, and the order's
// fields are passed to execve where they lie: a first touch of a page costs
// a page fault, tens of µs on some virtual machines, and Clearenv and
// Setenv of the environment's fifty-odd variables took 2–3 ms there, every
// one of them on the way from the order to the app's start.
func warmExec(ctlFd, errFd int) {
	restoreNofile()
	buf := make([]byte, orderBuf)
	argv := make([]*byte, 0, orderFields)
	env := make([]*byte, 0, orderFields)
	for i := 0; i < len(buf); i += 512 {
		buf[i] = 0
	}
	for _, s := range [][]*byte{argv[:orderFields], env[:orderFields]} {
		for i := range s {
			s[i] = nil // touched
		}
	}
	parseOrder([]byte("/x\x001\x00x\x00K=V\x00"), argv, env) // its code paged in

	n := 0
	for {
		if n == len(buf) {
			if n >= 4<<20 {
				fail(errFd, "the exec helper got an order over 4 MiB", 127)
			}
			buf = append(buf, make([]byte, n)...)
		}
		k, err := syscall.Read(ctlFd, buf[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil || k == 0 {
			break
		}
		n += k
	}
	syscall.Close(ctlFd)
	if n == 0 {
		syscall.Exit(0)
	}
	path, av, ev, ok := parseOrder(buf[:n], argv, env)
	if !ok {
		fail(errFd, "the exec helper got a bad order", 127)
	}
	CloseOnExecFrom(errFd)
	p := &buf[0] // path is buf's first field, NUL-terminated
	_, _, e := syscall.RawSyscall(syscall.SYS_EXECVE, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&av[0])), uintptr(unsafe.Pointer(&ev[0])))
	// "Text file busy": see run.
	for i := 0; e == syscall.ETXTBSY && i < 150; i++ {
		syscall.Nanosleep(&syscall.Timespec{Nsec: 20e6}, nil)
		_, _, e = syscall.RawSyscall(syscall.SYS_EXECVE, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&av[0])), uintptr(unsafe.Pointer(&ev[0])))
	}
	execFailed(errFd, string(path), e)
}

// restoreNofile sets the soft limit on open files back to the one this
// process was started with. Go raised it to the hard limit at the
// runtime's start and keeps the original unexported; syscall.Exec puts it
// back before its execve, which the warm helper does not use (it execs
// the order where it lies). An Exec of "" fails (ENOENT) after putting it
// back, so the app gets the limit relaunch was given, as with the traced
// start and os/exec, not the hard limit.
func restoreNofile() {
	syscall.Exec("", nil, nil)
}

// execFailed reports a failed exec of path, with a shell's status.
func execFailed(errFd int, path string, err error) {
	status := 127
	if err == syscall.EACCES || err == syscall.ENOEXEC {
		status = 126
	}
	fail(errFd, path+": "+err.Error(), status)
}

// readAll reads fd to its end, at most max bytes.
func readAll(fd, max int) ([]byte, error) {
	buf := make([]byte, 0, 4096)
	for len(buf) < max {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
		}
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		buf = buf[:len(buf)+n]
	}
	return buf, nil
}

// fail tells relaunch why on the error pipe (stderr when the pipe is
// unusable) and exits.
func fail(errFd int, msg string, status int) {
	if errFd < 0 {
		syscall.Write(2, []byte("relaunch: "+msg+"\n"))
	} else if _, err := syscall.Write(errFd, []byte(msg)); err != nil {
		syscall.Write(2, []byte("relaunch: cannot run "+msg+"\n"))
	}
	syscall.Exit(status)
}

// args reads the process's argv from /proc/self/cmdline (NUL-terminated
// strings), bounded at the kernel's own limit on arguments.
func args() ([]string, error) {
	fd, err := syscall.Open("/proc/self/cmdline", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(fd)
	// ARG_MAX is at most a quarter of the stack limit; 2 MiB is far past a
	// command line.
	buf, err := readAll(fd, 2<<20)
	if err != nil {
		return nil, err
	}
	var argv []string
	for len(buf) > 0 {
		i := 0
		for i < len(buf) && buf[i] != 0 {
			i++
		}
		argv = append(argv, string(buf[:i]))
		if i == len(buf) {
			break
		}
		buf = buf[i+1:]
	}
	return argv, nil
}

// closeOnExecFrom marks every fd from first up close-on-exec.
func CloseOnExecFrom(first int) {
	const sysCloseRange = 436 // the same number on every Linux architecture (5.9)
	const closeRangeCloexec = 1 << 2
	if _, _, e := syscall.Syscall(sysCloseRange, uintptr(first), ^uintptr(0), closeRangeCloexec); e == 0 {
		return
	}
	// Kernels before 5.11 (CLOSE_RANGE_CLOEXEC): walk the fd table instead.
	d, err := syscall.Open("/proc/self/fd", syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer syscall.Close(d)
	buf := make([]byte, 4096)
	var fds []int
	for {
		n, err := syscall.ReadDirent(d, buf)
		if err != nil || n <= 0 {
			break
		}
		var names []string
		_, _, names = syscall.ParseDirent(buf[:n], -1, names)
		for _, name := range names {
			if fd, ok := atoi(name); ok && fd >= first && fd != d {
				fds = append(fds, fd)
			}
		}
	}
	for _, fd := range fds {
		syscall.CloseOnExec(fd)
	}
}
