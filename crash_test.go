//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaunch/relaunch/launcher"
)

// Crash restarts run the binary the crashed generation ran, from the file
// relaunch kept open, whatever happened to its path; apps that daemonize.

// crashCheckCurrent checks that relaunch at sock runs generation gen alone,
// current and alive.
func crashCheckCurrent(t *testing.T, sock string, gen int) {
	t.Helper()
	var st launcher.Status
	alone := func() bool {
		st = statusOf(t, sock)
		return len(st.Generations) == 1 && st.Generations[0].Generation == gen && st.Generations[0].State == "current" &&
			processAlive(st.Generations[0].Pid)
	}
	// The one before it may still be settling, then draining.
	if !waitUntil(10*time.Second, 20*time.Millisecond, alone) {
		t.Errorf("status: generations %+v; want gen %d alone, current and running", st.Generations, gen)
	}
}

// crashKill kills generation gen of p with SIGKILL once it is ready and
// returns when.
func crashKill(t *testing.T, p *relaunchProc, gen int) time.Time {
	t.Helper()
	pid := waitPid(t, p, gen)
	p.WaitLog(t, fmt.Sprintf("gen %d (pid %d) ready", gen, pid), 10*time.Second)
	at := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	return at
}

// The binary deleted (rm app), then a crash: the restart runs the deleted
// binary, under load with no request refused. An upgrade, which needs the
// path, fails and gen 1 keeps serving; there is still nothing to roll back to.
func TestCrashAfterBinaryDeleted(t *testing.T) {
	needE2E(t)
	t.Parallel()
	_, app, sock := appCopy(t)
	p, addr := startServing(t, "--control", sock, "--", app, "-init-delay", "50ms")
	load := startLoad(t, addr)
	if err := os.Remove(app); err != nil {
		t.Fatal(err)
	}
	code, out := client(t, sock, "upgrade")
	if code != 1 || !containsAll(out, app, "no such file") {
		t.Errorf("upgrade with the binary deleted: exit %d, %q; want 1 naming %s", code, out, app)
	}
	kill := crashKill(t, p, 1)
	waitHTTP(t, addr, "gen=2", 10*time.Second)
	res := load.Stop()
	t.Logf("load: %s", res)
	checkOnlyHeldFailed(t, res, []time.Time{kill})
	if res.Gens["2"] == 0 {
		t.Errorf("the restarted generation served nothing: %s", res)
	}
	crashCheckCurrent(t, sock, 2)
	code, out = client(t, sock, "rollback")
	if code != 1 || !strings.Contains(out, "nothing to roll back to") {
		t.Errorf("rollback with no earlier upgrade: exit %d, %q", code, out)
	}
}

// The binary replaced by garbage (the watcher refuses it), then a crash:
// the restart runs the binary that crashed. Then the binary renamed away
// and gen 2 killed: the same again.
func TestCrashAfterBinaryReplaced(t *testing.T) {
	needE2E(t, "relaunch", "demo", "demo-v2")
	t.Parallel()
	dir, app, sock := appCopy(t)
	addr := freeAddr(t)
	p := startRelaunch(t, "--listen", addr, "--control", sock, "--", app)
	waitHTTP(t, addr, "gen=1", 10*time.Second)
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("\x01\x02\x03 not a program\x00\xff\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(garbage, app); err != nil {
		t.Fatal(err)
	}
	crashKill(t, p, 1)
	if body := waitHTTP(t, addr, "gen=2", 10*time.Second); !strings.Contains(body, "version=1 ") {
		t.Errorf("the restart answered %q; want version 1", body)
	}
	if err := os.Rename(app, filepath.Join(dir, "elsewhere")); err != nil {
		t.Fatal(err)
	}
	crashKill(t, p, 2)
	waitHTTP(t, addr, "gen=3", 10*time.Second)
	crashCheckCurrent(t, sock, 3)
}

// A deploy, then the binary deleted: rollback runs the previous binary
// from the file relaunch kept, with its path gone.
func TestRollbackPathGone(t *testing.T) {
	needE2E(t, "relaunch", "demo", "demo-v2")
	t.Parallel()
	_, app, sock := appCopy(t)
	_, addr := startServing(t, "--control", sock, "--", app)
	copyBinary(t, demoV2Bin, app)
	if code, out := client(t, sock, "upgrade"); code != 0 {
		t.Fatalf("upgrade to v2: %d %s", code, out)
	}
	if err := os.Remove(app); err != nil {
		t.Fatal(err)
	}
	code, out := client(t, sock, "rollback")
	if code != 0 || !strings.Contains(out, "generation 3") {
		t.Fatalf("rollback with the path gone: exit %d, %q", code, out)
	}
	if body := waitHTTP(t, addr, "gen=3", time.Second); !strings.Contains(body, "version=1 ") {
		t.Errorf("after the rollback: %q; want version 1", body)
	}
}

// A #! script cannot run from a kept file (its interpreter opens it by
// path): a rollback to a script replaced since says so, and gen 2 keeps
// serving; a crash restart runs what the path holds now, and says so.
func TestCrashScriptReplaced(t *testing.T) {
	needE2E(t)
	t.Parallel()
	dir := shortTempDir(t)
	app := filepath.Join(dir, "app")
	script := func(version string) {
		tmp := filepath.Join(dir, "app.tmp")
		body := fmt.Sprintf("#!/bin/sh\nexec %s -version %s \"$@\"\n", demoBin, version)
		if err := os.WriteFile(tmp, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, app); err != nil {
			t.Fatal(err)
		}
	}
	script("1")
	sock := filepath.Join(dir, "ctl.sock")
	p, addr := startServing(t, "--control", sock, "--", app)
	script("2")
	if code, out := client(t, sock, "upgrade"); code != 0 {
		t.Fatalf("upgrade to v2: %d %s", code, out)
	}
	script("3")
	code, out := client(t, sock, "rollback")
	if code != 1 || !containsAll(out, app, "#! script", "by path") {
		t.Errorf("rollback to a script no longer at its path: exit %d, %q; want 1 and why", code, out)
	}
	crashCheckCurrent(t, sock, 2)
	crashKill(t, p, 2)
	if body := waitHTTP(t, addr, "gen=", 10*time.Second); !strings.Contains(body, "version=3 ") {
		t.Errorf("the restart answered %q; want version 3, what the path holds", body)
	}
	p.WaitLog(t, "the crashed generation ran the #! script "+app, time.Second)
}

// daemonScript is a shell command that daemonizes as servers do: a child
// that calls setsid, with stdio on /dev/null and fd 3 (the listening
// socket: sh passes inherited fds on) kept, writes its pid to
// dir/daemon.pid and execs sleep; the main process exits 0 once the child
// is set up.
func daemonScript(dir string) string {
	return fmt.Sprintf(`mkfifo %[1]s/up; setsid sh -c 'echo $$ > %[1]s/daemon.pid; echo > %[1]s/up; exec sleep 300' </dev/null >/dev/null 2>&1 & read x < %[1]s/up; exit 0`, dir)
}

// daemonPid reads the pid daemonScript's daemon wrote.
func daemonPid(t *testing.T, dir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "daemon.pid"))
	pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || perr != nil {
		t.Fatalf("the daemon's pid: %v %v", err, perr)
	}
	return pid
}

// An app that daemonizes at the first start: relaunch says so, stops the
// daemon and exits 1; the port is free.
func TestDaemonizingApp(t *testing.T) {
	needE2E(t)
	t.Parallel()
	dir := shortTempDir(t)
	port := freePort(t)
	tmp, env := cliTmp(t)
	p, out := cliRun(t, procOpts{Env: env}, 1, "-l", cliAddr(port), "--", "sh", "-c", daemonScript(dir))
	cliCheckLastMessage(t, out, "gen 1 (pid", "daemonized", "foreground", `"daemon off;"`)
	if pid := daemonPid(t, dir); processAlive(pid) {
		t.Errorf("the daemon (pid %d) is still running: %s", pid, describeProc(pid))
	}
	cliCheckNothingLeft(t, p, tmp, []int{port}, nil)
}

// An upgrade to a build that daemonizes fails with that reason, its daemon
// stopped; gen 1 serves on, with no request failed.
func TestDaemonizingUpgrade(t *testing.T) {
	needE2E(t)
	t.Parallel()
	dir := shortTempDir(t)
	app := filepath.Join(dir, "app")
	flag := filepath.Join(dir, "daemonize")
	body := fmt.Sprintf("#!/bin/sh\nif [ -e %s ]; then %s; fi\nexec %s \"$@\"\n", flag, daemonScript(dir), demoBin)
	if err := os.WriteFile(app, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "ctl.sock")
	_, addr := startServing(t, "--control", sock, "--", app)
	load := startLoad(t, addr)
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := client(t, sock, "upgrade")
	if code != 1 || !containsAll(out, "daemonized", "foreground") {
		t.Errorf("upgrade to a daemonizing build: exit %d, %q; want 1 and the reason", code, out)
	}
	if pid := daemonPid(t, dir); processAlive(pid) {
		t.Errorf("the daemon (pid %d) is still running: %s", pid, describeProc(pid))
	}
	waitHTTP(t, addr, "gen=1", time.Second)
	stopLoad(t, load)
	crashCheckCurrent(t, sock, 1)
	if st := statusOf(t, sock); !strings.Contains(st.LastFailure, "daemonized") {
		t.Errorf("status: last failure %q; want it to say the app daemonized", st.LastFailure)
	}
}

// cliCheckLastMessage checks that relaunch's last stderr line (before a
// --help pointer) is one message with every want.
func cliCheckLastMessage(t testing.TB, out string, wants ...string) {
	t.Helper()
	lines := outputLines(out)
	if n := len(lines); n > 0 && lines[n-1] == seeHelp {
		lines = lines[:n-1]
	}
	if len(lines) == 0 {
		t.Errorf("no message at all")
		return
	}
	checkMessageLine(t, lines[len(lines)-1], wants...)
}
