package launcher

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/internal/exechelper"
	"github.com/relaunch/relaunch/internal/listenprobe"
	"github.com/relaunch/relaunch/sdlisten"
)

type genState int

const (
	starting genState = iota // started, not ready yet
	current                  // ready, serving
	settling                 // steered away from, its queue emptying; not yet told to drain
	draining                 // got the drain signal
	stopping                 // got TERM/INT/QUIT from a stop of relaunch
	canary                   // ready, gets a share of new connections (--canary)
)

func (s genState) String() string {
	return [...]string{"starting", "current", "settling", "draining", "stopping", "canary"}[s]
}

// generation is one start of the command. Its fields belong to the loop
// goroutine; its own goroutines only post events.
type generation struct {
	id      int
	pid     int
	path    string // the file that was exec'd
	slot    int    // its slot in every steered pool; -1 without pools
	probe   *listenprobe.Probe
	bin     *os.File // the file it runs, kept open: a rollback runs it again
	state   genState
	started time.Time
	readyAt time.Time
	drainAt time.Time // when the drain signal was sent

	notify     *sdlisten.NotifyListener
	timers     []timer // stopped when it exits
	failReason string  // why relaunch killed it, for the exit log line
	execErr    error   // the helper could not exec the command
	exited     bool
	warnedOwn  bool   // said that it listens on a socket of its own
	notified   bool   // sent READY=1
	acceptHow  string // how it was seen accepting while starting, when READY=1 is also awaited
	readyHow   string // what made it ready, for status
	// drainDefault: the drain signal, when sent, had its default action
	// in it (or that could not be read)
	drainDefault bool
	usr1         bool // a USR1 came while it was starting: passed on once it is ready
	adopted      bool // started by a relaunch that died; relaunch took it over (adopt_linux.go)
	rollback     bool // it runs the file a rollback asked for (l.startFrom)
	tripwire     bool // its upgrade's tripwire check is still due (tripwire_linux.go)
	replaced     bool // the tripwire stopped steering on its slot: a fresh generation took its place

	startTicks uint64 // when it started, in /proc's clock ticks: what it forked started later

	why       string // why it was started (the upgrade's trigger), for status
	readyBy   string // --health: how its --ready condition held; "" while it has not
	healthy   bool   // --health: a probe answered 2xx
	probing   bool   // a health probe is in flight
	health    string // the last probe's answer
	fails     int    // failed health probes in a row, while it serves
	unhealthy string // why a fresh generation replaces it
	wasCanary bool   // it was a canary: its next readiness promotes it

	scanSeq int       // the scan due is the one armed last (fastscan_linux.go)
	fast    *fastScan // the fast scan while it starts; nil before its first epoll instance is seen

	// --workers (workers_linux.go): a generation of workers has no process
	// of its own (its pid and slot are worker 0's, for status and the log);
	// each worker is a *generation with lead set and a process.
	workers  []*generation // a generation of workers: them, by index
	retired  []*generation // a generation of workers: those relaunch scale took away, draining
	lead     *generation   // a worker: its generation
	worker   int           // a worker: its index (RELAUNCH_WORKER)
	restarts int           // a worker: restarts after it exited by itself
	backoff  time.Duration // a worker: its next crash restart delay
	restartT timer         // a worker: its restart, pending
	failSt   *exitStatus   // a generation of workers: how the first one that failed it exited
}

// exitStatus is a wait status as a shell reports it: the code, or 128+signal.
type exitStatus struct {
	ws syscall.WaitStatus
}

func (s exitStatus) code() int {
	if s.ws.Signaled() {
		return 128 + int(s.ws.Signal())
	}
	return s.ws.ExitStatus()
}

func (s exitStatus) String() string {
	if s.ws.Signaled() {
		return "killed by " + signalName(s.ws.Signal())
	}
	return "status " + strconv.Itoa(s.ws.ExitStatus())
}

// startProcess forks relaunch's own binary as the exec helper
// (internal/exechelper), in its own process group, with exactly stdio, the sockets
// and the helper's error pipe. It returns the pid and the read end of the
// pipe: EOF there means the exec succeeded, bytes are the exec error.
//
// With bin, the helper execs that open file (/proc/self/fd/N resolves before
// the exec closes the fd), whatever is at path now: a rollback.
func startProcess(path string, argv, env []string, socks []*sdlisten.Socket, stdin int, bin *os.File) (int, *os.File, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return 0, nil, fmt.Errorf("pipe: %w", err)
	}
	r := os.NewFile(uintptr(p[0]), "exec-error-pipe")
	files := []uintptr{uintptr(stdin), 1, 2}
	for _, s := range socks {
		files = append(files, uintptr(s.Fd()))
	}
	errFd := len(files)
	files = append(files, uintptr(p[1]))
	if bin != nil {
		files = append(files, bin.Fd())
		path = fmt.Sprintf("/proc/self/fd/%d", errFd+1)
	}
	env = append(env, exechelper.Env(path, errFd)...)
	pid, err := syscall.ForkExec("/proc/self/exe", argv, &syscall.ProcAttr{
		Env:   env,
		Files: files,
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	unix.Close(p[1])
	if err != nil {
		r.Close()
		return 0, nil, fmt.Errorf("cannot start the exec helper (/proc/self/exe): %w", err)
	}
	return pid, r, nil
}

// dupFile opens f again as a new fd (close-on-exec), with f's name.
func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// isScript says whether f starts with "#!".
func isScript(f *os.File) bool {
	b := make([]byte, 2)
	n, _ := f.ReadAt(b, 0)
	return n == 2 && string(b) == "#!"
}

// readExecError blocks until the helper has exec'd (EOF) or failed.
func readExecError(r *os.File) error {
	defer r.Close()
	b, _ := io.ReadAll(io.LimitReader(r, 4096))
	if len(b) == 0 {
		return nil
	}
	return errors.New(string(b))
}

// execHint says what to do about an exec failure.
func execHint(err error) string {
	switch msg := err.Error(); {
	case strings.HasSuffix(msg, "exec format error"):
		return ": it is not a program for this machine (built for another OS or CPU?) nor a script with a #! line"
	case strings.HasSuffix(msg, "no such file or directory"):
		return ": the file, or the interpreter named on its #! line, is missing"
	case strings.HasSuffix(msg, "permission denied"):
		return ": make it executable (chmod +x) and check its directories are searchable"
	}
	return ""
}

// stdinFd is what the children get as fd 0: relaunch's own, except a
// terminal. A child in its own process group is not the terminal's
// foreground group, and reading from it would stop it with SIGTTIN.
func stdinFd() (int, func()) {
	if _, err := unix.IoctlGetTermios(0, unix.TCGETS); err != nil {
		return 0, func() {}
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		return 0, func() {}
	}
	return int(f.Fd()), func() { f.Close() }
}

// String is how the log names a generation: "gen 3 (pid 4242)".
func (g *generation) String() string {
	switch {
	case g.lead != nil:
		return fmt.Sprintf("gen %d worker %d (pid %d)", g.id, g.worker, g.pid)
	case g.workers != nil:
		pids := make([]string, len(g.workers))
		for i, w := range g.workers {
			pids[i] = strconv.Itoa(w.pid)
		}
		return fmt.Sprintf("gen %d (pids %s)", g.id, strings.Join(pids, " "))
	}
	return fmt.Sprintf("gen %d (pid %d)", g.id, g.pid)
}
