//go:build linux

package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The warm exec helper (launcher/warm_linux.go), which starts the
// generations where the traced start is not used (--no-ptrace): once a
// generation is ready, relaunch has started the next one's helper, which waits holding
// the sockets of a slot no generation has; the next upgrade runs on it (the
// new generation's pid is the helper's, and LISTEN_PID says so); a stopped
// relaunch leaves none behind.
func TestWarmExecHelper(t *testing.T) {
	t.Parallel()
	needE2E(t, "relaunch")
	p, addr := startServing(t, "--no-ptrace", "--", demoBin)
	warm := func() int {
		t.Helper()
		var w []int
		if !waitUntil(10*time.Second, 10*time.Millisecond, func() bool {
			w = slices.DeleteFunc(procChildrenAll(p.Pid()), func(pid int) bool { return !isWarmHelper(pid) })
			return len(w) == 1
		}) {
			t.Fatalf("relaunch's warm exec helpers: %v; want one; children %v", w, procChildrenAll(p.Pid()))
		}
		return w[0]
	}
	for g := 2; g <= 3; g++ {
		w := warm()
		if sock, gen := fdLink(w, 3), fdLink(genPids(p)[g-1], 3); !strings.HasPrefix(sock, "socket:") || sock == gen {
			t.Errorf("the warm helper's fd 3 is %q, gen %d's %q: want another slot's socket", sock, g-1, gen)
		}
		upgradeTo(t, p, g)
		if pid := genPids(p)[g]; pid != w {
			t.Errorf("gen %d is pid %d; want the warm helper's, %d", g, pid, w)
		}
		env := waitHTTP(t, addr, "gen="+strconv.Itoa(g), 5*time.Second)
		if body, err := httpGet(addr, "/env"); err != nil || !strings.Contains(body, "LISTEN_PID="+strconv.Itoa(w)+"\n") {
			t.Errorf("gen %d's /env: %q, %v; want LISTEN_PID=%d (answer %q)", g, body, err, w, env)
		}
	}
	last := warm()
	p.Signal(syscall.SIGTERM)
	p.MustWait(15 * time.Second)
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", last)); err == nil && isWarmHelper(last) {
		t.Errorf("the warm exec helper %d outlived relaunch", last)
	}
}

// fdLink is where /proc/PID/fd/FD points, or "".
func fdLink(pid, fd int) string {
	s, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	return s
}

// The traced start (internal/exechelper/traced_linux.go), the default: each
// generation is relaunch's own child running the app from its exec on, no
// helper waits beside it, LISTEN_PID is the generation's pid, and nothing
// traces it once it runs.
func TestTracedStart(t *testing.T) {
	t.Parallel()
	needE2E(t, "relaunch")
	p, addr := startServing(t, "--", demoBin)
	for g := 1; g <= 3; g++ {
		if g > 1 {
			upgradeTo(t, p, g)
		}
		waitHTTP(t, addr, "gen="+strconv.Itoa(g), 5*time.Second)
		pid := genPids(p)[g]
		if body, err := httpGet(addr, "/env"); err != nil || !strings.Contains(body, "LISTEN_PID="+strconv.Itoa(pid)+"\n") {
			t.Errorf("gen %d's /env: %q, %v; want LISTEN_PID=%d", g, body, err, pid)
		}
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if !strings.Contains(string(st), "\nTracerPid:\t0\n") || !strings.Contains(string(st), fmt.Sprintf("\nPPid:\t%d\n", p.Pid())) {
			t.Errorf("gen %d (pid %d): want relaunch's child (%d), traced by none:\n%s", g, pid, p.Pid(), st)
		}
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe != demoBin {
			t.Errorf("gen %d runs %q; want %s from its start", g, exe, demoBin)
		}
	}
	// A warm helper would start --settle (100 ms) + 250 ms after the
	// generation is ready: watch for one over four times as long.
	var w []int
	if waitUntil(1500*time.Millisecond, 10*time.Millisecond, func() bool {
		w = slices.DeleteFunc(procChildrenAll(p.Pid()), func(pid int) bool { return !isWarmHelper(pid) })
		return len(w) > 0
	}) {
		t.Errorf("warm exec helper %v beside gen 3: the traced start needs none", w)
	}
}
