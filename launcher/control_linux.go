package launcher

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// serveControl listens on path (0600; a stale socket file is replaced, a
// live one is an error) and answers each connection from the loop.
// kept >= 0 is the socket's fd, kept open by the relaunch this one re-executed.
func (l *launcher) serveControl(path string, kept int) (func(), error) {
	var ln *net.UnixListener
	if kept >= 0 {
		f := os.NewFile(uintptr(kept), path)
		fl, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("cannot adopt the control socket %s: %v", path, err)
		}
		ln = fl.(*net.UnixListener)
	} else {
		if err := clearStaleSocket(path); err != nil {
			return nil, err
		}
		old := syscall.Umask(0o077) // the socket is born 0600; before any child is forked
		var err error
		ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		syscall.Umask(old)
		if err != nil {
			return nil, fmt.Errorf("cannot create the control socket %s: %v", path, err)
		}
	}
	ln.SetUnlinkOnClose(true)
	l.control = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go l.controlConn(c)
		}
	}()
	return func() { ln.Close() }, nil
}

func clearStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket %s: %v", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("control socket %s: a file that is not a socket is there; remove it or choose another --control", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("control socket %s: another relaunch answers there; stop it or choose another --control", path)
	}
	return os.Remove(path)
}

// maxRequest bounds a control request line.
const maxRequest = 4096

func (l *launcher) controlConn(c net.Conn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	// A request is a few dozen bytes: a client that sends more without a
	// newline must not make relaunch buffer it.
	line, err := bufio.NewReaderSize(c, maxRequest).ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		b, _ := json.Marshal(Answer{Error: fmt.Sprintf("request too long: more than %d bytes without a newline", maxRequest)})
		c.SetWriteDeadline(time.Now().Add(time.Second))
		c.Write(append(b, '\n'))
		return
	}
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	var req Request
	ans := make(chan Answer, 1)
	if err := json.Unmarshal(line, &req); err != nil {
		ans <- Answer{Error: "bad request: " + err.Error()}
	} else if req.Cmd == "reexec" {
		// The new program answers: the connection goes along.
		f, err := c.(*net.UnixConn).File()
		if err != nil {
			ans <- Answer{Error: "reexec: " + err.Error()}
		} else {
			l.post(func() { l.onReexec(f) })
			return
		}
	} else {
		l.post(func() { l.onControl(req, ans) })
	}
	select {
	case a := <-ans:
		b, _ := json.Marshal(a)
		c.Write(append(b, '\n'))
	case <-l.quit:
	}
}

// onControl runs on the loop. status answers at once; upgrade and rollback
// answer with the outcome of the newest upgrade.
func (l *launcher) onControl(req Request, ans chan<- Answer) {
	switch req.Cmd {
	case "status":
		ans <- Answer{Status: l.statusReport()}
	case "promote", "abort":
		ans <- l.controlCanary(req.Cmd)
	case "scale":
		ans <- l.scale(req.Workers)
	case "upgrade":
		l.waiters = append(l.waiters, ans)
		l.upgrade("relaunch upgrade")
	case "rollback":
		if l.prevBin == nil {
			ans <- Answer{Error: "nothing to roll back to: no earlier generation was ever replaced by an upgrade"}
			return
		}
		f, err := dupFile(l.prevBin)
		if err != nil {
			ans <- Answer{Error: "cannot keep the previous binary: " + err.Error()}
			return
		}
		closeFile(l.startFrom) // a rollback still queued: this one replaces it
		l.startFrom = f
		l.waiters = append(l.waiters, ans)
		l.upgrade("relaunch rollback to the previous generation's binary (was " + l.prevBin.Name() + ")")
	default:
		ans <- Answer{Error: fmt.Sprintf("unknown request %q: status, upgrade, rollback, reexec, promote, abort or scale", req.Cmd)}
	}
}

// concluded answers the clients waiting for an upgrade's outcome, unless a
// newer upgrade is queued: they get its outcome.
func (l *launcher) concluded(o Outcome) {
	if !o.OK {
		l.lastFailure, l.lastFailureAt = o.Reason, l.sys.now()
	}
	if l.pending != "" {
		return
	}
	for _, w := range l.waiters {
		w <- Answer{Outcome: &o}
	}
	l.waiters = nil
}

func (l *launcher) statusReport() *Status {
	s := &Status{Pid: os.Getpid(), Version: l.cfg.Version, Command: l.cfg.Command, Readiness: l.waitingFor(),
		LastFailure: l.lastFailure, LastFailureAt: l.lastFailureAt, Rescued: l.rescued, Canary: l.canaryStatus()}
	for _, g := range l.gens {
		since := g.started
		switch {
		case g.state == draining || g.state == stopping:
			since = g.drainAt
		case g.state == current || g.state == canary:
			since = g.readyAt
		}
		s.Generations = append(s.Generations, GenStatus{Generation: g.id, Pid: g.pid, State: g.state.String(),
			Since: since, Path: g.path, Slot: g.slot, Adopted: g.adopted, Ready: g.readyHow, Why: g.why, Health: g.health, Unhealthy: g.unhealthy,
			Workers: workersStatus(g)})
	}
	return s
}

// samePath says whether path still names the file f has open.
func samePath(f *os.File, path string) bool {
	a, err1 := f.Stat()
	b, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

func closeFile(f *os.File) {
	if f != nil {
		f.Close()
	}
}
