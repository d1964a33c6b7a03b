package exechelper

import (
	"errors"
	"runtime"
	"syscall"
	"unsafe"
)

// The traced start: no helper at all. The child is forked and execs the
// command at once (Go's vfork path, as cheap as a start gets), with
// LISTEN_PID set to a placeholder, the environment's last entry, and
// PTRACE_TRACEME: the kernel stops it after its exec, before its first
// instruction. relaunch, its tracer, writes the child's pid over the
// placeholder (the value ends at the first NUL; the rest of the ten digits'
// room is NULs) and lets it go. A helper's exec costs 2–4 ms more on a busy
// machine (tearing down a Go process of four threads): at every start.
//
// What a reader of LISTEN_PID sees: getenv, os.Getenv, os.environ,
// process.env: the pid. /proc/PID/environ: the pid, then a few empty
// entries (the NULs).

// placeholder is LISTEN_PID's value until the child is stopped: room for
// any pid (pid_max is at most 2^22).
const placeholder = "LISTEN_PID=0000000000"

// ErrNotTraced says that the traced start could not trace the child: a
// kernel or policy that refuses ptrace (seccomp, Yama's ptrace_scope 2 or
// 3, relaunch itself being traced). The caller starts the helper instead.
var ErrNotTraced = errors.New("ptrace refused")

// maxStops bounds the stops a start goes through before the exec's SIGTRAP:
// each is a signal that came between the fork and the exec.
const maxStops = 16

// StartTraced forks and execs path with argv, env and attr (its Sys must
// not ask for ptrace itself), as syscall.ForkExec, except that when env has
// LISTEN_FDS, the process starts with LISTEN_PID equal to its own pid (see
// above). It returns the pid, and the wait status when the process died
// before it ran (a signal sent to it in the meantime): the caller must not
// wait for it again then. An error means no process is left: the exec
// failed (ForkExec's error), or the trace did (ErrNotTraced when ptrace was
// refused).
func StartTraced(path string, argv, env []string, attr *syscall.ProcAttr) (pid int, died *syscall.WaitStatus, err error) {
	env, listen := cleanEnv(env)
	a := *attr
	if !listen {
		a.Env = env
		pid, err = syscall.ForkExec(path, argv, &a)
		return pid, nil, err
	}
	a.Env = append(env, placeholder)
	sys := syscall.SysProcAttr{}
	if a.Sys != nil {
		sys = *a.Sys
	}
	sys.Ptrace = true
	a.Sys = &sys

	// The tracer is this thread: ptrace calls must come from it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pid, err = syscall.ForkExec(path, argv, &a)
	if err == syscall.EPERM {
		return 0, nil, ErrNotTraced
	}
	if err != nil {
		return 0, nil, err
	}
	var ws syscall.WaitStatus
	patched := false
	for i := 0; ; i++ {
		if err = wait(pid, &ws); err != nil {
			break // (not our child any more: cannot happen)
		}
		if !ws.Stopped() {
			return pid, &ws, nil // killed before it ran
		}
		if !patched {
			if err = writePid(pid); err != nil {
				break
			}
			patched = true
		}
		sig := ws.StopSignal()
		if sig == syscall.SIGTRAP || i == maxStops {
			// The exec's SIGTRAP: consumed, as the child must not see it.
			if err = ptrace(syscall.PTRACE_DETACH, pid, 0, 0); err != nil {
				break
			}
			// The app, woken by the detach, most often waits on this
			// thread's CPU: let it run now. Without this, under load, its
			// start (fork → its Go runtime up) took ~2 ms more than an
			// untraced one; with it, ~0.3 ms (make bench's side by side).
			syscall.RawSyscall(syscall.SYS_SCHED_YIELD, 0, 0, 0)
			return pid, nil, nil
		}
		// Another signal, queued before the exec's: deliver it as the
		// kernel would have (no handler is set yet), and wait for the next.
		if err = ptrace(syscall.PTRACE_CONT, pid, 0, uintptr(sig)); err != nil {
			break
		}
	}
	syscall.Kill(pid, syscall.SIGKILL)
	wait(pid, &ws)
	return 0, nil, errors.Join(ErrNotTraced, err)
}

// From the exec to the detach, the app waits for relaunch: every call
// below is a raw system call, made on this locked thread without telling
// the Go scheduler. Through its syscall entry, each blocking call hands
// the thread's P to another thread and takes one back after: under load
// that handoff, with the other threads it wakes, cost the stopped app 1–2
// ms on a 2-core machine. The waits are short: the stop follows the exec
// at once, and a read of /proc/PID/auxv does not block.

// wait waits for pid to stop or end.
func wait(pid int, ws *syscall.WaitStatus) error {
	for {
		_, _, e := syscall.RawSyscall6(syscall.SYS_WAIT4, uintptr(pid), uintptr(unsafe.Pointer(ws)), syscall.WALL, 0, 0, 0)
		if e != syscall.EINTR {
			return errnoErr(e)
		}
	}
}

// ptrace is the raw ptrace(2) call; PEEKDATA stores the word at data.
func ptrace(req, pid int, addr, data uintptr) error {
	_, _, e := syscall.RawSyscall6(syscall.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
	return errnoErr(e)
}

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// writePid writes pid over the placeholder, the last string of the
// stopped process's environment, which ends at envEnd.
func writePid(pid int) error {
	end, err := envEnd(pid)
	if err != nil {
		return err
	}
	// Whole words, from the placeholder's start: the words are read first,
	// so that the bytes around it (the string before, the exec's file name
	// after) are written back unchanged.
	const w = int(unsafe.Sizeof(uintptr(0)))
	at := end - uintptr(len(placeholder)+1)
	var buf [(len(placeholder) + 1 + w - 1) / w * w]byte
	for i := 0; i < len(buf); i += w {
		if err := ptrace(syscall.PTRACE_PEEKDATA, pid, at+uintptr(i), uintptr(unsafe.Pointer(&buf[i]))); err != nil {
			return errors.Join(errors.New("cannot read the placeholder"), err)
		}
	}
	if string(buf[:len(placeholder)+1]) != placeholder+"\x00" {
		return errors.New("LISTEN_PID's placeholder is not where the environment ends")
	}
	v := buf[len("LISTEN_PID="):len(placeholder)]
	clear(v) // NULs after the pid
	copy(v, itoa(pid))
	for i := 0; i < len(buf); i += w {
		word := *(*uintptr)(unsafe.Pointer(&buf[i]))
		if err := ptrace(syscall.PTRACE_POKEDATA, pid, at+uintptr(i), word); err != nil {
			return errors.Join(errors.New("cannot write LISTEN_PID"), err)
		}
	}
	return nil
}

// envEnd is the address where pid's environment strings end: where the
// exec's file name, copied above them, starts (AT_EXECFN in its auxiliary
// vector, /proc/PID/auxv; a read of the kernel's copy, cheaper than
// formatting /proc/PID/stat for its env_end, which is the same address).
func envEnd(pid int) (uintptr, error) {
	atFdCwd := -100 // AT_FDCWD; uintptr() of a negative constant does not compile
	path, err := syscall.BytePtrFromString("/proc/" + itoa(pid) + "/auxv")
	if err != nil {
		return 0, err
	}
	fd, _, e := syscall.RawSyscall6(syscall.SYS_OPENAT, uintptr(atFdCwd), uintptr(unsafe.Pointer(path)), syscall.O_RDONLY|syscall.O_CLOEXEC, 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	var auxv [64]uintptr // pairs (type, value), ~25 of them
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&auxv[0])), unsafe.Sizeof(auxv))
	syscall.RawSyscall(syscall.SYS_CLOSE, fd, 0, 0)
	if e != 0 {
		return 0, e
	}
	const atExecfn = 31
	for i := 0; i+1 < int(n)/int(unsafe.Sizeof(uintptr(0))); i += 2 {
		if auxv[i] == atExecfn && auxv[i+1] != 0 {
			return auxv[i+1], nil
		}
	}
	return 0, errors.New("no AT_EXECFN in /proc/" + itoa(pid) + "/auxv")
}

// SetIDOrCaps returns an error when the file at path is set-user-ID or
// set-group-ID, or has file capabilities (setcap): a traced exec runs it
// without them, so it must start through the helper.
func SetIDOrCaps(path string) error {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return err
	}
	if st.Mode&(syscall.S_ISUID|syscall.S_ISGID) != 0 {
		return errors.New(path + " is set-user-ID or set-group-ID")
	}
	if n, err := syscall.Getxattr(path, "security.capability", nil); err == nil && n > 0 {
		return errors.New(path + " has file capabilities")
	}
	return nil
}
