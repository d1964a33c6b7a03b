package launcher

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/internal/keeper"
	"github.com/relaunch/relaunch/internal/listenprobe"
	"github.com/relaunch/relaunch/sdlisten"
)

// Where relaunch's sockets outlive relaunch: the service manager's fd
// store (fdstore_linux.go) under systemd, else relaunch's keeper
// (internal/keeper), a process that holds a copy of each. Either way a
// relaunch started after this one's death takes the very sockets back,
// with the generations' state (relaunch.state, below), and adopts the
// generations still serving (adopt_linux.go). Neither under PID 1 (a
// container): its death ends every process of the container anyway.

// release lets go of what was taken without using it (a start-up
// failure): the keeper is left orphaned again, not told to exit, so the
// generations it serves for keep their group intact.
func (tk *Taken) release() {
	if tk == nil {
		return
	}
	if tk.keeper != nil {
		tk.keeper.Release()
	}
	if tk.stateFd >= 0 {
		unix.Close(tk.stateFd)
	}
}

// takeFromKeeper looks for a keeper among the holders of addrs (the first
// found holds every socket of its relaunch) and takes its sockets, named
// as in the fd store. A keeper whose relaunch is alive means the address
// is taken: an error naming that relaunch.
func takeFromKeeper(addrs []sdlisten.Addr, log *slog.Logger) (*keeper.Client, []*sdlisten.Socket, error) {
	for _, a := range addrs {
		if a.Network == "unix" {
			continue
		}
		ap, dual, err := a.Endpoint()
		if err != nil || ap.Port() == 0 {
			continue
		}
		hs, _ := listenprobe.InUse(strings.HasPrefix(a.Network, "udp"), ap, dual)
		var pids []int
		for _, h := range hs {
			pids = append(pids, h.Pid)
		}
		pid, name := keeper.Find(pids)
		if pid == 0 {
			continue
		}
		c, got, err := keeper.Take(pid, name, keeperGone(log))
		var busy *keeper.BusyError
		if errors.As(err, &busy) {
			return nil, nil, fmt.Errorf("%s is in use by relaunch pid %d (its keeper, pid %d, holds the sockets); stop it, or choose another address", a, busy.Owner, pid)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s is held by the keeper of a relaunch that is gone, which did not hand it over (%v); stop it (kill %d) and the generations that serve there, or choose another address", a, err, pid)
		}
		var socks []*sdlisten.Socket
		for _, r := range got {
			socks = append(socks, sdlisten.Received(r.Fd, r.Name))
		}
		log.Info(fmt.Sprintf("took %d socket(s) back from the keeper (pid %d) of a relaunch that is gone", len(got), pid))
		return c, socks, nil
	}
	return nil, nil, nil
}

func keeperGone(log *slog.Logger) func(int, error) {
	return func(pid int, err error) {
		log.Warn(fmt.Sprintf("relaunch's keeper (pid %d) is gone (%v): if relaunch dies now, the slots no generation holds close with it and steering is lost; relaunch reexec starts a new one", pid, err))
	}
}

// storeSink is where storeAll hands copies of the sockets.
type storeSink struct {
	what  string // for the log: "the service manager's fd store (FDSTORE=1)"
	store func(name string, fd int) error
}

func systemdSink() storeSink {
	return storeSink{"the service manager's fd store (FDSTORE=1)", func(name string, fd int) error {
		return sdlisten.NotifyFds("FDSTORE=1\nFDPOLL=0\nFDNAME="+name, []int{fd})
	}}
}

func keeperSink(c *keeper.Client) storeSink {
	return storeSink{fmt.Sprintf("relaunch's keeper (pid %d)", c.Pid()), c.Store}
}

// setUpStore picks where the sockets outlive relaunch and stores there
// what is not stored yet. After a re-exec (resumed) everything is stored
// already, unless the keeper was gone: a new one is started.
func (l *launcher) setUpStore(resumed bool) {
	tk := l.cfg.Taken
	if tk != nil {
		l.state, l.stateFd = tk.state, tk.stateFd
	}
	storing := l.outer.on && storeWanted(l.cfg.FDStore)
	switch {
	case resumed && (l.keeper != nil && l.keeper.Conn() >= 0 || storing):
		return
	case tk != nil && tk.keeper != nil:
		l.keeper = tk.keeper
		l.storeAll(keeperSink(l.keeper))
	case storing:
		l.storeAll(systemdSink())
	case l.storable() && os.Getpid() != 1 && !l.cfg.NoKeeper:
		c, err := keeper.Start(keeperGone(l.log))
		if err != nil {
			l.log.Warn("cannot start relaunch's keeper (" + err.Error() + "): if relaunch dies, the slots no generation holds close with it and steering is lost")
			return
		}
		l.keeper = c
		l.storeAll(keeperSink(c))
	}
}

// closeStore ends the keeper when relaunch exits: told to exit with its
// sockets when no generation is left, else only let go of, so that a
// relaunch started again takes them back.
func (l *launcher) closeStore() {
	if l.keeper == nil {
		return
	}
	if len(l.gens) == 0 {
		l.keeper.Close()
	} else {
		l.keeper.Release()
	}
}

// The state a relaunch started after this one's death needs beyond the
// sockets: which generation was current, when each draining one was told,
// how far the numbering went. It lives in a memfd stored with the sockets
// as relaunch.state and rewritten in place after every event that changed
// it (the store holds the very same file). A write is one pwrite: relaunch
// cannot die halfway through it; the reader takes the first JSON value,
// so a longer older text left behind the new one does no harm.

const stateName = "relaunch.state"

// saveState writes the state when it changed. The loop calls it after
// every event.
func (l *launcher) saveState() {
	if l.stateFd < 0 {
		return
	}
	st := savedState{Format: 1, LastID: l.lastID}
	for _, g := range l.gens {
		for _, p := range g.procs() { // each worker, with its generation's state
			if p.pid > 0 && !p.exited {
				st.Gens = append(st.Gens, savedGen{ID: g.id, Pid: p.pid, Slot: p.slot, State: g.state.String(), DrainAt: g.drainAt})
			}
		}
	}
	b, _ := json.Marshal(st)
	if bytes.Equal(b, l.stateSaved) {
		return
	}
	if _, err := unix.Pwrite(l.stateFd, b, 0); err == nil {
		unix.Ftruncate(l.stateFd, int64(len(b)))
		l.stateSaved = b
	}
}

// newStateFile makes the memfd the state is written to.
func newStateFile() int {
	fd, err := unix.MemfdCreate(stateName, unix.MFD_CLOEXEC)
	if err != nil {
		return -1
	}
	return fd
}

// takeState takes the stored state out of socks: what it says (nil when
// unreadable) and its fd.
func takeState(socks []*sdlisten.Socket) (st *savedState, fd int, rest []*sdlisten.Socket) {
	fd = -1
	for _, s := range socks {
		if s.Addr().Name != stateName || s.Addr().Network != "" {
			rest = append(rest, s)
			continue
		}
		if fd >= 0 {
			s.Close() // one is enough
			continue
		}
		if d, err := unix.Dup(s.Fd()); err == nil {
			unix.CloseOnExec(d)
			fd = d
			st = readState(fd)
		}
		s.Close()
	}
	return st, fd, rest
}

func readState(fd int) *savedState {
	var fi unix.Stat_t
	if unix.Fstat(fd, &fi) != nil {
		return nil
	}
	buf := make([]byte, min(fi.Size, 1<<20)) // relaunch writes a few hundred bytes
	n, _ := unix.Pread(fd, buf, 0)
	var st savedState
	if err := json.NewDecoder(bytes.NewReader(buf[:max(n, 0)])).Decode(&st); err != nil || st.Format != 1 {
		return nil
	}
	return &st
}
