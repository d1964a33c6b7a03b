package launcher

import (
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/internal/broker"
	"github.com/relaunch/relaunch/internal/listenprobe"
	"github.com/relaunch/relaunch/sdlisten"
)

// The state machine, in-process: the loop runs on the test's goroutine
// against a fake system (fakeSys) whose processes do what the test says and
// whose clock moves only when the test advances it. Each test takes
// milliseconds. What needs real processes, sockets under load and signals
// is the root package's end-to-end tests.

// fakeProc is a generation's process as the fake system runs it.
type fakeProc struct {
	pid    int
	spec   procSpec
	exited func(syscall.WaitStatus)
	alive  bool
	// What it does with signals: a well-behaved app exits 0 on its drain
	// signal and on TERM/INT; a stuck one only dies of SIGKILL.
	stuck bool
	got   []syscall.Signal
	// dieOfDrain: it dies of the drain signal (its default action, or a
	// handler that drains and re-raises it) instead of exiting 0.
	dieOfDrain bool
	// catchesDrain: its /proc status shows the drain signal caught.
	catchesDrain bool
	// accepting: /proc shows it accepting on its socket, with an epoll
	// instance that is its fd epollFd (fakeEpollFd when 0).
	accepting bool
	epollFd   int
}

const fakeEpollFd = 7

func (pr *fakeProc) epoll() int {
	if pr.epollFd == 0 {
		return fakeEpollFd
	}
	return pr.epollFd
}

type fakeTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

func (t *fakeTimer) Stop() bool {
	was := !t.stopped
	t.stopped = true
	return was
}

// machine is a launcher on a fake system.
type machine struct {
	t      *testing.T
	l      *launcher
	log    *lockedBuffer
	now    time.Time
	timers []*fakeTimer
	procs  []*fakeProc // in start order
	// execErr, when set, makes the next start's exec fail (a missing
	// binary) and the process exit 127.
	execErr error
	// stuckNext makes the next start's process ignore every signal but
	// SIGKILL.
	stuckNext bool
	// adopting, when set, is what newMachine adopts (as after relaunch's
	// death) instead of starting a first generation; their processes are
	// m.orphan's.
	adopting []adoptable
	// probes are the health probes asked for and not answered yet.
	probes []*fakeProbe
	// scans counts the /proc scans of each root pid.
	scans map[int]int
	polls map[int]int // pid → reads of one of its epoll instances
}

// orphan is a process a relaunch that died started: alive, not relaunch's
// child.
func (m *machine) orphan(pid int) *fakeProc {
	pr := &fakeProc{pid: pid, alive: true, exited: func(syscall.WaitStatus) {}}
	m.procs = append(m.procs, pr)
	return pr
}

// fakeProbe is a health probe the test answers (machine.answer).
type fakeProbe struct {
	spec probeSpec
	done func(probeResult)
}

func (m *machine) sys() system {
	return system{
		start: func(p procSpec, execd func(error), exited func(syscall.WaitStatus)) (int, error) {
			pr := &fakeProc{pid: 1000 + len(m.procs), spec: p, exited: exited, alive: true, stuck: m.stuckNext}
			m.stuckNext = false
			m.procs = append(m.procs, pr)
			if err := m.execErr; err != nil {
				m.execErr = nil
				execd(err)
				m.exit(pr, exitCode(127))
				return pr.pid, nil
			}
			execd(nil)
			return pr.pid, nil
		},
		signal: func(pid int, sig syscall.Signal) {
			pr := m.proc(pid)
			if pr == nil || !pr.alive {
				return
			}
			pr.got = append(pr.got, sig)
			switch {
			case sig == syscall.SIGKILL:
				m.exit(pr, killedBy(sig))
			case !pr.stuck && sig == m.l.cfg.DrainSignal && pr.dieOfDrain:
				m.exit(pr, killedBy(sig))
			case !pr.stuck && (sig == m.l.cfg.DrainSignal || sig == syscall.SIGTERM || sig == syscall.SIGINT):
				m.exit(pr, exitCode(0))
			}
		},
		killGroup: func(pgid int, sig syscall.Signal) {
			if pr := m.proc(pgid); pr != nil && pr.alive && sig == syscall.SIGKILL {
				pr.got = append(pr.got, sig)
				m.exit(pr, killedBy(sig))
			}
		},
		probe: func(p probeSpec, done func(probeResult)) {
			unix.Close(p.fd) // the test answers; nothing connects
			m.probes = append(m.probes, &fakeProbe{spec: p, done: done})
		},
		handles: func(pid int, sig syscall.Signal) (bool, bool) {
			pr := m.proc(pid)
			if pr == nil || !pr.alive {
				return false, false
			}
			return sig == m.l.cfg.DrainSignal && pr.catchesDrain, true
		},
		scan: func(_ *listenprobe.Probe, root int) listenprobe.Result {
			if m.scans == nil {
				m.scans = map[int]int{}
			}
			m.scans[root]++
			if pr := m.proc(root); pr != nil && pr.alive && pr.accepting {
				return listenprobe.Result{Accepting: true, How: fmt.Sprintf("pid %d polls fd 3 (epoll)", root), Epoll: listenprobe.EpollRef{Pid: root, Fd: pr.epoll()}}
			}
			return listenprobe.Result{}
		},
		polls: func(_ *listenprobe.Probe, ref listenprobe.EpollRef) listenprobe.Result {
			if m.polls == nil {
				m.polls = map[int]int{}
			}
			m.polls[ref.Pid]++
			if pr := m.proc(ref.Pid); pr != nil && pr.alive && pr.accepting && ref.Fd == pr.epoll() {
				return listenprobe.Result{Accepting: true, How: fmt.Sprintf("pid %d polls fd 3 (epoll)", ref.Pid), Epoll: ref}
			}
			return listenprobe.Result{}
		},
		watchExit: func(pid int, exited func()) error {
			pr := m.proc(pid)
			if pr == nil {
				return fmt.Errorf("no process %d", pid)
			}
			pr.exited = func(syscall.WaitStatus) { exited() }
			return nil
		},
		now: func() time.Time { return m.now },
		afterFunc: func(d time.Duration, f func()) timer {
			t := &fakeTimer{at: m.now.Add(d), f: f}
			m.timers = append(m.timers, t)
			return t
		},
	}
}

func exitCode(c int) syscall.WaitStatus              { return syscall.WaitStatus(c << 8) }
func killedBy(sig syscall.Signal) syscall.WaitStatus { return syscall.WaitStatus(sig) }

func (m *machine) exit(pr *fakeProc, ws syscall.WaitStatus) {
	pr.alive = false
	pr.exited(ws)
}

func (m *machine) proc(pid int) *fakeProc {
	for _, pr := range m.procs {
		if pr.pid == pid {
			return pr
		}
	}
	return nil
}

// newMachine is a launcher for cfg (Command and Ready defaulted) on a fake
// system, its first generation started; setup runs before that start.
func newMachine(t *testing.T, cfg Config, setup ...func(*machine)) *machine {
	t.Helper()
	m := &machine{t: t, log: &lockedBuffer{}, now: time.Unix(1_000_000, 0)}
	if cfg.Command == nil {
		cfg.Command = []string{"/bin/true"}
	}
	if cfg.DrainSignal == 0 {
		cfg.DrainSignal = syscall.SIGQUIT
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = time.Minute
	}
	cfg.Logger = NewLogger(m.log, LogOptions{})
	cfg.Env = []string{"PATH=/usr/bin:/bin"}
	m.l = newLauncher(cfg, m.sys())
	var err error
	if m.l.runDir, err = makeRunDirIn(t.TempDir(), os.Geteuid()); err != nil {
		t.Fatal(err)
	}
	if m.l.handoff, err = broker.New(m.l.runDir.at(handoffName), m.l.runDir.file(handoffName), m.l.log, m.l.roots.genOf); err != nil {
		t.Fatal(err)
	}
	m.l.outer = newOuterNotify(func(string) {})
	t.Cleanup(func() {
		close(m.l.quit)
		m.l.releaseGC()
		m.l.dropNotify()
		m.l.handoff.Close()
		for _, g := range m.l.gens {
			for _, p := range g.procs() {
				if p.notify != nil && !p.exited {
					p.notify.Close()
				}
			}
			closeFile(g.bin)
		}
		closeFile(m.l.prevBin)
		closeFile(m.l.crashBin)
		m.l.runDir.remove()
		if t.Failed() {
			t.Logf("relaunch's log:\n%s", m.log)
		}
	})
	for _, f := range setup {
		f(m)
	}
	adopted := false
	if len(m.adopting) > 0 {
		if adopted, err = m.l.adopt(m.adopting); err != nil {
			t.Fatal(err)
		}
	}
	if !adopted {
		if err := m.l.start(false); err != nil {
			t.Fatal(err)
		}
	}
	m.settle()
	return m
}

// settle runs the loop until no event is pending.
func (m *machine) settle() {
	for {
		select {
		case fn := <-m.l.events:
			fn()
		default:
			return
		}
	}
}

// advance moves the clock by d, firing the timers due on the way, in order.
func (m *machine) advance(d time.Duration) {
	end := m.now.Add(d)
	for {
		m.settle()
		sort.SliceStable(m.timers, func(i, j int) bool { return m.timers[i].at.Before(m.timers[j].at) })
		var next *fakeTimer
		for _, t := range m.timers {
			if !t.stopped && !t.at.After(end) {
				next = t
				break
			}
		}
		if next == nil {
			m.now = end
			m.settle()
			return
		}
		m.now = next.at
		next.stopped = true
		next.f()
	}
}

// ready makes generation id send READY=1.
func (m *machine) ready(id int) {
	m.t.Helper()
	g := m.gen(id)
	if g == nil {
		m.t.Fatalf("no gen %d to send READY=1", id)
	}
	m.l.onNotify(g, sdlisten.NotifyMessage{Pid: g.pid, Fields: []string{"READY=1"}}, true)
	m.settle()
}

func (m *machine) signal(sig syscall.Signal) {
	m.l.onSignal(sig)
	m.settle()
}

// crash makes generation id's process exit by itself with ws.
func (m *machine) crash(id int, ws syscall.WaitStatus) {
	m.t.Helper()
	g := m.gen(id)
	if g == nil {
		m.t.Fatalf("no gen %d to crash", id)
	}
	m.exit(m.proc(g.pid), ws)
	m.settle()
}

func (m *machine) gen(id int) *generation {
	for _, g := range m.l.gens {
		if g.id == id {
			return g
		}
	}
	return nil
}

// states is every live generation as "id:state", oldest first.
func (m *machine) states() string {
	var s []string
	for _, g := range m.l.gens {
		s = append(s, fmt.Sprintf("%d:%s", g.id, g.state))
	}
	return strings.Join(s, " ")
}

func (m *machine) want(states string) {
	m.t.Helper()
	if got := m.states(); got != states {
		m.t.Fatalf("generations %q; want %q", got, states)
	}
}

// signals is what generation id's process was sent.
func (m *machine) signals(id int) []syscall.Signal {
	return m.procs[id-1].got
}

func TestMachineUpgrade(t *testing.T) {
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, DrainTimeout: 5 * time.Minute})
	m.want("1:starting")
	m.ready(1)
	m.want("1:current")
	m.signal(syscall.SIGUSR2)
	m.want("1:current 2:starting")
	if len(m.signals(1)) != 0 {
		t.Fatalf("gen 1 got %v before gen 2 was ready", m.signals(1))
	}
	m.ready(2)
	// Shared sockets: the drain signal at once; the demo-like app exits.
	if got := m.signals(1); !slices.Equal(got, []syscall.Signal{syscall.SIGQUIT}) {
		t.Fatalf("gen 1 got %v; want SIGQUIT", got)
	}
	m.want("2:current")
	if m.l.prevBin == nil {
		t.Error("the replaced generation's binary is not kept for a rollback")
	}
}

func TestMachineFailedUpgrade(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(m *machine)
		why  string
	}{
		{"exits before ready", func(m *machine) { m.crash(2, exitCode(1)) }, "exited before it was ready (status 1)"},
		{"not ready in time", func(m *machine) { m.advance(time.Minute) }, "not ready after 1m0s"},
		{"cannot exec", nil, "cannot run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}})
			m.ready(1)
			if tc.fail == nil {
				m.execErr = fmt.Errorf("%s: no such file or directory", m.l.cfg.Command[0])
			}
			m.signal(syscall.SIGUSR2)
			if tc.fail != nil {
				tc.fail(m)
			}
			m.want("1:current")
			if len(m.signals(1)) != 0 {
				t.Errorf("gen 1 got %v: a failed upgrade must not touch it", m.signals(1))
			}
			if !strings.Contains(m.l.lastFailure, tc.why) {
				t.Errorf("last failure %q; want it to say %q", m.l.lastFailure, tc.why)
			}
			// The next upgrade works.
			m.signal(syscall.SIGUSR2)
			m.ready(3)
			m.want("3:current")
		})
	}
}

func TestMachineCrashRestartBackoff(t *testing.T) {
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}})
	m.ready(1)
	// Crashes in a row: restarts wait 100ms, doubling.
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}
	for i, d := range want {
		id := i + 1
		m.crash(id, killedBy(syscall.SIGSEGV))
		m.want("")
		m.advance(d - time.Millisecond)
		if m.gen(id+1) != nil {
			t.Fatalf("restart %d came before its %s back-off", id, d)
		}
		m.advance(time.Millisecond)
		if m.gen(id+1) == nil {
			t.Fatalf("no restart %s after crash %d", d, id)
		}
		m.ready(id + 1)
	}
	// 10s of healthy running resets the back-off.
	m.advance(healthyAfter)
	m.crash(5, exitCode(2))
	m.advance(backoffMin)
	m.want("6:starting")

	// --restart never: the app's status is relaunch's.
	m2 := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, Restart: RestartNever})
	m2.ready(1)
	m2.crash(1, exitCode(3))
	if !m2.l.done || m2.l.status != 3 {
		t.Errorf("--restart never: done %v status %d; want done with 3", m2.l.done, m2.l.status)
	}
	// on-failure and an exit 0: done with 0.
	m3 := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}})
	m3.ready(1)
	m3.crash(1, exitCode(0))
	if !m3.l.done || m3.l.status != 0 {
		t.Errorf("exit 0 with on-failure: done %v status %d; want done with 0", m3.l.done, m3.l.status)
	}
}

// A storm of triggers while an upgrade runs: one more upgrade after it,
// not one per trigger.
func TestMachineSignalStorm(t *testing.T) {
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}})
	m.ready(1)
	for range 30 {
		m.l.onSignal(syscall.SIGUSR2)
		m.l.onSignal(syscall.SIGHUP)
	}
	m.settle()
	m.want("1:current 2:starting")
	m.ready(2)
	m.want("2:current 3:starting")
	m.ready(3)
	m.want("3:current")
	if n := len(m.procs); n != 3 {
		t.Errorf("%d generations started for one storm; want 3", n)
	}
}

func TestMachineMaxDraining(t *testing.T) {
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, MaxDraining: 1})
	m.ready(1)
	for id := 2; id <= 4; id++ {
		m.stuckNext = true // every generation drains for ever
		if id == 2 {
			m.procs[0].stuck = true
		}
		m.signal(syscall.SIGUSR2)
		m.ready(id)
	}
	// gens 1 and 2 were killed, each when one more was draining than allowed.
	m.want("3:draining 4:current")
	for _, id := range []int{1, 2} {
		if got := m.signals(id); got[len(got)-1] != syscall.SIGKILL {
			t.Errorf("gen %d got %v; want killed", id, got)
		}
	}
}

func TestMachineDrainTimeout(t *testing.T) {
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, DrainTimeout: 30 * time.Second, MaxDraining: -1})
	m.ready(1)
	m.procs[0].stuck = true
	m.signal(syscall.SIGUSR2)
	m.ready(2)
	m.want("1:draining 2:current")
	m.advance(30*time.Second - time.Millisecond)
	m.want("1:draining 2:current")
	m.advance(time.Millisecond)
	m.want("2:current")
	if !strings.Contains(m.log.String(), "still draining after 30s (--drain-timeout)") {
		t.Errorf("the exit does not say why it was killed:\n%s", m.log)
	}
}

func TestMachineStop(t *testing.T) {
	t.Run("TERM", func(t *testing.T) {
		m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, StopTimeout: 30 * time.Second, MaxDraining: -1})
		m.ready(1)
		m.procs[0].stuck = true
		m.signal(syscall.SIGTERM)
		if got := m.signals(1); !slices.Equal(got, []syscall.Signal{syscall.SIGTERM}) {
			t.Fatalf("gen 1 got %v; want SIGTERM", got)
		}
		m.advance(30 * time.Second)
		if !m.l.done || m.l.status != 128+9 {
			t.Errorf("after --stop-timeout: done %v status %d; want done with 137 (the app was killed)", m.l.done, m.l.status)
		}
	})
	t.Run("QUIT drains", func(t *testing.T) {
		m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, DrainTimeout: time.Minute, MaxDraining: -1})
		m.ready(1)
		m.signal(syscall.SIGQUIT)
		if got := m.signals(1); !slices.Equal(got, []syscall.Signal{syscall.SIGQUIT}) {
			t.Fatalf("gen 1 got %v; want the drain signal", got)
		}
		if !m.l.done || m.l.status != 0 {
			t.Errorf("done %v status %d; want done with the app's 0", m.l.done, m.l.status)
		}
	})
	t.Run("second TERM kills", func(t *testing.T) {
		m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, StopTimeout: time.Hour, MaxDraining: -1})
		m.ready(1)
		m.procs[0].stuck = true
		m.signal(syscall.SIGTERM)
		m.signal(syscall.SIGTERM)
		if !m.l.done {
			t.Errorf("a second TERM did not end relaunch: %s", m.states())
		}
	})
	t.Run("during a back-off", func(t *testing.T) {
		m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}})
		m.ready(1)
		m.crash(1, exitCode(1))
		m.signal(syscall.SIGTERM)
		if !m.l.done || m.l.status != 0 {
			t.Errorf("TERM with nothing running: done %v status %d; want done with 0", m.l.done, m.l.status)
		}
	})
}

// Steering decisions, on a real pool: a generation per slot, steering
// moves to the new one when it is ready, the old one drains after
// --settle, a crash restart takes the crashed one's slot, and a full pool
// kills the oldest draining generation first.
func TestMachineSteering(t *testing.T) {
	a, _ := sdlisten.ParseAddr("127.0.0.1:0")
	p, err := sdlisten.BindPool(a, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, Listeners: []Listener{{Pool: p}},
		Settle: 100 * time.Millisecond, MaxDraining: -1})
	m.ready(1)
	if g := m.gen(1); g.slot != 0 || m.l.steerSlot != 0 {
		t.Fatalf("gen 1 on slot %d, steered to %d; want 0 and 0", g.slot, m.l.steerSlot)
	}
	m.signal(syscall.SIGUSR2)
	m.ready(2)
	if g := m.gen(2); g.slot != 1 || m.l.steerSlot != 1 {
		t.Fatalf("gen 2 on slot %d, steered to %d; want 1 and 1", g.slot, m.l.steerSlot)
	}
	m.want("1:settling 2:current")
	m.advance(99 * time.Millisecond)
	m.want("1:settling 2:current")
	m.advance(time.Millisecond)
	m.want("2:current") // its queue was empty: drained, and it exits

	// A crash restart takes the crashed generation's slot, steered to.
	m.crash(2, killedBy(syscall.SIGKILL))
	m.advance(backoffMin)
	if g := m.gen(3); g == nil || g.slot != 1 {
		t.Fatalf("the restart is on slot %v; want 1, the crashed generation's", g)
	}
	m.ready(3)

	// Three slots: current, draining, and one more starting fill the
	// pool; the next upgrade kills the oldest draining generation first.
	m.stuckNext = true
	m.signal(syscall.SIGUSR2)
	m.ready(4)
	m.procs[2].stuck = true
	m.advance(time.Second)
	m.stuckNext = true
	m.signal(syscall.SIGUSR2)
	m.ready(5)
	m.advance(time.Second)
	m.want("3:draining 4:draining 5:current")
	m.signal(syscall.SIGUSR2) // no free slot: gen 3 goes first
	m.want("4:draining 5:current 6:starting")
	if !strings.Contains(m.log.String(), "no free slot for a new generation: killing gen 3") {
		t.Errorf("no line says gen 3 was killed for a slot:\n%s", m.log)
	}
}

// The tripwire at an upgrade: a foreign socket in the group stops steering
// (every later generation shares the current slot). The check runs after
// the new generation has started (off the trigger → fork path), so that
// one, given a slot of its own, is replaced by a fresh one on the shared
// slot: when the check's time comes, or at its readiness if sooner. A
// rollback's replacement runs the rollback's file. Without a foreign
// socket nothing is replaced.
func TestMachineTripwire(t *testing.T) {
	// join puts an app's own SO_REUSEPORT socket on p's port in its group.
	join := func(t *testing.T, p *sdlisten.Pool) {
		t.Helper()
		f, err := sdlisten.BindPool(p.Addr(), 1)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
	}
	// gen 2 serving, with gen 1's binary kept for a rollback: its file.
	rollbackable := func(t *testing.T, m *machine) *os.File {
		t.Helper()
		m.signal(syscall.SIGUSR2)
		m.ready(2)
		m.advance(time.Second)
		f, err := os.CreateTemp(t.TempDir(), "v1")
		if err != nil {
			t.Fatal(err)
		}
		closeFile(m.l.prevBin)
		m.l.prevBin = f // as if gen 1 had run it
		return f
	}
	setup := func(t *testing.T, foreign bool) (*machine, *sdlisten.Pool) {
		a, _ := sdlisten.ParseAddr("127.0.0.1:0")
		p, err := sdlisten.BindPool(a, 3)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, Listeners: []Listener{{Pool: p}}, MaxDraining: -1})
		m.ready(1)
		m.advance(time.Second) // gen 1 settled; the next start is prepared
		if foreign {
			join(t, p)
		}
		return m, p
	}
	// upgrade sends SIGUSR2: gen 2 starts on slot 1, its own, unchecked yet.
	upgrade := func(t *testing.T, m *machine, p *sdlisten.Pool) {
		t.Helper()
		m.signal(syscall.SIGUSR2)
		m.want("1:current 2:starting")
		if g := m.gen(2); g.slot != 1 || m.procs[1].spec.socks[0] != p.Slot(1) || !g.tripwire {
			t.Fatalf("gen 2: slot %d, check due %v; want slot 1's socket, the check due", g.slot, g.tripwire)
		}
		if m.l.frozen[0] != -1 {
			t.Fatalf("frozen = %v before the check", m.l.frozen)
		}
	}
	replaced := func(t *testing.T, m *machine, p *sdlisten.Pool) {
		t.Helper()
		if m.l.frozen[0] != 0 {
			t.Fatalf("frozen = %v; want steering stopped on slot 0", m.l.frozen)
		}
		m.want("1:current 3:starting")
		if got := m.signals(2); !slices.Equal(got, []syscall.Signal{syscall.SIGKILL}) {
			t.Errorf("gen 2 got %v; want SIGKILL", got)
		}
		if got := m.signals(1); len(got) != 0 {
			t.Errorf("gen 1 got %v; want nothing before gen 3 is ready", got)
		}
		if socks := m.procs[2].spec.socks; len(socks) != 1 || socks[0] != p.Slot(0) {
			t.Errorf("gen 3 was given %v; want slot 0's socket, shared from now on", socks)
		}
		if g := m.gen(3); g.why != "SIGUSR2" {
			t.Errorf("gen 3 was started for %q; want the upgrade's SIGUSR2", g.why)
		}
		log := m.log.String()
		for _, want := range []string{"a socket relaunch does not hold listens on port",
			"gen 2 (pid 1001) got slot 1 before the check stopped steering: starting a fresh generation on the shared slot 0 in its place",
			"gen 2 (pid 1001) exited: replaced"} {
			if !strings.Contains(log, want) {
				t.Errorf("no line says %q:\n%s", want, log)
			}
		}
		if strings.Contains(log, "upgrade failed") || m.l.lastFailure != "" {
			t.Errorf("the replacement counts as a failed upgrade (%q):\n%s", m.l.lastFailure, log)
		}
		m.ready(3)
		m.want("3:current") // gen 1 drained (the fake exits at once)
		if got := m.signals(1); !slices.Equal(got, []syscall.Signal{syscall.SIGQUIT}) {
			t.Errorf("gen 1 got %v; want SIGQUIT once gen 3 is ready", got)
		}
	}
	t.Run("at the check's time", func(t *testing.T) {
		m, p := setup(t, true)
		upgrade(t, m, p)
		m.advance(tripwireAfter - time.Millisecond)
		m.want("1:current 2:starting")
		m.advance(time.Millisecond)
		replaced(t, m, p)
	})
	t.Run("ready first", func(t *testing.T) {
		m, p := setup(t, true)
		upgrade(t, m, p)
		m.ready(2) // before tripwireAfter: checked now, not made current
		replaced(t, m, p)
	})
	t.Run("rollback", func(t *testing.T) {
		m, p := setup(t, false)
		f := rollbackable(t, m)
		join(t, p)
		ans := make(chan Answer, 1)
		m.l.onControl(Request{Cmd: "rollback"}, ans)
		m.settle()
		m.want("2:current 3:starting")
		if !m.gen(3).rollback {
			t.Fatal("gen 3 does not run the rollback's file")
		}
		m.advance(tripwireAfter)
		m.want("2:current 4:starting")
		if g := m.gen(4); !g.rollback || g.bin == nil || g.bin.Name() != f.Name() {
			t.Errorf("gen 4, gen 3's replacement, runs %v; want the rollback's file %s", g.bin, f.Name())
		}
	})
	t.Run("rollback queued behind", func(t *testing.T) {
		m, p := setup(t, false)
		f := rollbackable(t, m)
		join(t, p)
		m.signal(syscall.SIGUSR2) // gen 3, from the path
		ans := make(chan Answer, 1)
		m.l.onControl(Request{Cmd: "rollback"}, ans) // queued behind it
		m.settle()
		m.advance(tripwireAfter)
		m.want("2:current 4:starting")
		if g := m.gen(4); g.rollback {
			t.Fatal("gen 4, gen 3's replacement, runs the queued rollback's file")
		}
		if m.l.startFrom == nil || m.l.startFrom.Name() != f.Name() {
			t.Fatalf("the queued rollback's file is %v; want %s kept", m.l.startFrom, f.Name())
		}
		m.ready(4)
		m.want("4:current 5:starting") // the rollback, now
		if g := m.gen(5); !g.rollback || g.bin.Name() != f.Name() {
			t.Errorf("gen 5 runs %v; want the rollback's file %s", g.bin, f.Name())
		}
	})
	t.Run("workers", func(t *testing.T) {
		m := steeredMachine(t, 9, Config{Workers: 2})
		m.readyAll(1)
		m.advance(time.Second)
		p := m.l.cfg.Listeners[0].Pool
		join(t, p)
		m.signal(syscall.SIGUSR2)
		old := m.pids(2)
		m.advance(tripwireAfter)
		m.want("1:current 3:starting")
		for _, pid := range old {
			if got := m.got(pid); !slices.Equal(got, []syscall.Signal{syscall.SIGKILL}) {
				t.Errorf("gen 2's worker %d got %v; want SIGKILL", pid, got)
			}
		}
		for i, w := range m.gen(3).workers {
			if m.proc(w.pid).spec.socks[0] != p.Slot(0) {
				t.Errorf("gen 3's worker %d was given %v; want the shared slot 0's socket", i, m.proc(w.pid).spec.socks)
			}
		}
		m.readyAll(3)
		m.want("3:current")
	})
	t.Run("stopping", func(t *testing.T) {
		m, _ := setup(t, true)
		m.stuckNext = true // gen 2 outlives the stop's TERM
		m.signal(syscall.SIGUSR2)
		m.signal(syscall.SIGTERM)
		m.advance(tripwireAfter)
		if m.gen(3) != nil || len(m.procs) != 2 {
			t.Errorf("a generation was started while relaunch stops: %s", m.states())
		}
	})
	t.Run("undisturbed", func(t *testing.T) {
		m, p := setup(t, false)
		upgrade(t, m, p)
		m.advance(tripwireAfter)
		m.want("1:current 2:starting")
		if m.l.frozen[0] != -1 || m.gen(2).tripwire {
			t.Errorf("frozen = %v, check due %v; want steering on, the check done", m.l.frozen, m.gen(2).tripwire)
		}
		m.ready(2)
		m.want("1:settling 2:current")
	})
}

// Adoption after relaunch's death, from the state it saved: the current
// one serves on, a draining one's timeout counts from its drain signal,
// one that was settling is drained now; numbering goes on from the saved
// last id; the next upgrade drains the adopted current one, and
// --max-draining counts adopted generations; an adopted current one that
// exits is restarted as after a crash.
func TestMachineAdopt(t *testing.T) {
	adopt := func(m *machine, gens ...savedGen) {
		m.l.state = &savedState{Format: 1, LastID: 7}
		for _, g := range gens {
			m.l.state.Gens = append(m.l.state.Gens, g)
			m.orphan(g.Pid).stuck = true // they drain slowly: only SIGKILL ends them
			m.adopting = append([]adoptable{{id: g.ID, pid: g.Pid, slot: -1}}, m.adopting...)
		}
	}
	t.Run("state", func(t *testing.T) {
		m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, DrainTimeout: 30 * time.Second, MaxDraining: -1}, func(m *machine) {
			adopt(m, savedGen{ID: 4, Pid: 2001, Slot: -1, State: "draining", DrainAt: m.now.Add(-20 * time.Second)},
				savedGen{ID: 5, Pid: 2002, Slot: -1, State: "settling"},
				savedGen{ID: 6, Pid: 2003, Slot: -1, State: "current"})
		})
		m.want("4:draining 5:draining 6:current")
		if got := m.proc(2002).got; !slices.Equal(got, []syscall.Signal{syscall.SIGQUIT}) {
			t.Errorf("gen 5, settling when relaunch died, got %v; want its drain signal now", got)
		}
		if len(m.proc(2001).got)+len(m.proc(2003).got) != 0 {
			t.Errorf("gen 4 got %v, gen 6 got %v; want nothing", m.proc(2001).got, m.proc(2003).got)
		}
		// gen 4 was told 20 s before: its 30 s end 10 s after adoption.
		m.advance(10*time.Second - time.Millisecond)
		m.want("4:draining 5:draining 6:current")
		m.advance(time.Millisecond)
		m.want("5:draining 6:current")
		// gen 5's timeout counts from its drain signal, at adoption.
		m.advance(20 * time.Second)
		m.want("6:current")
		m.signal(syscall.SIGUSR2)
		m.want("6:current 8:starting")
		m.ready(8)
		m.want("6:draining 8:current")
	})
	t.Run("max draining", func(t *testing.T) {
		m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, MaxDraining: 1}, func(m *machine) {
			adopt(m, savedGen{ID: 4, Pid: 2001, Slot: -1, State: "draining", DrainAt: m.now},
				savedGen{ID: 5, Pid: 2002, Slot: -1, State: "current"})
		})
		m.want("4:draining 5:current")
		m.signal(syscall.SIGUSR2)
		m.ready(8)
		m.want("5:draining 8:current") // gen 4, the oldest of two draining, killed
		if got := m.proc(2001).got; !slices.Contains(got, syscall.SIGKILL) {
			t.Errorf("gen 4 got %v; want SIGKILL (--max-draining 1)", got)
		}
	})
	t.Run("crash", func(t *testing.T) {
		m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}}, func(m *machine) {
			adopt(m, savedGen{ID: 5, Pid: 2002, Slot: -1, State: "current"})
		})
		m.want("5:current")
		m.exit(m.proc(2002), 0) // its status is not relaunch's to read
		m.settle()
		m.want("")
		m.advance(backoffMin)
		m.want("8:starting")
	})
	t.Run("no state", func(t *testing.T) {
		m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, DrainTimeout: 30 * time.Second, MaxDraining: -1}, func(m *machine) {
			adopt(m, savedGen{ID: 4, Pid: 2001}, savedGen{ID: 5, Pid: 2002})
			m.l.state = nil
		})
		// The newest is current; the other drains from now.
		m.want("4:draining 5:current")
		m.advance(30*time.Second - time.Millisecond)
		m.want("4:draining 5:current")
		m.advance(time.Millisecond)
		m.want("5:current")
		m.signal(syscall.SIGUSR2)
		m.want("5:current 6:starting")
	})
}

// The next generation's notify socket is made once a generation has
// been ready for --settle + 250 ms, and the next start takes it; one whose
// file was removed meanwhile is replaced by a new one.
func TestMachineNotifyMadeAhead(t *testing.T) {
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, Settle: 100 * time.Millisecond})
	sock := func(name string) bool {
		_, err := os.Lstat(m.l.runDir.file(name))
		return err == nil
	}
	m.ready(1)
	if m.l.nextNotify != nil {
		t.Fatal("a notify socket made ahead at once, in the switch's moments")
	}
	m.advance(time.Second)
	ahead := m.l.nextNotify
	if ahead == nil || m.l.nextNotifyName != "gen2" || !sock("gen2.sock") {
		t.Fatalf("1s after gen 1 ready: made ahead %v (%q), gen2.sock there %v; want gen2's", ahead, m.l.nextNotifyName, sock("gen2.sock"))
	}
	m.signal(syscall.SIGUSR2)
	if g := m.gen(2); g.notify != ahead || m.l.nextNotify != nil {
		t.Fatalf("gen 2's notify socket %p, left ahead %p; want the one made ahead (%p), none left", g.notify, m.l.nextNotify, ahead)
	}
	m.ready(2)
	m.advance(time.Second)
	ahead = m.l.nextNotify
	if ahead == nil || !sock("gen3.sock") {
		t.Fatal("no gen3.sock made ahead after gen 2 was ready")
	}
	if err := os.Remove(m.l.runDir.file("gen3.sock")); err != nil { // a tmp cleaner
		t.Fatal(err)
	}
	m.signal(syscall.SIGUSR2)
	if g := m.gen(3); g.notify == ahead || g.notify == nil || !sock("gen3.sock") {
		t.Fatalf("gen 3's notify socket %p (the one made ahead: %p), gen3.sock there %v; want a new one", g.notify, ahead, sock("gen3.sock"))
	}
}

// The garbage collector is put off (GOGC gcHoldPercent) from a start until
// the next one is prepared (--settle + 250 ms after ready), and at most
// gcHoldMax for a start that never gets ready; GOGC is then what it was.
func TestMachineGCPutOffDuringStart(t *testing.T) {
	gogc := func() int {
		v := debug.SetGCPercent(-1)
		debug.SetGCPercent(v)
		return v
	}
	before := gogc()
	if before < 0 || before >= gcHoldPercent {
		t.Fatalf("GOGC is %d before the test; want it on, under %d", before, gcHoldPercent)
	}
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, Settle: 100 * time.Millisecond})
	m.ready(1)
	if v := gogc(); v != gcHoldPercent {
		t.Fatalf("GOGC %d right after gen 1 was ready; want %d (since its start)", v, gcHoldPercent)
	}
	m.advance(time.Second)
	if v := gogc(); v != before {
		t.Fatalf("GOGC %d 1s after gen 1 was ready; want %d again", v, before)
	}
	m.signal(syscall.SIGUSR2) // gen 2 never gets ready
	if v := gogc(); v != gcHoldPercent {
		t.Fatalf("GOGC %d as gen 2 starts; want %d", v, gcHoldPercent)
	}
	m.advance(gcHoldMax - time.Second)
	if v := gogc(); v != gcHoldPercent {
		t.Fatalf("GOGC %d %s into gen 2's start; want %d still", v, gcHoldMax-time.Second, gcHoldPercent)
	}
	m.advance(2 * time.Second)
	if v := gogc(); v != before {
		t.Fatalf("GOGC %d after %s of gen 2's start; want %d again", v, gcHoldMax+time.Second, before)
	}
}

// The warm exec helper: once a generation is ready, the next one's helper
// is prepared on the slot the next start would take; that start takes it
// even when a lower slot has been freed meanwhile, and runs with its
// sockets. A crash restart takes the crashed generation's slot instead.
func TestMachineWarmHelperSlot(t *testing.T) {
	a, _ := sdlisten.ParseAddr("127.0.0.1:0")
	p, err := sdlisten.BindPool(a, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, Listeners: []Listener{{Pool: p}},
		Settle: 100 * time.Millisecond, MaxDraining: -1})
	var prepared []procSpec
	m.l.sys.prepare = func(p procSpec) (int, error) {
		prepared = append(prepared, p)
		return 9000 + len(prepared), nil
	}
	m.l.sys.discard = func() {}
	warmFd := func() int {
		t.Helper()
		if len(prepared) == 0 {
			t.Fatal("no warm helper prepared")
		}
		return prepared[len(prepared)-1].socks[0].Fd()
	}

	m.ready(1) // slot 0
	m.advance(time.Second)
	if warmFd() != p.Slot(1).Fd() || m.l.warmPid != 9001 || !m.l.owns(9001) {
		t.Fatalf("after gen 1 ready: warm helper on fd %d (pid %d); want slot 1's fd %d, pid 9001, owned", warmFd(), m.l.warmPid, p.Slot(1).Fd())
	}
	m.signal(syscall.SIGUSR2)
	if g := m.gen(2); g.slot != 1 || m.l.warmPid != 0 {
		t.Fatalf("gen 2 on slot %d, warm pid %d; want slot 1, none left", g.slot, m.l.warmPid)
	}
	m.ready(2)
	m.advance(200 * time.Millisecond) // settling, its drain signal: no warm helper yet
	if len(prepared) != 1 {
		t.Fatalf("%d warm helpers prepared 200ms after gen 2 was ready; want none since gen 1's", len(prepared)-1)
	}
	m.advance(time.Second)
	m.want("2:current")
	if warmFd() != p.Slot(0).Fd() {
		t.Fatalf("after gen 1 exited: warm helper on fd %d; want slot 0's, %d", warmFd(), p.Slot(0).Fd())
	}
	m.signal(syscall.SIGUSR2)
	m.procs[1].stuck = true // gen 2 drains long
	m.ready(3)
	m.advance(time.Second)
	m.want("2:draining 3:current")
	if warmFd() != p.Slot(2).Fd() {
		t.Fatalf("with gen 2 draining: warm helper on fd %d; want slot 2's, %d", warmFd(), p.Slot(2).Fd())
	}
	m.crash(2, killedBy(syscall.SIGKILL)) // slot 1 is free again, and lower
	m.signal(syscall.SIGUSR2)
	if g := m.gen(4); g.slot != 2 || m.procs[3].spec.socks[0].Fd() != p.Slot(2).Fd() {
		t.Fatalf("gen 4 on slot %d; want slot 2, the warm helper's", g.slot)
	}
	m.ready(4)
	m.advance(time.Second)

	// A crash restart: no current generation, the crashed one's slot.
	m.crash(4, killedBy(syscall.SIGKILL))
	m.advance(backoffMin)
	if g := m.gen(5); g == nil || g.slot != 2 {
		t.Fatalf("the restart is on slot %v; want 2, the crashed generation's", g)
	}
}
