package keeper

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Client is relaunch's end of its keeper. Its methods may be called from
// any goroutine.
type Client struct {
	mu     sync.Mutex
	conn   int           // -1 once closed
	pid    int           // the keeper's
	exited chan struct{} // closed when the keeper is gone (seen from here)
}

// Start starts a keeper: relaunch's own build (/proc/self/exe: the very
// binary running, even once a deploy replaced the file) in keeper mode,
// in a session of its own, so that no terminal's signal reaches it, with
// /dev/null for stdio, so that it holds no pipe of relaunch's. gone is
// called, from another goroutine, when the keeper exits before Close.
func Start(gone func(pid int, err error)) (*Client, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("keeper: %w", os.NewSyscallError("socketpair", err))
	}
	var b [16]byte
	rand.Read(b[:])
	theirs := os.NewFile(uintptr(pair[1]), "keeper")
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{comm},
		Env:         append(keeperEnv(os.Environ()), nameEnv+"=relaunch-keeper-"+hex.EncodeToString(b[:]), fdEnv+"=3"),
		ExtraFiles:  []*os.File{theirs},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		unix.Close(pair[0])
		return nil, fmt.Errorf("keeper: %w", err)
	}
	c := &Client{conn: pair[0], pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() { c.gone(cmd.Wait(), gone) }()
	return c, nil
}

// keeperEnv is relaunch's environment without what was meant for relaunch
// alone (its own socket activation, its service manager).
func keeperEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", nameEnv, fdEnv:
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (c *Client) gone(err error, report func(int, error)) {
	c.mu.Lock()
	closed := c.conn < 0
	if !closed { // a dead keeper's connection is of no use: Conn says so
		unix.Close(c.conn)
		c.conn = -1
	}
	c.mu.Unlock()
	close(c.exited)
	if !closed && report != nil {
		if err == nil {
			err = errors.New("it exited")
		}
		report(c.pid, err)
	}
}

// Resume takes back the keeper relaunch started before it re-executed
// itself: conn its end (kept open through the exec), pid the keeper,
// still relaunch's child.
func Resume(conn, pid int, gone func(pid int, err error)) *Client {
	unix.CloseOnExec(conn)
	c := &Client{conn: conn, pid: pid, exited: make(chan struct{})}
	go func() {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		for errors.Is(err, syscall.EINTR) {
			_, err = syscall.Wait4(pid, &ws, 0, nil)
		}
		if err == nil && ws.ExitStatus() != 0 {
			err = fmt.Errorf("exit status %d", ws.ExitStatus())
		}
		c.gone(err, gone)
	}()
	return c
}

// Conn is the connection's fd (to keep it through relaunch's re-exec);
// Pid the keeper's.
func (c *Client) Conn() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}
func (c *Client) Pid() int { return c.pid }

// Store hands the keeper a copy of fd, under name (replacing one stored
// under that name).
func (c *Client) Store(name string, fd int) error {
	return c.send("STORE "+name, fd)
}

// Remove makes the keeper close what it keeps under name.
func (c *Client) Remove(name string) error {
	return c.send("REMOVE "+name, -1)
}

func (c *Client) send(msg string, fd int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn < 0 {
		return errors.New("keeper: closed")
	}
	if err := send(c.conn, msg, fd); err != nil {
		return fmt.Errorf("keeper (pid %d): %w", c.pid, err)
	}
	return nil
}

// Close tells the keeper relaunch exits cleanly: it closes everything it
// holds and exits. Close waits for that, 5 s at most, so that no keeper
// outlives a relaunch that exited.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.conn < 0 {
		c.mu.Unlock()
		return nil
	}
	err := send(c.conn, "BYE", -1)
	unix.Close(c.conn)
	c.conn = -1
	c.mu.Unlock()
	select {
	case <-c.exited:
	case <-time.After(5 * time.Second):
	}
	return err
}

// Release lets go of the keeper without BYE, as relaunch's death would:
// it keeps the sockets for as long as a generation serves on them, for
// the next relaunch to take.
func (c *Client) Release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn >= 0 {
		unix.Close(c.conn)
		c.conn = -1
	}
}

// Find says which of pids is a keeper (the first one), and the name of
// its socket; 0 when none is (or none can be read: another user's).
func Find(pids []int) (pid int, name string) {
	for _, p := range pids {
		if n := nameOf(p); n != "" {
			return p, n
		}
	}
	return 0, ""
}

func nameOf(pid int) string {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return ""
	}
	defer f.Close()
	env, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	for _, kv := range strings.Split(string(env), "\x00") {
		if v, ok := strings.CutPrefix(kv, nameEnv+"="); ok && v != "" && !strings.ContainsRune(v, 0) {
			return v
		}
	}
	return ""
}

// Received is one fd a keeper handed over, with its name.
type Received struct {
	Name string
	Fd   int
}

// BusyError is Take's answer when the keeper's relaunch is alive.
type BusyError struct{ Owner, Keeper int }

func (e *BusyError) Error() string {
	return fmt.Sprintf("relaunch pid %d runs there (its keeper, pid %d, holds the sockets)", e.Owner, e.Keeper)
}

// Take takes everything keeper pid (found by Find, its socket name) holds:
// its fds, in the order they were stored, and the keeper itself, which
// now answers to the returned Client. The keeper is checked to be pid
// (SO_PEERCRED), so a socket of that name opened by anyone else is not
// trusted.
func Take(pid int, name string, gone func(pid int, err error)) (*Client, []Received, error) {
	conn, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socket", err)
	}
	got, err := take(conn, pid, name)
	if err != nil {
		unix.Close(conn)
		for _, r := range got {
			unix.Close(r.Fd)
		}
		return nil, nil, err
	}
	timeout(conn, 0)
	c := &Client{conn: conn, pid: pid, exited: make(chan struct{})}
	if pfd, err := unix.PidfdOpen(pid, 0); err == nil {
		go func() {
			for {
				_, err := unix.Poll([]unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}}, -1)
				if !errors.Is(err, unix.EINTR) {
					break
				}
			}
			unix.Close(pfd)
			c.gone(nil, gone)
		}()
	} else {
		close(c.exited) // unwatched: Close has nothing to wait for
	}
	return c, got, nil
}

func take(conn, pid int, name string) ([]Received, error) {
	timeout(conn, 5*time.Second)
	// A keeper just started may not listen yet: its name is in its
	// environment from the exec on.
	err := unix.Connect(conn, &unix.SockaddrUnix{Name: "@" + name})
	for end := time.Now().Add(2 * time.Second); errors.Is(err, unix.ECONNREFUSED) && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
		err = unix.Connect(conn, &unix.SockaddrUnix{Name: "@" + name})
	}
	if err != nil {
		return nil, fmt.Errorf("keeper pid %d: %w", pid, os.NewSyscallError("connect", err))
	}
	if cred, err := peer(conn); err != nil || int(cred.Pid) != pid {
		return nil, fmt.Errorf("keeper pid %d: its socket is another process's", pid)
	}
	if err := send(conn, "TAKE", -1); err != nil {
		return nil, fmt.Errorf("keeper pid %d: %w", pid, err)
	}
	var got []Received
	for {
		verb, arg, fd, err := recv(conn)
		if err != nil {
			return got, fmt.Errorf("keeper pid %d: %w", pid, err)
		}
		switch verb {
		case "FD":
			if fd < 0 {
				return got, fmt.Errorf("keeper pid %d: FD %s without an fd", pid, arg)
			}
			got = append(got, Received{Name: arg, Fd: fd})
			continue
		case "END":
			return got, nil
		case "BUSY":
			owner, _ := strconv.Atoi(arg)
			return got, &BusyError{Owner: owner, Keeper: pid}
		case "DENIED":
			return got, fmt.Errorf("keeper pid %d belongs to uid %s: run relaunch as that user, or root", pid, arg)
		}
		closeFd(fd)
		return got, fmt.Errorf("keeper pid %d: unexpected %q", pid, verb)
	}
}
