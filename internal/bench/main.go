// Command bench measures relaunch's handover against a naive stop-then-start
// restart of the same app under the same load, and writes the figures the
// docs/performance.md quotes: OUT/results.md (also printed) and OUT/latency.png.
//
//	make bench                                  # go run ./internal/bench -out bench: ~3 minutes
//	go run ./internal/bench -out /tmp/b -quick  # smoke test: under a minute
//
// It builds relaunch and the demo app (testdata/demo, twice: one answers
// version=1, the other version=2) into a temporary directory, then, on the
// machine at hand:
//
//  1. runs the demo (-init-delay 300ms) under relaunch, under open-loop load
//     (-rate, -keepalive), and upgrades it -signal times by SIGUSR2 and
//     -rename times by renaming the other build over the binary relaunch
//     watches, alternately, about one per -interval; from each trigger, a
//     poller opens a new connection every 1 ms until the new generation
//     answers;
//  2. leaves relaunch idle for -idle and reads its CPU time from /proc;
//  3. compares the closed-loop throughput of the app behind relaunch with the
//     same app bound to a port of its own (-throughput each);
//  4. reads relaunch's RSS and stops it;
//  5. runs the naive baseline under the same load: the demo on its own port
//     (-listen), and per restart SIGTERM, wait for its exit, start it again,
//     as a process manager without relaunch would (-naive times);
//  6. side by side, in -rounds rounds run in turn: the overlap baseline
//     (below), the demo under relaunch (-notify upgrades by SIGUSR2), and
//     the demo that sends no READY=1 (-no-notify) under relaunch's
//     --ready auto, readiness seen in /proc (-procfs upgrades by SIGUSR2).
//     The overlap baseline: the demo on its own port with SO_REUSEPORT,
//     and per restart a new process binds the port too, and the old one is
//     stopped once the new one answers (-overlap times): the fastest cutover
//     without relaunch, which loses what queued on the old process's socket.
//
// Targets are shown, not asserted: the exit status is 0 whenever the run
// itself worked. Every process it starts is killed by pid at the end (or on
// Ctrl-C), and the temporary directory is removed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

type config struct {
	out         string
	rate        float64
	keepAlive   float64
	clients     int
	initDelay   time.Duration
	signals     int
	renames     int
	naive       int
	procfs      int
	overlap     int
	notify      int
	rounds      int
	interval    time.Duration
	window      time.Duration
	debounce    time.Duration
	warmup      time.Duration
	idle        time.Duration
	tput        time.Duration
	tputClients int
	quick       bool
	args        []string
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&c.out, "out", "bench", "directory for results.md and latency.png (created)")
	fs.Float64Var(&c.rate, "rate", 1000, "open-loop request rate during the upgrade runs, req/s")
	fs.Float64Var(&c.keepAlive, "keepalive", 0.5, "fraction of the clients that keep their connection (the others connect per request)")
	fs.IntVar(&c.clients, "clients", 64, "concurrent clients of the open-loop load")
	fs.DurationVar(&c.initDelay, "init-delay", 300*time.Millisecond, "the demo's start-up work (its -init-delay)")
	fs.IntVar(&c.signals, "signal", 20, "upgrades by SIGUSR2")
	fs.IntVar(&c.renames, "rename", 20, "upgrades by renaming a new binary over the old one")
	fs.IntVar(&c.naive, "naive", 20, "restarts of the naive baseline (SIGTERM, wait, start)")
	fs.IntVar(&c.procfs, "procfs", 40, "upgrades by SIGUSR2 of the demo that sends no READY=1 (-no-notify), under relaunch's --ready auto: readiness seen in /proc")
	fs.IntVar(&c.overlap, "overlap", 40, "restarts of the overlap baseline (the new process binds the port too, with SO_REUSEPORT; the old one then stops)")
	fs.IntVar(&c.notify, "notify", 40, "upgrades by SIGUSR2 of the demo that sends READY=1, side by side with -procfs and -overlap (0: the cutover table takes the main run's SIGUSR2 upgrades)")
	fs.IntVar(&c.rounds, "rounds", 8, "the side-by-side runs (-overlap, -notify, -procfs) are split into this many rounds, run in turn, so that the three share the machine's conditions")
	fs.DurationVar(&c.interval, "interval", time.Second, "time between two triggers (stretched so that 250ms of steady load follow each upgrade window)")
	fs.DurationVar(&c.window, "window", 500*time.Millisecond, "an upgrade window runs from the trigger to this long after the new generation's first response")
	fs.DurationVar(&c.debounce, "debounce", 250*time.Millisecond, "relaunch's --debounce")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "steady load before the first trigger, and after the last window")
	fs.DurationVar(&c.idle, "idle", 60*time.Second, "idle period over which relaunch's CPU time is read")
	fs.DurationVar(&c.tput, "throughput", 6*time.Second, "closed-loop throughput run, per side (behind relaunch, direct), in 6 alternating rounds")
	fs.IntVar(&c.tputClients, "throughput-clients", 8, "concurrent clients of the closed-loop throughput runs")
	fs.BoolVar(&c.quick, "quick", false, "smoke test: -idle 5s -signal 5 -rename 5 -naive 5 -procfs 5 -overlap 5 -notify 5 -rounds 1 -throughput 2s (flags given explicitly win)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := map[string]func(){
			"idle":       func() { c.idle = 5 * time.Second },
			"signal":     func() { c.signals = 5 },
			"rename":     func() { c.renames = 5 },
			"naive":      func() { c.naive = 5 },
			"procfs":     func() { c.procfs = 5 },
			"overlap":    func() { c.overlap = 5 },
			"notify":     func() { c.notify = 5 },
			"rounds":     func() { c.rounds = 1 },
			"throughput": func() { c.tput = 2 * time.Second },
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
	}
	switch {
	case c.rate <= 0:
		return c, errors.New("-rate must be > 0")
	case c.keepAlive < 0 || c.keepAlive > 1:
		return c, errors.New("-keepalive must be within [0, 1]")
	case c.clients < 1 || c.tputClients < 1:
		return c, errors.New("-clients and -throughput-clients must be ≥ 1")
	case c.signals < 0 || c.renames < 0 || c.naive < 0 || c.procfs < 0 || c.overlap < 0 || c.notify < 0 || c.signals+c.renames == 0:
		return c, errors.New("-signal, -rename, -naive, -procfs, -overlap and -notify must be ≥ 0, with at least one upgrade by -signal or -rename")
	case c.rounds < 1:
		return c, errors.New("-rounds must be ≥ 1")
	case c.idle <= 0 || c.tput <= 0 || c.interval <= 0:
		return c, errors.New("-idle, -throughput and -interval must be > 0")
	}
	c.args = args
	return c, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := &bench{cfg: cfg}
	err = b.run(ctx)
	b.cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// run does the whole benchmark and writes the results.
func (b *bench) run(ctx context.Context) error {
	t0 := time.Now()
	load0 := loadavg()
	if runtime.GOOS != "linux" {
		return errors.New("the benchmark needs Linux (/proc, and relaunch itself)")
	}
	// The output directory first: a run is minutes long.
	if err := os.MkdirAll(b.cfg.out, 0o755); err != nil {
		return err
	}
	if err := b.setup(ctx); err != nil {
		return err
	}
	logf("built relaunch and the demo in %v", time.Since(t0).Round(100*time.Millisecond))

	rl, err := b.relaunchPhase(ctx)
	if err != nil {
		return err
	}
	idle, err := b.idlePhase(ctx)
	if err != nil {
		return err
	}
	tput, err := b.throughputPhase(ctx)
	if err != nil {
		return err
	}
	rss, err := readMem(b.rl.pid())
	if err != nil {
		return err
	}
	status, err := b.stopRelaunch()
	if err != nil {
		return err
	}
	logf("relaunch stopped: %s", status)
	naive, err := b.naivePhase(ctx)
	if err != nil {
		return err
	}
	side, err := b.sideBySide(ctx)
	if err != nil {
		return err
	}

	r := &report{
		cfg:     b.cfg,
		machine: machineInfo(),
		when:    time.Now().UTC(),
		rl:      rl,
		naive:   naive,
		side:    side,
		idle:    idle,
		tput:    tput,
		mem:     rss,
		took:    time.Since(t0),
		load:    [2]string{load0, loadavg()},
	}
	md := r.markdown()
	mdPath := filepath.Join(b.cfg.out, "results.md")
	if err := os.WriteFile(mdPath, []byte(md), 0o644); err != nil {
		return err
	}
	pngPath := filepath.Join(b.cfg.out, "latency.png")
	if err := writePlot(pngPath, b.cfg, rl, naive); err != nil {
		return err
	}
	fmt.Println()
	fmt.Print(md)
	fmt.Printf("\nwrote %s and %s in %v\n", mdPath, pngPath, time.Since(t0).Round(time.Second))
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// machine describes where the run happened.
type machine struct {
	cpus   int
	model  string
	kernel string
	goVer  string
}

// loadavg is the first three fields of /proc/loadavg: a busy machine
// makes every latency here longer, so the results say how busy it was.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

func machineInfo() machine {
	m := machine{cpus: runtime.NumCPU(), goVer: runtime.Version(), model: "unknown CPU", kernel: "unknown kernel"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	return m
}
