//go:build linux

package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaunch/relaunch/internal/loadtest"
)

// What relaunch does for its sockets between generations: connections
// stranded on a slot no generation receives on, and listeners an app shut
// down. The mechanisms' fine cases are launcher/slots_linux_test.go's.

// startStranding starts the demo with --max-draining 0 (gen 1 is killed
// at the switch), stops gen 1 and queues 3 requests on its slot: once gen
// 2 is ready, they are stranded there.
func startStranding(t *testing.T, app string, args ...string) (p *relaunchProc, addr, sock string, queued *loadtest.Runner) {
	t.Helper()
	sock = filepath.Join(shortTempDir(t), "ctl.sock")
	p, addr = steerStart(t, append([]string{"--max-draining", "0", "--control", sock, "--"}, append([]string{app}, args...)...)...)
	stopProcess(t, waitPid(t, p, 1))
	queued = startLoadConfig(t, loadtest.Config{Addr: addr, Clients: 3, Requests: 3, Timeout: 20 * time.Second})
	steerWaitQueued(t, addrPort(t, addr), 3, 10*time.Second)
	upgradeTo(t, p, 2)
	p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", genPids(p)[1]), 10*time.Second)
	return p, addr, sock, queued
}

// By default a stranded connection never reaches the app from loopback
// (apps trust loopback for admin endpoints and X-Forwarded-For): with an
// app that takes no handoffs it is kept on its slot, and the next
// generation, which gets that slot, serves it from the client itself.
func TestRescueKeptForNextGeneration(t *testing.T) {
	t.Parallel()
	p, addr, sock, queued := startStranding(t, demoBin)
	p.WaitLog(t, fmt.Sprintf("3 connection(s) were left queued on tcp://%s slot 0, which no generation receives on: kept for the next generation", addr), 5*time.Second)
	if st := statusOf(t, sock); st.Rescued.Held != 3 || st.Rescued.Relayed != 0 {
		t.Errorf("status rescued = %+v; want 3 held, none relayed", st.Rescued)
	}
	upgradeTo(t, p, 3)
	res := queued.Wait()
	if res.OK != 3 || res.Gens["3"] != 3 {
		t.Errorf("the 3 stranded requests: %s; want 3 answered by gen 3 (on the held slot): %v", res, res.ErrorMessages)
	}
	for _, g := range statusOf(t, sock).Generations {
		if g.Generation == 3 && g.Slot != 0 {
			t.Errorf("gen 3 is on slot %d; want 0, the slot the connections waited on", g.Slot)
		}
	}
	if strings.Contains(p.Stderr(), "steering tcp://") {
		t.Errorf("the tripwire fired on relaunch's own leftovers:\n%s", p.Stderr())
	}
}

// An app that takes handoffs gets the stranded connections at once, as
// the client's own connections: it sees the client's address.
func TestRescueHandedOver(t *testing.T) {
	t.Parallel()
	bin := needPingpong(t)
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "ctl.sock")
	addr := freeAddr(t)
	p := startRelaunch(t, "--listen", addr, "--no-watch-binary", "--ready", "notify", "--max-draining", "0", "--control", sock, "--", bin)
	p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) ready in", waitPid(t, p, 1)), 10*time.Second)
	stopProcess(t, genPids(p)[1])
	conns := make([]*ppConn, 3)
	for i := range conns {
		c, err := dialPP(addr) // the kernel completes the handshake: queued on gen 1's slot
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.c.Close() })
		conns[i] = c
	}
	steerWaitQueued(t, addrPort(t, addr), 3, 10*time.Second)
	upgradeTo(t, p, 2)
	p.WaitLog(t, "handed over to gen 2", 10*time.Second)
	for i, c := range conns {
		if err := c.ping(5 * time.Second); err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		c.c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c.c, "peer\n")
		line, err := c.r.ReadString('\n')
		if want := "peer " + c.c.LocalAddr().String() + "\n"; err != nil || line != want {
			t.Errorf("conn %d: the app sees %q (%v); want %q, the client itself", i, line, err, want)
		}
		if who, _ := c.who(); !strings.HasPrefix(who, "gen 2 ") {
			t.Errorf("conn %d served by %q; want gen 2", i, who)
		}
	}
	if st := statusOf(t, sock); st.Rescued.HandedOver != 3 {
		t.Errorf("status rescued = %+v; want 3 handed over", st.Rescued)
	}
}

// An app that calls shutdown() on its listener at drain (as C and Java
// servers do to wake their accept threads) takes its slot out of the group;
// relaunch makes it listen again at once, in its place. Ten upgrades and a
// crash restart after them lose nothing but the requests the killed
// process held.
func TestShutdownOnDrain(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(shortTempDir(t), "ctl.sock")
	p, addr := steerStart(t, "--control", sock, "--drain-signal", "TERM", "--", demoBin, "-drain", "shutdown")
	load := startLoad(t, addr)
	for g := 2; g <= 11; g++ {
		upgradeAndWait(t, p, g, 20*time.Second)
		waitLoadOK(t, load, 20*(g-1), 10*time.Second)
	}
	if !waitUntil(10*time.Second, 20*time.Millisecond, func() bool { return statusOf(t, sock).Rescued.Revived >= 10 }) {
		t.Errorf("status rescued = %+v; want the 10 drained generations' slots revived", statusOf(t, sock).Rescued)
	}
	res := stopLoad(t, load)
	if res.Failed() != 0 {
		t.Errorf("10 upgrades of an app that shuts its listener down: %s: %v", res, res.ErrorMessages)
	}
	// The current generation's crash: its restart lands on a live slot.
	pid := genPids(p)[11]
	syscall.Kill(pid, syscall.SIGKILL)
	p.WaitLog(t, fmt.Sprintf("gen 11 (pid %d) exited by itself", pid), 10*time.Second)
	waitHTTP(t, addr, "gen=12", 10*time.Second)
	for _, bad := range []string{"steering tcp://", "upgrade failed", "restarting in 200ms"} {
		if strings.Contains(p.Stderr(), bad) {
			t.Errorf("%q in relaunch's log:\n%s", bad, p.Stderr())
		}
	}
	if n := strings.Count(p.Stderr(), "stopped listening (a process called shutdown() on it"); n != 1 {
		t.Errorf("the shutdown() warning appeared %d times; want once", n)
	}
}
