package launcher

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/sdlisten"
	"github.com/relaunch/relaunch/watch"
)

// ErrStartup is in the chain of every error that makes relaunch give up at
// start-up (exit status 1), as opposed to the app's own exit status:
// errors.Is(err, ErrStartup). Such an error reads as its cause alone.
var ErrStartup = errors.New("start-up failed")

// startupError marks err as a start-up failure; errors.Is and errors.As
// still see err and what it wraps.
func startupError(err error) error { return startup{err} }

type startup struct{ err error }

func (e startup) Error() string   { return e.err.Error() }
func (e startup) Unwrap() []error { return []error{ErrStartup, e.err} }

// Config is everything Run needs. main builds it from the command line.
type Config struct {
	Command   []string      // argv of the app; Command[0] is resolved at every start
	Listeners []Listener    // passed in order from fd 3
	Settle    time.Duration // steered: from the switch to the old generation's drain signal

	Ready        Readiness
	ReadyTimeout time.Duration // a generation not ready by then has failed

	DrainSignal  syscall.Signal
	DrainTimeout time.Duration // then SIGKILL to the group; 0 waits forever
	MaxDraining  int           // more draining generations than this: the oldest is killed; < 0 is unbounded
	StopTimeout  time.Duration // on TERM/INT, time before SIGKILL

	// Workers > 0 (--workers): each generation is that many processes,
	// each on a slot of its own, restarted alone (workers_linux.go); 0 is
	// one process per generation, restarted as a new generation.
	Workers int

	// Health, when set, makes a generation ready only once GET Path,
	// steered to it, answers 2xx; HealthInterval > 0 probes the current
	// generation every interval (liveness).
	Health         *Health
	HealthInterval time.Duration
	// Canary, when Pct > 0, gives a new generation Pct of new connections
	// for a while before it gets them all.
	Canary Canary

	Restart RestartPolicy
	Rescue  Rescue // what becomes of connections stranded on a slot no generation holds

	// Watch, when set, upgrades on every change of the command's binary
	// and of the watched paths.
	Watch *watch.Options

	// Build, when set, runs (through /bin/sh) on every change under the
	// watched paths, and once before the first start; a success upgrades.
	Build string

	// FDStore stores the sockets in the service manager's fd store
	// (FDSTORE=1), also done when systemd sets $FDSTORE.
	FDStore bool

	// NonBlocking puts the sockets handed to the generations in
	// non-blocking mode (O_NONBLOCK), as systemd's NonBlocking= does.
	NonBlocking bool

	// NoPtrace starts every generation through the exec helper
	// (internal/exechelper), never with the traced start.
	NoPtrace bool

	// NoKeeper starts no keeper (internal/keeper) where the fd store is
	// not used: relaunch's death then closes the slots no generation holds.
	NoKeeper bool

	// Taken is what OpenListeners took back from a relaunch that died.
	Taken *Taken

	PIDFile string
	Control string       // the control socket's path; "" = none
	Logger  *slog.Logger // nil discards
	Env     []string     // the app's base environment; nil means os.Environ()

	Version string  // relaunch's own, for status and reexec
	Resume  *Resume // set when this relaunch is the re-exec of one that ran (Resumed)
}

// Listener is one address the generations get: a socket they all share,
// or a pool of slots relaunch steers new connections between.
type Listener struct {
	Socket *sdlisten.Socket // shared, when Pool is nil
	Pool   *sdlisten.Pool
	// Stored: the very sockets an earlier relaunch bound, kept for it by
	// the service manager (FDSTORE=1) and passed back at this start.
	Stored bool
	// Activated: a socket systemd passed relaunch (socket activation).
	Activated bool
}

// ReadyMode says how a new generation proves it is ready.
type ReadyMode int

const (
	ReadyAuto   ReadyMode = iota // the most precise signal seen so far
	ReadyNotify                  // READY=1 on NOTIFY_SOCKET
	ReadyDelay                   // alive for Delay
	ReadyListen                  // seen polling or accepting on a socket, in /proc
)

// Readiness is a parsed --ready value.
type Readiness struct {
	Mode  ReadyMode
	Delay time.Duration // ReadyDelay only
}

// ParseReadiness parses --ready: auto, notify or delay=DURATION.
func ParseReadiness(s string) (Readiness, error) {
	switch {
	case s == "auto" || s == "":
		return Readiness{Mode: ReadyAuto}, nil
	case s == "notify":
		return Readiness{Mode: ReadyNotify}, nil
	case s == "listen":
		return Readiness{Mode: ReadyListen}, nil
	case strings.HasPrefix(s, "delay="):
		d, err := time.ParseDuration(strings.TrimPrefix(s, "delay="))
		if err != nil || d < 0 {
			return Readiness{}, fmt.Errorf("bad --ready %q: the delay must be a duration such as delay=2s", s)
		}
		return Readiness{Mode: ReadyDelay, Delay: d}, nil
	}
	return Readiness{}, fmt.Errorf("bad --ready %q: use auto, notify, listen or delay=DURATION (e.g. delay=2s)", s)
}

func (r Readiness) String() string {
	switch r.Mode {
	case ReadyNotify:
		return "notify"
	case ReadyListen:
		return "listen"
	case ReadyDelay:
		return "delay=" + r.Delay.String()
	}
	return "auto"
}

// Rescue says what relaunch does with a connection left queued on a slot
// that no generation receives on.
type Rescue int

const (
	// RescueAuto hands it to the current generation through the handoff
	// broker when that generation takes handoffs; else keeps the slot, queue
	// and all, for the next generation that starts, for 10 s; else
	// resets it.
	RescueAuto Rescue = iota
	// RescueRelay accepts it and relays it, byte for byte, through a new
	// connection to the address: the app sees it coming from loopback.
	RescueRelay
)

// ParseRescue parses --rescue.
func ParseRescue(s string) (Rescue, error) {
	switch s {
	case "auto", "":
		return RescueAuto, nil
	case "relay":
		return RescueRelay, nil
	}
	return 0, fmt.Errorf("bad --rescue %q: use auto or relay", s)
}

// RescueCounts counts the connections relaunch found stranded on a slot,
// by what became of them.
type RescueCounts struct {
	HandedOver int `json:"handed_over"` // to the current generation, through the handoff broker
	Held       int `json:"held"`        // left queued for the next generation to start
	Relayed    int `json:"relayed"`     // --rescue relay
	Reset      int `json:"reset"`       // no generation could take them
	Revived    int `json:"revived"`     // listening sockets made to listen again after a shutdown()
}

// RestartPolicy says what happens when the current generation exits by itself.
type RestartPolicy int

const (
	RestartOnFailure RestartPolicy = iota // non-zero status or a signal: start again
	RestartAlways
	RestartNever
)

// ParseRestart parses --restart.
func ParseRestart(s string) (RestartPolicy, error) {
	switch s {
	case "on-failure", "":
		return RestartOnFailure, nil
	case "always":
		return RestartAlways, nil
	case "never":
		return RestartNever, nil
	}
	return 0, fmt.Errorf("bad --restart %q: use on-failure, always or never", s)
}

// ParseSignal parses a signal name as kill(1) does: QUIT, SIGQUIT, quit or 3.
func ParseSignal(s string) (syscall.Signal, error) {
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && fmt.Sprint(n) == s && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	return 0, fmt.Errorf("bad signal %q: use a name such as QUIT, TERM, USR1, INT or HUP", s)
}

// signalName is "SIGQUIT" for SIGQUIT.
func signalName(sig syscall.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return fmt.Sprintf("signal %d", int(sig))
}

// Health is a parsed --health: GET Path through listener Listener (an
// index in Config.Listeners, set once they are open) must answer 2xx.
type Health struct {
	Name     string // the listener's name; "" for the first TCP --listen address
	Path     string
	Listener int
}

// ParseHealth parses --health PATH or NAME=PATH.
func ParseHealth(s string) (Health, error) {
	name, path, named := strings.Cut(s, "=")
	if !named {
		name, path = "", s
	}
	if named && name == "" {
		return Health{}, fmt.Errorf("bad --health %q: give the listener's name before '=' (NAME=/healthz), or the path alone", s)
	}
	if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t") {
		return Health{}, fmt.Errorf("bad --health %q: give a URL path such as /healthz (or NAME=/healthz for a named listener)", s)
	}
	return Health{Name: name, Path: path}, nil
}

// Canary is a parsed --canary PCT:DURATION; Pct 0 is none.
type Canary struct {
	Pct int
	For time.Duration
}

// ParseCanary parses --canary PCT:DURATION, e.g. 10:5m.
func ParseCanary(s string) (Canary, error) {
	p, d, ok := strings.Cut(s, ":")
	var pct int
	if _, err := fmt.Sscanf(strings.TrimSuffix(p, "%"), "%d", &pct); !ok || err != nil || fmt.Sprint(pct) != strings.TrimSuffix(p, "%") || pct < 1 || pct > 99 {
		return Canary{}, fmt.Errorf("bad --canary %q: use PCT:DURATION, a whole percentage from 1 to 99 and a duration, e.g. 10:5m", s)
	}
	dur, err := time.ParseDuration(d)
	if err != nil || dur <= 0 {
		return Canary{}, fmt.Errorf("bad --canary %q: the duration after ':' must be positive, such as 5m or 30s (e.g. %d:5m)", s, pct)
	}
	return Canary{Pct: pct, For: dur}, nil
}

// MaxWorkers bounds --workers and relaunch scale: the steering program
// picks among a generation's slots with two instructions each.
const MaxWorkers = 64
