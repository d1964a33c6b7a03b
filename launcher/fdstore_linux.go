package launcher

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/sdlisten"
)

// The service manager's fd store (systemd's FDSTORE=1): relaunch hands it
// a copy of every socket it bound, each named by its place
// (relaunch.L<listener>.S<slot>, relaunch.L<listener>.spare, or
// relaunch.L<listener> for a shared one). When relaunch itself dies and
// systemd starts it again, the stored sockets come back in LISTEN_FDS with
// those names, and relaunch takes them back: the same kernel queues, with
// the connections that came meanwhile, and a steered group that never
// lost a member (the store held them all), so its order is intact.

const storePrefix = "relaunch.L"

// storeWanted says whether to use the fd store: --fdstore, or systemd
// (v254 on) saying how many fds it keeps ($FDSTORE). Without it systemd
// would close them and log a warning for each.
func storeWanted(flag bool) bool {
	n, err := strconv.Atoi(os.Getenv("FDSTORE"))
	return flag || err == nil && n > 0
}

func storeName(ln int, slot string) string {
	if slot == "" {
		return storePrefix + strconv.Itoa(ln)
	}
	return storePrefix + strconv.Itoa(ln) + "." + slot
}

// storeAll hands sink a copy of every socket relaunch bound, named, and
// the state file (for systemd: not polled, FDPOLL=0: a listener an app
// shuts down must stay stored, relaunch makes it listen again).
func (l *launcher) storeAll(sink storeSink) {
	n := 0
	for i, ln := range l.cfg.Listeners {
		switch {
		case ln.Stored:
			continue // stored already
		case ln.Pool != nil:
			for s, m := range ln.Pool.Members() {
				name := "S" + strconv.Itoa(s)
				if s == ln.Pool.Len() {
					name = "spare"
				}
				n += l.store(sink, storeName(i, name), m.Fd())
			}
		case ln.Socket != nil && !ln.Activated && ln.Socket.Addr().Network != "unix":
			// Not a unix socket: relaunch removes its file at exit, so
			// a stored one could not be reached again.
			n += l.store(sink, storeName(i, ""), ln.Socket.Fd())
		}
	}
	if n > 0 {
		l.log.Info(fmt.Sprintf("stored %d socket(s) in %s: a relaunch started after this one's death takes them back", n, sink.what))
	}
	// The state goes wherever the sockets went (a sink that got none
	// holds it already).
	if n > 0 && l.stateFd < 0 {
		l.stateFd = newStateFile()
	}
	if n > 0 && l.stateFd >= 0 {
		l.store(sink, stateName, l.stateFd)
	}
}

// storable says whether storeAll has anything to store: a pool, or a
// shared socket relaunch bound that is not a unix one.
func (l *launcher) storable() bool {
	for _, ln := range l.cfg.Listeners {
		if !ln.Stored && (ln.Pool != nil || ln.Socket != nil && !ln.Activated && ln.Socket.Addr().Network != "unix") {
			return true
		}
	}
	return false
}

func (l *launcher) store(sink storeSink, name string, fd int) int {
	if err := sink.store(name, fd); err != nil {
		l.log.Warn("cannot store " + name + " in " + sink.what + ": " + err.Error())
		return 0
	}
	return 1
}

// storedListeners takes out of inherited the sockets an earlier relaunch
// stored, and makes them the listeners of the addresses they match:
// listener i's when it is bound where addrs[i] binds. What matches nothing
// is closed, with a warning.
func storedListeners(inherited []*sdlisten.Socket, addrs []sdlisten.Addr, from string, log *slog.Logger) (map[int]*storedListener, []*sdlisten.Socket) {
	type parts struct {
		slots  map[int]*sdlisten.Socket
		spare  *sdlisten.Socket
		shared *sdlisten.Socket
	}
	byLn := map[int]*parts{}
	var rest []*sdlisten.Socket
	for _, s := range inherited {
		ln, slot, ok := parseStoreName(s.Addr().Name)
		if !ok {
			rest = append(rest, s)
			continue
		}
		p := byLn[ln]
		if p == nil {
			p = &parts{slots: map[int]*sdlisten.Socket{}}
			byLn[ln] = p
		}
		switch {
		case slot == "spare":
			p.spare = s
		case slot == "":
			p.shared = s
		default:
			n, _ := strconv.Atoi(strings.TrimPrefix(slot, "S"))
			p.slots[n] = s
		}
	}
	out := map[int]*storedListener{}
	for ln, p := range byLn {
		var socks []*sdlisten.Socket
		for s := range len(p.slots) {
			socks = append(socks, p.slots[s])
		}
		all := append([]*sdlisten.Socket{p.shared, p.spare}, socks...)
		ok := ln < len(addrs) && (p.shared == nil) != (len(socks) == 0) && !slicesContainsNil(socks)
		for _, s := range all {
			if s != nil && ok {
				ok = sameEndpoint(s, addrs[ln])
				s.Rename(addrs[ln].Name) // the user's, not the store's
			}
		}
		if ok && p.shared != nil {
			out[ln] = &storedListener{Listener: Listener{Socket: p.shared, Stored: true}}
			continue
		}
		if ok {
			pool, err := sdlisten.PoolFrom(socks, p.spare)
			if err == nil {
				out[ln] = &storedListener{Listener: Listener{Pool: pool, Stored: true}}
				continue
			}
		}
		what := fmt.Sprintf("listener %d", ln+1)
		if ln < len(addrs) {
			what += " (" + addrs[ln].String() + ")"
		}
		log.Warn(fmt.Sprintf("%s passed sockets for %s that do not match it (the options changed?): closed them; relaunch binds anew", from, what))
		for _, s := range all {
			if s != nil {
				s.Close()
			}
		}
	}
	return out, rest
}

func slicesContainsNil(ss []*sdlisten.Socket) bool {
	for _, s := range ss {
		if s == nil {
			return true
		}
	}
	return false
}

// parseStoreName reads relaunch.L<ln>[.S<n>|.spare].
func parseStoreName(name string) (ln int, slot string, ok bool) {
	rest, found := strings.CutPrefix(name, storePrefix)
	if !found {
		return 0, "", false
	}
	num, slot, _ := strings.Cut(rest, ".")
	ln, err := strconv.Atoi(num)
	if err != nil || ln < 0 || slot != "" && slot != "spare" && !isSlotName(slot) {
		return 0, "", false
	}
	return ln, slot, true
}

func isSlotName(s string) bool {
	n, err := strconv.Atoi(strings.TrimPrefix(s, "S"))
	return strings.HasPrefix(s, "S") && err == nil && n >= 0
}

// sameEndpoint says whether s is bound where a binds (port 0 matches no
// socket: the port is the kernel's pick each time).
func sameEndpoint(s *sdlisten.Socket, a sdlisten.Addr) bool {
	ap, _, err := a.Endpoint()
	if err != nil || ap.Port() == 0 {
		return false
	}
	var ip netip.Addr
	var port int
	switch sa, _ := unix.Getsockname(s.Fd()); sa := sa.(type) {
	case *unix.SockaddrInet4:
		ip, port = netip.AddrFrom4(sa.Addr), sa.Port
	case *unix.SockaddrInet6:
		ip, port = netip.AddrFrom16(sa.Addr), sa.Port
	default:
		return false
	}
	return port == int(ap.Port()) && ip.Unmap() == ap.Addr().Unmap()
}

// storedSteerSlot is the slot the first generation takes: with pools taken
// back from the fd store, the one steering still points at, where the
// connections that came while no relaunch ran wait (the one with a queue);
// else 0.
func (l *launcher) storedSteerSlot() int {
	if l.state != nil {
		for _, g := range l.state.Gens {
			if g.State == current.String() && g.Slot >= 0 && l.hasPools() && g.Slot < l.cfg.Listeners[l.firstPool()].Pool.Len() {
				return g.Slot // the dead relaunch steered there
			}
		}
	}
	best, most := 0, 0
	for _, ln := range l.cfg.Listeners {
		if ln.Pool == nil || !ln.Stored {
			continue
		}
		for s := range ln.Pool.Len() {
			if n, err := ln.Pool.Queued(s); err == nil && n > most {
				best, most = s, n
			}
		}
	}
	return best
}

// hasStored says whether a listener was taken back from the fd store.
func (l *launcher) hasStored() bool {
	for _, ln := range l.cfg.Listeners {
		if ln.Stored {
			return true
		}
	}
	return false
}
