package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/relaunch/relaunch/internal/loadtest"
)

// report turns the measurements into results.md.
type report struct {
	cfg     config
	machine machine
	when    time.Time
	rl      *phase
	naive   *phase
	side    *sideRuns // the side-by-side runs: overlap, READY=1, procfs
	idle    *idleResult
	tput    *tputResult
	mem     memory
	took    time.Duration
	load    [2]string // /proc/loadavg at the start and at the end
}

// genInfo is what relaunch's log says about one generation.
type genInfo struct {
	upgradeAt time.Time // the "upgrade: REASON" line before its start
	reason    string
	startedAt time.Time
	readyAt   time.Time
	pid       int
}

// genInfos reads relaunch's log: each generation's upgrade line, start and
// readiness, and the failed upgrades.
func genInfos(logs []logEntry) (map[int]*genInfo, []string) {
	gens := map[int]*genInfo{}
	var failed []string
	var pending *logEntry
	for i, e := range logs {
		switch {
		case strings.HasPrefix(e.Msg, "upgrade: "):
			pending = &logs[i]
		case strings.HasPrefix(e.Msg, "upgrade failed"):
			failed = append(failed, e.Msg)
		case e.started():
			g := &genInfo{startedAt: e.Time, pid: e.Pid}
			if !e.StartAt.IsZero() {
				g.startedAt = e.StartAt // the line comes once the app is exec'd
			}
			if pending != nil {
				g.upgradeAt, g.reason = pending.Time, strings.TrimPrefix(pending.Msg, "upgrade: ")
				pending = nil
			}
			gens[e.Generation] = g
		case e.ready():
			if g := gens[e.Generation]; g != nil {
				g.readyAt = e.Time
			}
		}
	}
	return gens, failed
}

// dist is a set of per-upgrade durations.
type dist []time.Duration

func (d dist) p50() time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return percentile(s, 50)
}

func (d dist) max() time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

func (d dist) over(limit time.Duration) int {
	n := 0
	for _, v := range d {
		if v >= limit {
			n++
		}
	}
	return n
}

// signed is ms with its sign: "+2.93 ms", "-0.26 ms".
func signed(d time.Duration) string {
	if d < 0 {
		return ms(d)
	}
	return "+" + ms(d)
}

// p50Beyond is how much d's p50 is beyond base's, with a 90 % bootstrap
// interval: the two resampled 2000 times (a fixed seed: the same runs give
// the same report). A p50 of 20–40 app starts on a busy machine moves by
// a few ms from run to run; the interval says by how much.
func p50Beyond(base, d dist) (diff, lo, hi time.Duration) {
	if len(base) == 0 || len(d) == 0 {
		return 0, 0, 0
	}
	const resamples = 2000
	rng := rand.New(rand.NewPCG(1, 2))
	diffs := make([]time.Duration, resamples)
	a, b := make(dist, len(base)), make(dist, len(d))
	for i := range diffs {
		for j := range a {
			a[j] = base[rng.IntN(len(base))]
		}
		for j := range b {
			b[j] = d[rng.IntN(len(d))]
		}
		diffs[i] = b.p50() - a.p50()
	}
	slices.Sort(diffs)
	return d.p50() - base.p50(), percentile(diffs, 5), percentile(diffs, 95)
}

// "p50 X, max Y", or "n/a".
func (d dist) String() string {
	if len(d) == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%s (max %s)", ms(d.p50()), ms(d.max()))
}

// rlFigures are the per-upgrade figures of the relaunch run.
type rlFigures struct {
	total       map[string]dist // trigger → first answer, by kind
	appStart    dist            // relaunch's "ready in": started → ready log lines
	overhead    map[string]dist // by kind: (upgrade start → first answer) − appStart; a signal's upgrade starts at the signal
	renameLag   dist            // rename → "upgrade:" log line, minus the debounce
	sigLag      dist            // SIGUSR2 → "upgrade:" log line
	spawn       dist            // "upgrade:" → "started"
	exec        dist            // "started" → the app's "listening" record, minus -init-delay
	notify      dist            // the app's "listening" → its "ready" (READY=1 sent) records
	readyLag    dist            // READY=1 sent → relaunch's "ready" line
	firstAnswer dist            // relaunch's "ready" line → the poller's first answer
	missing     int             // upgrades whose log lines were not found
	wrongReason int             // upgrades whose "upgrade:" line does not name their trigger
	failed      []string
	starts      int // generations started
}

func (r *report) rlFigures() rlFigures {
	f := rlFigures{total: map[string]dist{}, overhead: map[string]dist{}}
	gens, failed := genInfos(r.rl.logs)
	f.failed, f.starts = failed, len(gens)
	recGen := map[int]map[string]time.Time{}
	for pid, g := range r.rl.recs.gen {
		recGen[g] = r.rl.recs.at[pid]
	}
	for _, u := range r.rl.upgrades {
		f.total[u.kind] = append(f.total[u.kind], u.first.Sub(u.trigger))
		g := gens[u.newGen]
		if g == nil || g.upgradeAt.IsZero() || g.readyAt.IsZero() {
			f.missing++
			continue
		}
		if (u.kind == "SIGUSR2") != (g.reason == "SIGUSR2") || (u.kind == "rename") != strings.HasPrefix(g.reason, "the binary changed") {
			f.wrongReason++
		}
		start := g.readyAt.Sub(g.startedAt)
		f.appStart = append(f.appStart, start)
		from := u.trigger
		if u.kind == "rename" {
			from = g.upgradeAt
			f.renameLag = append(f.renameLag, g.upgradeAt.Sub(u.trigger)-r.cfg.debounce)
		} else {
			f.sigLag = append(f.sigLag, g.upgradeAt.Sub(u.trigger))
		}
		f.overhead[u.kind] = append(f.overhead[u.kind], u.first.Sub(from)-start)
		f.spawn = append(f.spawn, g.startedAt.Sub(g.upgradeAt))
		f.firstAnswer = append(f.firstAnswer, u.first.Sub(g.readyAt))
		if rec := recGen[u.newGen]; rec != nil && !rec["listening"].IsZero() && !rec["ready"].IsZero() {
			f.exec = append(f.exec, rec["listening"].Sub(g.startedAt)-r.cfg.initDelay)
			f.notify = append(f.notify, rec["ready"].Sub(rec["listening"]))
			f.readyLag = append(f.readyLag, g.readyAt.Sub(rec["ready"]))
		}
	}
	return f
}

func (f rlFigures) allOverhead() dist {
	var d dist
	for _, k := range []string{"SIGUSR2", "rename"} {
		d = append(d, f.overhead[k]...)
	}
	return d
}

// naiveFigures are the per-restart figures of the baseline.
type naiveFigures struct {
	down     dist // SIGTERM → the new process's first answer
	drain    dist // SIGTERM → the old process's exit
	appStart dist // start → first answer
	exec     dist // start → "listening" record, minus -init-delay
}

func (r *report) naiveFigures() naiveFigures {
	var f naiveFigures
	for _, u := range r.naive.upgrades {
		f.down = append(f.down, u.first.Sub(u.trigger))
		f.drain = append(f.drain, u.exited.Sub(u.trigger))
		f.appStart = append(f.appStart, u.first.Sub(u.spawned))
		if rec := r.naive.recs.at[u.newPid]; rec != nil && !rec["listening"].IsZero() {
			f.exec = append(f.exec, rec["listening"].Sub(u.spawned)-r.cfg.initDelay)
		}
	}
	return f
}

// cutover is one way to start a new process and switch to it, for the
// side-by-side table: per upgrade, its steps.
type cutover struct {
	name     string // the column's heading
	short    string // its name in a sentence: "overlap", "READY=1", "procfs"
	total    dist   // trigger → first answer of the new process
	spawn    dist   // trigger → forked (relaunch: its start begins, the "started" line's start_at)
	exec     dist   // fork → the app listens, minus -init-delay
	boot     dist   // fork → the app's Go runtime is up (its "init" record)
	ready    dist   // the app listens → relaunch's "ready" line; empty for the overlap
	answer   dist   // relaunch's "ready" line (the overlap: the app listens) → first answer
	failed   int    // requests of the load that failed in the run
	requests int    // requests of the load in the run
	cpu      time.Duration
}

// relaunchCutover is the SIGUSR2 upgrades of relaunch runs.
func (r *report) relaunchCutover(name, short string, ps ...*phase) cutover {
	c := cutover{name: name, short: short}
	var cpu time.Duration
	var n int
	for _, p := range ps {
		c.failed += p.res.Failed()
		c.requests += p.res.Total
		cpu += p.upgradeCPU
		n += len(p.upgrades)
		gens, _ := genInfos(p.logs)
		recGen := map[int]map[string]time.Time{}
		for pid, g := range p.recs.gen {
			recGen[g] = p.recs.at[pid]
		}
		for _, u := range p.upgrades {
			if u.kind != "SIGUSR2" {
				continue
			}
			c.total = append(c.total, u.first.Sub(u.trigger))
			g := gens[u.newGen]
			if g == nil || g.readyAt.IsZero() {
				continue
			}
			c.spawn = append(c.spawn, g.startedAt.Sub(u.trigger))
			c.answer = append(c.answer, u.first.Sub(g.readyAt))
			if rec := recGen[u.newGen]; rec != nil && !rec["listening"].IsZero() {
				c.exec = append(c.exec, rec["listening"].Sub(g.startedAt)-r.cfg.initDelay)
				if !rec["init"].IsZero() {
					c.boot = append(c.boot, rec["init"].Sub(g.startedAt))
				}
				c.ready = append(c.ready, g.readyAt.Sub(rec["listening"]))
			}
		}
	}
	if n > 0 {
		c.cpu = cpu / time.Duration(n)
	}
	return c
}

// overlapCutover is the overlap baseline's restarts.
func (r *report) overlapCutover(ps []*phase) cutover {
	c := cutover{name: "overlap", short: "overlap"}
	for _, p := range ps {
		c.failed += p.res.Failed()
		c.requests += p.res.Total
		for _, u := range p.upgrades {
			c.total = append(c.total, u.first.Sub(u.trigger))
			c.spawn = append(c.spawn, u.spawned.Sub(u.trigger))
			if rec := p.recs.at[u.newPid]; rec != nil && !rec["listening"].IsZero() {
				c.exec = append(c.exec, rec["listening"].Sub(u.spawned)-r.cfg.initDelay)
				if !rec["init"].IsZero() {
					c.boot = append(c.boot, rec["init"].Sub(u.spawned))
				}
				c.answer = append(c.answer, u.first.Sub(rec["listening"]))
			}
		}
	}
	return c
}

// cutovers is the side-by-side runs: the overlap first, when run. Without
// -notify runs, the READY=1 column is the main run's SIGUSR2 upgrades.
func (r *report) cutovers() []cutover {
	var cs []cutover
	side := r.side
	if side == nil {
		side = &sideRuns{}
	}
	if len(side.overlap) > 0 {
		cs = append(cs, r.overlapCutover(side.overlap))
	}
	switch {
	case len(side.notify) > 0:
		cs = append(cs, r.relaunchCutover("relaunch, `READY=1`", "READY=1", side.notify...))
	case r.cfg.signals > 0:
		cs = append(cs, r.relaunchCutover("relaunch, `READY=1` (the main run)", "READY=1", r.rl))
	}
	if len(side.procfs) > 0 {
		cs = append(cs, r.relaunchCutover("relaunch, procfs (`auto`, no `READY=1`)", "procfs", side.procfs...))
	}
	return cs
}

// cutoverTable is the side-by-side section of results.md.
func (r *report) cutoverTable() string {
	cs := r.cutovers()
	if len(cs) < 2 {
		return ""
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("## Cutover, side by side\n\n")
	w("The same app (`-init-delay %s`), the same load (%.0f req/s), started anew by a trigger, p50 (max) over the triggers: ", ms(r.cfg.initDelay), r.cfg.rate)
	w("**overlap** is the fastest switch without relaunch: the app binds its port itself with `SO_REUSEPORT`, a new process binds it too while the old one serves, and the old one is stopped (`SIGTERM`: it closes its listener, then drains) once the new one answers; the trigger is the new process's start. ")
	w("**relaunch** is its `SIGUSR2` upgrades, with the demo that sends `READY=1`, and with the demo that does not (`-no-notify`: `--ready auto` sees it accepting in `/proc`). ")
	w("Each runs apart from the main run, on a relaunch of its own, in %d round(s) run in turn (overlap, `READY=1`, procfs), so that the three share the machine's conditions.\n\n", r.cfg.rounds)
	w("| |")
	for _, c := range cs {
		w(" %s |", c.name)
	}
	w("\n|---|")
	for range cs {
		w("---|")
	}
	w("\n")
	row := func(name string, f func(c cutover) string) {
		w("| %s |", name)
		for _, c := range cs {
			w(" %s |", f(c))
		}
		w("\n")
	}
	row("triggers", func(c cutover) string { return fmt.Sprint(len(c.total)) })
	row("**trigger → first answer of the new process**", func(c cutover) string { return "**" + c.total.String() + "**" })
	if cs[0].name == "overlap" {
		row("p50 beyond the overlap's (90 % bootstrap interval)", func(c cutover) string {
			if c.name == "overlap" {
				return ""
			}
			diff, lo, hi := p50Beyond(cs[0].total, c.total)
			return fmt.Sprintf("%s (%s to %s)", ms(diff), ms(lo), ms(hi))
		})
	}
	row("trigger → new process forked (relaunch: its start begins, `start_at` in its `started` line)", func(c cutover) string { return c.spawn.String() })
	row(fmt.Sprintf("fork → the app listens, minus its %s `-init-delay` (relaunch: the stop at its exec too)", ms(r.cfg.initDelay)), func(c cutover) string { return c.exec.String() })
	row("of which: fork → the app's Go runtime is up (exec, runtime start; relaunch: the stop at its exec too)", func(c cutover) string { return c.boot.String() })
	row("the app listens → relaunch logs `ready` (`READY=1` received, or seen in `/proc`)", func(c cutover) string {
		if c.name == "overlap" {
			return ""
		}
		return c.ready.String()
	})
	row("relaunch logs `ready` (overlap: the app listens) → first answer (1 ms poll)", func(c cutover) string { return c.answer.String() })
	row("requests of the load that failed in the run", func(c cutover) string { return fmt.Sprintf("%d of %d", c.failed, c.requests) })
	row("relaunch's own CPU per upgrade (`schedstat`, trigger to first answer)", func(c cutover) string {
		if c.name == "overlap" {
			return ""
		}
		return ms(c.cpu)
	})
	w("\n")
	return b.String()
}

// target is one line of the targets table.
type target struct {
	name, measured, verdict string
}

func met(format string, args ...any) string    { return "met: " + fmt.Sprintf(format, args...) }
func missed(format string, args ...any) string { return "**missed**: " + fmt.Sprintf(format, args...) }

func (r *report) targets(f rlFigures, steady, during, control part) []target {
	var ts []target
	res := r.rl.res

	if n := res.Failed(); n == 0 {
		ts = append(ts, target{"0 errors", fmt.Sprintf("%d errors in %d requests", n, res.Total), met("0 errors")})
	} else {
		ts = append(ts, target{"0 errors", fmt.Sprintf("%d errors in %d requests (%s)", n, res.Total, kinds(res.Errors)),
			missed("by %d errors, %.2f per upgrade", n, float64(n)/float64(len(r.rl.upgrades)))})
	}

	const overheadLimit = 5 * time.Millisecond
	oh := f.allOverhead()
	t := target{name: "upgrade overhead < 5 ms beyond the app's start"}
	t.measured = fmt.Sprintf("p50 %s, max %s (SIGUSR2 %s; rename, from the upgrade start, %s)", ms(oh.p50()), ms(oh.max()), f.overhead["SIGUSR2"], f.overhead["rename"])
	switch {
	case len(oh) == 0:
		t.verdict = missed("relaunch's log lines were not found")
	case oh.max() < overheadLimit:
		t.verdict = met("every upgrade, the worst by %s", ms(overheadLimit-oh.max()))
	default:
		t.verdict = missed("%d of %d upgrades at or over, the worst by %s", oh.over(overheadLimit), len(oh), ms(oh.max()-overheadLimit))
		if oh.p50() < overheadLimit {
			t.verdict += fmt.Sprintf(" (p50 %s under)", ms(overheadLimit-oh.p50()))
		}
	}
	ts = append(ts, t)

	if r.cfg.renames > 0 {
		const lagLimit = 20 * time.Millisecond
		t := target{name: fmt.Sprintf("rename → upgrade start within debounce (%s) + 20 ms", ms(r.cfg.debounce))}
		t.measured = fmt.Sprintf("debounce + %s, max + %s", ms(f.renameLag.p50()), ms(f.renameLag.max()))
		switch {
		case len(f.renameLag) == 0:
			t.verdict = missed("relaunch's log lines were not found")
		case f.renameLag.max() <= lagLimit:
			t.verdict = met("every rename, the worst by %s", ms(lagLimit-f.renameLag.max()))
		default:
			t.verdict = missed("%d of %d renames over, the worst by %s", f.renameLag.over(lagLimit+1), len(f.renameLag), ms(f.renameLag.max()-lagLimit))
		}
		ts = append(ts, t)
	}

	t = target{name: "p99 during upgrades ≤ 1.2 × steady"}
	if steady.lat.n > 0 && during.lat.n > 0 {
		ratio := float64(during.lat.p99) / float64(steady.lat.p99)
		t.measured = fmt.Sprintf("%s vs %s: %.2f ×", ms(during.lat.p99), ms(steady.lat.p99), ratio)
		if control.lat.n > 0 {
			// The poller that times the first answer doubles the new
			// connections in a window: the control windows show what that
			// alone costs, and during ÷ control what the upgrade adds.
			t.measured += fmt.Sprintf(" (the poller alone: %s, %.2f ×; during ÷ poller alone: %.2f ×)", ms(control.lat.p99),
				float64(control.lat.p99)/float64(steady.lat.p99), float64(during.lat.p99)/float64(control.lat.p99))
		}
		if ratio <= 1.2 {
			t.verdict = met("by %.2f ×", 1.2-ratio)
		} else {
			t.verdict = missed("by %.2f × (%s over 1.2 × steady)", ratio-1.2, ms(during.lat.p99-time.Duration(1.2*float64(steady.lat.p99))))
		}
	} else {
		t.measured, t.verdict = "n/a", missed("no samples")
	}
	ts = append(ts, t)

	const rssLimit = 10 * 1024 // KiB
	t = target{name: "relaunch's RSS < 10 MiB", measured: fmt.Sprintf("%s (peak %s)", mib(r.mem.rss), mib(r.mem.hwm))}
	if r.mem.rss < rssLimit {
		t.verdict = met("by %s", mib(rssLimit-r.mem.rss))
	} else {
		t.verdict = missed("by %s", mib(r.mem.rss-rssLimit))
	}
	ts = append(ts, t)

	ticks := r.idle.after.ticks - r.idle.before.ticks
	cpu := time.Duration(ticks) * time.Second / userHZ
	t = target{name: "idle CPU ~0 (at most one clock tick, 10 ms, over the idle period)"}
	t.measured = fmt.Sprintf("%s over %s (%.3f %% of a core)", ms(cpu), r.idle.d.Round(time.Second), 100*cpu.Seconds()/r.idle.d.Seconds())
	if ticks <= 1 {
		t.verdict = met("%d tick(s)", ticks)
	} else {
		t.verdict = missed("by %d ticks (%s)", ticks-1, ms(cpu-time.Second/userHZ))
	}
	ts = append(ts, t)

	if cs := r.cutovers(); len(cs) > 1 && cs[0].name == "overlap" {
		const cutoverLimit = 3 * time.Millisecond
		t = target{name: "cutover (trigger → first answer, p50) within 3 ms of the overlap's"}
		var says, over []string
		for _, c := range cs[1:] {
			diff, lo, hi := p50Beyond(cs[0].total, c.total)
			says = append(says, fmt.Sprintf("%s %s (90 %%: %s to %s)", c.short, signed(diff), ms(lo), ms(hi)))
			if diff > cutoverLimit {
				over = append(over, fmt.Sprintf("%s by %s", c.short, ms(diff-cutoverLimit)))
			}
		}
		t.measured = strings.Join(says, "; ")
		if len(over) == 0 {
			t.verdict = met("both")
		} else {
			t.verdict = missed("%s", strings.Join(over, ", "))
		}
		ts = append(ts, t)
	}

	t = target{name: "throughput behind relaunch / direct = 1.00 ± 0.05"}
	ratio := r.tput.ratio()
	t.measured = fmt.Sprintf("%.3f (%.0f vs %.0f req/s; rounds differ by up to %.1f %%)", ratio, r.tput.relaunch, r.tput.direct, 100*r.tput.noise())
	if d := math.Abs(ratio - 1); d <= 0.05 {
		t.verdict = met("off by %.3f", d)
	} else {
		t.verdict = missed("by %.3f", d-0.05)
	}
	ts = append(ts, t)
	return ts
}

// markdown is results.md.
func (r *report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	c := r.cfg
	f := r.rlFigures()
	nf := r.naiveFigures()
	rs, rparts := classify(r.rl.res.Samples, r.rl.windows(c.window), r.rl.controls)
	rd, rc := rparts[0], rparts[1]
	ns, nd := split(r.naive.res.Samples, r.naive.windows(c.window))

	w("# relaunch: handover benchmark\n\n")
	w("`%s` on %s: %d × %s, Linux %s, %s; the run took %s, load average %s at its start, %s at its end.\n\n",
		r.command(), r.when.Format("2006-01-02 15:04 MST"), r.machine.cpus, r.machine.model, r.machine.kernel, r.machine.goVer, r.took.Round(time.Second), r.load[0], r.load[1])
	w("The demo app (`testdata/demo`, `-init-delay %s`) under open-loop load, %.0f req/s from %d clients, %.0f %% of them keep-alive, the others connect per request. "+
		"**relaunch**: %d upgrades, %d by `SIGUSR2` and %d by renaming the other build over the binary relaunch watches (`--debounce %s`), one every ~%s. "+
		"**naive**: the same app bound to its own port (`-listen`), %d restarts as a process manager would do them: `SIGTERM`, wait for the exit, start again.\n\n",
		c.initDelay, c.rate, c.clients, 100*c.keepAlive, len(r.rl.upgrades), c.signals, c.renames, ms(c.debounce), c.interval, len(r.naive.upgrades))

	w("| | relaunch | naive stop/start |\n|---|---|---|\n")
	w("| upgrades | %d (%d `SIGUSR2`, %d rename) | %d restarts |\n", len(r.rl.upgrades), c.signals, c.renames, len(r.naive.upgrades))
	w("| requests | %d (%.0f/s) | %d (%.0f/s) |\n", r.rl.res.Total, rate(r.rl.res), r.naive.res.Total, rate(r.naive.res))
	w("| errors | **%s** | **%s** |\n", errText(r.rl.res.Errors), errText(r.naive.res.Errors))
	w("| errors per upgrade | %.2f | %.1f |\n", perUpgrade(r.rl.res.Failed(), len(r.rl.upgrades)), perUpgrade(r.naive.res.Failed(), len(r.naive.upgrades)))
	w("| keep-alive connections closed by a draining app, request retried (not an error) | %d | %d |\n", r.rl.res.Retried, r.naive.res.Retried)
	w("| latency steady: p50 / p99 / max | %s | %s |\n", latText(rs), latText(ns))
	w("| latency during upgrades: p50 / p99 / max | %s | %s |\n", latText(rd), latText(nd))
	w("| requests steady / during upgrades | %d / %d | %d / %d |\n", rs.requests, rd.requests, ns.requests, nd.requests)
	rb, nb := r.rl.breakdown(c.window), r.naive.breakdown(c.window)
	w("| during upgrades, p99 by part: trigger → first answer (the new app starts) / the %s after (the old one drains) | %s / %s | %s / %s |\n",
		ms(c.window), ms(rb.starting.lat.p99), ms(rb.after.lat.p99), ms(nb.starting.lat.p99), ms(nb.after.lat.p99))
	w("| during upgrades, p99 by trigger: `SIGUSR2` / rename | %s / %s | |\n", ms(rb.byKind["SIGUSR2"].lat.p99), ms(rb.byKind["rename"].lat.p99))
	if len(r.rl.controls) > 0 {
		w("| control: latency while the 1 ms poller runs alone, no upgrade (%d windows, %d requests): p50 / p99 / max | %s | |\n", len(r.rl.controls), rc.requests, latText(rc))
	}
	w("| trigger → first answer of the new app, p50 (max) | `SIGUSR2` %s; rename %s | `SIGTERM` %s |\n", f.total["SIGUSR2"], f.total["rename"], nf.down)
	w("| the app's own start, p50 (max) | %s: relaunch's `ready in` | %s: start → first answer |\n", f.appStart, nf.appStart)
	rp, rf := polls(r.rl.upgrades)
	np, nfail := polls(r.naive.upgrades)
	w("| new connections every 1 ms from the trigger until the new app answers: failed | %d of %d | %d of %d |\n", rf, rp, nfail, np)
	w("| the app unreachable | %s | %s per restart: connections refused |\n", map[bool]string{true: "never", false: "**yes**: see the failed probes"}[rf == 0], nf.down)
	w("\n")

	w("Targets (shown, not asserted):\n\n| target | measured | |\n|---|---|---|\n")
	for _, t := range r.targets(f, rs, rd, rc) {
		w("| %s | %s | %s |\n", t.name, t.measured, t.verdict)
	}
	w("\n")

	if len(f.failed) > 0 || f.missing > 0 || f.wrongReason > 0 || f.starts != len(r.rl.upgrades)+1 {
		w("Anomalies: %d generations started for %d upgrades; %d upgrades without their log lines; %d whose `upgrade:` line names another trigger; failed upgrades: %q.\n\n",
			f.starts, len(r.rl.upgrades), f.missing, f.wrongReason, f.failed)
	}

	w("%s", r.cutoverTable())

	w("![latency of every request over time, upgrades marked](latency.png)\n\n")

	w("## Where an upgrade's time goes\n\np50 (max) over the upgrades, from relaunch's JSON log (ns timestamps) and the demo's `-record` file:\n\n")
	w("| step | relaunch | naive |\n|---|---|---|\n")
	w("| `SIGUSR2` → relaunch logs `upgrade:` | %s | |\n", f.sigLag)
	if c.renames > 0 {
		w("| rename → relaunch logs `upgrade:`, minus the %s debounce | %s | |\n", ms(c.debounce), f.renameLag)
	}
	w("| `SIGTERM` → the old process has exited (its graceful drain) | | %s |\n", nf.drain)
	w("| `upgrade:` → new generation forked | %s | |\n", f.spawn)
	w("| fork → the app listens, minus its %s `-init-delay` (exec, Go runtime start; relaunch: the stop at its exec too) | %s | %s |\n", ms(c.initDelay), f.exec, nf.exec)
	w("| the app listens → it sends `READY=1` | %s | |\n", f.notify)
	w("| `READY=1` sent → relaunch logs `ready` | %s | |\n", f.readyLag)
	w("| relaunch logs `ready` → first answer of the new generation (steering, 1 ms poll) | %s | |\n", f.firstAnswer)
	w("| upgrade overhead = upgrade start → first answer, minus `ready in` | SIGUSR2 %s; rename %s | |\n", f.overhead["SIGUSR2"], f.overhead["rename"])
	w("| TCP sockets in TIME_WAIT on the host at the trigger (`/proc/net/sockstat`) | %s | %s |\n", intDist(r.rl.upgrades), intDist(r.naive.upgrades))
	if n := len(r.rl.upgrades); n > 0 {
		w("| relaunch's own CPU (its threads' run time, `/proc/PID/task/*/schedstat`) from the first trigger to the last new generation's first answer | %s in all, %s per upgrade | |\n",
			ms(r.rl.upgradeCPU), ms(r.rl.upgradeCPU/time.Duration(n)))
	}
	w("\n")
	if r.rl.tcp6 > 0 {
		w("Once an upgrade's new generation has started (30 ms on, or at its readiness), relaunch checks its steered group: it lists the listening sockets of its port with `sock_diag`, which walks only the kernel's table of listeners (`internal/listenprobe/sockdiag_linux.go`); it no longer does so between the trigger and the fork, where that took 0.2–2 ms under this load. "+
			"It used to read `/proc/net/tcp6`: reading that table, which has no listener here, to its end took %s after the run, with %d sockets in TIME_WAIT, as the kernel walks its whole table of connections to print nothing. "+
			"After the debounce, a rename also waits for the watcher to tell the new binary (%s) from the old: it hashes their first 64 KiB (two builds differ in their build ID there) and hashes the rest of the new one only after the upgrade has started.\n\n", ms(r.rl.tcp6), r.rl.tcp6TW, mib(r.rl.appSize/1024))
	}

	w("## relaunch at rest\n\n")
	ticks := r.idle.after.ticks - r.idle.before.ticks
	w("* Idle for %s after the upgrades (its app idle too): utime+stime %d clock ticks (%s), scheduler run time %s, %d context switches.\n",
		r.idle.d.Round(time.Second), ticks, ms(time.Duration(ticks)*time.Second/userHZ), ms(r.idle.after.run-r.idle.before.run), r.idle.after.ctxsw-r.idle.before.ctxsw)
	w("* Memory: VmRSS %s once the first generation was ready (%s anonymous, %s file-backed: relaunch's own binary); at the end, after %d upgrades, the idle period and the throughput runs, %s (%s anonymous, %s file-backed), peak (VmHWM) %s.\n",
		mib(r.rl.memStart.rss), mib(r.rl.memStart.anon), mib(r.rl.memStart.file), len(r.rl.upgrades), mib(r.mem.rss), mib(r.mem.anon), mib(r.mem.file), mib(r.mem.hwm))
	w("* Throughput, closed loop, %d clients (%.0f %% keep-alive), %s per side in %d alternating rounds: direct %.0f req/s, behind relaunch %.0f req/s, ratio %.3f; rounds (direct, relaunch):",
		c.tputClients, 100*c.keepAlive, c.tput, len(r.tput.rounds), r.tput.direct, r.tput.relaunch, r.tput.ratio())
	for _, rd := range r.tput.rounds {
		w(" (%.0f, %.0f)", rd[0], rd[1])
	}
	w("; %d errors.\n\n", r.tput.errors)

	w("## Definitions\n\n")
	w("* *During an upgrade*: from the trigger (the signal sent, the rename done) to %s after the new generation's first answer; a request is counted there when its span overlaps such a window, steady when it overlaps no window (upgrade or control). Latency percentiles are of the successful requests.\n", ms(c.window))
	w("* *Control windows*: before the first upgrade, the poller below runs %d times alone for %s (about as long as in an upgrade), each window extended by %s like an upgrade's: what the measurement itself costs the latency.\n", len(r.rl.controls), ms(c.initDelay+20*time.Millisecond), ms(c.window))
	w("* *First answer of the new generation*: from the trigger, a poller opens a new connection every 1 ms (%d connections per upgrade on average, on top of the load) until an answer names the new generation (relaunch) or the new pid (naive).\n", avgPolls(r.rl.upgrades))
	w("* *The app's own start*: relaunch's `ready in` (its `gen N started` to `gen N ready` log lines): exec, the app's start-up work, `READY=1`. *Upgrade overhead*: the upgrade's start (the signal; for a rename, relaunch's `upgrade:` line) to the first answer, minus that.\n")
	w("* Errors are the load generator's (`internal/loadtest`): refused, reset, EOF before any byte of the answer, timeout, non-200, other. A keep-alive connection closed between two requests is retried once on a new connection, as every HTTP client does; only a failed retry is an error.\n")
	return b.String()
}

func (r *report) command() string {
	if strings.Join(r.cfg.args, " ") == "-out bench" {
		return "make bench"
	}
	return strings.TrimSpace("go run ./internal/bench " + strings.Join(r.cfg.args, " "))
}

func polls(us []upgrade) (n, failed int) {
	for _, u := range us {
		n += u.polls
		failed += u.failed
	}
	return n, failed
}

// intDist is "p50 (max)" of the TIME_WAIT counts.
func intDist(us []upgrade) string {
	var v []int
	for _, u := range us {
		if u.tw >= 0 {
			v = append(v, u.tw)
		}
	}
	if len(v) == 0 {
		return "n/a"
	}
	slices.Sort(v)
	return fmt.Sprintf("%d (max %d)", v[(len(v)-1)/2], v[len(v)-1])
}

func rate(res *loadtest.Result) float64 {
	return float64(res.Total) / max(res.Elapsed.Seconds(), 1e-9)
}

func perUpgrade(n, ups int) float64 {
	if ups == 0 {
		return 0
	}
	return float64(n) / float64(ups)
}

func avgPolls(us []upgrade) int {
	n := 0
	for _, u := range us {
		n += u.polls
	}
	if len(us) == 0 {
		return 0
	}
	return n / len(us)
}

// kinds is "3 refused, 1 eof".
func kinds(m map[loadtest.Kind]int) string {
	var parts []string
	for _, k := range loadtest.Kinds {
		if n := m[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, k))
		}
	}
	return strings.Join(parts, ", ")
}

func errText(m map[loadtest.Kind]int) string {
	n := 0
	for _, c := range m {
		n += c
	}
	if n == 0 {
		return "0"
	}
	return fmt.Sprintf("%d: %s", n, kinds(m))
}

func latText(p part) string {
	if p.lat.n == 0 {
		return "n/a"
	}
	s := fmt.Sprintf("%s / %s / %s", ms(p.lat.p50), ms(p.lat.p99), ms(p.lat.max))
	if n := p.failed(); n > 0 {
		s += fmt.Sprintf(" (+%d errors)", n)
	}
	return s
}

// ms formats a duration in milliseconds with a precision that suits it.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	a := math.Abs(v)
	switch {
	case a < 10:
		return fmt.Sprintf("%.2f ms", v)
	case a < 100:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.0f ms", v)
	}
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }
