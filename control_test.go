//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"relaunch/launcher"
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
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startRelaunch(t, "--listen", addr, "--no-watch-binary", "--control", sock, "--", app)
	waitHTTP(t, addr, "gen=1", 10*time.Second)
	load := startLoad(t, addr)

	code, out := client(t, sock, "upgrade")
	if code != 0 || !strings.Contains(out, "generation 2 (pid") || !strings.Contains(out, "ready in") {
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
	if code != 0 || !strings.Contains(out, "gen 2  pid") || !strings.Contains(out, "current") {
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
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startRelaunch(t, "--listen", addr, "--no-watch-binary", "--control", sock, "--", app)
	waitHTTP(t, addr, "gen=1", 10*time.Second)
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
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
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

func TestControlErrors(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "nobody.sock")
	code, out := client(t, sock, "status")
	if code != 1 || !strings.Contains(out, sock) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("no relaunch at the socket: exit %d, %q; want 1 and one line naming %s", code, out, sock)
	}
	c := exec.Command(relaunchBin, "upgrade")
	c.Env = append(os.Environ(), "RELAUNCH_CONTROL=", "RELAUNCH_PIDFILE=")
	b, _ := c.CombinedOutput()
	if c.ProcessState.ExitCode() != 2 || !strings.Contains(string(b), "--control") {
		t.Errorf("upgrade without a socket: exit %d, %q; want 2 and a hint", c.ProcessState.ExitCode(), b)
	}
	// A stale control socket file is replaced; the pidfile's neighbour is
	// the default.
	pidfile := filepath.Join(dir, "app.pid")
	stale := filepath.Join(dir, "app.sock")
	f := listenFile(t, "unix", stale)
	f.Close() // the file stays, nobody listens: stale
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startRelaunch(t, "--listen", addr, "--no-watch-binary", "--pidfile", pidfile, "--", demoBin)
	waitHTTP(t, addr, "gen=1", 10*time.Second)
	c = exec.Command(relaunchBin, "status", "--pidfile", pidfile)
	if b, err := c.CombinedOutput(); err != nil || !strings.Contains(string(b), "gen 1") {
		t.Errorf("status --pidfile: %v %q", err, b)
	}
}
