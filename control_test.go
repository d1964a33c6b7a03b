//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaunch/relaunch/launcher"
)

// The control socket: relaunch status | upgrade | rollback.

// client runs `relaunch CMD --control sock ARGS...` and returns its
// status and output.
func client(t *testing.T, sock, cmd string, args ...string) (int, string) {
	t.Helper()
	c := exec.Command(relaunchBin, append([]string{cmd, "--control", sock}, args...)...)
	out, err := c.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

func TestControlUpgrade(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	app, setFlags := appScript(t, dir)
	sock := filepath.Join(dir, "ctl.sock")
	p, addr := startServing(t, "--control", sock, "--", app)
	load := startLoad(t, addr)

	code, out := client(t, sock, "upgrade")
	if code != 0 || !containsAll(out, "generation 2 (pid", "ready in") {
		t.Fatalf("relaunch upgrade: exit %d, %q; want 0 and gen 2 ready", code, out)
	}
	waitHTTP(t, addr, "gen=2", time.Second) // serving when upgrade returned

	setFlags("-exit-at-start 1")
	code, out = client(t, sock, "upgrade")
	if code != 1 || !strings.Contains(out, "exited before it was ready (status 1)") {
		t.Fatalf("relaunch upgrade to a bad build: exit %d, %q; want 1 and the reason", code, out)
	}
	waitHTTP(t, addr, "gen=2", time.Second)
	stopLoad(t, load)

	// status --json matches what /proc shows.
	code, out = client(t, sock, "status", "--json")
	if code != 0 {
		t.Fatalf("status: %d %s", code, out)
	}
	var st launcher.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json does not parse: %v\n%s", err, out)
	}
	if st.Pid != p.Pid() || !strings.Contains(st.LastFailure, "status 1") {
		t.Errorf("status: pid %d (want %d), last failure %q", st.Pid, p.Pid(), st.LastFailure)
	}
	var cur []launcher.GenStatus
	for _, g := range st.Generations {
		if !processAlive(g.Pid) {
			t.Errorf("status lists gen %d pid %d, which /proc does not have", g.Generation, g.Pid)
		}
		if g.State == "current" {
			cur = append(cur, g)
		}
	}
	if len(cur) != 1 || cur[0].Generation != 2 || cur[0].Pid != genPids(p)[2] {
		t.Errorf("status: current %+v; want gen 2 pid %d", cur, genPids(p)[2])
	}
	code, out = client(t, sock, "status")
	if code != 0 || !containsAll(out, "gen 2  pid", "current") {
		t.Errorf("status text: %d %q", code, out)
	}
}

// Two upgrades asked at once both get the newest outcome.
func TestControlConcurrentUpgrades(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	app, setFlags := appScript(t, dir)
	setFlags("-init-delay 300ms")
	sock := filepath.Join(dir, "ctl.sock")
	startServing(t, "--control", sock, "--", app)
	outs := make(chan string, 2)
	for range 2 {
		go func() {
			_, out := client(t, sock, "upgrade")
			outs <- out
		}()
		time.Sleep(50 * time.Millisecond) // the second asks while the first runs
	}
	a, b := <-outs, <-outs
	if a != b || !strings.Contains(a, "generation 3") {
		t.Errorf("two concurrent upgrades answered %q and %q; want both the newest outcome (gen 3)", a, b)
	}
}

// A good but unwanted deploy, its predecessor's release directory deleted:
// rollback runs the previous binary again, with no error under load.
func TestControlRollback(t *testing.T) {
	needE2E(t)
	t.Parallel()
	dir := shortTempDir(t)
	for _, v := range []string{"v1", "v2"} {
		os.MkdirAll(filepath.Join(dir, "releases", v), 0o755)
	}
	copyBinary(t, demoBin, filepath.Join(dir, "releases", "v1", "app"))
	copyBinary(t, demoV2Bin, filepath.Join(dir, "releases", "v2", "app"))
	if err := os.Symlink("releases/v1", filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "ctl.sock")
	addr := freeAddr(t)
	startRelaunchOpts(t, procOpts{Dir: dir}, "--listen", addr, "--no-watch-binary", "--control", sock, "--", "./current/app")
	waitHTTP(t, addr, "version=1 ", 10*time.Second)
	load := startLoad(t, addr)

	tmp := filepath.Join(dir, "current.tmp")
	if err := os.Symlink("releases/v2", tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	if code, out := client(t, sock, "upgrade"); code != 0 {
		t.Fatalf("upgrade to v2: %d %s", code, out)
	}
	waitHTTP(t, addr, "version=2 ", time.Second)
	if err := os.RemoveAll(filepath.Join(dir, "releases", "v1")); err != nil {
		t.Fatal(err)
	}
	code, out := client(t, sock, "rollback")
	if code != 0 || !strings.Contains(out, "generation 3") {
		t.Fatalf("rollback: exit %d, %q", code, out)
	}
	if body := waitHTTP(t, addr, "gen=3", time.Second); !strings.Contains(body, "version=1 ") {
		t.Errorf("after the rollback: %q; want version 1", body)
	}
	res := stopLoad(t, load)
	if res.Versions["1"] == 0 || res.Versions["2"] == 0 {
		t.Errorf("the load should have seen v1, v2, then v1: %v", res.Versions)
	}
}

// A stale control socket file is replaced; the pidfile's neighbour is the
// default. The client's errors are a CLI script
// (testdata/script/control.txtar).
func TestControlStaleSocket(t *testing.T) {
	needE2E(t)
	t.Parallel()
	dir := shortTempDir(t)
	pidfile := filepath.Join(dir, "app.pid")
	stale := filepath.Join(dir, "app.sock")
	f := listenFile(t, "unix", stale)
	f.Close() // the file stays, nobody listens: stale
	startServing(t, "--pidfile", pidfile, "--", demoBin)
	c := exec.Command(relaunchBin, "status", "--pidfile", pidfile)
	if b, err := c.CombinedOutput(); err != nil || !strings.Contains(string(b), "gen 1") {
		t.Errorf("status --pidfile: %v %q", err, b)
	}
}

// relaunch reexec: relaunch execs a new build of itself under load with
// two generations alive, one of them draining. Same pid, same listening
// sockets, both generations still managed (the draining one is killed at
// its drain timeout by the new program), later upgrades work, the signal
// does the same, a build that refuses the command line is refused while the
// old relaunch goes on, and no request fails.
func TestControlReexec(t *testing.T) {
	t.Parallel()
	needE2E(t, "relaunch", "relaunch-v2")
	dir := shortTempDir(t)
	// relaunch runs as a symbolic link to a release, as many deploys do;
	// a deploy of relaunch points the link to the next release.
	self := filepath.Join(dir, "relaunch")
	release := func(n int, from string) string {
		rel := filepath.Join(dir, fmt.Sprintf("r%d", n), "relaunch")
		if err := os.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
			t.Fatal(err)
		}
		if from != "" {
			copyBinary(t, from, rel)
		}
		if err := os.Symlink(rel, self+".new"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(self+".new", self); err != nil {
			t.Fatal(err)
		}
		return rel
	}
	release(1, relaunchBin)
	app, _ := appScript(t, dir)
	sock := filepath.Join(dir, "ctl.sock")
	addr := freeAddr(t)
	p := startProc(t, procOpts{}, self, "--listen", addr, "--no-watch-binary", "--control", sock,
		"--drain-timeout", "15s", "--", app)
	waitHTTP(t, addr, "gen=1", 10*time.Second)

	// Gen 1 keeps draining: a long request it has accepted.
	pid1 := waitPid(t, p, 1)
	long, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	fmt.Fprintf(long, "GET /sleep?d=60s HTTP/1.1\r\nHost: x\r\n\r\n")
	waitAccepted(t, pid1, long, 5*time.Second)
	load := startLoad(t, addr)
	upgradeTo(t, p, 2)
	p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) draining", pid1), 5*time.Second)

	port := addrPort(t, addr)
	listeners := func() map[uint64]bool {
		m := map[uint64]bool{}
		for _, l := range tcpListeners(port) {
			m[l.inode] = true
		}
		return m
	}
	held := func() map[uint64]bool {
		fds, err := fdTargets(p.Pid())
		if err != nil {
			t.Fatal(err)
		}
		m := map[uint64]bool{}
		for _, target := range fds {
			if ino := socketInode(target); ino != 0 {
				m[ino] = true
			}
		}
		return m
	}
	before := listeners()
	for ino := range before {
		if !held()[ino] {
			t.Fatalf("listening socket %d on port %d is not relaunch's", ino, port)
		}
	}

	r2 := release(2, relaunchV2Bin) // the deploy of a new relaunch
	code, out := client(t, sock, "reexec")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("relaunch test-2 (pid %d, %s) took over in", p.Pid(), self)) ||
		!strings.Contains(out, "with 2 generation(s)") {
		t.Fatalf("relaunch reexec: exit %d, %q; want 0, test-2, pid %d, 2 generations", code, out, p.Pid())
	}
	if p.Exited() {
		t.Fatal("relaunch exited")
	}
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid())); exe != r2 {
		t.Errorf("pid %d runs %q after the reexec; want the new release %s", p.Pid(), exe, r2)
	}
	after, fds := listeners(), held()
	if len(after) != len(before) {
		t.Errorf("listening sockets on port %d: %v before, %v after the reexec", port, before, after)
	}
	for ino := range before {
		if !after[ino] || !fds[ino] {
			t.Errorf("listening socket %d: still listening %v, still relaunch's %v", ino, after[ino], fds[ino])
		}
	}

	// status: the new program, both generations as /proc shows them.
	code, out = client(t, sock, "status", "--json")
	var st launcher.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
		t.Fatalf("status --json: exit %d, %v\n%s", code, err, out)
	}
	states := map[int]string{}
	for _, g := range st.Generations {
		if !processAlive(g.Pid) || g.Pid != genPids(p)[g.Generation] {
			t.Errorf("status lists gen %d pid %d: alive %v, started as pid %d", g.Generation, g.Pid, processAlive(g.Pid), genPids(p)[g.Generation])
		}
		states[g.Generation] = g.State
	}
	if st.Pid != p.Pid() || st.Version != "test-2" || states[1] != "draining" || states[2] != "current" || len(states) != 2 {
		t.Errorf("status after the reexec: pid %d version %q generations %v; want pid %d, test-2, gen 1 draining, gen 2 current",
			st.Pid, st.Version, states, p.Pid())
	}

	upgradeTo(t, p, 3)
	waitHTTP(t, addr, "gen=3", 5*time.Second)

	// The signal, three times: no fd leaks across re-execs.
	fd0, _ := fdCount(p.Pid())
	for i := 2; i <= 4; i++ {
		p.Signal(syscall.SIGTTIN)
		p.WaitLogN(t, "took over in", i, 10*time.Second)
	}
	if fd1, _ := fdCount(p.Pid()); fd1 > fd0 {
		t.Errorf("relaunch holds %d fds after 3 more re-execs, %d before", fd1, fd0)
	}
	upgradeTo(t, p, 4)

	// A build that does not take the command line: refused, nothing changes.
	r3 := release(3, "")
	if err := os.WriteFile(r3, []byte("#!/bin/sh\necho 'relaunch: flag provided but not defined: -listen' >&2\nexit 2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	code, out = client(t, sock, "reexec")
	if code != 1 || !strings.Contains(out, "reexec failed: "+self+" refuses this command line (exit status 2): flag provided but not defined: -listen") {
		t.Errorf("reexec to a broken build: exit %d, %q; want 1 and the build's complaint", code, out)
	}
	upgradeTo(t, p, 5)
	waitHTTP(t, addr, "gen=5", 5*time.Second)
	stopLoad(t, load)

	// Meanwhile the new program kills gen 1 at its drain timeout, and reaps it.
	line := p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", pid1), 20*time.Second)
	if !strings.Contains(line, "still draining after 15s (--drain-timeout)") {
		t.Errorf("gen 1's end %q; want the drain timeout", line)
	}
	if waitProcsGone([]int{pid1}, 5*time.Second) != nil {
		t.Errorf("gen 1 (pid %d) is still there: %s", pid1, describeProc(pid1))
	}

	p.Signal(syscall.SIGTERM)
	if code := p.MustWait(30 * time.Second); code != 0 {
		t.Errorf("relaunch exited %d after TERM; want 0", code)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the control socket %s is left after the exit: %v", sock, err)
	}
}
