// Command relaunch keeps a server's sockets open while the server is
// upgraded, restarted or crashes, so no client sees a refused connection.
// This file is the command line only: flags to a launcher.Config, errors to
// exit statuses.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/relaunch/relaunch/internal/keeper"
	"github.com/relaunch/relaunch/launcher"
	"github.com/relaunch/relaunch/sdlisten"
	"github.com/relaunch/relaunch/watch"
)

var version = "0.1.0-dev" // set with -ldflags "-X main.version=…"

// exitError carries an exit status and a one-line message out of the action.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func usageError(format string, a ...any) error {
	return &exitError{2, fmt.Sprintf(format, a...) + "\nsee 'relaunch --help'"}
}

func main() { os.Exit(relaunchMain()) }

// relaunchMain is the whole command, for main and for the CLI scripts'
// in-process relaunch (script_test.go).
func relaunchMain() int {
	// The exec helper (a generation's first process) never gets here: it
	// execs the app from internal/exechelper's init.
	keeper.Main() // nor a keeper
	tuneMemory()
	tuneScheduler()
	if !isClientCommand(os.Args) {
		launcher.CatchSignals() // a TERM while relaunch starts or re-executes itself is handled, not fatal
	}
	return run(os.Args, os.Stderr)
}

func run(args []string, stderr io.Writer) int {
	if isClientCommand(args) {
		return runClient(args, os.Stdout, stderr)
	}
	app := newApp()
	app.ErrWriter = stderr
	err := app.Run(args)
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(stderr, "relaunch: "+ee.msg)
		}
		return ee.code
	default: // urfave/cli's own parse errors: bad flag values from the environment
		fmt.Fprintln(stderr, "relaunch: "+err.Error()+"\nsee 'relaunch --help'")
		return 2
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:    "relaunch",
		Usage:   "upgrade, restart or crash a server without a client noticing",
		Version: version,
		UsageText: `relaunch [options] -- COMMAND [ARG...]

   relaunch binds the --listen sockets once and starts COMMAND with them as
   systemd-style inherited fds (fd 3 on, LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES).
   On SIGUSR2 or SIGHUP, or when the app crashes, it starts a new generation on
   the same sockets, waits until it is ready, then sends the old one the drain
   signal. Clients wait in the kernel's accept queue meanwhile: none is refused.

EXAMPLES:
   relaunch --listen :8080 -- ./app
   relaunch -l web=:80 -l admin=unix:///run/app/admin.sock --drain-signal TERM -- ./app --config prod.toml
   relaunch -l 127.0.0.1:8000 --drain-signal TERM --ready listen -- gunicorn --worker-class gthread app:wsgi
   kill -USR2 $(cat /run/app.pid)    # upgrade; with --pidfile /run/app.pid
   relaunch upgrade --pidfile /run/app.pid   # upgrade and wait for the outcome (exit 0 or 1)
   relaunch status --pidfile /run/app.pid    # generations, pids, states; --json
   relaunch rollback --pidfile /run/app.pid  # run the previous generation's binary again
   relaunch reexec --pidfile /run/app.pid    # relaunch execs its own (new) binary: same pid, sockets, generations
   relaunch promote --pidfile /run/app.pid   # with --canary: give the canary every connection now
   relaunch abort --pidfile /run/app.pid     # with --canary: back to the previous generation, the canary drains
   relaunch scale 4 --pidfile /run/app.pid   # with --workers: 4 workers now, and in every next generation
   kill -TTIN $(cat /run/app.pid)            # the same, by signal`,
		HideHelpCommand:        true,
		UseShortOptionHandling: false,
		Flags:                  flags(),
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError("%s", cliError(err))
		},
		ExitErrHandler: func(*cli.Context, error) {}, // main decides the status
		Action:         action,
	}
}

func flags() []cli.Flag {
	env := func(name string) []string { return []string{"RELAUNCH_" + name} }
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "listen", Aliases: []string{"l"}, EnvVars: env("LISTEN"),
			Usage: "`[NAME=]ADDR` to bind and pass, from fd 3 in order: :8080, 127.0.0.1:8080, [::1]:8080, tcp4://…, tcp6://…, unix:///abs.sock, unix://rel.sock, udp://:53"},
		&cli.StringFlag{Name: "ready", Value: "auto", EnvVars: env("READY"),
			Usage: "how a new generation shows it is ready: auto, notify (READY=1 via sd_notify), listen (seen accepting in /proc) or delay=DURATION"},
		&cli.DurationFlag{Name: "ready-timeout", Value: 60 * time.Second, EnvVars: env("READY_TIMEOUT"),
			Usage: "a new generation not ready by then has failed and is killed; the old one keeps serving"},
		&cli.StringFlag{Name: "drain-signal", Value: "QUIT", EnvVars: env("DRAIN_SIGNAL"),
			Usage: "sent to the old generation once the new one is ready (gunicorn and most apps: TERM; haproxy: USR1)"},
		&cli.DurationFlag{Name: "drain-timeout", Value: 5 * time.Minute, EnvVars: env("DRAIN_TIMEOUT"),
			Usage: "then a draining generation gets SIGKILL; 0 waits forever"},
		&cli.IntFlag{Name: "max-draining", Value: -1, DefaultText: "unbounded", EnvVars: env("MAX_DRAINING"),
			Usage: "at most `N` generations draining at once (0 to 62); the oldest is killed past that"},
		&cli.StringFlag{Name: "workers", Value: "1", EnvVars: env("WORKERS"),
			Usage: "`N` processes per generation (1 to 64, or auto: one per CPU relaunch may run on), each with RELAUNCH_WORKER=0..N-1 and, steered, a slot of its own; a worker that exits is restarted alone"},
		&cli.StringFlag{Name: "health", EnvVars: env("HEALTH"),
			Usage: "`[NAME=]PATH`: a new generation is ready only once GET PATH, sent through the first TCP --listen address (or the one named NAME) and steered to it, answers 2xx; needs the steered handover"},
		&cli.DurationFlag{Name: "health-interval", EnvVars: env("HEALTH_INTERVAL"),
			Usage: "with --health: probe the current generation every `D`; after 3 failures in a row a fresh generation replaces it"},
		&cli.StringFlag{Name: "canary", EnvVars: env("CANARY"),
			Usage: "`PCT:DURATION`: a new generation first gets PCT% of new connections for DURATION (the old one keeps the rest), then all; relaunch promote|abort end it early"},
		&cli.StringFlag{Name: "handover", Value: "auto", EnvVars: env("HANDOVER"),
			Usage: "auto, steered or shared: steered TCP listeners send new connections only to the newest generation before the old one drains; shared ones let generations share one accept queue"},
		&cli.DurationFlag{Name: "settle", Value: 100 * time.Millisecond, EnvVars: env("SETTLE"),
			Usage: "steered: time from steering new connections away from the old generation to its drain signal"},
		&cli.DurationFlag{Name: "stop-timeout", Value: 30 * time.Second, EnvVars: env("STOP_TIMEOUT"),
			Usage: "on TERM/INT, time given to the generations before SIGKILL"},
		&cli.StringFlag{Name: "rescue", Value: "auto", EnvVars: env("RESCUE"),
			Usage: "steered: what becomes of a connection left queued on a slot no generation receives on: auto (handed to the current generation if it takes handoffs, else kept 10s for the next generation, else reset) or relay (relayed from 127.0.0.1: the app cannot tell the client's address)"},
		&cli.StringFlag{Name: "restart", Value: "on-failure", EnvVars: env("RESTART"),
			Usage: "when the app exits by itself: on-failure (non-zero or signal), always, or never"},
		&cli.StringSliceFlag{Name: "watch", EnvVars: env("WATCH"),
			Usage: "upgrade when a file under `PATH` (file or directory, recursive) changes; repeatable"},
		&cli.BoolFlag{Name: "no-watch-binary", EnvVars: env("NO_WATCH_BINARY"),
			Usage: "do not upgrade when the command's binary on disk changes"},
		&cli.DurationFlag{Name: "debounce", Value: 250 * time.Millisecond, EnvVars: env("DEBOUNCE"),
			Usage: "quiet period after the last file change before upgrading"},
		&cli.StringFlag{Name: "build", EnvVars: env("BUILD"),
			Usage: "development: run `CMD` (with /bin/sh) on every change under --watch, and at start; a success upgrades, a failure keeps the current generation"},
		&cli.StringSliceFlag{Name: "ignore", EnvVars: env("IGNORE"),
			Usage: "changes under --watch matching `GLOB` (a name or an absolute path) do not count; repeatable"},
		&cli.BoolFlag{Name: "nonblocking", EnvVars: env("NONBLOCKING"),
			Usage: "pass the listening sockets in non-blocking mode (O_NONBLOCK, as systemd's NonBlocking=): for apps that poll them and expect accept() never to block (nginx without accept_mutex)"},
		&cli.BoolFlag{Name: "no-ptrace", EnvVars: env("NO_PTRACE"),
			Usage: "start each generation through relaunch's exec helper (a re-run of relaunch that sets LISTEN_PID) rather than stopping the app at its exec with ptrace to write its pid: for hosts whose security monitoring flags PTRACE_TRACEME; each start costs a few ms more"},
		&cli.BoolFlag{Name: "fdstore", EnvVars: env("FDSTORE"),
			Usage: "under systemd: keep the sockets in its fd store (FDSTORE=1; the unit needs FileDescriptorStoreMax=), so a restarted relaunch takes the very same sockets back; automatic where systemd sets $FDSTORE"},
		&cli.BoolFlag{Name: "no-keeper", EnvVars: env("NO_KEEPER"),
			Usage: "start no keeper process: by default one holds a copy of every socket, so that relaunch's own death (kill -9, the OOM killer) changes nothing for clients and a relaunch started again adopts the generations; not started under --fdstore or as PID 1"},
		&cli.StringFlag{Name: "pidfile", EnvVars: env("PIDFILE"),
			Usage: "write relaunch's pid to `PATH` (atomically); removed at exit"},
		&cli.StringFlag{Name: "control", EnvVars: env("CONTROL"),
			Usage: "the control socket (`PATH`) of relaunch status|upgrade|rollback; default: next to --pidfile (app.pid → app.sock)"},
		&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: env("LOG_FORMAT"),
			Usage: "relaunch's own log lines on stderr: text or json"},
	}
}

// cliError turns the flag package's wording into one line that names the
// value and what is accepted.
func cliError(err error) string {
	s := err.Error()
	if rest, ok := strings.CutPrefix(s, "flag provided but not defined: -"); ok {
		if len(rest) > 1 {
			rest = "-" + rest // the user typed --name
		}
		return "unknown option -" + rest
	}
	// invalid value "x" for flag -ready-timeout: parse error
	var val, name string
	if n, _ := fmt.Sscanf(s, "invalid value %q for flag -%s", &val, &name); n == 2 {
		name = strings.TrimSuffix(name, ":")
		what := "a valid value"
		switch name {
		case "ready-timeout", "drain-timeout", "stop-timeout", "timeout", "health-interval", "settle", "debounce":
			what = "a duration such as 30s, 5m or 1h30m"
		case "max-draining":
			what = "a whole number"
		}
		return fmt.Sprintf("bad value %q for --%s: use %s", val, name, what)
	}
	return s
}

func action(c *cli.Context) error {
	cfg, err := config(c)
	if err != nil {
		return err
	}
	if os.Getenv(launcher.ReexecCheckEnv) == "1" {
		// A relaunch about to exec this binary asks whether it takes its
		// command line and its state (on stdin).
		if err := launcher.CheckState(os.Stdin); err != nil {
			return &exitError{1, err.Error()}
		}
		return nil
	}
	resume, err := launcher.Resumed()
	if err != nil {
		cfg.Logger.Error("reexec: " + err.Error())
		return &exitError{1, ""}
	}
	// Start-up failures go through the logger, so --log-format json
	// covers them too; usage errors (status 2) are plain.
	fail := func(err error) error {
		cfg.Logger.Error(err.Error(), "reason", err.Error())
		return &exitError{1, ""}
	}
	if cfg.Build == "" { // else the first build makes it
		if err := launcher.CheckCommand(cfg.Command[0]); err != nil {
			return fail(err)
		}
	}
	if cfg.PIDFile != "" {
		if err := launcher.CheckPIDFile(cfg.PIDFile); err != nil {
			return fail(err)
		}
	}
	var addrs []sdlisten.Addr
	for _, a := range c.StringSlice("listen") {
		addr, _ := sdlisten.ParseAddr(a) // checked in config
		addrs = append(addrs, addr)
	}
	handover, _ := launcher.ParseHandover(c.String("handover")) // checked in config
	// Slots: the current generation, one starting, and --max-draining
	// draining; 8 when that is unbounded (a ninth waits for the oldest).
	slots := 8
	if cfg.MaxDraining >= 0 {
		slots = cfg.MaxDraining + 2
	}
	slots *= max(cfg.Workers, 1) // a slot per worker
	if resume != nil {
		cfg.Listeners, cfg.Resume = resume.Listeners, resume
	} else if cfg.Listeners, cfg.Taken, err = launcher.OpenListeners(addrs, handover, slots, cfg.Logger); err != nil {
		return fail(err)
	}
	defer launcher.CloseListeners(cfg.Listeners)
	if err := launcher.SteeredFor(&cfg); err != nil {
		return fail(err)
	}
	status, err := launcher.Run(cfg)
	if err != nil {
		return fail(err)
	}
	if status != 0 {
		return &exitError{status, ""}
	}
	return nil
}

// config checks every option before anything is bound or started.
func config(c *cli.Context) (launcher.Config, error) {
	cfg := launcher.Config{
		Command:      c.Args().Slice(),
		ReadyTimeout: c.Duration("ready-timeout"),
		DrainTimeout: c.Duration("drain-timeout"),
		MaxDraining:  c.Int("max-draining"),
		StopTimeout:  c.Duration("stop-timeout"),
		Settle:       c.Duration("settle"),
		PIDFile:      c.String("pidfile"),
		FDStore:      c.Bool("fdstore"),
		NonBlocking:  c.Bool("nonblocking"),
		NoPtrace:     c.Bool("no-ptrace"),
		NoKeeper:     c.Bool("no-keeper"),
		Control:      c.String("control"),
		Version:      version,
	}
	if cfg.Control == "" && cfg.PIDFile != "" {
		cfg.Control = controlPath(cfg.PIDFile)
	}
	if len(cfg.Command) == 0 {
		return cfg, usageError("no command given: put it after the options, e.g. relaunch -l :8080 -- ./app")
	}
	switch c.String("log-format") {
	case "text":
		cfg.Logger = launcher.NewLogger(os.Stderr, launcher.LogOptions{Quiet: c.String("build") != ""})
	case "json":
		cfg.Logger = launcher.NewLogger(os.Stderr, launcher.LogOptions{JSON: true})
	default:
		return cfg, usageError("bad --log-format %q: use text or json", c.String("log-format"))
	}
	var err error
	if cfg.Ready, err = launcher.ParseReadiness(c.String("ready")); err != nil {
		return cfg, usageError("%v", err)
	}
	if cfg.DrainSignal, err = launcher.ParseSignal(c.String("drain-signal")); err != nil {
		return cfg, usageError("--drain-signal: %v", err)
	}
	if cfg.Restart, err = launcher.ParseRestart(c.String("restart")); err != nil {
		return cfg, usageError("%v", err)
	}
	if cfg.Rescue, err = launcher.ParseRescue(c.String("rescue")); err != nil {
		return cfg, usageError("%v", err)
	}
	cfg.Build = c.String("build")
	if cfg.Build != "" && len(c.StringSlice("watch")) == 0 {
		return cfg, usageError("--build needs --watch PATH: the sources whose change runs it")
	}
	if !c.Bool("no-watch-binary") || len(c.StringSlice("watch")) > 0 {
		w := &watch.Options{Paths: c.StringSlice("watch"), Debounce: c.Duration("debounce"), Logger: cfg.Logger,
			Ignore: c.StringSlice("ignore")}
		if cfg.Build != "" {
			// The build's success is the trigger; its output must not
			// trigger another build.
			w.Ignore = append(w.Ignore, "vendor", "node_modules")
			if abs, err := filepath.Abs(cfg.Command[0]); err == nil && strings.ContainsRune(cfg.Command[0], '/') {
				w.Ignore = append(w.Ignore, abs)
			}
		} else if !c.Bool("no-watch-binary") {
			w.Binary = cfg.Command[0]
		}
		for _, p := range w.Paths {
			if _, err := os.Stat(p); err != nil {
				return cfg, usageError("bad --watch %q: %v", p, errors.Unwrap(err))
			}
		}
		cfg.Watch = w
	}
	for _, d := range []string{"ready-timeout", "drain-timeout", "stop-timeout", "debounce", "settle"} {
		if c.Duration(d) < 0 {
			return cfg, usageError("bad value %s for --%s: use a duration of 0 or more", c.Duration(d), d)
		}
	}
	// -1, unbounded, is the default's own value: a user who sets it means
	// something else.
	if n := cfg.MaxDraining; c.IsSet("max-draining") && (n < 0 || n > maxDrainingCap) {
		return cfg, usageError("bad value %d for --max-draining: use 0 to %d (a steered address binds N+2 sockets), or leave it unset for no bound", n, maxDrainingCap)
	}
	if cfg.Workers, err = parseWorkers(c); err != nil {
		return cfg, err
	}
	// Parse every address before binding any: a typo must not leave the
	// first sockets bound, nor start anything.
	handover, err := launcher.ParseHandover(c.String("handover"))
	if err != nil {
		return cfg, usageError("%v", err)
	}
	if err := evidence(c, &cfg, handover); err != nil {
		return cfg, err
	}
	var addrs []sdlisten.Addr
	for _, a := range c.StringSlice("listen") {
		addr, err := sdlisten.ParseAddr(a)
		if err != nil {
			return cfg, usageError("%v", err)
		}
		if why := launcher.Steerable(addr); why != "" && handover == launcher.HandoverSteered {
			return cfg, usageError("--handover steered: %s cannot be steered (%s); use --handover auto", addr, why)
		}
		for _, b := range addrs {
			if sameSocket(b, addr) {
				return cfg, usageError("--listen %s overlaps %s (the same port, on the same address or a wildcard covering it): give each address once", addr, b)
			}
		}
		addrs = append(addrs, addr)
	}
	return cfg, nil
}

// maxDrainingCap bounds --max-draining: a steered address keeps
// --max-draining + 2 sockets bound, and a pool of 64 is plenty.
const maxDrainingCap = 62

// sameSocket says whether a and b would bind the same port of the same
// protocol on overlapping addresses: the same IP or host name, or a
// wildcard and an address of its family. Port 0 is a new port each time.
func sameSocket(a, b sdlisten.Addr) bool {
	if a.Network == "unix" || b.Network == "unix" || a.Network[:3] != b.Network[:3] {
		return false
	}
	ha, pa, _ := net.SplitHostPort(a.Address)
	hb, pb, _ := net.SplitHostPort(b.Address)
	if pa != pb || pa == "0" {
		return false
	}
	fa, wa, ipa := bindFamily(a.Network, ha)
	fb, wb, ipb := bindFamily(b.Network, hb)
	// A host name on tcp:// or udp:// is famAny: either family, as it
	// resolves; only a dual-stack wildcard surely covers it.
	switch {
	case wa && wb:
		return fa&fb != 0
	case wa:
		return fa&fb != 0 && (fb != famAny || fa == famAny)
	case wb:
		return fa&fb != 0 && (fa != famAny || fb == famAny)
	case ipa.IsValid() || ipb.IsValid():
		return ipa == ipb
	}
	// Two host names: the same name resolves alike for the same family.
	return strings.EqualFold(ha, hb) && (a.Network == b.Network || fa == fb && fa != famAny)
}

const (
	famV4  = 1
	famV6  = 2
	famAny = famV4 | famV6
)

// bindFamily says which IP families a listen address binds, whether it is
// a wildcard (every address of those families), and its IP when it is one.
// A wildcard on tcp:// or udp:// is dual-stack.
func bindFamily(network, host string) (fam int, wildcard bool, ip netip.Addr) {
	switch network[len(network)-1] {
	case '4':
		fam = famV4
	case '6':
		fam = famV6
	default:
		fam = famAny
	}
	if host == "" {
		return fam, true, ip
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fam, false, netip.Addr{}
	}
	ip = ip.Unmap()
	fam = famV4
	if ip.Is6() {
		fam = famV6
	}
	return fam, ip.IsUnspecified(), ip
}

// evidence checks --health, --health-interval and --canary: they need an
// address relaunch steers.
func evidence(c *cli.Context, cfg *launcher.Config, handover launcher.Handover) error {
	cfg.HealthInterval = c.Duration("health-interval")
	if cfg.HealthInterval < 0 {
		return usageError("bad value %s for --health-interval: use a positive duration such as 5s", cfg.HealthInterval)
	}
	if v := c.String("health"); v != "" {
		h, err := launcher.ParseHealth(v)
		if err != nil {
			return usageError("%v", err)
		}
		cfg.Health = &h
	} else if cfg.HealthInterval > 0 {
		return usageError("--health-interval %s needs --health PATH: what to probe", cfg.HealthInterval)
	}
	if v := c.String("canary"); v != "" {
		cn, err := launcher.ParseCanary(v)
		if err != nil {
			return usageError("%v", err)
		}
		cfg.Canary = cn
	}
	var what string
	switch {
	case cfg.Health != nil:
		what = "--health " + c.String("health")
	case cfg.Canary.Pct > 0:
		what = "--canary " + c.String("canary")
	default:
		return nil
	}
	if handover == launcher.HandoverShared {
		return usageError("%s needs the steered handover, and --handover is shared: use --handover auto or steered", what)
	}
	var steerable []sdlisten.Addr
	for _, a := range c.StringSlice("listen") {
		addr, err := sdlisten.ParseAddr(a)
		if err != nil {
			return nil // said by the caller
		}
		if launcher.Steerable(addr) == "" {
			steerable = append(steerable, addr)
		}
	}
	if len(steerable) == 0 {
		return usageError("%s needs a TCP --listen address (relaunch steers TCP only; UDP, unix and systemd-passed sockets are shared): add one, e.g. -l 127.0.0.1:8080", what)
	}
	if h := cfg.Health; h != nil && h.Name != "" {
		for _, a := range c.StringSlice("listen") {
			if addr, err := sdlisten.ParseAddr(a); err == nil && addr.Name == h.Name && launcher.Steerable(addr) != "" {
				return usageError("--health %s: the listener %s is %s, which cannot be steered (%s): name a TCP --listen address", c.String("health"), h.Name, addr, launcher.Steerable(addr))
			}
		}
		found := false
		for _, a := range steerable {
			found = found || a.Name == h.Name
		}
		if !found {
			return usageError("--health %s: no --listen address is named %s: name one (-l %s=127.0.0.1:8080) or give the path alone for the first TCP address", c.String("health"), h.Name, h.Name)
		}
	}
	return nil
}

// parseWorkers reads --workers: 0 when not given (one process per
// generation, restarted as a new one), else N.
func parseWorkers(c *cli.Context) (int, error) {
	if !c.IsSet("workers") {
		return 0, nil
	}
	v := c.String("workers")
	if v == "auto" {
		// On Linux, the CPUs in relaunch's affinity mask (sched_getaffinity).
		return min(runtime.NumCPU(), launcher.MaxWorkers), nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > launcher.MaxWorkers {
		return 0, usageError("bad value %q for --workers: use 1 to %d, or auto (one per CPU relaunch may run on)", v, launcher.MaxWorkers)
	}
	return n, nil
}
