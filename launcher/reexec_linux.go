package launcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/internal/broker"
	"github.com/relaunch/relaunch/internal/keeper"
	"github.com/relaunch/relaunch/sdlisten"
)

// relaunch reexec: relaunch execs its own binary anew, as nginx's master
// does, to upgrade itself. The pid stays, so the generations stay its
// children; every fd it must keep (listeners, notify sockets, the control
// and handoff sockets, the binaries kept for rollback) stays open through
// the exec, and a JSON description of the state goes along in a memfd whose
// number is in RELAUNCH_REEXEC. The new program adopts all of it and waits
// for each generation by pid.
//
// Before the exec the new binary is run once with the same command line and
// RELAUNCH_REEXEC_CHECK=1: it parses and checks the options and exits, so a
// broken or incompatible build is refused while the old relaunch still runs.

const (
	reexecEnv      = "RELAUNCH_REEXEC"
	ReexecCheckEnv = "RELAUNCH_REEXEC_CHECK" // main exits 0 after checking the options
	ReexecSignal   = syscall.SIGTTIN         // see the README: every other standard signal is taken
	reexecCheckMax = 10 * time.Second
	reexecWaitMax  = 30 * time.Second // for a starting generation, a build, a handoff in flight
)

// selfPath is the path relaunch was started as, read once at start: after
// a deploy replaced the file, /proc/self/exe names the old, deleted inode.
// A symbolic link stays one (/usr/bin/relaunch → /opt/relaunch-1.2/relaunch):
// a deploy may point it elsewhere.
// Run sets them: the exec helper, which runs this package's init for
// every generation, need not look.
var selfPath string
var selfPathErr error

func startedAs() (string, error) {
	exe, err := os.Executable()
	if err != nil || len(os.Args) == 0 {
		return exe, err
	}
	arg := os.Args[0]
	if !strings.ContainsRune(arg, '/') {
		if arg, err = exec.LookPath(arg); err != nil {
			return exe, nil
		}
	}
	abs, err := filepath.Abs(arg)
	if err != nil {
		return exe, nil
	}
	a, err1 := os.Stat(abs)
	b, err2 := os.Stat(exe)
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		return exe, nil // argv[0] is not this binary (a login shell's "-sh", a wrapper)
	}
	return abs, nil
}

type reexecState struct {
	Format        int               `json:"format"`
	Binary        string            `json:"binary"`
	Began         time.Time         `json:"began"`
	RunDir        string            `json:"run_dir"`
	Listeners     [][]sdlisten.Kept `json:"listeners"` // per --listen: its socket, or its pool's slots
	Pools         []bool            `json:"pools"`
	Frozen        []int             `json:"frozen"`
	SteerSlot     int               `json:"steer_slot"`
	LastID        int               `json:"last_id"`
	Cur           int               `json:"cur"` // a generation id; 0 for none
	EverUp        bool              `json:"ever_up"`
	LearnedNotify bool              `json:"learned_notify"`
	LearnedListen bool              `json:"learned_listen"`
	WarnedBlind   bool              `json:"warned_blind"`
	WarnedDrain   bool              `json:"warned_drain"`
	Backoff       time.Duration     `json:"backoff"`
	RestartIn     time.Duration     `json:"restart_in"` // -1: no restart scheduled
	Gens          []keptGen         `json:"gens"`
	PrevBin       *keptFile         `json:"prev_bin,omitempty"`
	CrashBin      *keptFile         `json:"crash_bin,omitempty"`
	Handoff       int               `json:"handoff"`
	Receivers     []broker.Kept     `json:"receivers"`
	Control       int               `json:"control"` // -1: none
	Clients       []int             `json:"clients"` // `relaunch reexec` connections waiting for the outcome
	LastFailure   string            `json:"last_failure"`
	LastFailureAt time.Time         `json:"last_failure_at"`
	RunDirFd      int               `json:"run_dir_fd,omitempty"` // with its flock; 0 from a build that kept none: RunDir is opened again
	Keeper        int               `json:"keeper,omitempty"`     // relaunch's end of its keeper; 0: none
	KeeperPid     int               `json:"keeper_pid,omitempty"`
	StateFd       int               `json:"state_fd,omitempty"` // the saved state's memfd; 0: none
}

type keptGen struct {
	ID         int       `json:"id"`
	Pid        int       `json:"pid"`
	Path       string    `json:"path"`
	Slot       int       `json:"slot"`
	State      genState  `json:"state"`
	Started    time.Time `json:"started"`
	ReadyAt    time.Time `json:"ready_at"`
	DrainAt    time.Time `json:"drain_at"`
	Notify     int       `json:"notify"`
	NotifyPath string    `json:"notify_path"`
	Bin        *keptFile `json:"bin,omitempty"`
	FailReason string    `json:"fail_reason"`
	Adopted    bool      `json:"adopted,omitempty"` // not relaunch's child: its exit is seen through a pidfd
}

type keptFile struct {
	Fd   int    `json:"fd"`
	Name string `json:"name"`
}

// Resume is a relaunch carried across its exec of itself: the listeners
// for main, the rest for Run (Config.Resume).
type Resume struct {
	Listeners []Listener
	st        reexecState
}

// Resumed returns what the previous program left when this one is its
// re-exec, and nil otherwise.
func Resumed() (*Resume, error) {
	v, ok := os.LookupEnv(reexecEnv)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(reexecEnv)
	fd, err := strconv.Atoi(v)
	if err != nil {
		return nil, fmt.Errorf("bad %s=%q", reexecEnv, v)
	}
	f := os.NewFile(uintptr(fd), "relaunch state")
	defer f.Close()
	var r Resume
	d := json.NewDecoder(f)
	d.DisallowUnknownFields()
	if err := d.Decode(&r.st); err != nil {
		return nil, fmt.Errorf("reading the state the previous relaunch left: %v", err)
	}
	for i, ks := range r.st.Listeners {
		var ln Listener
		if r.st.Pools[i] {
			ln.Pool, err = sdlisten.AdoptPool(ks)
		} else if len(ks) == 1 {
			ln.Socket, err = sdlisten.Adopt(ks[0])
		} else {
			err = fmt.Errorf("listener %d: %d sockets", i, len(ks))
		}
		if err != nil {
			return nil, err
		}
		r.Listeners = append(r.Listeners, ln)
	}
	return &r, nil
}

// onReexec asks for a re-exec; c (nil for the signal) gets the outcome.
func (l *launcher) onReexec(c *os.File) {
	if l.stopping {
		answerFile(c, Answer{Error: "relaunch is stopping"})
		return
	}
	if l.canary != nil {
		// Its share, timer and probes live in this program only.
		msg := fmt.Sprintf("%s is a canary: relaunch promote or relaunch abort first, then reexec", l.canary)
		l.log.Warn("reexec refused: " + msg)
		answerFile(c, Answer{Error: msg})
		return
	}
	if l.cfg.Workers > 0 {
		// The state carried over knows one process per generation.
		msg := "relaunch reexec does not carry workers over yet (--workers): restart relaunch instead"
		l.log.Warn("reexec refused: " + msg)
		answerFile(c, Answer{Error: msg})
		return
	}
	if c != nil {
		l.reexecClients = append(l.reexecClients, c)
	}
	if l.reexecAsked.IsZero() {
		l.reexecAsked = time.Now()
		l.log.Info("reexec: checking " + selfPath)
		l.reexecCheck()
	}
}

// reexecCheck runs the new binary with the same options and
// RELAUNCH_REEXEC_CHECK=1, off the loop; the exec follows if it passes.
func (l *launcher) reexecCheck() {
	if selfPathErr != nil {
		l.reexecFailed("cannot tell relaunch's own binary: " + selfPathErr.Error())
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), reexecCheckMax)
	cmd := exec.CommandContext(ctx, selfPath, os.Args[1:]...)
	cmd.Env = append(withoutEnv(os.Environ(), reexecEnv), ReexecCheckEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	st, _, _ := l.describe() // its fds mean nothing to the check: only its form
	b, _ := json.Marshal(st)
	cmd.Stdin = bytes.NewReader(b)
	if err := cmd.Start(); err != nil {
		cancel()
		l.reexecFailed(fmt.Sprintf("cannot run %s: %v", selfPath, errors.Unwrap(err)))
		return
	}
	l.checkPid = cmd.Process.Pid
	go func() {
		err := cmd.Wait()
		cancel()
		l.post(func() {
			l.checkPid = 0
			if err != nil {
				msg := strings.TrimSpace(out.String())
				if msg == "" {
					msg = err.Error()
				}
				l.reexecFailed(fmt.Sprintf("%s refuses this command line (%v): %s", selfPath, err, firstLine(msg)))
				return
			}
			l.tryReexec()
		})
	}()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.TrimPrefix(s, "relaunch: ")
}

// reexecBlocker says what must end before the exec, or "".
func (l *launcher) reexecBlocker() string {
	switch {
	case l.next != nil:
		return fmt.Sprintf("gen %d is starting", l.next.id)
	case l.buildPid != 0:
		return "a build is running"
	case l.pending != "":
		return "an upgrade is waiting for a slot"
	case l.relays > 0:
		return fmt.Sprintf("relaunch relays %d rescued connection(s)", l.relays)
	case len(l.probes) > 0:
		return "a health probe is in flight" // its route lives in this program only
	}
	for _, g := range l.gens {
		if g.state == settling {
			return fmt.Sprintf("gen %d is handing over", g.id)
		}
	}
	if _, _, why := l.handoff.Keep(); why != "" {
		return why
	}
	return ""
}

// tryReexec execs when nothing is in flight, else looks again shortly.
func (l *launcher) tryReexec() {
	if l.reexecAsked.IsZero() || l.checkPid != 0 {
		return
	}
	if l.stopping {
		l.reexecFailed("relaunch is stopping")
		return
	}
	if why := l.reexecBlocker(); why != "" {
		if time.Since(l.reexecAsked) > reexecWaitMax {
			l.reexecFailed(fmt.Sprintf("still busy after %s: %s", reexecWaitMax, why))
			return
		}
		time.AfterFunc(20*time.Millisecond, func() { l.post(l.tryReexec) })
		return
	}
	l.dropNotify() // its file would stay in the runtime directory, which the new program keeps
	err := l.execSelf()
	l.reexecFailed(fmt.Sprintf("exec %s: %v", selfPath, err))
}

func (l *launcher) reexecFailed(why string) {
	l.log.Error("reexec failed: " + why + "; this relaunch goes on")
	for _, c := range l.reexecClients {
		answerFile(c, Answer{Error: "reexec failed: " + why})
	}
	l.reexecClients, l.reexecAsked = nil, time.Time{}
}

func answerFile(c *os.File, a Answer) {
	if c == nil {
		return
	}
	b, _ := json.Marshal(a)
	c.Write(append(b, '\n'))
	c.Close()
}

// stateFormat is the version of reexecState's JSON. A program that
// reads another one (or meets a field it does not know) refuses the
// re-exec at its check, while the old relaunch still runs.
const stateFormat = 1

// describe is the state to pass on, every fd it names, and what in
// flight an exec now would lose ("" for nothing).
func (l *launcher) describe() (st reexecState, keep []int, busy string) {
	st = reexecState{Format: stateFormat, Binary: selfPath, Began: l.reexecAsked, RunDir: l.runDir.path, RunDirFd: l.runDir.fd, Frozen: l.frozen, SteerSlot: l.steerSlot,
		LastID: l.lastID, EverUp: l.everUp, LearnedNotify: l.learnedNotify, LearnedListen: l.learnedListen,
		WarnedBlind: l.warnedBlind, WarnedDrain: l.warnedDrain, Backoff: l.backoff, RestartIn: -1, Control: -1,
		LastFailure: l.lastFailure, LastFailureAt: l.lastFailureAt}
	for _, ln := range l.cfg.Listeners {
		var ks []sdlisten.Kept
		if ln.Pool != nil {
			ks = ln.Pool.Keep()
		} else {
			ks = []sdlisten.Kept{ln.Socket.Keep()}
		}
		for _, k := range ks {
			keep = append(keep, k.Fd)
		}
		st.Listeners = append(st.Listeners, ks)
		st.Pools = append(st.Pools, ln.Pool != nil)
	}
	if l.cur != nil {
		st.Cur = l.cur.id
	}
	if l.restartTimer != nil {
		st.RestartIn = max(0, time.Until(l.restartAt))
	}
	keepFile := func(f *os.File) *keptFile {
		if f == nil {
			return nil
		}
		keep = append(keep, int(f.Fd()))
		return &keptFile{Fd: int(f.Fd()), Name: f.Name()}
	}
	for _, g := range l.gens {
		k := keptGen{ID: g.id, Pid: g.pid, Path: g.path, Slot: g.slot, State: g.state, Started: g.started,
			ReadyAt: g.readyAt, DrainAt: g.drainAt, Notify: g.notify.Fd(), NotifyPath: g.notify.Path(),
			Bin: keepFile(g.bin), FailReason: g.failReason, Adopted: g.adopted}
		keep = append(keep, k.Notify)
		st.Gens = append(st.Gens, k)
	}
	st.PrevBin = keepFile(l.prevBin)
	st.CrashBin = keepFile(l.crashBin)
	keep = append(keep, st.RunDirFd) // and with it, its flock
	st.Handoff, st.Receivers, busy = l.handoff.Keep()
	keep = append(keep, st.Handoff)
	for _, r := range st.Receivers {
		keep = append(keep, r.Fd)
	}
	if l.control != nil {
		st.Control = rawFd(l.control)
		keep = append(keep, st.Control)
	}
	for _, c := range l.reexecClients {
		st.Clients = append(st.Clients, int(c.Fd()))
		keep = append(keep, int(c.Fd()))
	}
	if l.keeper != nil && l.keeper.Conn() >= 0 {
		st.Keeper, st.KeeperPid = l.keeper.Conn(), l.keeper.Pid()
		keep = append(keep, st.Keeper)
	}
	if l.stateFd >= 0 {
		st.StateFd = l.stateFd
		keep = append(keep, st.StateFd)
	}
	return st, keep, busy
}

// CheckState reads a state from r as the new program would: the check
// before a re-exec gives it the state on stdin.
func CheckState(r io.Reader) error {
	var st reexecState
	d := json.NewDecoder(r)
	d.DisallowUnknownFields()
	if err := d.Decode(&st); err != nil {
		return fmt.Errorf("this build cannot read the running relaunch's state: %v", err)
	}
	if st.Format != stateFormat {
		return fmt.Errorf("this build reads state format %d, the running relaunch writes %d", stateFormat, st.Format)
	}
	return nil
}

// execSelf keeps the state's fds open and execs. It returns only if the
// exec failed, with everything as it was.
func (l *launcher) execSelf() error {
	st, keep, busy := l.describe()
	if busy != "" {
		return errors.New(busy)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	mfd, err := unix.MemfdCreate("relaunch-state", 0) // not close-on-exec: the new program reads it
	if err != nil {
		return os.NewSyscallError("memfd_create", err)
	}
	defer unix.Close(mfd) // reached only when the exec failed
	if _, err := unix.Write(mfd, b); err != nil {
		return os.NewSyscallError("write", err)
	}
	if _, err := unix.Seek(mfd, 0, 0); err != nil {
		return os.NewSyscallError("lseek", err)
	}
	for _, fd := range keep {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("keep fd %d open: %w", fd, err)
		}
	}
	defer func() {
		for _, fd := range keep {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}()
	env := append(withoutEnv(os.Environ(), reexecEnv), reexecEnv+"="+strconv.Itoa(mfd))
	l.outer.reloading("relaunch re-executes itself")
	l.log.Info(fmt.Sprintf("reexec: exec %s, keeping %d generation(s) and %d fd(s)", selfPath, len(l.gens), len(keep)))

	// A signal that comes during the exec: USR1, USR2 and TTIN are blocked
	// in this thread, and so stay pending for the new program; HUP and INT
	// are ignored, which Go keeps until the new program asks for them
	// (otherwise their default action would end relaunch).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set, old unix.Sigset_t
	for _, s := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGUSR2, ReexecSignal} {
		set.Val[(s-1)/64] |= 1 << ((uint(s) - 1) % 64)
	}
	unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old)
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT)
	err = syscall.Exec(selfPath, os.Args, env)
	unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	CatchSignals()
	l.outer.ready("reexec failed; " + l.stillServes())
	return err
}

// resume restores the state the previous program described, in Run
// before the loop.
func (l *launcher) resume(r *Resume) error {
	st := &r.st
	l.frozen, l.steerSlot, l.lastID = st.Frozen, st.SteerSlot, st.LastID
	l.everUp, l.learnedNotify, l.learnedListen = st.EverUp, st.LearnedNotify, st.LearnedListen
	l.warnedBlind, l.warnedDrain, l.backoff = st.WarnedBlind, st.WarnedDrain, st.Backoff
	l.lastFailure, l.lastFailureAt = st.LastFailure, st.LastFailureAt
	adoptFile := func(k *keptFile) *os.File {
		if k == nil {
			return nil
		}
		unix.FcntlInt(uintptr(k.Fd), unix.F_SETFD, unix.FD_CLOEXEC)
		return os.NewFile(uintptr(k.Fd), k.Name)
	}
	l.prevBin = adoptFile(st.PrevBin)
	l.crashBin = adoptFile(st.CrashBin)
	if st.Keeper > 0 {
		l.keeper = keeper.Resume(st.Keeper, st.KeeperPid, keeperGone(l.log))
	}
	if st.StateFd > 0 {
		unix.CloseOnExec(st.StateFd)
		l.stateFd = st.StateFd
	}
	var names []string
	for _, k := range st.Gens {
		g := &generation{id: k.ID, pid: k.Pid, path: k.Path, slot: k.Slot, state: k.State, started: k.Started,
			readyAt: k.ReadyAt, drainAt: k.DrainAt, bin: adoptFile(k.Bin), failReason: k.FailReason, adopted: k.Adopted}
		var err error
		if g.notify, err = sdlisten.AdoptNotify(k.Notify, k.NotifyPath); err != nil {
			return err
		}
		l.gens = append(l.gens, g)
		l.roots.add(g.id, g.pid)
		if g.id == st.Cur {
			l.cur = g
		}
		if g.adopted {
			if err := l.watchAdopted(g); err != nil {
				return err
			}
			go l.readNotify(g, g.notify)
			names = append(names, fmt.Sprintf("%s %s (adopted)", g, g.state))
			continue
		}
		go func() {
			ws, err := waitPidErr(g.pid)
			l.post(func() {
				if err != nil && g.failReason == "" {
					g.failReason = "its exit status was lost in relaunch's re-exec"
				}
				l.onExit(g, exitStatus{ws})
			})
		}()
		go l.readNotify(g, g.notify)
		if g.state == draining && l.cfg.DrainTimeout > 0 {
			l.drainTimer(g, l.cfg.DrainTimeout-time.Since(g.drainAt))
		}
		names = append(names, fmt.Sprintf("%s %s", g, g.state))
	}
	if l.cur != nil {
		l.handoff.SetCurrent(l.cur.id)
		l.watchHealth(l.cur) // --health-interval goes on
	}
	if st.RestartIn >= 0 {
		l.restartIn(st.RestartIn)
	}
	// What steered where before the exec is not kept: connections on other
	// slots in the next minute are taken as late handshakes.
	for s := range l.usedSlots() {
		if s != l.steerSlot {
			l.awaySince[s] = time.Now()
		}
	}
	if p := l.firstPool(); p >= 0 {
		for s := 0; s < l.cfg.Listeners[p].Pool.Len(); s++ {
			if s != l.steerSlot {
				l.awaySince[s] = time.Now()
			}
		}
	}
	l.armSlots()
	took := time.Since(st.Began)
	l.log.Info(fmt.Sprintf("reexec: relaunch %s (pid %d) took over in %s, keeping %s", l.cfg.Version, os.Getpid(), ms(took), orNone(names)),
		"took_ms", took.Milliseconds(), "binary", st.Binary)
	l.outer.ready("relaunch re-executed; " + l.stillServes())
	out := &ReexecOutcome{Pid: os.Getpid(), Binary: st.Binary, Version: l.cfg.Version, TookMS: took.Milliseconds(), Generations: len(l.gens)}
	for _, fd := range st.Clients {
		answerFile(os.NewFile(uintptr(fd), "relaunch reexec client"), Answer{Reexec: out})
	}
	return nil
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "no generation"
	}
	return strings.Join(names, ", ")
}

// waitPidErr is waitPid that says when pid was no child to wait for: the
// previous program had reaped it just before its exec.
func waitPidErr(pid int) (syscall.WaitStatus, error) {
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			return ws, err
		}
	}
}

// rawFd is a socket's fd, or -1.
func rawFd(c syscall.Conn) int {
	fd := -1
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(f uintptr) { fd = int(f) })
	}
	return fd
}
