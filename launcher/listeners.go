package launcher

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/relaunch/relaunch/sdlisten"
)

// Handover says how a listening address is handed from one generation to
// the next.
type Handover int

const (
	HandoverAuto    Handover = iota // steered where it can be, shared elsewhere
	HandoverSteered                 // every address steered: an error where it cannot be
	HandoverShared                  // one socket per address, every generation on it
)

// ParseHandover parses --handover.
func ParseHandover(s string) (Handover, error) {
	switch s {
	case "auto", "":
		return HandoverAuto, nil
	case "steered":
		return HandoverSteered, nil
	case "shared":
		return HandoverShared, nil
	}
	return 0, fmt.Errorf("bad --handover %q: use auto, steered or shared", s)
}

// Steerable says why an address cannot be steered, or "".
func Steerable(a sdlisten.Addr) string {
	if !strings.HasPrefix(a.Network, "tcp") {
		return "only TCP listeners can be steered"
	}
	return ""
}

// OpenListeners passes on the sockets relaunch inherited from systemd
// (shared: they are not relaunch's to put in a SO_REUSEPORT group), then
// binds each address: a pool of slots where mode allows and the kernel
// can steer, one shared socket elsewhere. It logs how each is handed over.
// When a relaunch that died left its sockets in the service manager's fd
// store or with its keeper, it takes them back, with the state it saved
// (Taken, for Config.Taken). On error it closes what it opened, and lets
// go of what it took.
func OpenListeners(addrs []sdlisten.Addr, mode Handover, slots int, log *slog.Logger) (ls []Listener, tk *Taken, err error) {
	var said []string // logged once everything is bound: a failure says only why
	defer func() {
		if err != nil {
			CloseListeners(ls)
			tk.release()
			ls, tk = nil, nil
			return
		}
		for _, s := range said {
			log.Info(s)
		}
	}()
	inherited, err := sdlisten.Inherited()
	if err != nil {
		return nil, nil, err
	}
	// A relaunch that died outside systemd left its sockets with its
	// keeper: they come back named as from the fd store.
	kc, fromKeeper, err := takeFromKeeper(addrs, log)
	if err != nil {
		return nil, nil, err
	}
	from := "the service manager's fd store"
	if kc != nil {
		from = fmt.Sprintf("relaunch's keeper (pid %d)", kc.Pid())
	}
	inherited = append(inherited, fromKeeper...)
	tk = &Taken{keeper: kc, stateFd: -1}
	tk.state, tk.stateFd, inherited = takeState(inherited)
	// The sockets an earlier relaunch stored come back named: they are
	// taken back, not passed on.
	stored, inherited := storedListeners(inherited, addrs, from, log)
	defer func() {
		for _, l := range stored {
			if !l.taken {
				CloseListeners([]Listener{l.Listener})
			}
		}
	}()
	// Nobody else may listen where relaunch binds: a steered pool would
	// join their SO_REUSEPORT group (same user) and never get a connection.
	for i, a := range addrs {
		if _, ok := stored[i]; ok {
			continue
		}
		if err := exclusive(a); err != nil {
			return nil, tk, err
		}
	}
	for _, s := range inherited {
		ls = append(ls, Listener{Socket: s, Activated: true})
		said = append(said, fmt.Sprintf("listening on %s (fd %d, passed on from systemd; shared handover)", s.Addr(), 2+len(ls)))
	}
	for i, a := range addrs {
		if st, ok := stored[i]; ok {
			st.taken = true
			ls = append(ls, st.Listener)
			if st.Pool != nil {
				said = append(said, fmt.Sprintf("listening on %s (fd %d, steered handover: %d slots, taken back from %s)", st.Pool.Addr(), 2+len(ls), st.Pool.Len(), from))
			} else {
				said = append(said, fmt.Sprintf("listening on %s (fd %d, taken back from %s)", st.Socket.Addr(), 2+len(ls), from))
			}
			continue
		}
		if mode != HandoverShared && Steerable(a) == "" {
			p, err := sdlisten.BindPool(a, slots)
			if err != nil {
				return ls, tk, err
			}
			if err := p.Steer(0); err != nil {
				p.Close()
				if mode == HandoverSteered {
					return ls, tk, fmt.Errorf("--handover steered: %s cannot be steered: %v; use --handover auto or shared", a, err)
				}
				log.Warn(fmt.Sprintf("%s cannot be steered (%v): shared handover", a, err))
			} else {
				ls = append(ls, Listener{Pool: p})
				said = append(said, fmt.Sprintf("listening on %s (fd %d, steered handover: %d slots)", p.Addr(), 2+len(ls), slots))
				continue
			}
		}
		s, err := sdlisten.Bind(a)
		if err != nil {
			return ls, tk, err
		}
		ls = append(ls, Listener{Socket: s})
		how := "shared handover"
		if why := Steerable(a); why != "" && mode == HandoverAuto {
			how += ": " + why
		}
		said = append(said, fmt.Sprintf("listening on %s (fd %d, %s)", s.Addr(), 2+len(ls), how))
	}
	return ls, tk, nil
}

// CloseListeners closes every socket and pool: when relaunch exits.
func CloseListeners(ls []Listener) {
	for _, l := range ls {
		if l.Pool != nil {
			l.Pool.Close()
		} else if l.Socket != nil {
			l.Socket.Close()
		}
	}
}

// storedListener is a listener taken back from the service manager's fd
// store; taken once OpenListeners uses it (else it is closed).
type storedListener struct {
	Listener
	taken bool
}

// SteeredFor finds the listener --health probes (the first TCP --listen
// address, or the one named) once the listeners are open, and checks that
// it, and for --canary some listener, is steered: systemd-passed sockets,
// or an address whose steering the kernel refused, are shared.
func SteeredFor(cfg *Config) error {
	if cfg.Health != nil {
		cfg.Health.Listener = -1
		for i, ln := range cfg.Listeners {
			if ln.Activated {
				continue // passed on from systemd: not a --listen address
			}
			var a sdlisten.Addr
			if ln.Pool != nil {
				a = ln.Pool.Addr()
			} else {
				a = ln.Socket.Addr()
			}
			if Steerable(a) != "" || (cfg.Health.Name != "" && a.Name != cfg.Health.Name) {
				continue
			}
			if ln.Pool == nil {
				return fmt.Errorf("--health %s: %s is not steered (shared handover), so a probe cannot reach the new generation alone; see the line above for why", cfg.Health.Path, a)
			}
			cfg.Health.Listener = i
			break
		}
		if cfg.Health.Listener < 0 {
			return fmt.Errorf("--health %s: no steered TCP listener to probe through", cfg.Health.Path)
		}
	}
	if cfg.Canary.Pct > 0 {
		for _, ln := range cfg.Listeners {
			if ln.Pool != nil {
				return nil
			}
		}
		return errors.New("--canary needs a steered TCP listener, and none is (shared handover): see the lines above for why")
	}
	return nil
}
