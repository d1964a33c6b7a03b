//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The service manager's fd store: relaunch under systemd stores every
// socket it binds (FDSTORE=1, named by its place); when relaunch dies and
// systemd starts it again (its app killed with it: KillMode=control-group),
// it gets them back in LISTEN_FDS and takes the very same sockets back.
// Connections made while nothing ran waited in their queues and are
// served; none is refused. The test's own notify socket plays systemd.
func TestFDStore(t *testing.T) {
	t.Parallel()
	a, addr, names, files := startStoring(t)

	// relaunch dies, and systemd kills what is left of the service.
	load := startLoad(t, addr)
	waitLoadOK(t, load, 100, 10*time.Second)
	gen1 := waitPid(t, a, 1)
	a.Signal(syscall.SIGKILL)
	kill := time.Now() // the app's death is what cuts requests
	syscall.Kill(gen1, syscall.SIGKILL)
	a.MustWait(10 * time.Second)
	// Clients keep connecting meanwhile: they wait in the stored queues.
	time.Sleep(300 * time.Millisecond) // the restart delay of systemd's Restart=, as a stimulus

	b := startRelaunchOpts(t, procOpts{ExtraFiles: files, Activation: true, FdNames: names},
		"-l", addr, "--no-watch-binary", "--", demoBin)
	b.WaitLog(t, "taken back from the service manager's fd store", 10*time.Second)
	waitHTTP(t, addr, "gen=1", 10*time.Second)
	res := load.Stop()
	t.Logf("load: %s", res)
	checkOnlyHeldFailed(t, res, []time.Time{kill})
	if strings.Contains(b.Stderr(), "in use") {
		t.Errorf("the restarted relaunch found its own sockets in use:\n%s", b.Stderr())
	}
	// The new generation's fd 3 is one of the stored sockets, and the app
	// got no other (its fd table as main began).
	_, fds := fdsAtStart(t, addr)
	stored := map[uint64]bool{}
	for _, f := range files {
		var st syscall.Stat_t
		syscall.Fstat(int(f.Fd()), &st)
		stored[st.Ino] = true
	}
	if ino := socketInode(fds[3]); !stored[ino] {
		t.Errorf("gen 1's fd 3 is %q, none of the stored sockets", fds[3])
	}
	for fd, target := range fds {
		if fd > 3 && strings.HasPrefix(target, "socket:") {
			t.Errorf("gen 1 got another socket, fd %d: %v", fd, fds)
		}
	}
}

// startStoring starts relaunch on a free address under a service manager
// (the test's notify socket) that keeps an fd store, and returns what it
// stored once it is ready (storedBy).
func startStoring(t *testing.T) (a *relaunchProc, addr string, names []string, files []*os.File) {
	t.Helper()
	sink := newNotifySink(t, shortTempDir(t))
	addr = freeAddr(t)
	a = startRelaunchOpts(t, procOpts{Env: []string{"NOTIFY_SOCKET=" + sink.path, "FDSTORE=32"}},
		"-l", addr, "--no-watch-binary", "--", demoBin)
	names, files = storedBy(t, sink, a, addr)
	return a, addr, names, files
}

// storedBy collects what relaunch a stores in the fd store (sink plays
// systemd) until its READY=1: the names and a dup of each fd, in order. It
// checks they are every slot of addr's pool and its spare.
func storedBy(t *testing.T, sink *notifySink, a *relaunchProc, addr string) ([]string, []*os.File) {
	t.Helper()
	var names []string
	var files []*os.File
	for {
		m, ok := sink.recv(20 * time.Second)
		if !ok {
			t.Fatalf("no READY=1 from relaunch; stored so far %v\n%s", names, a.Stderr())
		}
		if v, _ := m.get("FDSTORE"); v == "1" {
			name, _ := m.get("FDNAME")
			if p, _ := m.get("FDPOLL"); p != "0" || len(m.Fds) != 1 {
				t.Errorf("%v: want FDPOLL=0 and one fd, got %d fds", m.Fields, len(m.Fds))
				continue
			}
			if name == "relaunch.state" {
				// The generations' state: a memfd, for a relaunch
				// started after this one's death.
				if target, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", m.Fds[0])); !strings.HasPrefix(target, "/memfd:relaunch.state") {
					t.Errorf("relaunch.state is %q, not relaunch's state memfd", target)
				}
			} else if sa, err := syscall.Getsockname(m.Fds[0]); err != nil || sa.(*syscall.SockaddrInet4).Port != addrPort(t, addr) {
				t.Errorf("%s is not a socket on %s: %v %v", name, addr, sa, err)
			}
			names = append(names, name)
			dup, err := syscall.Dup(m.Fds[0])
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, os.NewFile(uintptr(dup), name))
			continue
		}
		if len(m.Fields) > 0 && m.Fields[0] == "READY=1" {
			break
		}
	}
	t.Cleanup(func() {
		for _, f := range files {
			f.Close()
		}
	})
	want := []string{}
	for s := range 8 {
		want = append(want, fmt.Sprintf("relaunch.L0.S%d", s))
	}
	want = append(want, "relaunch.L0.spare", "relaunch.state")
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("stored %v; want %v", names, want)
	}

	return names, files
}

// Adoption: systemd with KillMode=process lets the app outlive relaunch.
// While relaunch is dead, the group keeps every member (the store holds
// them), so steering still sends everything to gen 1, which serves on: no
// error. relaunch started again takes the sockets back, adopts gen 1 as
// current (no new generation), and the next upgrade drains it.
func TestFDStoreAdopts(t *testing.T) {
	t.Parallel()
	a, addr, names, files := startStoring(t)
	load := startLoad(t, addr)
	gen1 := waitPid(t, a, 1)
	a.Signal(syscall.SIGKILL)
	a.MustWait(10 * time.Second)
	waitLoadOK(t, load, 200, 10*time.Second) // served by the orphan alone

	sock := filepath.Join(shortTempDir(t), "ctl.sock")
	b := startRelaunchOpts(t, procOpts{ExtraFiles: files, Activation: true, FdNames: names},
		"-l", addr, "--no-watch-binary", "--control", sock, "--", demoBin)
	b.WaitLog(t, fmt.Sprintf("adopted gen 1 (pid %d), current", gen1), 10*time.Second)
	checkAdoptedAlone(t, b, sock, gen1)
	b.Signal(syscall.SIGUSR2)
	b.WaitLog(t, "gen 2 (pid", 10*time.Second)
	b.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", gen1), 20*time.Second)
	waitHTTP(t, addr, "gen=2", 10*time.Second)
	stopLoad(t, load)
	st := statusOf(t, sock)
	if len(st.Generations) != 1 || st.Generations[0].Generation != 2 || st.Generations[0].Adopted {
		t.Errorf("status after the upgrade: %+v; want gen 2 alone", st.Generations)
	}
}
