package sdlisten

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func listenNotify(t *testing.T) *NotifyListener {
	t.Helper()
	l, err := ListenNotify(filepath.Join(t.TempDir(), "notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// recv is Recv with a deadline, so a bug fails the test instead of hanging it.
func recv(t *testing.T, l *NotifyListener) NotifyMessage {
	t.Helper()
	type res struct {
		m   NotifyMessage
		err error
	}
	ch := make(chan res, 1)
	go func() {
		m, err := l.Recv()
		ch <- res{m, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.m
	case <-time.After(5 * time.Second):
		t.Fatal("Recv did not return")
	}
	panic("unreachable")
}

// send writes one raw datagram to path, with fds attached if any.
func send(t *testing.T, path string, data []byte, fds ...int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(fd, data, oob, &unix.SockaddrUnix{Name: path}, 0); err != nil {
		t.Fatal(err)
	}
}

func TestNotify(t *testing.T) {
	l := listenNotify(t)
	if fi, err := os.Lstat(l.Path()); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("%s: %v", l.Path(), err)
	}
	t.Setenv("NOTIFY_SOCKET", l.Path())
	if err := Notify("READY=1\nSTATUS=gen 3 pid 42\n"); err != nil {
		t.Fatal(err)
	}
	m := recv(t, l)
	if m.Pid != os.Getpid() || m.Uid != os.Getuid() {
		t.Errorf("Pid, Uid = %d, %d; want %d, %d", m.Pid, m.Uid, os.Getpid(), os.Getuid())
	}
	if want := []string{"READY=1", "STATUS=gen 3 pid 42"}; !slices.Equal(m.Fields, want) {
		t.Errorf("Fields = %q, want %q", m.Fields, want)
	}
	if !m.Has("READY=1") || m.Has("READY=0") || m.Has("READY") {
		t.Errorf("Has is wrong for %q", m.Fields)
	}
	if v, ok := m.Get("STATUS"); !ok || v != "gen 3 pid 42" {
		t.Errorf("Get(STATUS) = %q, %v", v, ok)
	}
	if _, ok := m.Get("MAINPID"); ok {
		t.Error("Get(MAINPID) found a value")
	}
	if fl, err := unix.FcntlInt(uintptr(fdOf(t, l)), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("notify socket is not close-on-exec")
	}

	// A raw datagram: empty lines dropped, order kept.
	send(t, l.Path(), []byte("\nA=1\n\nB=2=3\nA=4"))
	m = recv(t, l)
	if want := []string{"A=1", "B=2=3", "A=4"}; !slices.Equal(m.Fields, want) || m.Pid != os.Getpid() {
		t.Errorf("Fields = %q, Pid %d; want %q", m.Fields, m.Pid, want)
	}
	if v, _ := m.Get("A"); v != "1" {
		t.Errorf("Get(A) = %q, want the first", v)
	}
	if v, _ := m.Get("B"); v != "2=3" {
		t.Errorf("Get(B) = %q", v)
	}
}

func fdOf(t *testing.T, l *NotifyListener) int {
	rc, err := l.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

func TestNotifyUnset(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	if err := Notify("READY=1"); err != nil {
		t.Errorf("Notify without NOTIFY_SOCKET: %v", err)
	}
}

func TestNotifyError(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "missing.sock"))
	if err := Notify("READY=1"); err == nil || !strings.Contains(err.Error(), "missing.sock") {
		t.Errorf("Notify to a missing socket: %v", err)
	}
}

func TestNotifyAbstract(t *testing.T) {
	name := "@relaunch-notify-test-" + strconv.Itoa(os.Getpid())
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", name)
	if err := Notify("STOPPING=1"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "STOPPING=1" {
		t.Errorf("read %q, %v", buf[:n], err)
	}
}

func TestNotifyClosesPassedFds(t *testing.T) {
	l := listenNotify(t)
	checkNoLeak(t, func() {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		send(t, l.Path(), []byte("BARRIER=1"), p[0], p[1])
		unix.Close(p[0])
		unix.Close(p[1])
		m := recv(t, l)
		if !m.Has("BARRIER=1") {
			t.Errorf("Fields = %q", m.Fields)
		}
	})
}

func TestNotifyDropsTruncated(t *testing.T) {
	l := listenNotify(t)
	send(t, l.Path(), []byte(strings.Repeat("X", notifyBufSize+1)))
	exact := "A=" + strings.Repeat("x", notifyBufSize-2)
	send(t, l.Path(), []byte(exact))
	if m := recv(t, l); !slices.Equal(m.Fields, []string{exact}) {
		t.Errorf("got %d fields of %d bytes; want the 4096-byte message after the dropped one", len(m.Fields), len(strings.Join(m.Fields, "")))
	}
}

func TestNotifyCloseUnblocksRecv(t *testing.T) {
	l, err := ListenNotify(filepath.Join(t.TempDir(), "n.sock"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := l.Recv()
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // let Recv block
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Recv after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Recv")
	}
	if _, err := os.Lstat(l.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Close left %s: %v", l.Path(), err)
	}
	if _, err := l.Recv(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Recv on a closed listener: %v", err)
	}
}

func TestListenNotifyErrors(t *testing.T) {
	long := filepath.Join(t.TempDir(), strings.Repeat("n", 120))
	if _, err := ListenNotify(long); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Errorf("ListenNotify with a long path: %v", err)
	}
	l := listenNotify(t)
	checkNoLeak(t, func() {
		if _, err := ListenNotify(l.Path()); !errors.Is(err, unix.EADDRINUSE) {
			t.Errorf("ListenNotify on a taken path: %v", err)
		}
	})
}
