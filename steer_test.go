//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relaunch/relaunch/internal/loadtest"
)

// End-to-end tests of the steered handover: per TCP
// address a pool of SO_REUSEPORT slots, new connections steered to the
// newest ready generation, the old one told to drain only after --settle
// and once its slot's queue is empty; the shared handover where steering
// cannot apply; and the tripwire that stops steering a disturbed address.

// steerStart starts relaunch with "--listen ADDR --no-watch-binary" on a
// free 127.0.0.1 address and args, and waits until it has bound every
// --listen address (its "listening on" lines come once all are bound and
// steered) before anything connects to them, then until gen 1 answers. A
// connection made while a pool is being bound can be stranded on a slot no
// generation receives on: that is TestSteerStartupWindow's business, and
// must not make the tests of everything else flaky.
func steerStart(t testing.TB, args ...string) (*relaunchProc, string) {
	t.Helper()
	addr := freeAddr(t)
	p := startRelaunch(t, append([]string{"--listen", addr, "--no-watch-binary"}, args...)...)
	p.WaitLog(t, "listening on ", 20*time.Second)
	waitHTTP(t, addr, "gen=1", 20*time.Second)
	return p, addr
}

// steerSlowClients is the load that loses requests with a shared socket
// and an app that drains naively: every request on a new
// connection, sent 3ms after the connection is made.
func steerSlowClients(addr string) loadtest.Config {
	return loadtest.Config{Addr: addr, Clients: 8, KeepAliveFraction: 0, ConnectToRequestDelay: 3 * time.Millisecond, Timeout: 20 * time.Second}
}

// steerMixedClients is a load of half keep-alive connections, half a new
// connection a request sent 3ms after the connection is made.
func steerMixedClients(addr string) loadtest.Config {
	return loadtest.Config{Addr: addr, Clients: 6, KeepAliveFraction: 0.5, ConnectToRequestDelay: 3 * time.Millisecond, Timeout: 20 * time.Second}
}

// steerFigures returns a function with which the "steered" and "shared"
// subtests of t record their figure; once they are all over, t logs format
// with the two figures, in that order.
func steerFigures(t *testing.T, format string) (record func(mode, figure string)) {
	var mu sync.Mutex
	figures := map[string]string{}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		t.Logf(format, figures["steered"], figures["shared"])
	})
	return func(mode, figure string) {
		mu.Lock()
		figures[mode] = figure
		mu.Unlock()
	}
}

// steerFd3Inode is the inode of the socket the generation answering on
// addr got as fd 3 (the demo's /fds?at=start): its slot.
func steerFd3Inode(t testing.TB, addr string) (inode uint64, gen string) {
	t.Helper()
	body, fds := fdsAtStart(t, addr)
	ino := socketInode(fds[3])
	if ino == 0 {
		t.Fatalf("fd 3 of the demo at start is not a socket:\n%s", body)
	}
	who, err := httpGet(addr, "/")
	if err != nil {
		t.Fatal(err)
	}
	return ino, bodyField(who, "gen")
}

// stopProcess sends SIGSTOP to pid and waits until every thread of it is
// stopped: kill returns before they are, and a thread still running could
// accept what the test means to leave queued.
func stopProcess(t testing.TB, pid int) {
	t.Helper()
	syscall.Kill(pid, syscall.SIGSTOP)
	if !waitUntil(10*time.Second, time.Millisecond, func() bool {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		stopped := len(tasks) > 0
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			// The state follows the ")" that ends the command name.
			if i := bytes.LastIndexByte(b, ')'); err != nil || i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
				stopped = false
			}
		}
		return stopped
	}) {
		t.Fatalf("pid %d: not every thread stopped 10s after SIGSTOP", pid)
	}
}

// steerWaitQueued waits until n connections wait in the accept queues of
// port's listening sockets.
func steerWaitQueued(t testing.TB, port, n int, timeout time.Duration) {
	t.Helper()
	var q int
	if !waitUntil(timeout, 5*time.Millisecond, func() bool {
		q = 0
		for _, s := range tcpListeners(port) {
			q += s.queued
		}
		return q >= n
	}) {
		t.Fatalf("%d connection(s) queued on port %d after %v, want %d: %+v", q, port, timeout, n, tcpListeners(port))
	}
}

// 1. An app that drains naively (plain http.Server.Shutdown on SIGQUIT)
// under slow clients: 20 upgrades lose nothing with the steered handover
// (the default for a TCP address). The same run with --handover shared is
// a measurement of what steering prevents, reported, not asserted.
func TestSteerNaiveDrain(t *testing.T) {
	t.Parallel()
	figure := steerFigures(t, "20 upgrades, demo -drain naive -init-delay 300ms, 8 clients, every request on a new connection sent 3ms after connect:\n  steered (default): %s\n  shared (--handover shared): %s")
	for _, mode := range []string{"steered", "shared"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			var args []string
			how := "steered handover: 8 slots"
			if mode == "shared" {
				args = append(args, "--handover", "shared")
				how = "shared handover"
			}
			p, addr := steerStart(t, append(args, "--", demoBin, "-drain", "naive", "-init-delay", "300ms")...)
			p.WaitLog(t, fmt.Sprintf("listening on tcp://%s (fd 3, %s)", addr, how), time.Second)
			load := startLoadConfig(t, steerSlowClients(addr))
			const n = 20
			for g := 2; g <= n+1; g++ {
				upgradeAndWait(t, p, g, 20*time.Second)
			}
			res := load.Stop()
			t.Logf("%s: %s; errors %v; first: %v", mode, res, res.Errors, res.ErrorMessages)
			figure(mode, fmt.Sprintf("%d failed of %d (%v)", res.Failed(), res.Total, res.Errors))
			if res.OK == 0 || len(res.Gens) < n/2 {
				t.Errorf("the load saw %d answers from generations %v; want answers from most of 1..%d", res.OK, res.Gens, n+1)
			}
			waitHTTP(t, addr, fmt.Sprintf("gen=%d", n+1), 5*time.Second)
			if mode == "steered" && res.Failed() > 0 {
				t.Errorf("steered handover: %d of %d requests failed (want 0): %v\n%v", res.Failed(), res.Total, res.Errors, res.ErrorMessages)
			}
			if n := strings.Count(p.Stderr(), "connection(s) queued on its slot"); n > 0 {
				t.Logf("relaunch drained %d generation(s) with connections still queued on their slot", n)
			}
		})
	}
}

// 2. In steered mode, a crash restart and a bad deploy lose nothing.
func TestSteerCrashAndBadDeploy(t *testing.T) {
	t.Parallel()

	// SIGKILL of the current generation: the restart takes the crashed
	// generation's slot, where new connections are still steered, and
	// serves what queued while nothing ran.
	t.Run("crash restart", func(t *testing.T) {
		t.Parallel()
		dir := shortTempDir(t)
		app, setFlags := appScript(t, dir)
		p, addr := steerStart(t, "--", app)
		p.WaitLog(t, "steered handover", time.Second)
		slot1, _ := steerFd3Inode(t, addr)
		checkBacklogWhileDown(t, p, addr, setFlags)
		p.WaitLog(t, fmt.Sprintf("gen 2 (pid %d) ready", genPids(p)[2]), 10*time.Second)
		slot2, gen := steerFd3Inode(t, addr)
		if gen != "2" || slot2 != slot1 {
			t.Errorf("the restart (gen %s) got socket %d as fd 3; the crashed gen 1 had %d: want the same slot", gen, slot2, slot1)
		}
	})

	// A build that exits 1 at start, deployed more times than there are
	// slots: gen 1 keeps serving with 0 errors, and no slot leaks (the
	// eighth bad start would find none free), so a good build upgrades.
	t.Run("bad deploy", func(t *testing.T) {
		t.Parallel()
		dir := shortTempDir(t)
		app, setFlags := appScript(t, dir)
		p, addr := steerStart(t, "--", app)
		p.WaitLog(t, "steered handover: 8 slots", time.Second)
		cfg := steerSlowClients(addr)
		cfg.KeepAliveFraction = 0.5
		load := startLoadConfig(t, cfg)
		setFlags("-exit-at-start 1")
		const bad = 8
		for i := 1; i <= bad; i++ {
			p.Signal(syscall.SIGUSR2)
			line := p.WaitLogN(t, "upgrade failed", i, 15*time.Second)
			if !containsAll(line, fmt.Sprintf("gen %d", i+1), "gen 1", "still serves") {
				t.Errorf("bad deploy %d: the failure's log line %q should name gen %d and say that gen 1 still serves", i, line, i+1)
			}
		}
		waitHTTP(t, addr, "gen=1", 5*time.Second)
		setFlags("")
		upgradeTo(t, p, bad+2)
		waitHTTP(t, addr, fmt.Sprintf("gen=%d", bad+2), 5*time.Second)
		p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", genPids(p)[1]), 20*time.Second)
		res := stopLoad(t, load)
		if res.Gens["1"] == 0 || res.Gens[strconv.Itoa(bad+2)] == 0 {
			t.Errorf("want answers from gen 1 and gen %d: %v", bad+2, res.Gens)
		}
		noProcessesLeft(t, genPidRange(p, 2, bad+1)) // the failed ones
		if out := p.Stderr(); strings.Contains(out, "no free slot") || strings.Contains(out, "killed early") {
			t.Errorf("a slot leaked: relaunch ran out of slots after %d failed starts:\n%s", bad, out)
		}
	})
}

// 3. 30 SIGUSR2 in one second under load settle on one generation with no
// error and leave every slot free: 10 sequential upgrades after it succeed
// without relaunch ever running out of slots.
func TestSteerSignalStorm(t *testing.T) {
	t.Parallel()
	p, addr := steerStart(t, "--", demoBin, "-init-delay", "50ms")
	p.WaitLog(t, "steered handover: 8 slots", time.Second)
	load := startLoadConfig(t, steerMixedClients(addr))
	stormed := signalStorm(t, p, addr)
	checkOnlyGen(t, p, stormed)
	for g := stormed + 1; g <= stormed+10; g++ {
		upgradeAndWait(t, p, g, 20*time.Second)
	}
	res := stopLoad(t, load)
	last := stormed + 10
	waitHTTP(t, addr, fmt.Sprintf("gen=%d", last), 5*time.Second)
	checkOnlyGen(t, p, last)
	checkNoZombies(t, p)
	out := p.Stderr()
	for _, bad := range []string{"no free slot", "killed early", "upgrade failed", "steering tcp://"} {
		if strings.Contains(out, bad) {
			t.Errorf("relaunch's log says %q:\n%s", bad, out)
		}
	}
	// The pool is whole: its 8 slots, and nothing else, listen on the port.
	if ls := tcpListeners(addrPort(t, addr)); len(ls) != 9 {
		t.Errorf("%d sockets listen on %s; want the pool's 8 and its spare: %+v", len(ls), addr, ls)
	}
	t.Logf("30 signals → %d generations, then 10 upgrades; load %s", stormed, res)
}

// 4. --max-draining N makes the pool N+2 slots; a generation is killed
// early rather than an upgrade waiting forever.
func TestSteerMaxDraining(t *testing.T) {
	t.Parallel()

	// --max-draining 0: 2 slots. A long request in flight on gen 1 and two
	// quick upgrades: a generation is killed early and gen 3 serves.
	t.Run("zero: two slots", func(t *testing.T) {
		t.Parallel()
		p, addr := steerStart(t, "--max-draining", "0", "--", demoBin)
		p.WaitLog(t, fmt.Sprintf("listening on tcp://%s (fd 3, steered handover: 2 slots)", addr), time.Second)
		long := getAccepted(addr, "/sleep?d=3s", waitPid(t, p, 1))
		p.Signal(syscall.SIGUSR2)
		p.WaitLog(t, "gen 2 (pid", 10*time.Second)
		p.Signal(syscall.SIGUSR2)
		pid3 := waitPid(t, p, 3)
		p.WaitLog(t, fmt.Sprintf("gen 3 (pid %d) ready in", pid3), 20*time.Second)
		waitHTTP(t, addr, "gen=3", 10*time.Second)
		out := p.Stderr()
		var early []string
		for line := range strings.Lines(out) {
			if strings.Contains(line, ") exited: ") && strings.Contains(line, "killed by SIGKILL") &&
				(strings.Contains(line, "every slot is taken") || strings.Contains(line, "--max-draining")) {
				early = append(early, strings.TrimSpace(line))
			}
		}
		if len(early) == 0 {
			t.Errorf("no generation was killed early:\n%s", out)
		}
		t.Logf("killed early: %q", early)
		if !strings.Contains(out, "no free slot") {
			t.Logf("note: no \"no free slot\" line: with --max-draining 0, --max-draining itself kills the old generation at the switch, before any slot runs out")
		}
		a := <-long
		t.Logf("the 3s request on gen 1: %q, %v", a.body, a.err)
		if strings.Contains(out, "upgrade failed") {
			t.Errorf("an upgrade failed:\n%s", out)
		}
	})

	// The default 8 slots, each generation kept draining by a long request:
	// gens 1..7 draining and gen 8 serving fill the pool, so the upgrade to
	// gen 9 kills the oldest draining one for lack of a slot and follows.
	t.Run("eight slots full", func(t *testing.T) {
		t.Parallel()
		p, addr := steerStart(t, "--", demoBin)
		for g := 1; g <= 8; g++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			if _, err := fmt.Fprintf(c, "GET /sleep?d=60s HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			upgradeTo(t, p, g+1)
			if g < 8 {
				p.WaitLog(t, fmt.Sprintf("gen %d (pid %d) draining", g, genPids(p)[g]), 10*time.Second)
			}
		}
		line := p.WaitLog(t, "no free slot for a new generation", 10*time.Second)
		if !strings.Contains(line, fmt.Sprintf("killing gen 1 (pid %d)", genPids(p)[1])) {
			t.Errorf("%q should kill gen 1, the oldest draining", line)
		}
		line = p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", genPids(p)[1]), 10*time.Second)
		if !strings.Contains(line, "every slot is taken") {
			t.Errorf("gen 1's exit %q should say why it was killed", line)
		}
		waitHTTP(t, addr, "gen=9", 20*time.Second)
		if n := strings.Count(p.Stderr(), "no free slot"); n != 1 {
			t.Errorf("%d generations killed for lack of a slot; want 1:\n%s", n, p.Stderr())
		}
	})

	// Connections the kernel queued on the old generation's slot but that
	// it had not accepted when --max-draining kills it at the switch must
	// still be served, as with a shared socket, and must not trip the tripwire at the next upgrade. Gen 1
	// is stopped (SIGSTOP) so that 3 connections wait in its queue.
	for _, mode := range []string{"steered", "shared"} {
		t.Run("zero: queued at the switch, "+mode, func(t *testing.T) {
			t.Parallel()
			// --rescue relay: what the default does is rescue_test.go's.
			p, addr := steerStart(t, "--max-draining", "0", "--handover", mode, "--rescue", "relay", "--", demoBin)
			stopProcess(t, waitPid(t, p, 1))
			queued := startLoadConfig(t, loadtest.Config{Addr: addr, Clients: 3, Requests: 3, Timeout: 20 * time.Second}) // a busy machine is slow to queue and switch: the answer is what counts
			steerWaitQueued(t, addrPort(t, addr), 3, 10*time.Second)
			upgradeTo(t, p, 2)
			res := queued.Wait()
			if res.OK != 3 || res.Gens["2"] != 3 {
				t.Errorf("%s: the 3 connections queued on gen 1's slot when it was killed: %s; want 3 answered by gen 2: %v", mode, res, res.ErrorMessages)
			}
			p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", genPids(p)[1]), 10*time.Second)
			if mode == "steered" {
				p.WaitLog(t, fmt.Sprintf("3 connection(s) were left queued on tcp://%s slot 0, which no generation receives on: relaunch relays them to gen 2", addr), time.Second)
			}
			upgradeTo(t, p, 3)
			waitHTTP(t, addr, "gen=3", 10*time.Second)
			if strings.Contains(p.Stderr(), "steering tcp://") {
				t.Errorf("%s: the tripwire fired on relaunch's own leftovers:\n%s", mode, p.Stderr())
			}
		})
	}
}

// 5. UDP, unix and systemd-passed sockets take the shared handover and
// work across an upgrade; --handover steered with a udp address is a
// usage error.
func TestSteerSharedHandover(t *testing.T) {
	t.Parallel()

	t.Run("udp", func(t *testing.T) {
		t.Parallel()
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		port := freeUDPPort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		p := startRelaunchOpts(t, procOpts{Env: []string{steerHelperEnv + "=udp-echo"}},
			"--listen", "udp://"+addr, "--no-watch-binary", "--",
			exe, "-test.run=^TestSteerHelperUDPEcho$", "-test.short")
		p.WaitLog(t, fmt.Sprintf("listening on udp://%s (fd 3, shared handover", addr), 20*time.Second)
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var seq int
		exchange := func() (string, error) {
			seq++
			msg := "seq=" + strconv.Itoa(seq)
			if _, err := c.Write([]byte(msg)); err != nil {
				return "", err
			}
			buf := make([]byte, 512)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				n, err := c.Read(buf)
				if err != nil {
					return "", fmt.Errorf("%s: %w", msg, err)
				}
				if ans := string(buf[:n]); strings.HasSuffix(ans, " "+msg) {
					return ans, nil
				} // a late answer to an earlier datagram
			}
		}
		if ans, err := exchange(); err != nil || bodyField(ans, "gen") != "1" {
			t.Fatalf("first datagram: %q, %v; want gen 1's echo\n%s", ans, err, p.Stderr())
		}
		// Datagrams back to back across the upgrade: each one answered.
		var mu sync.Mutex
		gens := map[string]int{}
		var lost []error
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				ans, err := exchange()
				mu.Lock()
				if err != nil {
					lost = append(lost, err)
				} else {
					gens[bodyField(ans, "gen")]++
				}
				mu.Unlock()
			}
		}()
		upgradeTo(t, p, 2)
		p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited: status 0", genPids(p)[1]), 10*time.Second)
		// Gen 1 is gone: a few answers from gen 2 (10s at most), then stop.
		waitUntil(10*time.Second, 10*time.Millisecond, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return gens["2"] >= 20
		})
		close(stop)
		<-done
		t.Logf("udp: %d datagrams one after another across the upgrade, answers by generation %v, %d lost", seq-1, gens, len(lost))
		if len(lost) > 0 {
			t.Errorf("%d datagram(s) got no answer across the upgrade: %v", len(lost), lost)
		}
		if gens["1"] == 0 || gens["2"] == 0 {
			t.Errorf("want answers from gen 1 and gen 2 across the upgrade: %v", gens)
		}
		if ans, err := exchange(); err != nil || bodyField(ans, "gen") != "2" {
			t.Errorf("after the upgrade: %q, %v; want gen 2's echo", ans, err)
		}
	})

	t.Run("unix", func(t *testing.T) {
		t.Parallel()
		sock := filepath.Join(shortTempDir(t), "s.sock")
		p := startRelaunch(t, "--listen", "unix://"+sock, "--no-watch-binary", "--", demoBin)
		target := "unix:" + sock
		waitHTTP(t, target, "gen=1", 20*time.Second)
		p.WaitLog(t, fmt.Sprintf("listening on unix://%s (fd 3, shared handover", sock), time.Second)
		steerUpgradeUnderLoad(t, p, target)
	})

	t.Run("systemd", func(t *testing.T) {
		t.Parallel()
		needE2E(t)
		sa := needCommand(t, "systemd-socket-activate", "systemd")
		outer, inner := freeAddr(t), freeAddr(t)
		// systemd-socket-activate passes on only a few variables: the
		// harness's marker goes explicitly. It execs relaunch at the first
		// connection, which waits in the outer socket's backlog meanwhile.
		p := startProc(t, procOpts{}, sa, "-l", outer, "-E", harnessMarkerEnv, "-E", "TMPDIR", "-E", "RUNTIME_DIRECTORY",
			"--", relaunchBin, "-l", inner, "--no-watch-binary", "--", demoBin)
		waitHTTP(t, outer, "gen=1", 20*time.Second)
		waitHTTP(t, inner, "gen=1", 5*time.Second)
		p.WaitLog(t, fmt.Sprintf("listening on tcp://%s (fd 3, passed on from systemd; shared handover)", outer), time.Second)
		p.WaitLog(t, fmt.Sprintf("listening on tcp://%s (fd 4, steered handover", inner), time.Second)
		steerUpgradeUnderLoad(t, p, outer, inner)
	})

	t.Run("steered udp is a usage error", func(t *testing.T) {
		t.Parallel()
		addr := fmt.Sprintf("udp://127.0.0.1:%d", freeUDPPort(t))
		p := startRelaunch(t, "--handover", "steered", "--listen", addr, "--", demoBin)
		if code := p.MustWait(20 * time.Second); code != 2 {
			t.Errorf("exit status %d, want 2 (usage)", code)
		}
		p.outputDone(5 * time.Second)
		// One line naming the address and --handover steered.
		checkOnlyMessage(t, p.Stderr(), addr, "steered")
		if _, ok := genPids(p)[1]; ok {
			t.Errorf("a generation was started:\n%s", p.Stderr())
		}
	})
}

// steerUpgradeUnderLoad upgrades relaunch p to gen 2 under a mixed load on
// target, then checks that gen 2 answers on target and on also, and that it
// answered some of the load.
func steerUpgradeUnderLoad(t *testing.T, p *relaunchProc, target string, also ...string) {
	t.Helper()
	load := startLoadConfig(t, steerMixedClients(target))
	upgradeAndWait(t, p, 2, 20*time.Second)
	for _, a := range append([]string{target}, also...) {
		waitHTTP(t, a, "gen=2", 5*time.Second)
	}
	if res := stopLoad(t, load); res.Gens["2"] == 0 {
		t.Errorf("gen 2 answered nothing on %s under load: %v", target, res.Gens)
	}
}

// steerHelperEnv makes this test binary the UDP app of
// TestSteerSharedHandover/udp (the demo serves stream sockets only).
const steerHelperEnv = "RELAUNCH_STEER_TEST_HELPER"

// TestSteerHelperUDPEcho is not a test: relaunch runs this binary with
// steerHelperEnv set as a UDP echo app on fd 3. Each datagram is answered
// with "gen=G pid=P " and the datagram; on SIGQUIT/SIGTERM/SIGINT it stops
// reading (what it has not read stays in the shared socket for the next
// generation) and exits 0.
func TestSteerHelperUDPEcho(t *testing.T) {
	if os.Getenv(steerHelperEnv) != "udp-echo" {
		t.Skip("the UDP app of TestSteerSharedHandover/udp, run by relaunch")
	}
	fail := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "udp-echo: "+format+"\n", a...)
		os.Exit(1)
	}
	pid := os.Getpid()
	if os.Getenv("LISTEN_PID") != strconv.Itoa(pid) || os.Getenv("LISTEN_FDS") != "1" {
		fail("want LISTEN_FDS=1 and LISTEN_PID=%d, got %q and %q", pid, os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID"))
	}
	f := os.NewFile(3, "udp")
	pc, err := net.FilePacketConn(f)
	f.Close()
	if err != nil {
		fail("fd 3: %v", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		pc.SetReadDeadline(time.Unix(1, 0))
	}()
	if ns := os.Getenv("NOTIFY_SOCKET"); ns != "" {
		c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: ns, Net: "unixgram"})
		if err != nil {
			fail("sd_notify: %v", err)
		}
		c.Write([]byte("READY=1"))
		c.Close()
	}
	gen := os.Getenv("RELAUNCH_GENERATION")
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			os.Exit(0)
		}
		if err != nil {
			fail("read: %v", err)
		}
		pc.WriteTo(fmt.Appendf(nil, "gen=%s pid=%d %s", gen, pid, buf[:n]), from)
	}
}

// 6. The tripwire: gen 2, serving, opens a SO_REUSEPORT socket of its own
// on the port. At the next upgrade relaunch stops steering the address,
// once; gen 3, which that upgrade started on a slot of its own before the
// check, is replaced by gen 4 on the shared slot, with no request lost;
// every later generation shares that slot without an error.
func TestSteerTripwire(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	app, setFlags := appScript(t, dir)
	p, addr := steerStart(t, "--", app)
	setFlags("-join-reuseport-on-usr1")
	upgradeAndWait(t, p, 2, 20*time.Second)
	setFlags("")
	// Once ready: its own upgrade's check, done by then, must not see it.
	syscall.Kill(genPids(p)[2], syscall.SIGUSR1)
	p.WaitLog(t, fmt.Sprintf("demo: gen 2 pid %d joined the SO_REUSEPORT group", genPids(p)[2]), 5*time.Second)
	if strings.Contains(p.Stderr(), "stopped: ") {
		t.Fatalf("steering stopped before gen 2 joined the group:\n%s", p.Stderr())
	}
	slot2, gen := steerFd3Inode(t, addr)
	if gen != "2" {
		t.Fatalf("gen %s answers, want 2", gen)
	}
	if ls := tcpListeners(addrPort(t, addr)); len(ls) != 10 {
		t.Errorf("%d sockets listen on %s; want the 8 slots, the spare and gen 2's own: %+v", len(ls), addr, ls)
	}
	load := startLoadConfig(t, steerMixedClients(addr))
	p.Signal(syscall.SIGUSR2)
	line := p.WaitLog(t, "steering tcp://"+addr+" stopped", 10*time.Second)
	if !strings.Contains(line, "a socket relaunch does not hold listens on port") ||
		!strings.Contains(line, fmt.Sprintf("held by pid %d (", genPids(p)[2])) {
		t.Errorf("the warning %q should name the foreign socket and gen 2, its holder", line)
	}
	p.WaitLog(t, fmt.Sprintf("gen 3 (pid %d) exited: replaced", waitPid(t, p, 3)), 10*time.Second)
	p.WaitLog(t, fmt.Sprintf("gen 4 (pid %d) ready in", waitPid(t, p, 4)), 10*time.Second)
	p.WaitLog(t, fmt.Sprintf("gen 2 (pid %d) exited", genPids(p)[2]), 20*time.Second)
	for g := 5; g <= 7; g++ {
		upgradeAndWait(t, p, g, 20*time.Second)
	}
	res := stopLoad(t, load)
	if res.Gens["7"] == 0 {
		t.Errorf("gen 7 answered nothing: %v", res.Gens)
	}
	if res.Gens["3"] != 0 {
		t.Errorf("gen 3, replaced before it was ready, answered %d requests", res.Gens["3"])
	}
	if n := strings.Count(p.Stderr(), "steering tcp://"+addr+" stopped"); n != 1 {
		t.Errorf("the tripwire warning appeared %d times; want once:\n%s", n, p.Stderr())
	}
	// From the warning on, every generation is on gen 2's slot.
	if slot7, gen := steerFd3Inode(t, addr); gen != "7" || slot7 != slot2 {
		t.Errorf("gen %s got socket %d as fd 3; want gen 7 on gen 2's slot %d (shared from the warning on)", gen, slot7, slot2)
	}
}

// 7. Steering steers: once gen 2 is ready and --settle has passed, new
// connections all go to gen 2, although gen 1 (told USR1, which the demo
// only records) is alive and accepting on its own slot. With --handover
// shared gen 1 still gets some: reported, not asserted.
func TestSteerSteers(t *testing.T) {
	t.Parallel()
	figure := steerFigures(t, "50 new connections after the upgrade to gen 2, gen 1 still accepting (--drain-signal USR1): steered %s; shared %s")
	for _, mode := range []string{"steered", "shared"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			p, addr := steerStart(t, "--handover", mode, "--drain-signal", "USR1", "--", demoBin)
			slot1, _ := steerFd3Inode(t, addr)
			upgradeTo(t, p, 2)
			pid1 := genPids(p)[1]
			p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) draining: sent SIGUSR1", pid1), 10*time.Second)
			res, err := loadtest.Run(context.Background(), loadtest.Config{Addr: addr, Clients: 5, Requests: 50, Timeout: 20 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			figure(mode, fmt.Sprintf("gen 1 answered %d, gen 2 %d, %d failed", res.Gens["1"], res.Gens["2"], res.Failed()))
			t.Logf("%s: %s", mode, res)
			if res.OK != 50 {
				t.Errorf("%s: %s; want 50 ok: %v", mode, res, res.ErrorMessages)
			}
			if !processAlive(pid1) || strings.Contains(p.Stderr(), fmt.Sprintf("gen 1 (pid %d) exited", pid1)) {
				t.Fatalf("gen 1 (pid %d) is gone; it should still be serving on its slot:\n%s", pid1, p.Stderr())
			}
			slot2, _ := steerFd3Inode(t, addr)
			if mode == "steered" {
				if res.Gens["2"] != 50 || res.Gens["1"] != 0 {
					t.Errorf("steered: answers by generation %v; want all 50 from gen 2, none from gen 1", res.Gens)
				}
				if slot1 == slot2 {
					t.Errorf("gen 1 and gen 2 got the same socket %d; want a slot each", slot1)
				}
			} else if slot1 != slot2 {
				t.Errorf("shared: gen 1 and gen 2 got sockets %d and %d; want the one shared socket", slot1, slot2)
			}
		})
	}
}

// Clients that connect while relaunch starts (a retrying client, a health
// check) are served like any other. Relaunch binds a pool's slots one
// after the other, each listening at once, and attaches the steering
// program only when all are bound: a connection that arrives in between
// is hashed to any listening slot. Whatever lands on a slot no generation
// takes is never answered, and at the first upgrade the tripwire takes
// it for a foreign BPF program and stops steering. Clients hammer the
// port from before relaunch starts; a few starts, as the window is short.
func TestSteerStartupWindow(t *testing.T) {
	t.Parallel()
	const starts = 8
	for i := 1; i <= starts; i++ {
		if failed := steerHammeredStart(t, i); failed {
			return
		}
	}
}

// steerHammeredStart is one start of relaunch with clients connecting from
// before it binds; it reports whether it found connections stranded.
func steerHammeredStart(t *testing.T, start int) (failed bool) {
	t.Helper()
	addr := freeAddr(t)
	port := addrPort(t, addr)
	var mu sync.Mutex
	var conns []net.Conn
	var first time.Time
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					continue // refused: not bound yet
				}
				mu.Lock()
				conns = append(conns, c)
				if first.IsZero() {
					first = time.Now()
				}
				enough := len(conns) >= 1000 || time.Since(first) > 30*time.Millisecond
				mu.Unlock()
				if enough {
					return
				}
			}
		}()
	}
	p := startRelaunch(t, "--listen", addr, "--no-watch-binary", "--", demoBin)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	p.WaitLog(t, "listening on ", 20*time.Second)
	wg.Wait() // each client stops 30ms after the first connection
	close(stop)
	pid1 := waitPid(t, p, 1)
	p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) ready in", pid1), 20*time.Second)
	slot1, _ := steerFd3Inode(t, addr)

	// A request on every connection made during the start.
	var unanswered []string
	var umu sync.Mutex
	var rw sync.WaitGroup
	for _, c := range conns {
		rw.Add(1)
		go func() {
			defer rw.Done()
			c.SetDeadline(time.Now().Add(3 * time.Second))
			_, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			if err == nil {
				buf := make([]byte, 512)
				var n int
				n, err = c.Read(buf)
				if err == nil && !strings.Contains(string(buf[:n]), "gen=1") {
					err = fmt.Errorf("answer %q", buf[:n])
				}
			}
			if err != nil {
				umu.Lock()
				unanswered = append(unanswered, fmt.Sprintf("%s: %v", c.LocalAddr(), err))
				umu.Unlock()
			}
		}()
	}
	rw.Wait()
	var elsewhere []string
	for _, s := range tcpListeners(port) {
		if s.inode != slot1 && s.queued > 0 {
			elsewhere = append(elsewhere, fmt.Sprintf("%d on socket %d", s.queued, s.inode))
		}
	}
	upgradeTo(t, p, 2)
	var tripped string
	for line := range strings.Lines(p.Stderr()) {
		if strings.Contains(line, "steering tcp://") {
			tripped = strings.TrimSpace(line)
		}
	}
	t.Logf("start %d: %d connections made while relaunch started; %d unanswered; queued on slots gen 1 does not hold: %v", start, len(conns), len(unanswered), elsewhere)
	if len(unanswered) == 0 && len(elsewhere) == 0 && tripped == "" {
		return false
	}
	if len(unanswered) > 0 {
		t.Errorf("start %d: %d of the %d connections made while relaunch bound its pool were never answered (first: %v); gen 1's slot is socket %d, connections wait on others: %v",
			start, len(unanswered), len(conns), unanswered[:min(3, len(unanswered))], slot1, elsewhere)
	}
	if tripped != "" {
		t.Errorf("start %d: the first upgrade tripped the tripwire on connections relaunch itself let in before steering: %s", start, tripped)
	}
	return true
}
