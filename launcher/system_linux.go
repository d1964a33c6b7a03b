package launcher

import (
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/relaunch/relaunch/internal/listenprobe"
	"github.com/relaunch/relaunch/sdlisten"
)

// system is what the loop does to the world around it: start a
// generation's process, signal it, read the clock, set timers. Run uses
// osSystem; the state machine's tests (machine_test.go) use a fake that
// records what the loop asked for, says what the processes do, and moves a
// clock of its own.
type system struct {
	// start forks one generation's process and returns its pid. Later, from
	// any goroutine, it calls execd once the app was exec'd (nil) or could
	// not be (why), then exited when the process is gone.
	start     func(p procSpec, execd func(error), exited func(syscall.WaitStatus)) (int, error)
	signal    func(pid int, sig syscall.Signal)  // to one process
	killGroup func(pgid int, sig syscall.Signal) // to a generation's whole process group
	now       func() time.Time
	afterFunc func(d time.Duration, f func()) timer // f runs on a goroutine of its own
	// probe runs one health probe off the loop and calls done with its
	// answer, from a goroutine of its own.
	probe func(p probeSpec, done func(probeResult))
	// handles says whether a process catches, ignores or blocks sig (its
	// SigCgt, SigIgn, SigBlk); known is false when that cannot be read.
	handles func(pid int, sig syscall.Signal) (handled, known bool)
	// scan looks at a generation's process tree in /proc (listenprobe).
	scan func(p *listenprobe.Probe, root int) listenprobe.Result
	// polls looks in one epoll instance's set only (listenprobe).
	polls func(p *listenprobe.Probe, ref listenprobe.EpollRef) listenprobe.Result
	// watchExit calls exited, from any goroutine, when pid (not relaunch's
	// child: an adopted generation) is gone.
	watchExit func(pid int, exited func()) error

	// prepare starts the exec helper of a next start ahead, with p's
	// sockets and stdin (warm_linux.go), and returns its pid; a start that
	// fits it then runs on it. discard kills it. Both optional (nil).
	prepare func(p procSpec) (int, error)
	discard func()
}

// timer is a *time.Timer, or a fake one.
type timer interface{ Stop() bool }

// procSpec is what a generation's process is started with.
type procSpec struct {
	path  string
	argv  []string
	env   []string
	socks []*sdlisten.Socket // fds 3 on
	stdin int
	bin   *os.File // run this open file instead of path (a rollback, a crash restart)
}

// osSystem is the real system; starts go as starter (start_linux.go) says.
func osSystem(noPtrace bool, log *slog.Logger) system {
	st := newStarter(noPtrace, log)
	return system{
		start:     st.start,
		signal:    func(pid int, sig syscall.Signal) { syscall.Kill(pid, sig) },
		killGroup: killGroup,
		now:       time.Now,
		afterFunc: func(d time.Duration, f func()) timer { return time.AfterFunc(d, f) },
		probe:     func(p probeSpec, done func(probeResult)) { go func() { done(httpProbe(p)) }() },
		handles:   signalHandled,
		scan:      (*listenprobe.Probe).Scan,
		polls:     (*listenprobe.Probe).Polls,
		watchExit: watchPidfd,
		prepare:   st.prepare,
		discard:   st.warm.discard,
	}
}
