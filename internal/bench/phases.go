package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/relaunch/relaunch/internal/loadtest"
)

// steadyGap is the least steady load between the end of an upgrade window
// and the next trigger: the interval is stretched to leave it.
const steadyGap = 250 * time.Millisecond

// controlWindows is how many times the poller runs alone before the upgrades.
const controlWindows = 5

// upgrade is one trigger and what followed.
type upgrade struct {
	kind    string    // "SIGUSR2", "rename", or "restart" (the naive baseline)
	trigger time.Time // the signal sent, the rename done
	first   time.Time // when the poller got the new generation's (process's) first answer
	oldPid  int
	newPid  int
	newGen  int // relaunch's generation; 0 in the naive baseline
	polls   int // the poller's connections
	failed  int // of which failed (refused, reset…)
	tw      int // TCP sockets in TIME_WAIT on the host just before the trigger

	// naive baseline: the old process's exit and the new one's start
	exited, spawned time.Time
}

// phase is one load run with its upgrades.
type phase struct {
	name     string
	addr     string
	res      *loadtest.Result
	upgrades []upgrade
	logs     []logEntry // relaunch's
	recs     records    // the demo's -record

	// relaunch only
	memStart memory         // relaunch's memory once its first generation is ready
	tcp6     time.Duration  // reading /proc/net/tcp6 to its end after the run
	tcp6TW   int            // with that many TIME_WAIT sockets
	appSize  int64          // bytes of the app's binary (the watcher hashes it)
	controls [][2]time.Time // windows where the poller ran without an upgrade
	// relaunch's own CPU (its threads' run time) from the first trigger
	// to the last upgrade's first answer
	upgradeCPU time.Duration
}

// windows returns each upgrade's window: from the trigger to window after
// the new generation's first answer.
func (p *phase) windows(window time.Duration) [][2]time.Time {
	w := make([][2]time.Time, len(p.upgrades))
	for i, u := range p.upgrades {
		w[i] = [2]time.Time{u.trigger, u.first.Add(window)}
	}
	return w
}

// upgradeParts is the requests during upgrades, divided two ways: by the
// part of the window (while the new app starts, from the trigger to its
// first answer; while the old one drains, the window after that) and by
// the kind of trigger. It tells where a higher latency during upgrades
// comes from.
type upgradeParts struct {
	starting, after part
	byKind          map[string]part
}

func (p *phase) breakdown(window time.Duration) upgradeParts {
	var starting, after [][2]time.Time
	kinds := map[string][][2]time.Time{}
	for _, u := range p.upgrades {
		starting = append(starting, [2]time.Time{u.trigger, u.first})
		after = append(after, [2]time.Time{u.first, u.first.Add(window)})
		kinds[u.kind] = append(kinds[u.kind], [2]time.Time{u.trigger, u.first.Add(window)})
	}
	// A request that spans both parts counts in the first, as split does.
	_, in := classify(p.res.Samples, starting, after)
	b := upgradeParts{starting: in[0], after: in[1], byKind: map[string]part{}}
	for k, wins := range kinds {
		_, b.byKind[k] = split(p.res.Samples, wins)
	}
	return b
}

// schedule alternates SIGUSR2 and rename triggers, then finishes with
// whichever is left.
func schedule(signals, renames int) []string {
	var s []string
	for signals > 0 || renames > 0 {
		if signals > 0 {
			s = append(s, "SIGUSR2")
			signals--
		}
		if renames > 0 {
			s = append(s, "rename")
			renames--
		}
	}
	return s
}

func (b *bench) loadConfig(addr string) loadtest.Config {
	return loadtest.Config{
		Addr:              addr,
		Clients:           b.cfg.clients,
		KeepAliveFraction: b.cfg.keepAlive,
		Rate:              b.cfg.rate,
		Timeout:           5 * time.Second,
		MaxErrorMessages:  20,
	}
}

// warmLoad puts the open-loop load on addr and lets it run for the
// warm-up; the caller stops it.
func (b *bench) warmLoad(ctx context.Context, addr string) (*loadtest.Runner, error) {
	run, err := loadtest.Start(ctx, b.loadConfig(addr))
	if err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, b.cfg.warmup); err != nil {
		run.Stop()
		return nil, err
	}
	return run, nil
}

// relaunchPhase runs the app under relaunch, under load, and upgrades it.
// relaunch keeps running (idle) when it returns.
func (b *bench) relaunchPhase(ctx context.Context) (*phase, error) {
	kinds := schedule(b.cfg.signals, b.cfg.renames)
	logf("relaunch: the demo (-init-delay %v) under relaunch, %.0f req/s, %d upgrades", b.cfg.initDelay, b.cfg.rate, len(kinds))
	r, err := b.startRelaunch(ctx, b.record)
	if err != nil {
		return nil, err
	}
	return b.upgrades(ctx, r, "relaunch", kinds, b.record, true)
}

// cutoverPhase runs the demo (with appArgs) under relaunch, under load,
// and upgrades it n times by SIGUSR2, its events recorded in record.
// relaunch is stopped when it returns.
func (b *bench) cutoverPhase(ctx context.Context, name string, n int, record string, appArgs ...string) (*phase, error) {
	logf("%s: the demo %q under relaunch, %.0f req/s, %d upgrades", name, appArgs, b.cfg.rate, n)
	r, err := b.startRelaunch(ctx, record, appArgs...)
	if err != nil {
		return nil, err
	}
	p, err := b.upgrades(ctx, r, name, schedule(n, 0), record, false)
	status, serr := b.stopRelaunch()
	b.rl = nil
	if err == nil {
		err = serr
	}
	logf("%s: relaunch stopped: %s", name, status)
	return p, err
}

// sideBySide runs the overlap baseline, the demo under relaunch and the
// demo without READY=1 under relaunch, in turn, in rounds: each round runs
// each a share of its triggers, so that a machine that gets busier or
// quieter during the run weighs on the three alike.
func (b *bench) sideBySide(ctx context.Context) (*sideRuns, error) {
	var side sideRuns
	share := func(total, round int) int { // round's share of total
		return total*(round+1)/b.cfg.rounds - total*round/b.cfg.rounds
	}
	for round := range b.cfg.rounds {
		record := func(name string) string {
			return filepath.Join(b.tmp, fmt.Sprintf("record-%s-%d", name, round+1))
		}
		if n := share(b.cfg.overlap, round); n > 0 {
			p, err := b.overlapPhase(ctx, n, record("overlap"))
			if err != nil {
				return nil, err
			}
			side.overlap = append(side.overlap, p)
		}
		if n := share(b.cfg.notify, round); n > 0 {
			p, err := b.cutoverPhase(ctx, "notify", n, record("notify"))
			if err != nil {
				return nil, err
			}
			side.notify = append(side.notify, p)
		}
		if n := share(b.cfg.procfs, round); n > 0 {
			p, err := b.cutoverPhase(ctx, "procfs", n, record("procfs"), "-no-notify")
			if err != nil {
				return nil, err
			}
			side.procfs = append(side.procfs, p)
		}
	}
	return &side, nil
}

// sideRuns are the side-by-side runs, a phase per round (none when not run).
type sideRuns struct {
	overlap, notify, procfs []*phase
}

// upgrades puts load on the app under relaunch r and upgrades it once per
// kind. The main run also measures the control windows, relaunch's memory
// at start and the /proc/net/tcp6 read.
func (b *bench) upgrades(ctx context.Context, r *relaunchProc, name string, kinds []string, record string, main bool) (*phase, error) {
	cur, err := probe(ctx, r.addr, time.Second)
	if err != nil {
		return nil, err
	}
	p := &phase{name: name, addr: r.addr}
	if p.memStart, err = readMem(r.pid()); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(b.appPath); err == nil {
		p.appSize = fi.Size()
	}
	run, err := b.warmLoad(ctx, r.addr)
	if err != nil {
		return nil, err
	}
	defer run.Stop()
	// Control windows: the poller alone, as long as it runs in an upgrade,
	// with no upgrade, to tell its own weight on the latency from the
	// upgrade's.
	for range min(controlWindows, len(kinds)) * boolInt(main) {
		t0 := time.Now()
		pollNew(ctx, r.addr, func(answer) bool { return false }, b.cfg.initDelay+20*time.Millisecond)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		end := time.Now()
		p.controls = append(p.controls, [2]time.Time{t0, end.Add(b.cfg.window)})
		if err := sleepUntil(ctx, end.Add(b.cfg.window+steadyGap)); err != nil {
			return nil, err
		}
	}
	cpu0, err := readCPU(r.pid())
	if err != nil {
		return nil, err
	}
	next := time.Now()
	src := 1 // the next rename installs demo[src]
	for i, kind := range kinds {
		if kind == "rename" {
			// Prepared ahead: the rename is the deploy, the copy is not.
			if err := copyFile(b.demo[src], b.nextPath); err != nil {
				return nil, err
			}
			src = 1 - src
		}
		if err := sleepUntil(ctx, next); err != nil {
			return nil, err
		}
		u := upgrade{kind: kind, oldPid: cur.pid, tw: timeWait()}
		oldGen := cur.gen
		u.trigger = time.Now()
		if kind == "SIGUSR2" {
			err = r.cmd.Process.Signal(syscall.SIGUSR2)
		} else {
			err = syscall.Rename(b.nextPath, b.appPath)
		}
		if err != nil {
			return nil, fmt.Errorf("upgrade %d (%s): %v", i+1, kind, err)
		}
		a, polls, failed, err := pollNew(ctx, r.addr, func(a answer) bool { return a.gen > oldGen }, 15*time.Second)
		if err != nil {
			return nil, fmt.Errorf("upgrade %d (%s): %v; relaunch's last lines:\n%s", i+1, kind, err, r.tailText())
		}
		u.first, u.newPid, u.newGen, u.polls, u.failed = a.recv, a.pid, a.gen, polls, failed
		cur = a
		p.upgrades = append(p.upgrades, u)
		if (i+1)%10 == 0 || i+1 == len(kinds) {
			logf("%s: %d/%d upgrades; the last (%s): gen %d answered %v after the trigger", name, i+1, len(kinds), kind, a.gen, u.first.Sub(u.trigger).Round(time.Millisecond))
		}
		next = later(u.trigger.Add(b.cfg.interval), u.first.Add(b.cfg.window+steadyGap))
	}
	cpu1, err := readCPU(r.pid())
	if err != nil {
		return nil, err
	}
	p.upgradeCPU = cpu1.run - cpu0.run
	if err := sleepUntil(ctx, cur.recv.Add(b.cfg.window+b.cfg.warmup)); err != nil {
		return nil, err
	}
	p.res = run.Stop()
	logf("%s: %s", name, p.res)
	// What relaunch's tripwire reads before each upgrade (launcher/tripwire_linux.go),
	// timed here after the load: with no IPv6 listener, the kernel walks
	// every connection, TIME_WAIT ones included, to print nothing.
	if main {
		p.tcp6TW = timeWait()
		t := time.Now()
		if f, err := os.Open("/proc/net/tcp6"); err == nil {
			io.Copy(io.Discard, f)
			f.Close()
			p.tcp6 = time.Since(t)
		}
	}
	// Every generation but the current one has drained and exited.
	for g := 1; g < cur.gen; g++ {
		if _, err := r.waitLog(ctx, 15*time.Second, fmt.Sprintf("gen %d exited", g), func(e logEntry) bool { return e.exited() && e.Generation == g }); err != nil {
			return nil, err
		}
	}
	p.logs = r.entries()
	if p.recs, err = readRecords(record); err != nil {
		return nil, err
	}
	return p, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// idleResult is relaunch's CPU use while idle.
type idleResult struct {
	d             time.Duration
	before, after cpuTime
}

func (b *bench) idlePhase(ctx context.Context) (*idleResult, error) {
	logf("idle: reading relaunch's CPU time over %v", b.cfg.idle)
	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}
	pid := b.rl.pid()
	c0, err := readCPU(pid)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := sleepCtx(ctx, b.cfg.idle); err != nil {
		return nil, err
	}
	c1, err := readCPU(pid)
	if err != nil {
		return nil, err
	}
	return &idleResult{d: time.Since(t0), before: c0, after: c1}, nil
}

// tputResult is the closed-loop throughput of the app direct and behind
// relaunch, in successful requests per second.
type tputResult struct {
	direct, relaunch float64
	rounds           [][2]float64 // per round: direct, relaunch
	errors           int
}

func (r *tputResult) ratio() float64 { return r.relaunch / r.direct }

// noise is the largest relative difference between two rounds of one side.
func (r *tputResult) noise() float64 {
	n := 0.0
	for side := range 2 {
		lo, hi := r.rounds[0][side], r.rounds[0][side]
		for _, rd := range r.rounds {
			lo, hi = min(lo, rd[side]), max(hi, rd[side])
		}
		if lo > 0 {
			n = max(n, hi/lo-1)
		}
	}
	return n
}

func (b *bench) throughputPhase(ctx context.Context) (*tputResult, error) {
	logf("throughput: closed loop, %d clients, %v behind relaunch and %v direct", b.cfg.tputClients, b.cfg.tput, b.cfg.tput)
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd, _, err := b.startDemo(b.demo[0], addr, "", 0)
	if err != nil {
		return nil, err
	}
	defer b.stopDemo(cmd)
	if _, err := waitServing(ctx, addr, 10*time.Second); err != nil {
		return nil, err
	}
	addrs := [2]string{addr, b.rl.addr}
	runFor := func(a string, d time.Duration) (*loadtest.Result, error) {
		return loadtest.Run(ctx, loadtest.Config{Addr: a, Clients: b.cfg.tputClients, KeepAliveFraction: b.cfg.keepAlive, Duration: d, Timeout: 5 * time.Second})
	}
	for _, a := range addrs { // warm-up
		if _, err := runFor(a, 500*time.Millisecond); err != nil {
			return nil, err
		}
	}
	// Short rounds, alternating sides: the machine's drift (another
	// process, frequency, the TIME_WAIT table) hits both sides alike.
	const rounds = 6
	r := &tputResult{}
	var ok [2]int
	var elapsed [2]time.Duration
	for round := range rounds {
		var rates [2]float64
		for k := range 2 {
			side := k
			if round%2 == 1 { // alternate the order, so that a drift hits both sides
				side = 1 - k
			}
			res, err := runFor(addrs[side], b.cfg.tput/rounds)
			if err != nil {
				return nil, err
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			rates[side] = float64(res.OK) / res.Elapsed.Seconds()
			ok[side] += res.OK
			elapsed[side] += res.Elapsed
			r.errors += res.Failed()
		}
		r.rounds = append(r.rounds, rates)
	}
	r.direct = float64(ok[0]) / elapsed[0].Seconds()
	r.relaunch = float64(ok[1]) / elapsed[1].Seconds()
	logf("throughput: direct %.0f req/s, behind relaunch %.0f req/s: %.3f", r.direct, r.relaunch, r.ratio())
	return r, nil
}

// naivePhase runs the baseline: the demo on a port of its own, restarted by
// SIGTERM, wait, start, under the same load.
func (b *bench) naivePhase(ctx context.Context) (*phase, error) {
	logf("naive: the demo on its own port, %.0f req/s, %d restarts (SIGTERM, wait for exit, start)", b.cfg.rate, b.cfg.naive)
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cmd, _, err := b.startDemo(b.demo[0], addr, b.naiveRecord, b.cfg.initDelay)
	if err != nil {
		return nil, err
	}
	defer func() { b.stopDemo(cmd) }()
	cur, err := waitServing(ctx, addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	p := &phase{name: "naive", addr: addr}
	run, err := b.warmLoad(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer run.Stop()
	next := time.Now()
	type polled struct {
		a         answer
		n, failed int
		err       error
	}
	for i := range b.cfg.naive {
		if err := sleepUntil(ctx, next); err != nil {
			return nil, err
		}
		u := upgrade{kind: "restart", oldPid: cmd.Process.Pid, tw: timeWait()}
		pc := make(chan polled, 1)
		u.trigger = time.Now()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			return nil, err
		}
		go func() {
			a, n, failed, err := pollNew(ctx, addr, func(a answer) bool { return a.pid != u.oldPid }, 15*time.Second)
			pc <- polled{a, n, failed, err}
		}()
		if err := b.wait(cmd); err != nil {
			return nil, fmt.Errorf("restart %d: the demo's exit: %v", i+1, err)
		}
		u.exited = time.Now()
		if cmd, u.spawned, err = b.startDemo(b.demo[0], addr, b.naiveRecord, b.cfg.initDelay); err != nil {
			return nil, err
		}
		pr := <-pc
		if pr.err != nil {
			return nil, fmt.Errorf("restart %d: %v", i+1, pr.err)
		}
		u.first, u.newPid, u.polls, u.failed = pr.a.recv, pr.a.pid, pr.n, pr.failed
		cur = pr.a
		p.upgrades = append(p.upgrades, u)
		if (i+1)%10 == 0 || i+1 == b.cfg.naive {
			logf("naive: %d/%d restarts; the last answered %v after SIGTERM", i+1, b.cfg.naive, u.first.Sub(u.trigger).Round(time.Millisecond))
		}
		next = later(u.trigger.Add(b.cfg.interval), u.first.Add(b.cfg.window+steadyGap))
	}
	if err := sleepUntil(ctx, cur.recv.Add(b.cfg.window+b.cfg.warmup)); err != nil {
		return nil, err
	}
	p.res = run.Stop()
	logf("naive: %s", p.res)
	if p.recs, err = readRecords(b.naiveRecord); err != nil {
		return nil, err
	}
	return p, nil
}

// overlapPhase runs the overlap baseline: the demo on a port of its own,
// bound with SO_REUSEPORT; per restart a new process binds the same port
// (both accept meanwhile), and once it answers, the old one is stopped
// (SIGTERM: it closes its listener and drains). What was queued on the old
// one's socket when it closed is reset: the overlap's price.
func (b *bench) overlapPhase(ctx context.Context, restarts int, record string) (*phase, error) {
	logf("overlap: the demo on its own port with SO_REUSEPORT, %.0f req/s, %d restarts (start a new one, stop the old one once the new one answers)", b.cfg.rate, restarts)
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	start := func() (*exec.Cmd, time.Time, error) {
		return b.startDemo(b.demo[0], addr, record, b.cfg.initDelay, "-reuseport")
	}
	cmd, _, err := start()
	if err != nil {
		return nil, err
	}
	stopping := make(chan error, restarts+1) // the old processes' waits
	defer func() { b.stopDemo(cmd) }()
	cur, err := waitServing(ctx, addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	p := &phase{name: "overlap", addr: addr}
	run, err := b.warmLoad(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer run.Stop()
	next := time.Now()
	for i := range restarts {
		if err := sleepUntil(ctx, next); err != nil {
			return nil, err
		}
		old := cmd
		u := upgrade{kind: "restart", oldPid: old.Process.Pid, tw: timeWait()}
		u.trigger = time.Now()
		if cmd, u.spawned, err = start(); err != nil {
			return nil, err
		}
		a, n, failed, err := pollNew(ctx, addr, func(a answer) bool { return a.pid == cmd.Process.Pid }, 15*time.Second)
		if err != nil {
			return nil, fmt.Errorf("overlap restart %d: %v", i+1, err)
		}
		old.Process.Signal(syscall.SIGTERM)
		go func() { stopping <- b.wait(old) }()
		u.first, u.newPid, u.polls, u.failed = a.recv, a.pid, n, failed
		cur = a
		p.upgrades = append(p.upgrades, u)
		if (i+1)%10 == 0 || i+1 == restarts {
			logf("overlap: %d/%d restarts; the last answered %v after its start", i+1, restarts, u.first.Sub(u.trigger).Round(time.Millisecond))
		}
		next = later(u.trigger.Add(b.cfg.interval), u.first.Add(b.cfg.window+steadyGap))
	}
	if err := sleepUntil(ctx, cur.recv.Add(b.cfg.window+b.cfg.warmup)); err != nil {
		return nil, err
	}
	p.res = run.Stop()
	logf("overlap: %s", p.res)
	for range p.upgrades {
		if err := <-stopping; err != nil {
			return nil, fmt.Errorf("overlap: an old process's exit: %v", err)
		}
	}
	if p.recs, err = readRecords(record); err != nil {
		return nil, err
	}
	return p, nil
}

// answer is one answer of the demo: "version=V pid=P gen=G".
type answer struct {
	recv    time.Time // when it was read in full
	pid     int
	gen     int // 0 when not under relaunch
	version string
}

// probe sends one GET / on a new connection.
func probe(ctx context.Context, addr string, timeout time.Duration) (answer, error) {
	var a answer
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return a, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"); err != nil {
		return a, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return a, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	a.recv = time.Now()
	if err != nil {
		return a, err
	}
	if resp.StatusCode != http.StatusOK {
		return a, fmt.Errorf("status %s", resp.Status)
	}
	for _, f := range strings.Fields(string(body)) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "pid":
			a.pid, _ = strconv.Atoi(v)
		case "gen":
			a.gen, _ = strconv.Atoi(v)
		case "version":
			a.version = v
		}
	}
	if a.pid == 0 {
		return a, fmt.Errorf("unexpected answer %q", body)
	}
	return a, nil
}

// waitServing probes addr every 10 ms until it answers.
func waitServing(ctx context.Context, addr string, timeout time.Duration) (answer, error) {
	deadline := time.Now().Add(timeout)
	for {
		a, err := probe(ctx, addr, time.Second)
		if err == nil {
			return a, nil
		}
		if time.Now().After(deadline) {
			return a, fmt.Errorf("%s does not answer after %v: %v", addr, timeout, err)
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return a, err
		}
	}
}

// pollNew opens a new connection to addr every millisecond, each probe in
// its own goroutine, until an answer satisfies isNew; it returns the
// earliest such answer, the number of probes and of failed ones.
func pollNew(ctx context.Context, addr string, isNew func(answer) bool, limit time.Duration) (answer, int, int, error) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	var (
		mu    sync.Mutex
		best  answer
		found = make(chan struct{})
		once  sync.Once
		wg    sync.WaitGroup
		n     int
		nErr  int
		last  error
	)
	for {
		select {
		case <-found:
			wg.Wait() // a probe in flight may have been answered earlier
			return best, n, nErr, nil
		case <-deadline.C:
			wg.Wait()
			if !best.recv.IsZero() {
				return best, n, nErr, nil
			}
			return best, n, nErr, fmt.Errorf("no answer from a new generation after %v (%d probes; last error: %v)", limit, n, last)
		case <-ctx.Done():
			wg.Wait()
			return best, n, nErr, ctx.Err()
		case <-tick.C:
			n++
			wg.Add(1)
			go func() {
				defer wg.Done()
				a, err := probe(ctx, addr, time.Second)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					last = err
					nErr++
					return
				}
				if !isNew(a) {
					return
				}
				if best.recv.IsZero() || a.recv.Before(best.recv) {
					best = a
				}
				once.Do(func() { close(found) })
			}()
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func sleepUntil(ctx context.Context, t time.Time) error {
	if d := time.Until(t); d > 0 {
		return sleepCtx(ctx, d)
	}
	return ctx.Err()
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// latStats summarises the latency of successful requests.
type latStats struct {
	n             int
	p50, p99, max time.Duration
}

func summarise(lat []time.Duration) latStats {
	if len(lat) == 0 {
		return latStats{}
	}
	slices.Sort(lat)
	return latStats{n: len(lat), p50: percentile(lat, 50), p99: percentile(lat, 99), max: lat[len(lat)-1]}
}

// percentile of sorted, non-empty lat by nearest rank (as loadtest does).
func percentile(lat []time.Duration, p float64) time.Duration {
	rank := int(float64(len(lat))*p/100 + 0.999999999)
	rank = min(max(rank, 1), len(lat))
	return lat[rank-1]
}

// part is the requests of one part of a run: steady, or during upgrades.
type part struct {
	requests int
	errors   map[loadtest.Kind]int
	lat      latStats
}

func (p part) failed() int {
	n := 0
	for _, c := range p.errors {
		n += c
	}
	return n
}

// split divides samples into steady and during-upgrade ones: a request is
// during an upgrade when its span (start to answer or failure) overlaps a
// window.
func split(samples []loadtest.Sample, wins [][2]time.Time) (steady, during part) {
	steady, in := classify(samples, wins)
	return steady, in[0]
}

// classify puts each sample in the first set of windows its span overlaps,
// or in steady when none.
func classify(samples []loadtest.Sample, sets ...[][2]time.Time) (steady part, in []part) {
	in = make([]part, len(sets))
	lats := make([][]time.Duration, len(sets)+1)
	parts := make([]*part, len(sets)+1)
	parts[0] = &steady
	for i := range in {
		parts[i+1] = &in[i]
	}
	for _, p := range parts {
		p.errors = map[loadtest.Kind]int{}
	}
	for _, s := range samples {
		end := s.Start.Add(s.Latency)
		k := 0
	sets:
		for i, wins := range sets {
			for _, w := range wins {
				if !s.Start.After(w[1]) && !end.Before(w[0]) {
					k = i + 1
					break sets
				}
			}
		}
		p := parts[k]
		p.requests++
		if s.Err != "" {
			p.errors[s.Err]++
		} else {
			lats[k] = append(lats[k], s.Latency)
		}
	}
	for k, p := range parts {
		p.lat = summarise(lats[k])
	}
	return steady, in
}
