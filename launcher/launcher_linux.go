package launcher

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/relaunch/relaunch/handoff"
	"github.com/relaunch/relaunch/internal/broker"
	"github.com/relaunch/relaunch/internal/keeper"
	"github.com/relaunch/relaunch/sdlisten"
	"github.com/relaunch/relaunch/watch"
)

// Restart back-off.
const (
	reapAfter    = 20 * time.Millisecond // a SIGCHLD's reap of orphans waits for the rest of its burst
	backoffMin   = 100 * time.Millisecond
	backoffMax   = 30 * time.Second
	healthyAfter = 10 * time.Second
	autoFallback = 2 * time.Second // --ready auto, before anything is learned
)

// launcher is the state of one Run. Every field belongs to the loop
// goroutine; other goroutines (waiters, notify readers, timers) only post
// functions to events.
type launcher struct {
	cfg     Config
	sys     system // processes, signals, clock
	log     *slog.Logger
	events  chan func()
	quit    chan struct{} // closed when the loop ends, so late posts do not block
	env     []string
	stdin   int
	runDir  *runDir
	handoff *broker.Broker // the connection handoff
	roots   genRoots       // the generations' root pids, for the handoff's genOf

	gens    []*generation // alive, oldest first
	cur     *generation   // ready and serving; nil while none is
	next    *generation   // starting; at most one
	lastID  int
	pending string // a trigger that came during an upgrade ("" = none)
	everUp  bool   // some generation was ever ready

	warmPid        int                      // the warm exec helper of the next start (warm_linux.go); 0: none
	warmSlotID     int                      // the slot whose sockets it holds
	nextNotify     *sdlisten.NotifyListener // the next generation's notify socket, made ahead (warm_linux.go)
	nextNotifyName string                   // its name: "gen" and that generation's id
	gcHeld         bool                     // the garbage collector is held off for a start (gchold_linux.go)
	gcHeldAt       time.Time                // the start it is held for
	acceptedIn     time.Duration            // how long the last generation seen accepting took (fastscan_linux.go)
	epollFd        int                      // the fd of the epoll instance its first process was seen with (ready_linux.go)
	probes         map[netip.AddrPort]int   // health probes in flight: their source → the slot they test
	canary         *generation              // the canary running, nil when none (canary_linux.go)
	canaryEnds     time.Time
	abandoned      map[int]bool // slots of aborted canaries: no generation is coming for what queued there

	probeOK       bool                              // procfs can show this app's readiness
	nWorkers      int                               // --workers, as relaunch scale changed it; 0 without
	routed        []int                             // with workers: the slots new connections went to last
	notifySeq     int                               // numbers the workers' notify sockets
	reapSoon      bool                              // a reap of orphans is due (SIGCHLD)
	inodes        map[*sdlisten.Pool]map[uint64]int // the pools' sockets' inodes → slot (tripwire_linux.go)
	steerSlot     int                               // the slot the pools steer to
	frozen        []int                             // per listener: the slot a disturbed pool is shared on; -1 steers
	slots         *slotWatch                        // wakes the loop for stranded connections and dead listeners (slots_linux.go)
	awaySince     map[int]time.Time                 // per slot: since when new connections are steered elsewhere; absent: never steered to
	held          map[int]time.Time                 // slots whose stranded connections wait for the next generation, since when
	relays        int                               // rescued connections being relayed
	rescued       RescueCounts
	rescueSaid    string          // what became of the last stranded connection, for the log
	warnedRevive  map[string]bool // addresses whose dead listener was said
	learnedNotify bool            // --ready auto: the app has sent READY=1
	learnedListen bool            // --ready auto: the app was seen accepting
	warnedBlind   bool
	warnedDrain   bool

	backoff      time.Duration
	restartTimer timer
	restartAt    time.Time

	outer      *outerNotify   // systemd's NOTIFY_SOCKET, when relaunch has one
	keeper     *keeper.Client // holds the sockets past relaunch's death (keeper_linux.go); nil under the fd store
	state      *savedState    // what a relaunch that died saved, for adoption; nil when none
	stateFd    int            // the memfd the state is saved in; -1: none
	stateSaved []byte         // what it holds
	reloading  bool           // the outer manager was told RELOADING=1

	buildPid   int           // the build running, 0 when none
	buildAgain bool          // sources changed during it
	built      time.Duration // the last build's time, for the summary line

	control       *net.UnixListener // the control socket, nil without --control
	reexecClients []*os.File        // `relaunch reexec` connections waiting for the outcome
	reexecAsked   time.Time         // a reexec is under way since; zero when none
	checkPid      int               // the new binary checking the options before a reexec
	waiters       []chan<- Answer   // clients waiting for an upgrade's outcome
	prevBin       *os.File          // the binary of the generation that was current before this one
	startFrom     *os.File          // a rollback: the next generation runs this file
	crashBin      *os.File          // the binary of the current generation that crashed: its restarts run it
	lastFailure   string
	lastFailureAt time.Time

	stopping  bool
	stopSig   syscall.Signal
	stopGen   *generation // whose status relaunch exits with
	status    int
	statusSet bool
	done      bool
	fatal     error // start-up failure
}

// newLauncher is a launcher at rest: nothing started, no runtime
// directory, no broker yet.
func newLauncher(cfg Config, sys system) *launcher {
	l := &launcher{cfg: cfg, sys: sys, log: cfg.Logger, events: make(chan func(), 64), quit: make(chan struct{}), backoff: backoffMin,
		awaySince: map[int]time.Time{}, held: map[int]time.Time{}, stateFd: -1}
	if l.log == nil {
		l.log = discardLogger()
	}
	l.env = cfg.Env
	if l.env == nil {
		l.env = os.Environ()
	}
	l.env = withoutEnv(withoutEnv(withoutEnv(l.env, "RELAUNCH_GENERATION"), "RELAUNCH_WORKER"), handoff.Env) // a nested relaunch's own
	l.nWorkers = cfg.Workers
	l.frozen = make([]int, len(cfg.Listeners))
	for i := range l.frozen {
		l.frozen[i] = -1
	}
	return l
}

// Run starts the command on cfg.Sockets and manages its generations until
// relaunch is stopped or the restart policy says the app is done. It returns
// the exit status relaunch should exit with; a non-nil error (wrapping
// ErrStartup) is a start-up failure to report, with status 1.
func Run(cfg Config) (int, error) {
	if len(cfg.Command) == 0 {
		return 2, errors.New("no command given")
	}
	l := newLauncher(cfg, osSystem(cfg.NoPtrace, cfg.Logger))
	selfPath, selfPathErr = startedAs()
	if err := becomeSubreaper(); err != nil {
		l.log.Warn("cannot become a child subreaper (orphans of the app will go to init): " + err.Error())
	}
	rs := cfg.Resume
	err := l.openRunDir(rs)
	if l.runDir != nil {
		defer l.runDir.remove()
	}
	if err != nil {
		return 1, startupError(err)
	}
	defer l.handoff.Close()
	stdin, closeStdin := stdinFd()
	defer closeStdin()
	l.stdin = stdin
	if cfg.PIDFile != "" {
		if err := writePIDFile(cfg.PIDFile); err != nil {
			return 1, startupError(err)
		}
		defer removePIDFile(cfg.PIDFile)
	}

	var changes <-chan watch.Change
	if cfg.Watch != nil {
		w, err := watch.New(*cfg.Watch)
		if err != nil {
			return 1, startupError(err)
		}
		defer w.Close()
		changes = w.Changes()
	}

	l.outer = newOuterNotify(func(s string) { l.log.Warn(s) })
	if rs == nil {
		l.setUpStore(false)
	}
	defer l.closeStore()
	if cfg.Control != "" {
		kept := -1
		if rs != nil {
			kept = rs.st.Control
		}
		stop, err := l.serveControl(cfg.Control, kept)
		if err != nil {
			return 1, startupError(err)
		}
		defer stop()
	}
	var watchdog <-chan time.Time
	if d := l.outer.watchdogEvery(); d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		watchdog = t.C
	}

	CatchSignals()
	defer signal.Stop(sigs)
	defer close(l.quit)
	defer l.dropWarm()
	defer l.dropNotify()
	defer l.releaseGC()

	if cfg.Build != "" && rs == nil {
		if err := l.initialBuild(); err != nil {
			return 1, startupError(err)
		}
	}
	l.setupProbe()
	l.sayWorkers()
	if cfg.NonBlocking {
		if err := l.setNonblocking(); err != nil {
			return 1, startupError(err)
		}
	}
	if len(cfg.Listeners) > 0 {
		defer l.watchSlots()()
	}
	switch adopted := false; {
	case rs != nil:
		if err = l.resume(rs); err == nil {
			l.setUpStore(true)
		}
	default:
		l.steerSlot = l.storedSteerSlot()
		if l.hasStored() {
			if found := l.findAdoptable(); len(found) > 0 {
				adopted, err = l.adopt(found)
			}
		}
		if err == nil && !adopted {
			err = l.start(false)
		}
	}
	if err != nil {
		return 1, startupError(err)
	}
	for !l.done {
		select {
		case fn := <-l.events:
			fn()
		case sig := <-sigs:
			l.onSignal(sig.(syscall.Signal))
		case <-watchdog:
			l.outer.send("WATCHDOG=1")
		case c, ok := <-changes:
			if !ok {
				changes = nil // a nil channel blocks: no more file triggers
				continue
			}
			l.onChange(c)
		}
		l.saveState()
	}
	if l.fatal != nil {
		return 1, startupError(l.fatal)
	}
	return l.status, nil
}

func describeChange(c watch.Change) string {
	if c.Binary {
		return "the binary changed: " + c.Path
	}
	if len(c.Files) > 3 {
		return fmt.Sprintf("%s and %d more changed", strings.Join(c.Files[:3], ", "), len(c.Files)-3)
	}
	return strings.Join(c.Files, ", ") + " changed"
}

// sigs receives every signal relaunch handles, from CatchSignals on.
var sigs = make(chan os.Signal, 16)

// CatchSignals starts taking relaunch's signals, queued until Run reads
// them. main calls it first thing: a signal that comes while relaunch
// starts (or re-executes itself) is then handled, not fatal.
func CatchSignals() {
	signal.Notify(sigs, syscall.SIGUSR2, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT,
		syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGCHLD, ReexecSignal)
	// A write to stderr after its reader went away (relaunch … | logger,
	// logger restarted) must fail with EPIPE, not kill relaunch and orphan
	// the app. Handled, not ignored: an ignored signal stays ignored across
	// exec, in the exec helper and the app; a handled one is reset.
	signal.Notify(sigpipes, syscall.SIGPIPE)
}

// sigpipes takes SIGPIPE and is never read: a full channel drops it.
var sigpipes = make(chan os.Signal, 1)

// post runs fn on the loop goroutine.
func (l *launcher) post(fn func()) {
	select {
	case l.events <- fn:
	case <-l.quit:
	}
}

// after runs fn on the loop goroutine in d, unless g exits first.
func (l *launcher) after(g *generation, d time.Duration, fn func()) {
	t := l.sys.afterFunc(d, func() { l.post(fn) })
	if g != nil {
		g.timers = append(g.timers, t)
	}
}

// start launches a new generation; it becomes l.next. A rollback runs
// l.startFrom; a crash restart runs the binary the crashed generation ran,
// from its open file, whatever is at its path now (deleted, replaced,
// renamed); anything else, an upgrade first, runs the path.
func (l *launcher) start(restart bool) error {
	l.holdGC() // gchold_linux.go
	kept := l.startFrom
	if kept == nil && restart {
		kept = l.crashBin
	}
	var path string
	var err error
	if kept != nil {
		path = kept.Name()
	} else if path, err = resolve(l.cfg.Command[0]); err != nil {
		return err
	}
	l.reviveDead() // a socket is handed out listening

	fromKept := kept != nil && !samePath(kept, path) // a file no longer at its path
	if fromKept && isScript(kept) {
		// The kernel would give its interpreter /proc/self/fd/N to open,
		// closed by then.
		if kept == l.startFrom {
			closeFile(l.startFrom)
			l.startFrom = nil
			return fmt.Errorf("%s, a #! script, is no longer there: its interpreter opens a script by path, so relaunch cannot run the copy it kept; put the script back to roll back to it", path)
		}
		l.log.Warn(fmt.Sprintf("the crashed generation ran the #! script %s, which is no longer there: its interpreter opens a script by path, so the restart runs what %s holds now", path, path))
		kept, fromKept = nil, false
	}
	slots, err := l.pickSlots(l.workerCount())
	if err != nil {
		return err
	}
	if l.nWorkers == 0 {
		slots[0] = l.warmSlot(slots[0]) // workers start no warm helper
	}
	for _, s := range slots {
		delete(l.held, s) // its queue is the new generation's
		delete(l.abandoned, s)
	}
	l.lastID++
	g := &generation{id: l.lastID, path: path, slot: slots[0], state: starting, started: l.sys.now()}
	switch {
	case kept != nil && kept == l.startFrom:
		g.bin, l.startFrom, g.rollback = l.startFrom, nil, true
	case kept != nil: // l.crashBin stays for the next restart, should this one fail
		if g.bin, err = dupFile(kept); err != nil {
			return fmt.Errorf("cannot keep the crashed generation's binary: %v", err)
		}
	default:
		if f, err := os.Open(path); err == nil {
			g.bin = f // kept for a later rollback, or a crash restart
		}
	}
	var from *os.File
	if fromKept {
		from = g.bin
	}
	if l.nWorkers > 0 {
		err = l.startWorkers(g, slots, from)
	} else {
		err = l.startProc(g, from)
	}
	l.warmPid = 0 // it runs this start, or was discarded
	if err != nil {
		closeFile(g.bin)
		return err
	}
	l.gens = append(l.gens, g)
	l.next = g
	l.armSlots()
	how := ""
	if from != nil {
		how = " (the file relaunch kept open: the path no longer holds it)"
	}
	l.log.Info(fmt.Sprintf("%s started: %s%s", g, path, how), "generation", g.id, "pid", g.pid, "path", path, "start_at", g.started)
	if l.cfg.ReadyTimeout > 0 {
		l.after(g, l.cfg.ReadyTimeout, func() { l.onReadyTimeout(g) })
	}
	return nil
}

// readNotify reads n, g's notify socket, until it is closed. n is passed
// rather than read from g: a worker restarted alone gets a new one.
func (l *launcher) readNotify(g *generation, n *sdlisten.NotifyListener) {
	for {
		m, err := n.Recv()
		if err != nil {
			return
		}
		own := m.Pid != 0 && inTree(m.Pid, g.pid)
		l.post(func() { l.onNotify(g, m, own) })
	}
}

// onReady promotes the starting generation and drains the old current one.
func (l *launcher) onReady(g *generation, how string) {
	if g.lead != nil {
		if g.exited || g.state != starting || l.awaitHealth(g, how) {
			return
		}
		l.workerReady(g, how)
		return
	}
	if g != l.next || g.exited || l.checkStarted(g) || l.awaitHealth(g, how) {
		return
	}
	if l.wantsCanary(g) {
		l.startCanary(g, how)
		return
	}
	if !g.wasCanary { // a promoted canary was ready when it became one
		g.readyAt, g.readyHow = l.sys.now(), how
	}
	g.state = current
	old := l.cur
	l.cur, l.next, l.everUp = g, nil, true
	// New connections go to g first; what is said about it comes after.
	switch {
	case l.hasPools() && g.workers != nil:
		l.steerGen(g)
	case l.hasPools():
		l.steerTo(g.slot)
	}
	// Every time, not only at first or after a reload: STATUS= must name
	// the generation that serves after a crash restart too.
	l.reloading = false
	l.outer.ready(fmt.Sprintf("%s serving", g))
	l.handoff.SetCurrent(g.id)
	if g.usr1 {
		l.signalGen(g, syscall.SIGUSR1)
	}
	l.log.Info(fmt.Sprintf("%s ready in %s: %s", g, ms(g.readyAt.Sub(g.started)), how),
		"generation", g.id, "pid", g.pid, "ready_ms", g.readyAt.Sub(g.started).Milliseconds(), "how", how)
	if l.cfg.Build != "" { // the development loop's one line per restart
		l.log.Info(fmt.Sprintf("rebuilt in %s · %s ready in %s", ms(l.built), g, ms(g.readyAt.Sub(g.started))),
			summaryKey, true, "generation", g.id, "pid", g.pid)
	}
	closeFile(l.crashBin) // a generation serves again: its binary is what a next crash restarts
	l.crashBin = nil
	if old != nil {
		closeFile(l.prevBin)
		l.prevBin, old.bin = old.bin, nil
		l.handOver(old)
	}
	l.limitDraining()
	l.watchHealth(g)
	l.concluded(Outcome{OK: true, Generation: g.id, Pid: g.pid, ReadyMS: g.readyAt.Sub(g.started).Milliseconds()})
	if l.pending != "" {
		reason := l.pending
		l.pending = ""
		l.upgrade(reason)
	}
	l.prepareLater(g) // warm_linux.go
}

// awaitHealth: with --health, g is ready only once a probe steered to it
// answers 2xx; it says whether that is still awaited.
func (l *launcher) awaitHealth(g *generation, how string) bool {
	if l.cfg.Health == nil || g.healthy {
		return false
	}
	if g.readyBy == "" { // the first of the ways it can show it
		g.readyBy = how
		l.log.Info(fmt.Sprintf("%s ready (%s); checking its health: GET %s", g, how, l.cfg.Health.Path), "generation", g.id, "pid", g.pid)
		l.healthCheck(g)
	}
	return true
}

func (l *launcher) onReadyTimeout(g *generation) {
	if g.exited || g.state != starting {
		return
	}
	g.failReason = fmt.Sprintf("not ready after %s (--ready-timeout, waiting for %s)", l.cfg.ReadyTimeout, l.waitingFor())
	if g.readyBy != "" {
		last := g.health
		if last == "" {
			last = "no answer yet"
		}
		g.failReason = fmt.Sprintf("not healthy after %s (--ready-timeout; ready by %s, but GET %s never answered 2xx: the last answer was %s)",
			l.cfg.ReadyTimeout, g.readyBy, l.cfg.Health.Path, last)
	}
	if g.workers != nil {
		g.failReason = fmt.Sprintf("not ready after %s (--ready-timeout): %s", l.cfg.ReadyTimeout, l.workersWaiting(g))
	}
	l.killGen(g)
}

// upgrade starts a new generation now, or after the one in flight.
func (l *launcher) upgrade(reason string) {
	if l.stopping {
		return
	}
	if l.next != nil {
		if l.pending == "" {
			l.log.Info(fmt.Sprintf("upgrade (%s) queued: gen %d is still starting", reason, l.next.id))
		}
		l.pending = reason
		return
	}
	if l.canary != nil {
		if l.pending == "" {
			l.log.Info(fmt.Sprintf("upgrade (%s) queued: %s is a canary until it is promoted or aborted (relaunch promote | abort)", reason, l.canary))
		}
		l.pending = reason
		return
	}
	l.cancelRestart()
	if _, err := l.pickSlots(l.workerCount()); err == errNoSlot {
		l.freeSlot(reason)
		return
	}
	l.log.Info("upgrade: " + reason)
	if l.cur != nil {
		l.reloading = true
		l.outer.reloading("upgrading: " + reason)
	}
	l.startUpgrade(reason)
}

// startUpgrade starts the generation of an upgrade for reason, its
// tripwire check due (tripwire_linux.go); on failure the old one serves on.
func (l *launcher) startUpgrade(reason string) {
	if err := l.start(false); err != nil {
		l.log.Error("upgrade failed: "+err.Error()+"; "+l.stillServes(), "reason", err.Error())
		l.upgradeFailed(err.Error())
		if l.cur == nil {
			l.scheduleRestart()
		}
		return
	}
	l.next.why = reason
	l.tripwireLater(l.next)
}

// upgradeFailed ends a reload for the outer manager: the old generation
// still serves.
func (l *launcher) upgradeFailed(why string) {
	l.concluded(Outcome{Reason: why})
	if l.reloading {
		l.reloading = false
		l.outer.ready("upgrade failed (" + why + "); " + l.stillServes())
	}
}

func (l *launcher) stillServes() string {
	if l.cur != nil {
		return fmt.Sprintf("%s still serves", l.cur)
	}
	return "no generation serves; clients wait in the backlog"
}

func (l *launcher) onExit(g *generation, st exitStatus) {
	if g.lead != nil {
		l.onWorkerExit(g, st)
		return
	}
	g.exited = true
	l.roots.remove(g.id)
	l.handoff.Exited(g.id)
	for _, t := range g.timers {
		t.Stop()
	}
	if g.notify != nil { // a generation of workers has none
		g.notify.Close()
	}
	l.dropProbes(g)
	if g == l.cur && !l.stopping {
		// Its crash restarts run this file, whatever is at its path now.
		closeFile(l.crashBin)
		l.crashBin = g.bin
	} else {
		closeFile(g.bin)
	}
	g.bin = nil
	var daemon []int
	if !l.stopping && (g == l.cur || g == l.next) && st.ws.Exited() && st.ws.ExitStatus() == 0 && g.workers == nil {
		daemon = l.leftovers(g) // before the group is killed: a daemon may not have left it yet
	}
	// Whatever the leader left in its group goes with it: a generation is
	// over when its main process is.
	if g.workers == nil {
		l.sys.killGroup(g.pid, syscall.SIGKILL)
	}
	for i, x := range l.gens {
		if x == g {
			l.gens = append(l.gens[:i], l.gens[i+1:]...)
			break
		}
	}
	if !l.stopping {
		l.reviveDead() // a drain may have shut its listener down
	}
	l.armSlots()
	how := st.String()
	if g.failReason != "" {
		how = g.failReason + ", " + how
	}
	attrs := []any{"generation", g.id, "pid", g.pid, "status", st.code()}
	if g == l.stopGen {
		l.setStatus(st.code())
	}
	daemonized := ""
	if len(daemon) > 0 {
		stopLeftovers(daemon, func() []int { return l.leftovers(g) })
		daemonized = daemonReason(daemon)
	}

	switch {
	case l.stopping, g.replaced:
		l.log.Info(fmt.Sprintf("%s exited: %s", g, how), attrs...)
	case g == l.next:
		l.next = nil
		reason := fmt.Sprintf("exited before it was ready (%s)", how)
		if g.execErr != nil {
			reason = "cannot run " + g.execErr.Error() + execHint(g.execErr)
		} else if daemonized != "" {
			reason = daemonized
		} else if g.failReason != "" {
			reason = how
		}
		attrs = append(attrs, "reason", reason)
		if l.cur != nil {
			l.log.Error(fmt.Sprintf("upgrade failed: %s %s; %s", g, reason, l.stillServes()), attrs...)
			l.upgradeFailed(reason)
			if l.pending != "" {
				reason := l.pending
				l.pending = ""
				l.upgrade(reason)
			}
			break
		}
		if !l.everUp && g.execErr != nil {
			l.fatal = errors.New(reason)
			l.finish(1)
			break
		}
		if daemonized != "" { // restarting it would only start one more daemon
			l.daemonized(g, reason, attrs)
			break
		}
		if l.cfg.Build != "" && l.cfg.Watch != nil {
			// Development: code that crashes at start waits for the next
			// change rather than restart-looping.
			l.log.Error(fmt.Sprintf("%s %s; waiting for the next change", g, reason), attrs...)
			break
		}
		l.log.Error(fmt.Sprintf("%s %s", g, reason), attrs...)
		l.afterExit(st)
	case g == l.cur && daemonized != "":
		l.cur = nil
		l.daemonized(g, daemonized, append(attrs, "reason", daemonized))
	case g == l.canary:
		l.log.Warn(fmt.Sprintf("%s, a canary, exited: %s", g, how), attrs...)
		l.onCanaryExit(g, how)
	case g == l.cur:
		l.cur = nil
		l.log.Warn(fmt.Sprintf("%s exited by itself: %s", g, how), attrs...)
		if l.curGoneDuringCanary(g) {
			break
		}
		if l.sys.now().Sub(g.readyAt) >= healthyAfter {
			l.backoff = backoffMin
		}
		if l.next != nil {
			break // it takes over when ready
		}
		l.afterExit(st)
	default: // draining or settling
		l.log.Info(fmt.Sprintf("%s exited: %s", g, how), attrs...)
		l.warnDrainSignal(g, st)
		if l.pending != "" && l.next == nil {
			reason := l.pending // waited for a free slot
			l.pending = ""
			l.upgrade(reason)
		}
	}
	if l.stopping && len(l.gens) == 0 {
		l.done = true
	}
}

// daemonized ends relaunch with status 1: the app forked into the
// background, which relaunch cannot manage.
func (l *launcher) daemonized(g *generation, reason string, attrs []any) {
	msg := fmt.Sprintf("%s %s", g, reason)
	if l.everUp {
		l.log.Error(msg, attrs...)
	} else {
		l.fatal = errors.New(msg) // said once, as relaunch's final error
	}
	l.finish(1)
}

// afterExit applies the restart policy once nothing serves.
func (l *launcher) afterExit(st exitStatus) {
	failed := st.ws.Signaled() || st.ws.ExitStatus() != 0
	switch {
	case l.cfg.Restart == RestartAlways, l.cfg.Restart == RestartOnFailure && failed:
		l.scheduleRestart()
	default:
		l.log.Info(fmt.Sprintf("the app exited (%s) and --restart is %s: stopping", st, restartName(l.cfg.Restart)))
		l.finish(st.code())
	}
}

func restartName(p RestartPolicy) string {
	return [...]string{"on-failure", "always", "never"}[p]
}

func (l *launcher) scheduleRestart() {
	if l.stopping || l.restartTimer != nil || l.next != nil {
		return
	}
	d := l.backoff
	l.backoff = min(2*l.backoff, backoffMax)
	l.log.Info(fmt.Sprintf("restarting in %s; %s", ms(d), l.stillServes()), "backoff_ms", d.Milliseconds())
	l.outer.send("STATUS=restarting in " + ms(d))
	l.restartIn(d)
}

// restartIn starts a generation in d, unless one starts meanwhile.
func (l *launcher) restartIn(d time.Duration) {
	l.restartAt = l.sys.now().Add(d)
	l.restartTimer = l.sys.afterFunc(d, func() {
		l.post(func() {
			l.restartTimer = nil
			if l.stopping || l.next != nil {
				return
			}
			if err := l.start(true); err != nil {
				l.log.Error("cannot restart: "+err.Error(), "reason", err.Error())
				l.scheduleRestart()
			}
		})
	})
}

func (l *launcher) cancelRestart() {
	if l.restartTimer != nil {
		l.restartTimer.Stop()
		l.restartTimer = nil
	}
}

func (l *launcher) onSignal(sig syscall.Signal) {
	switch sig {
	case syscall.SIGCHLD:
		// Once per burst: the exits of an upgrade's old workers come
		// together, and each reap reads every thread's children in /proc.
		if !l.reapSoon {
			l.reapSoon = true
			l.sys.afterFunc(reapAfter, func() {
				l.post(func() {
					l.reapSoon = false
					reapOrphans(l.owns)
				})
			})
		}
	case syscall.SIGUSR2, syscall.SIGHUP:
		l.upgrade(signalName(sig))
	case ReexecSignal:
		l.onReexec(nil)
	case syscall.SIGUSR1:
		if l.cur != nil {
			l.signalGen(l.cur, sig)
		}
		// A starting generation gets it once ready: it may not handle USR1
		// yet (the default action kills), and it must not miss a log
		// reopen that came after it opened its logs.
		if l.next != nil {
			l.next.usr1 = true
		}
	case syscall.SIGTERM, syscall.SIGINT:
		if l.stopping && (l.stopSig == syscall.SIGTERM || l.stopSig == syscall.SIGINT) {
			l.log.Warn("second " + signalName(sig) + ": killing every generation now")
			l.killAll()
			return
		}
		l.stop(sig, l.cfg.StopTimeout)
	case syscall.SIGQUIT:
		l.stop(l.cfg.DrainSignal, l.cfg.DrainTimeout)
	}
}

func (l *launcher) owns(pid int) bool {
	if pid == l.buildPid || pid == l.checkPid || pid == l.warmPid && pid != 0 ||
		l.keeper != nil && pid == l.keeper.Pid() { // the keeper holds every socket, and is reaped by its own Wait
		return true
	}
	for _, g := range l.gens {
		for _, p := range g.procs() {
			if p.pid == pid {
				return true
			}
		}
	}
	return false
}

// stop sends sig to every generation, then SIGKILL after timeout (0: never).
func (l *launcher) stop(sig syscall.Signal, timeout time.Duration) {
	if l.stopping {
		return
	}
	l.stopping, l.stopSig = true, sig
	l.cancelRestart()
	l.pending = ""
	if l.buildPid != 0 {
		killGroup(l.buildPid, syscall.SIGKILL) // a real process, whatever l.sys is
	}
	if !l.statusSet {
		l.stopGen = l.cur
		if l.stopGen == nil {
			l.stopGen = l.next // the first generation, still starting
		}
		if l.stopGen == nil {
			l.setStatus(0)
		}
	}
	l.outer.stopping()
	l.log.Info(fmt.Sprintf("stopping: sent %s to %d generation(s)", signalName(sig), len(l.gens)))
	for _, g := range slices.Clone(l.gens) { // retire may end one
		if g.state == draining && sig == l.cfg.DrainSignal {
			continue // already told
		}
		g.state = stopping
		l.signalGen(g, sig)
		l.retire(g)
	}
	if len(l.gens) == 0 {
		l.done = true
		return
	}
	if timeout > 0 {
		l.sys.afterFunc(timeout, func() {
			l.post(func() {
				if len(l.gens) > 0 {
					l.log.Warn(fmt.Sprintf("%d generation(s) still running after %s: SIGKILL", len(l.gens), timeout))
					l.killAll()
				}
			})
		})
	}
}

func (l *launcher) killAll() {
	for _, g := range slices.Clone(l.gens) {
		l.killGen(g)
		l.retire(g)
	}
}

// finish ends relaunch with status once what still runs has stopped.
func (l *launcher) finish(status int) {
	l.setStatus(status)
	l.stop(syscall.SIGTERM, l.cfg.StopTimeout)
}

func (l *launcher) setStatus(s int) {
	l.status, l.statusSet = s, true
}

// withoutEnv drops key from env.
func withoutEnv(env []string, key string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

func ms(d time.Duration) string {
	if d < time.Second {
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	}
	return d.Round(10 * time.Millisecond).String()
}
