package launcher

import (
	"errors"
	"log/slog"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

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

// Go's garbage collector is put off from a generation's start until the
// next one is prepared (--settle + 250 ms after it is ready), or gcHoldMax:
// GOGC is gcHoldPercent meanwhile. A cycle takes a P for its mark workers:
// one that the start's own allocations set off left the goroutine of a
// traced start, locked to its thread, without a P for up to 3 ms (perf
// sched, under the benchmark's load on 2 cores) while the app sat stopped
// at its exec. The heap may grow meanwhile by what a start allocates, some
// hundred KiB; the cycle put off runs once the switch is over. Not GOGC=off:
// turning the collector off waits for a cycle under way to end (2 ms at the
// trigger, measured), raising GOGC does not.
const (
	gcHoldMax     = 10 * time.Second
	gcHoldPercent = 400
)

// holdGC puts the collector off, from a start on.
func (l *launcher) holdGC() {
	if !l.gcHeld {
		gcHolds.hold()
		l.gcHeld = true
	}
	l.gcHeldAt = l.sys.now()
	l.after(nil, gcHoldMax, func() {
		if l.sys.now().Sub(l.gcHeldAt) >= gcHoldMax {
			l.releaseGC() // a start that never got ready
		}
	})
}

// releaseGC lets the collector run again, as relaunch set it.
func (l *launcher) releaseGC() {
	if l.gcHeld {
		gcHolds.release()
		l.gcHeld = false
	}
}

// gcHolds counts the launchers holding the collector off: one in relaunch,
// several in tests.
var gcHolds gcHoldCount

type gcHoldCount struct {
	mu      sync.Mutex
	n       int
	percent int // GOGC before the first hold
}

func (c *gcHoldCount) hold() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n++; c.n == 1 {
		c.percent = debug.SetGCPercent(gcHoldPercent)
		if c.percent < 0 || c.percent > gcHoldPercent {
			debug.SetGCPercent(c.percent) // GOGC=off, or higher: as it is
		}
	}
}

func (c *gcHoldCount) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n--; c.n == 0 {
		debug.SetGCPercent(c.percent)
	}
}
