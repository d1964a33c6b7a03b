package launcher

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/internal/exechelper"
	"github.com/relaunch/relaunch/sdlisten"
)

// The warm exec helper. A generation's first process is relaunch's own
// binary, the exec helper (internal/exechelper), which sets LISTEN_PID and
// execs the app: a whole Go runtime start before the app's own, ~2 ms on
// an idle machine, 10–20 ms on a busy one. So once a generation is ready,
// relaunch starts the next one's helper ahead, holding the sockets of the
// slot that one will take: it waits, its runtime up, for its order (path,
// argv, environment) on a pipe, and the next start only writes the order.
// It runs nothing of the app's before that. A start it does not fit (a
// crash restart or rollback running a kept binary, another slot) discards
// it and forks afresh. ps shows it as exechelper.WarmArgv.

// warmHelper is a helper waiting for its order.
type warmHelper struct {
	pid   int
	ctl   *os.File // the order pipe's write end
	errR  *os.File // the exec-error pipe's read end
	fds   []int    // the sockets it holds, as fd 3 on
	stdin int
}

// startWarm forks a warm helper with the sockets of p (its env: the one
// before the order).
func startWarm(p procSpec) (*warmHelper, error) {
	var ep [2]int
	if err := unix.Pipe2(ep[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("pipe: %w", err)
	}
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		unix.Close(ep[0])
		unix.Close(ep[1])
		return nil, err
	}
	w := &warmHelper{ctl: ctlW, errR: os.NewFile(uintptr(ep[0]), "exec-error-pipe"), stdin: p.stdin}
	files := []uintptr{uintptr(p.stdin), 1, 2}
	for _, s := range p.socks {
		files = append(files, uintptr(s.Fd()))
		w.fds = append(w.fds, s.Fd())
	}
	errFd := len(files)
	files = append(files, uintptr(ep[1]), ctlR.Fd())
	w.pid, err = syscall.ForkExec("/proc/self/exe", exechelper.WarmArgv, &syscall.ProcAttr{
		Env:   append(p.env[:len(p.env):len(p.env)], exechelper.WarmEnv(errFd, errFd+1)...),
		Files: files,
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	unix.Close(ep[1])
	ctlR.Close()
	if err != nil {
		w.errR.Close()
		ctlW.Close()
		return nil, fmt.Errorf("cannot start the exec helper (/proc/self/exe): %w", err)
	}
	return w, nil
}

// fits says whether p can start from w: the same sockets and stdin, and
// the command's path rather than a kept file.
func (w *warmHelper) fits(p procSpec) bool {
	if p.bin != nil || p.stdin != w.stdin || len(p.socks) != len(w.fds) {
		return false
	}
	for i, s := range p.socks {
		if s.Fd() != w.fds[i] {
			return false
		}
	}
	return true
}

// order makes w exec p. A helper that is gone (its pipe broken) or does
// not read within a second fails it.
func (w *warmHelper) order(p procSpec) error {
	w.ctl.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := w.ctl.Write(exechelper.Order(w.pid, p.path, p.argv, p.env))
	if cerr := w.ctl.Close(); err == nil {
		err = cerr
	}
	return err
}

// discard kills w and reaps it: it waits in a read, so it dies at once.
func (w *warmHelper) discard() {
	w.ctl.Close()
	w.errR.Close()
	syscall.Kill(w.pid, syscall.SIGKILL)
	waitPid(w.pid)
}

// warmSystem is osSystem's warm helper: at most one, owned by the loop.
type warmSystem struct{ w *warmHelper }

func (ws *warmSystem) prepare(p procSpec) (int, error) {
	ws.discard()
	w, err := startWarm(p)
	if err != nil {
		return 0, err
	}
	ws.w = w
	return w.pid, nil
}

func (ws *warmSystem) discard() {
	if ws.w != nil {
		ws.w.discard()
		ws.w = nil
	}
}

// take returns the warm helper's pid and exec-error pipe when it started
// p, or 0; one that does not fit is discarded.
func (ws *warmSystem) take(p procSpec) (int, *os.File) {
	w := ws.w
	if w == nil {
		return 0, nil
	}
	ws.w = nil
	if !w.fits(p) {
		w.discard()
		return 0, nil
	}
	if err := w.order(p); err != nil {
		w.discard()
		return 0, nil
	}
	return w.pid, w.errR
}

// prepareLater prepares the next generation's helper once g, ready now,
// has been serving for the settle time and a little more: its start takes
// CPU, which the switch's moments (the old generation's queue emptying,
// its drain signal) should not share.
func (l *launcher) prepareLater(g *generation) {
	l.after(g, l.cfg.Settle+warmAfter, func() {
		if g == l.cur {
			l.prepareNext()
		}
	})
}

// warmAfter is how long after the settle time the warm helper starts.
const warmAfter = 250 * time.Millisecond

// prepareNext starts the warm helper of the next generation, on the slot
// the next start would take now (warmSlot keeps it that one).
func (l *launcher) prepareNext() {
	l.releaseGC() // the switch is over (gchold_linux.go)
	if l.stopping || l.next != nil || l.nWorkers > 0 {
		return // (workers: a generation is many starts; not warmed yet)
	}
	l.prepareNotify()
	if l.sys.prepare == nil {
		return
	}
	l.dropWarm()
	slot, err := l.pickSlot(nil)
	if err != nil {
		return
	}
	pid, err := l.sys.prepare(procSpec{env: l.env, socks: l.socketsFor(slot), stdin: l.stdin})
	if err != nil {
		l.log.Debug("no warm exec helper: " + err.Error())
		return
	}
	l.warmPid, l.warmSlotID = pid, slot
}

// dropWarm discards the warm helper, if any.
func (l *launcher) dropWarm() {
	if l.warmPid != 0 && l.sys.discard != nil {
		l.sys.discard()
	}
	l.warmPid = 0
}

// prepareNotify makes the next generation's notify socket ahead: making
// one (socket, bind in the runtime directory, SO_PASSCRED, the poller) took
// ~0.35 ms of relaunch's CPU between the trigger and the fork.
func (l *launcher) prepareNotify() {
	name := "gen" + strconv.Itoa(l.lastID+1)
	if l.nextNotify != nil && l.nextNotifyName == name {
		return
	}
	l.dropNotify()
	n, err := l.notifySocketNamed(name)
	if err != nil {
		l.log.Debug("no notify socket made ahead: " + err.Error())
		return
	}
	l.nextNotify, l.nextNotifyName = n, name
}

// takeNotify returns the notify socket prepared for name, or makes it: the
// prepared one serves when it is that name's and still in the runtime
// directory (a directory removed and made again no longer holds it).
func (l *launcher) takeNotify(name string) (*sdlisten.NotifyListener, error) {
	if n := l.nextNotify; n != nil {
		l.nextNotify = nil
		var st unix.Stat_t
		if l.nextNotifyName == name && !l.runDir.gone() &&
			unix.Fstatat(l.runDir.fd, name+".sock", &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			return n, nil
		}
		n.Close()
	}
	return l.notifySocketNamed(name)
}

// dropNotify closes the notify socket made ahead, if any (its file goes).
func (l *launcher) dropNotify() {
	if l.nextNotify != nil {
		l.nextNotify.Close()
		l.nextNotify = nil
	}
}

// warmSlot is the slot a start takes, given pickSlot's choice: the warm
// helper's, when it is free and pickSlot had no reason of its own (a
// crash restart takes the steered slot; a slot with stranded connections
// goes first).
func (l *launcher) warmSlot(slot int) int {
	if l.warmPid == 0 || slot == l.warmSlotID || l.cur == nil || len(l.held) > 0 {
		return slot
	}
	if l.warmSlotID == l.steerSlot || slices.ContainsFunc(l.gens, func(g *generation) bool { return g.slot == l.warmSlotID }) {
		return slot
	}
	return l.warmSlotID
}
