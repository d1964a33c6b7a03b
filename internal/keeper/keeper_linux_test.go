package keeper

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary is the keeper too: Start runs /proc/self/exe.
func TestMain(m *testing.M) {
	Main()
	os.Exit(m.Run())
}

// listener opens a TCP listener on loopback and returns a dup of its fd
// (the caller's to close) and its address.
func listener(t *testing.T) (int, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	return fd, ln.Addr().String()
}

func inode(fd int) uint64 {
	var st unix.Stat_t
	unix.Fstat(fd, &st)
	return st.Ino
}

func canConnect(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// exited waits up to within for every thread of pid to be gone (a
// pidfd is readable then; a zombie leader with live threads still holds
// the fds).
func exited(pid int, within time.Duration) bool {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return true
	}
	defer unix.Close(pfd)
	for end := time.Now().Add(within); ; {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}}, int(time.Until(end).Milliseconds()))
		if !errors.Is(err, unix.EINTR) || time.Now().After(end) {
			return n > 0
		}
	}
}

func start(t *testing.T) *Client {
	t.Helper()
	c, err := Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		syscall.Kill(c.pid, syscall.SIGKILL)
	})
	return c
}

// A stored socket lives as long as the keeper: relaunch's copy closed,
// it still takes connections; BYE closes it and ends the keeper.
func TestStoreAndBye(t *testing.T) {
	c := start(t)
	fd, addr := listener(t)
	if err := c.Store("relaunch.L0.S0", fd); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if !canConnect(addr) {
		t.Fatalf("%s refused with relaunch's copy closed and the keeper's open", addr)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if !exited(c.pid, 5*time.Second) {
		t.Fatalf("keeper pid %d still running after BYE", c.pid)
	}
	if canConnect(addr) {
		t.Errorf("%s still listening after the keeper's BYE", addr)
	}
}

// Orphaned (its relaunch gone without BYE) while another process holds a
// kept socket, the keeper waits; a taker gets every fd, in order, by name,
// and becomes the owner: a second taker is refused as busy.
func TestTakeAfterOwnerDied(t *testing.T) {
	c := start(t)
	fd, addr := listener(t)
	mem, err := unix.MemfdCreate("state", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(mem)
	c.Store("relaunch.L0.S0", fd)
	c.Store("relaunch.state", mem)
	c.Store("relaunch.L0.S0", fd) // replaces: one fd under a name
	want := inode(fd)

	// A generation holding the socket outlives relaunch.
	holder := exec.Command("sleep", "60")
	f := os.NewFile(uintptr(fd), "sock")
	holder.ExtraFiles = []*os.File{f}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	f.Close()

	// relaunch dies: its end closes without BYE.
	c.Release()
	time.Sleep(100 * time.Millisecond) // a stimulus: the keeper sees the hang-up
	if exited(c.pid, 0) {
		t.Fatal("the keeper exited while a generation still holds its socket")
	}
	if !canConnect(addr) {
		t.Fatalf("%s refused while the keeper is orphaned", addr)
	}

	pid, name := Find([]int{os.Getpid(), c.pid})
	if pid != c.pid || name == "" {
		t.Fatalf("Find = %d %q; want the keeper, pid %d", pid, name, c.pid)
	}
	if _, _, err := Take(os.Getpid(), name, nil); err == nil {
		t.Error("Take trusted a keeper socket whose peer is not the pid it was told")
	}
	d, got, err := Take(pid, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if len(got) != 2 || got[0].Name != "relaunch.L0.S0" || got[1].Name != "relaunch.state" {
		t.Fatalf("took %v; want relaunch.L0.S0 then relaunch.state", got)
	}
	if inode(got[0].Fd) != want || inode(got[1].Fd) != inode(mem) {
		t.Errorf("took other files than were stored")
	}
	for _, r := range got {
		unix.Close(r.Fd)
	}
	_, _, err = Take(pid, name, nil)
	var busy *BusyError
	if !errors.As(err, &busy) || busy.Owner != os.Getpid() {
		t.Errorf("a second Take: %v; want busy, owned by the test (pid %d)", err, os.Getpid())
	}
}

// Orphaned with nobody else holding its sockets, or once the last holder
// exits, the keeper closes them and exits: refused beats waiting forever.
func TestOrphanExits(t *testing.T) {
	for _, withHolder := range []bool{false, true} {
		c := start(t)
		fd, addr := listener(t)
		c.Store("relaunch.L0.S0", fd)
		var holder *exec.Cmd
		f := os.NewFile(uintptr(fd), "sock")
		if withHolder {
			holder = exec.Command("sleep", "60")
			holder.ExtraFiles = []*os.File{f}
			if err := holder.Start(); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		c.Release()
		if withHolder {
			time.Sleep(100 * time.Millisecond) // a stimulus, as above
			if exited(c.pid, 0) {
				t.Fatal("the keeper exited while its socket's holder lives")
			}
			holder.Process.Kill()
			holder.Wait()
		}
		if !exited(c.pid, 5*time.Second) {
			t.Fatalf("holder %v: the orphaned keeper did not exit", withHolder)
		}
		if canConnect(addr) {
			t.Errorf("holder %v: %s still listening after the keeper exited", withHolder, addr)
		}
	}
}
