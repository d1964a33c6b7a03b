//go:build linux

package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Readiness of apps that never call sd_notify:
// relaunch sees them accept in /proc, and the old generation is drained only
// once the new one accepts.

// A Go app with a 2s start before it takes its listener, no sd_notify,
// default --ready: the old generation's drain signal comes only after the
// new one's listener exists, and the load sees no error.
func TestReadyListenGoSlowStart(t *testing.T) {
	t.Parallel()
	rec := filepath.Join(shortTempDir(t), "rec")
	p, addr := startServing(t, "--", demoBin, "-no-notify", "-init-delay", "2s", "-record", rec)
	p.WaitLog(t, "readiness: the app is seen accepting on its socket", 5*time.Second)
	load := startLoad(t, addr)
	for g := 2; g <= 3; g++ {
		upgradeAndWait(t, p, g, 10*time.Second)
	}
	stopLoad(t, load)
	evs := readRecord(t, rec)
	for g := 2; g <= 3; g++ {
		listening, ok1 := findEvent(evs, "listening", fmt.Sprint(g))
		drain, ok2 := findEvent(evs, "drain", fmt.Sprint(g-1))
		if !ok1 || !ok2 {
			t.Fatalf("record lacks gen %d's listening or gen %d's drain: %+v", g, g-1, evs)
		}
		d := drain.Time().Sub(listening.Time())
		if d < 0 {
			t.Errorf("gen %d was told to drain %v before gen %d listened", g-1, -d, g)
		}
		t.Logf("gen %d listening → gen %d drain signal: %.2f ms (detection + signal delivery)", g, g-1, float64(d.Microseconds())/1000)
	}
	// Gen 1 may be taken as ready by the 2s fallback (nothing is learned
	// yet and it takes 2s); the later ones only by their listener.
	for g := 2; g <= 3; g++ {
		line := p.WaitLog(t, fmt.Sprintf("gen %d (pid %d) ready in", g, genPids(p)[g]), time.Second)
		if !strings.Contains(line, "polls fd 3 (epoll") {
			t.Errorf("gen %d should be ready by its listener: %q", g, line)
		}
	}
}

// Python blocking in accept() and node's epoll: detected, and upgrades lose
// nothing.
func TestReadyListenPythonAndNode(t *testing.T) {
	apps := []struct{ name, interp, pkg, script, version string }{
		{"python accept", "python3", "python3", "testdata/apps/accept_server.py", "version=py"},
		{"node", "node", "nodejs", "testdata/apps/server.js", "version=node"},
	}
	for _, a := range apps {
		t.Run(a.name, func(t *testing.T) {
			t.Parallel()
			interp := needCommand(t, a.interp, a.pkg)
			script, _ := filepath.Abs(a.script)
			addr := freeAddr(t)
			p := startRelaunch(t, "--listen", addr, "--no-watch-binary", "--drain-signal", "TERM", "--", interp, script)
			waitHTTP(t, addr, a.version+" ", 10*time.Second)
			line := p.WaitLog(t, "gen 1 (pid", 5*time.Second)
			ready := p.WaitLog(t, "ready in", 10*time.Second)
			if !strings.Contains(ready, "polls fd 3") && !strings.Contains(ready, "blocks in accept on fd 3") {
				t.Errorf("gen 1 should be ready by procfs: %q (%q)", ready, line)
			}
			load := startLoad(t, addr)
			for g := 2; g <= 4; g++ {
				upgradeAndWait(t, p, g, 10*time.Second)
			}
			stopLoad(t, load)
			waitHTTP(t, addr, "gen=4", 5*time.Second)
		})
	}
}

// Servers that wait with select() or poll() and never call sd_notify:
// relaunch decodes the blocked thread's fd_set or pollfd array, so auto
// takes each generation as ready when it polls its socket, not by the 2s
// fallback (status --json says how), and upgrades under load lose nothing.
// The poll server is Python's socketserver on socket.fromfd(3): its own fd
// number for the socket.
func TestReadySelectAndPollServers(t *testing.T) {
	apps := []struct{ name, script, version, how string }{
		{"select", "testdata/apps/select_server.py", "version=select", `^pid \d+ polls fd 3 \(select\)$`},
		{"socketserver poll", "testdata/apps/poll_server.py", "version=pypoll", `^pid \d+ polls fd 3 \(poll, as its fd \d+\)$`},
	}
	for _, a := range apps {
		t.Run(a.name, func(t *testing.T) {
			t.Parallel()
			py := needCommand(t, "python3", "python3")
			script, _ := filepath.Abs(a.script)
			addr := freeAddr(t)
			sock := filepath.Join(shortTempDir(t), "ctl")
			p := startRelaunch(t, "--listen", addr, "--no-watch-binary", "--control", sock, "--drain-signal", "TERM", "--", py, script)
			waitHTTP(t, addr, a.version+" ", 10*time.Second)
			load := startLoad(t, addr)
			for g := 2; g <= 4; g++ {
				upgradeAndWait(t, p, g, 10*time.Second)
			}
			stopLoad(t, load)
			waitHTTP(t, addr, "gen=4", 5*time.Second)
			st := statusOf(t, sock)
			how := regexp.MustCompile(a.how)
			if len(st.Generations) != 1 || st.Generations[0].Generation != 4 || !how.MatchString(st.Generations[0].Ready) {
				t.Errorf("status: %+v; want gen 4 alone, ready by %s", st.Generations, how)
			}
			for g := 1; g <= 4; g++ {
				line := p.WaitLog(t, fmt.Sprintf("gen %d (pid %d) ready in", g, genPids(p)[g]), time.Second)
				_, after, _ := strings.Cut(line, " ready in ")
				_, reason, _ := strings.Cut(after, ": ")
				if g == 1 && reason == "alive for 2s" {
					// Before anything was learned, auto's blind fallback
					// may come first: a busy machine started Python slowly.
					// From then on relaunch waits for what it sees.
					t.Log(line)
					continue
				}
				if !how.MatchString(reason) {
					t.Errorf("gen %d: %q; want it ready by %s", g, line, how)
				}
				t.Log(line)
			}
		})
	}
}

// A server /proc cannot show accepting (told of connections by SIGIO):
// auto falls back to 2s alive and says so once.
func TestReadyFallbackForInvisibleServer(t *testing.T) {
	t.Parallel()
	py := needCommand(t, "python3", "python3")
	script, _ := filepath.Abs("testdata/apps/sigio_server.py")
	addr := freeAddr(t)
	p := startRelaunch(t, "--listen", addr, "--no-watch-binary", "--drain-signal", "TERM", "--", py, script)
	waitHTTP(t, addr, "version=sigio", 10*time.Second)
	line := p.WaitLog(t, "gen 1 (pid", 5*time.Second)
	p.WaitLog(t, "ready in", 10*time.Second)
	msg := p.WaitLog(t, "was not seen accepting", 15*time.Second)
	if !strings.Contains(msg, "--ready") {
		t.Errorf("the fallback line %q should say how to pick a method", msg)
	}
	if r := p.WaitLog(t, "ready in", 1*time.Second); !strings.Contains(r, "alive for 2s") {
		t.Errorf("gen 1 of an invisible server should be ready by the 2s fallback: %q (%s)", r, line)
	}
	upgradeTo(t, p, 2)
	waitHTTP(t, addr, "gen=2", 5*time.Second)
	if n := strings.Count(p.Stderr(), "was not seen accepting"); n != 1 {
		t.Errorf("the fallback was explained %d times; want once", n)
	}
}

// An app that sends READY=1 later than it creates its listener: auto learns
// READY=1 and waits for it from the next generation on.
func TestReadyAutoPrefersNotify(t *testing.T) {
	t.Parallel()
	rec := filepath.Join(shortTempDir(t), "rec")
	p, _ := startServing(t, "--", demoBin, "-notify-delay", "500ms", "-record", rec)
	p.WaitLog(t, "the app sends READY=1", 5*time.Second)
	upgradeTo(t, p, 2)
	line := p.WaitLog(t, fmt.Sprintf("gen 2 (pid %d) ready in", genPids(p)[2]), 5*time.Second)
	_, after, _ := strings.Cut(line, " ready in ")
	if _, how, _ := strings.Cut(after, ": "); !strings.HasPrefix(how, "READY=1") && !strings.HasSuffix(how, "READY=1") {
		t.Errorf("gen 2 should be ready by READY=1 (it accepted 500ms before): %q", line)
	}
	p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", genPids(p)[1]), 10*time.Second)
	evs := readRecord(t, rec)
	ready, ok1 := findEvent(evs, "ready", "2")
	drain, ok2 := findEvent(evs, "drain", "1")
	if !ok1 || !ok2 || drain.NS < ready.NS {
		t.Errorf("gen 1 must be drained after gen 2 sent READY=1: ready %v drain %v", ready, drain)
	}
}

// --ready listen is only the procfs signal: a READY=1 is not enough.
func TestReadyListenMode(t *testing.T) {
	t.Parallel()
	p, _ := startServing(t, "--ready", "listen", "--", demoBin)
	if line := p.WaitLog(t, "ready in", 5*time.Second); !strings.Contains(line, "polls fd 3 (epoll") {
		t.Errorf("--ready listen: %q", line)
	}
}

// An app that listens on a socket of its own for relaunch's port is named.
func TestReadyWarnsOwnSocket(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	p := startRelaunch(t, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--no-watch-binary", "--",
		demoBin, "-no-notify", "-listen", fmt.Sprintf("127.0.0.2:%d", port))
	line := p.WaitLog(t, "ignores LISTEN_FDS", 10*time.Second)
	if !strings.Contains(line, fmt.Sprintf("127.0.0.2:%d itself", port)) || !strings.Contains(line, "fd 3") {
		t.Errorf("the warning %q should name the app's own address and fd 3", line)
	}
	p.Signal(syscall.SIGTERM)
	p.MustWait(10 * time.Second)
}
