package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/handoff"
)

// relaunch's runtime directory (its notify and handoff sockets) is never
// made where another user could swap it: an XDG_RUNTIME_DIR or TMPDIR
// owned by someone else (a plain `su`) is skipped with a warning.
func TestRunDirForeignBase(t *testing.T) {
	t.Parallel()
	needE2E(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root, to give a directory to another user")
	}
	foreign := shortTempDir(t)
	if err := os.Chown(foreign, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := startRelaunchOpts(t, procOpts{Env: []string{"XDG_RUNTIME_DIR=" + foreign, "TMPDIR=" + foreign, "RUNTIME_DIRECTORY="}},
		"--listen", addr, "--no-watch-binary", "--", demoBin)
	waitHTTP(t, addr, "gen=1", 10*time.Second)
	_, env := demoEnv(t, addr)
	dir := filepath.Dir(env["NOTIFY_SOCKET"])
	if strings.HasPrefix(filepath.Base(dir), "relaunch-") {
		t.Cleanup(func() { os.RemoveAll(dir) }) // when the test fails before relaunch's own exit
	}
	for _, k := range []string{"NOTIFY_SOCKET", handoff.Env} {
		v := env[k]
		if v == "" || strings.HasPrefix(v, foreign+"/") {
			t.Errorf("gen 1 got %s=%q; want a path not under %s, owned by uid 65534", k, v, foreign)
		}
		if fi, err := os.Lstat(v); err != nil || fi.Mode().Type() != os.ModeSocket {
			t.Errorf("%s=%s: %v, %v; want a socket", k, v, fi, err)
		}
	}
	if filepath.Dir(dir) != "/run/relaunch" {
		t.Errorf("runtime directory %s; want one in /run/relaunch (root, no safe RUNTIME_DIRECTORY or XDG_RUNTIME_DIR)", dir)
	}
	// TMPDIR comes after /run/relaunch: not looked at.
	warn := "not using XDG_RUNTIME_DIR=" + foreign + " for relaunch's runtime directory: " + foreign + " is owned by uid 65534"
	if n := strings.Count(p.Stderr(), warn); n != 1 {
		t.Errorf("%d warnings %q; want 1", n, warn)
	}
	if ents, _ := os.ReadDir(foreign); len(ents) > 0 {
		t.Errorf("relaunch made %v in %s", ents, foreign)
	}
	p.Signal(syscall.SIGTERM)
	p.MustWait(10 * time.Second)
	if _, err := os.Lstat(dir); err == nil {
		t.Errorf("%s left after relaunch exited", dir)
	}
}

// currentGen waits until `relaunch status --json` on sock shows gen as
// the current generation, and returns its pid.
func currentGen(t *testing.T, sock string, gen int) int {
	t.Helper()
	pid, last := 0, ""
	waitUntil(10*time.Second, 20*time.Millisecond, func() bool {
		st, out, ok := tryStatus(t, sock)
		if last = out; !ok {
			return false
		}
		for _, g := range st.Generations {
			if g.State == "current" && g.Generation == gen {
				pid = g.Pid
			}
		}
		return pid != 0
	})
	if pid == 0 {
		t.Fatalf("gen %d is not current; status: %s", gen, last)
	}
	return pid
}

// A tmp cleaner (or logind at logout) removes relaunch's runtime
// directory: the next upgrade and crash restart make it again, with its
// handoff socket, and say so.
func TestRunDirRemoved(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(shortTempDir(t), "ctl.sock")
	p, addr := startServing(t, "--control", sock, "--", demoBin)
	_, env := demoEnv(t, addr)
	dir := filepath.Dir(env["NOTIFY_SOCKET"])
	if !strings.HasPrefix(filepath.Base(dir), "relaunch-") {
		t.Fatalf("gen 1's NOTIFY_SOCKET=%s: not in a runtime directory of relaunch's", env["NOTIFY_SOCKET"])
	}
	warn := "relaunch's runtime directory " + dir + " was removed"

	for i, how := range []string{"upgrade", "crash restart"} {
		gen := i + 2
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if how == "upgrade" {
			p.Signal(syscall.SIGUSR2)
		} else {
			syscall.Kill(currentGen(t, sock, gen-1), syscall.SIGKILL)
		}
		currentGen(t, sock, gen)
		waitHTTP(t, addr, "gen="+strconv.Itoa(gen), 5*time.Second)
		if n := strings.Count(p.Stderr(), warn); n != gen-1 {
			t.Errorf("after the %s: %d warnings %q; want %d", how, n, warn, gen-1)
		}
		_, env := demoEnv(t, addr)
		for _, k := range []string{"NOTIFY_SOCKET", handoff.Env} {
			if fi, err := os.Lstat(env[k]); err != nil || fi.Mode().Type() != os.ModeSocket || filepath.Dir(env[k]) != dir {
				t.Errorf("after the %s: gen %d's %s=%s: %v; want a socket in %s", how, gen, k, env[k], err, dir)
			}
		}
		// It answers, and refuses the test as no generation of its.
		if _, err := handoff.DialPath(env[handoff.Env]); !errors.Is(err, handoff.ErrRefused) {
			t.Errorf("after the %s: dial %s: %v; want the broker's refusal", how, env[handoff.Env], err)
		}
	}
}

// At start, relaunch removes the runtime directories dead relaunches left
// in its base, not those of live ones.
func TestRunDirLeftovers(t *testing.T) {
	t.Parallel()
	base := shortTempDir(t)
	dead, live := filepath.Join(base, "relaunch-dead"), filepath.Join(base, "relaunch-live")
	for _, d := range []string{dead, live} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dead, "gen1.sock"), nil, 0o600)
	// A live relaunch of a build that took no flock: it listens.
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: filepath.Join(live, "handoff.sock"), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	addr := freeAddr(t)
	p := startRelaunchOpts(t, procOpts{Env: []string{"TMPDIR=" + base, "RUNTIME_DIRECTORY=" + base}},
		"--listen", addr, "--no-watch-binary", "--", demoBin)
	waitHTTP(t, addr, "gen=1", 10*time.Second)
	if _, err := os.Lstat(dead); err == nil {
		t.Errorf("%s (dead) is still there", dead)
	}
	if _, err := os.Lstat(filepath.Join(live, "handoff.sock")); err != nil {
		t.Errorf("%s (live) was removed: %v", live, err)
	}
	if !strings.Contains(p.Stderr(), "removed 1 runtime directory that relaunches which are gone left in "+base) {
		t.Errorf("no log line of the removal")
	}
}

// relaunch's re-exec of itself keeps its runtime directory, locked, and
// still makes it again when it is removed.
func TestRunDirReexec(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(shortTempDir(t), "ctl.sock")
	p, addr := startServing(t, "--control", sock, "--", demoBin)
	_, env := demoEnv(t, addr)
	dir := filepath.Dir(env["NOTIFY_SOCKET"])
	if code, out := client(t, sock, "reexec"); code != 0 {
		t.Fatalf("relaunch reexec: exit %d: %s", code, out)
	}
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != unix.EWOULDBLOCK {
		t.Errorf("flock of %s after the reexec: %v; want it held by relaunch", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGUSR2)
	currentGen(t, sock, 2)
	_, env = demoEnv(t, addr)
	if _, err := handoff.DialPath(env[handoff.Env]); !errors.Is(err, handoff.ErrRefused) || filepath.Dir(env[handoff.Env]) != dir {
		t.Errorf("gen 2's %s=%s: %v; want the broker's refusal, in %s", handoff.Env, env[handoff.Env], err, dir)
	}
}
