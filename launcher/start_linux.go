package launcher

import (
	"errors"
	"log/slog"
	"syscall"

	"github.com/relaunch/relaunch/internal/exechelper"
)

// starter is how osSystem starts a generation's process. The traced start
// (startTraced) runs the app at once, with LISTEN_PID written in at its
// exec; it is the default. The exec helper, warm when it fits
// (warm_linux.go), is the fallback: for --no-ptrace, a kept binary (a
// rollback, a crash restart), a file whose set-ID bits or capabilities a
// traced exec would drop, an exec that failed (the helper reports it its
// own way), and for good once ptrace is refused.
type starter struct {
	traced bool
	trace  func(procSpec) (int, *syscall.WaitStatus, error) // startTraced; tests fake it
	warm   *warmSystem
	log    *slog.Logger
}

func newStarter(noPtrace bool, log *slog.Logger) *starter {
	if log == nil {
		log = discardLogger()
	}
	return &starter{traced: !noPtrace, trace: startTraced, warm: &warmSystem{}, log: log}
}

// start is system.start.
func (s *starter) start(p procSpec, execd func(error), exited func(syscall.WaitStatus)) (int, error) {
	if s.traced && p.bin == nil {
		pid, died, err := s.trace(p)
		if err == nil {
			go func() {
				execd(nil) // StartTraced returns once the exec is done
				if died != nil {
					exited(*died)
				} else {
					exited(waitPid(pid))
				}
			}()
			return pid, nil
		}
		if errors.Is(err, exechelper.ErrNotTraced) {
			s.traced = false
			s.log.Info("generations start through relaunch's exec helper from now on, a few ms slower: " + err.Error() + " (--no-ptrace does so from the start)")
		}
	}
	pid, pipe := s.warm.take(p)
	if pid == 0 {
		var err error
		if pid, pipe, err = startProcess(p.path, p.argv, p.env, p.socks, p.stdin, p.bin); err != nil {
			return 0, err
		}
	}
	go func() {
		execd(readExecError(pipe))
		exited(waitPid(pid))
	}()
	return pid, nil
}

// prepare is system.prepare: a warm helper, when starts use the helper.
func (s *starter) prepare(p procSpec) (int, error) {
	if s.traced {
		return 0, nil
	}
	return s.warm.prepare(p)
}

// startTraced starts p's command itself, in its own process group, with
// exactly stdio and the sockets, LISTEN_PID set by the traced start
// (exechelper.StartTraced). Every fd of relaunch's own is marked
// close-on-exec first, as the helper does for its own: fds relaunch itself
// inherited without it (a shell's) must not leak into the app.
func startTraced(p procSpec) (pid int, died *syscall.WaitStatus, err error) {
	if err := exechelper.SetIDOrCaps(p.path); err != nil {
		return 0, nil, err
	}
	files := []uintptr{uintptr(p.stdin), 1, 2}
	for _, s := range p.socks {
		files = append(files, uintptr(s.Fd()))
	}
	exechelper.CloseOnExecFrom(3)
	return exechelper.StartTraced(p.path, p.argv, p.env, &syscall.ProcAttr{
		Files: files,
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
}
