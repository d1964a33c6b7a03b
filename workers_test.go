package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaunch/relaunch/internal/loadtest"
	"github.com/relaunch/relaunch/launcher"
)

// --workers: N processes per generation on one address, each on a slot of
// its own, restarted alone, upgraded together.

// workersStart starts relaunch --workers n (READY=1, a control socket) on
// the demo app run by an appScript, so a test can change its flags.
func workersStart(t *testing.T, n int, args ...string) (p *relaunchProc, addr, sock string, setFlags func(string)) {
	t.Helper()
	needE2E(t, "relaunch", "demo")
	dir := shortTempDir(t)
	app, set := appScript(t, dir)
	sock = filepath.Join(dir, "ctl.sock")
	p, addr = steerStart(t, append(append([]string{"--workers", strconv.Itoa(n), "--ready", "notify", "--control", sock}, args...), "--", app)...)
	return p, addr, sock, set
}

// genStatus is generation gen in relaunch's status; the test fails when it
// is not there.
func genStatus(t *testing.T, sock string, gen int) launcher.GenStatus {
	t.Helper()
	for _, g := range statusOf(t, sock).Generations {
		if g.Generation == gen {
			return g
		}
	}
	t.Fatalf("no gen %d in status", gen)
	return launcher.GenStatus{}
}

// waitServing waits until generation gen is current with n workers, all
// serving, and returns their pids by worker.
func waitServing(t *testing.T, sock string, gen, n int) []int {
	t.Helper()
	var last launcher.Status
	if !waitUntil(20*time.Second, 20*time.Millisecond, func() bool {
		st, _, ok := tryStatus(t, sock)
		last = st
		if !ok {
			return false
		}
		for _, g := range st.Generations {
			if g.Generation != gen || g.State != "current" || len(g.Workers) != n {
				continue
			}
			for _, w := range g.Workers {
				if w.State != "serving" {
					return false
				}
			}
			return true
		}
		return false
	}) {
		t.Fatalf("gen %d is not current with %d workers serving: %+v", gen, n, last.Generations)
	}
	var pids []int
	for _, w := range genStatus(t, sock, gen).Workers {
		pids = append(pids, w.Pid)
	}
	return pids
}

// answering asks GET / on new connections until every pid of want has
// answered (or 10s pass) and returns who answered: pid → worker.
func answering(t *testing.T, addr string, want []int) map[int]string {
	t.Helper()
	got := map[int]string{}
	waitUntil(10*time.Second, 0, func() bool {
		body, err := httpGet(addr, "/")
		if err != nil {
			t.Errorf("GET /: %v", err)
			return true
		}
		pid, _ := strconv.Atoi(bodyField(body, "pid"))
		got[pid] = bodyField(body, "worker")
		for _, p := range want {
			if _, ok := got[p]; !ok {
				return false
			}
		}
		return true
	})
	return got
}

func sortedKeys(m map[int]string) []int {
	var k []int
	for p := range m {
		k = append(k, p)
	}
	sort.Ints(k)
	return k
}

// --workers 3: three pids answer, RELAUNCH_WORKER 0, 1, 2, every listener
// on the address is relaunch's; an upgrade under load starts three new
// workers, the old three drain and exit, the new three answer; 0 errors.
func TestWorkers(t *testing.T) {
	t.Parallel()
	p, addr, sock, _ := workersStart(t, 3)
	pids := waitServing(t, sock, 1, 3)
	got := answering(t, addr, pids)
	if !slices.Equal(sortedKeys(got), slices.Sorted(slices.Values(pids))) {
		t.Errorf("answered by pids %v; want the three workers %v", got, pids)
	}
	for i, pid := range pids {
		if got[pid] != strconv.Itoa(i) {
			t.Errorf("worker %d (pid %d) says worker=%q", i, pid, got[pid])
		}
		if env := procEnviron(t, pid); env["RELAUNCH_WORKER"] != strconv.Itoa(i) || env["RELAUNCH_GENERATION"] != "1" {
			t.Errorf("pid %d: RELAUNCH_WORKER=%q RELAUNCH_GENERATION=%q; want %d and 1", pid, env["RELAUNCH_WORKER"], env["RELAUNCH_GENERATION"], i)
		}
	}
	ours := map[uint64]bool{}
	fds, err := fdTargets(p.Pid())
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range fds {
		if ino := socketInode(target); ino != 0 {
			ours[ino] = true
		}
	}
	lns := tcpListeners(addrPort(t, addr))
	for _, ln := range lns {
		if !ours[ln.inode] {
			t.Errorf("a listener on %s (inode %d) is not one of relaunch's sockets", addr, ln.inode)
		}
	}
	if want := 3*8 + 1; len(lns) != want { // 3 × 8 slots (--max-draining unbounded) and the spare
		t.Errorf("%d listeners on %s; want %d", len(lns), addr, want)
	}
	if !strings.Contains(p.Stderr(), "steered handover: 24 slots") {
		t.Errorf("the pool size is not logged:\n%s", p.Stderr())
	}

	load := startLoad(t, addr)
	waitLoadOK(t, load, 50, 10*time.Second)
	if code, out := client(t, sock, "upgrade"); code != 0 {
		t.Fatalf("relaunch upgrade: %d %s", code, out)
	}
	news := waitServing(t, sock, 2, 3)
	if left := waitProcsGone(pids, 20*time.Second); len(left) > 0 {
		t.Errorf("old workers still there: %v", describeProcs(left))
	}
	waitLoadOK(t, load, okSoFar(load)+50, 10*time.Second)
	stopLoad(t, load)
	got = answering(t, addr, news)
	if !slices.Equal(sortedKeys(got), slices.Sorted(slices.Values(news))) {
		t.Errorf("after the upgrade answered by %v; want the new workers %v", got, news)
	}
	if kids := p.Children(); !slices.Equal(slices.Sorted(slices.Values(kids)), slices.Sorted(slices.Values(news))) {
		t.Errorf("relaunch's children %v; want the new workers %v", kids, news)
	}
}

// SIGKILL of one worker: only it is restarted, on its slot, in the same
// generation; the others keep their pids; the only failures allowed are
// the requests it had in flight.
func TestWorkerKilled(t *testing.T) {
	t.Parallel()
	p, addr, sock, _ := workersStart(t, 3)
	pids := waitServing(t, sock, 1, 3)
	load := startLoad(t, addr)
	waitLoadOK(t, load, 50, 10*time.Second)
	syscall.Kill(pids[1], syscall.SIGKILL)
	p.WaitLog(t, fmt.Sprintf("gen 1 worker 1 (pid %d) exited by itself: killed by SIGKILL", pids[1]), 10*time.Second)
	var after []int
	if !waitUntil(20*time.Second, 20*time.Millisecond, func() bool {
		after = waitServing(t, sock, 1, 3)
		return after[1] != pids[1]
	}) {
		t.Fatal("worker 1 was not restarted")
	}
	if after[0] != pids[0] || after[2] != pids[2] {
		t.Errorf("workers %v after the kill of worker 1; want %d and %d kept", after, pids[0], pids[2])
	}
	if w := genStatus(t, sock, 1).Workers[1]; w.Restarts != 1 || w.Slot != 1 {
		t.Errorf("worker 1 in status: %+v; want 1 restart, slot 1", w)
	}
	waitLoadOK(t, load, okSoFar(load)+100, 10*time.Second)
	res := load.Stop()
	t.Logf("load: %s; errors %v %v", res, res.Errors, res.ErrorMessages)
	if res.Errors[loadtest.Refused] > 0 || res.Failed() > loadClients {
		t.Errorf("%d requests failed (%v); want none refused and at most the %d in flight", res.Failed(), res.Errors, loadClients)
	}
	got := answering(t, addr, after)
	if !slices.Equal(sortedKeys(got), slices.Sorted(slices.Values(after))) {
		t.Errorf("answered by %v; want %v", got, after)
	}
	if strings.Contains(p.Stderr(), "gen 2 ") {
		t.Errorf("a worker's crash started a new generation:\n%s", p.Stderr())
	}
}

// A new build where one worker of three exits at start: the upgrade fails,
// the new ones are stopped, the old three serve; 0 errors.
func TestWorkersFailedUpgrade(t *testing.T) {
	t.Parallel()
	_, addr, sock, setFlags := workersStart(t, 3)
	pids := waitServing(t, sock, 1, 3)
	load := startLoad(t, addr)
	waitLoadOK(t, load, 50, 10*time.Second)
	setFlags("-exit-at-start-worker 1")
	code, out := client(t, sock, "upgrade")
	if code != 1 || !strings.Contains(out, "worker 1") {
		t.Errorf("relaunch upgrade: status %d %q; want 1 naming worker 1", code, out)
	}
	st := statusOf(t, sock)
	if len(st.Generations) != 1 || st.Generations[0].Generation != 1 || st.Generations[0].State != "current" {
		t.Errorf("generations after the failed upgrade: %+v; want gen 1 alone, current", st.Generations)
	}
	if now := waitServing(t, sock, 1, 3); !slices.Equal(now, pids) {
		t.Errorf("workers %v; want the old ones %v untouched", now, pids)
	}
	waitLoadOK(t, load, okSoFar(load)+50, 10*time.Second)
	res := stopLoad(t, load)
	if len(res.Gens) != 1 || res.Gens["1"] == 0 {
		t.Errorf("answered by generations %v; want only gen 1", res.Gens)
	}
}

// relaunch scale 5, then scale 2, under load: 0 errors, and status
// agrees (5 serving, then 2, the others drained and gone); the next
// generation keeps 2.
func TestWorkersScale(t *testing.T) {
	t.Parallel()
	_, addr, sock, _ := workersStart(t, 3)
	pids := waitServing(t, sock, 1, 3)
	load := startLoad(t, addr)
	waitLoadOK(t, load, 50, 10*time.Second)
	if code, out := client(t, sock, "scale", "5"); code != 0 || !strings.Contains(out, "5 workers, 2 starting") {
		t.Fatalf("relaunch scale 5: %d %q", code, out)
	}
	five := waitServing(t, sock, 1, 5)
	if !slices.Equal(five[:3], pids) {
		t.Errorf("workers %v after scale 5; want the first three kept %v", five, pids)
	}
	got := answering(t, addr, five)
	if got[five[4]] != "4" {
		t.Errorf("worker 4 answers worker=%q", got[five[4]])
	}
	waitLoadOK(t, load, okSoFar(load)+50, 10*time.Second)
	if code, out := client(t, sock, "scale", "2"); code != 0 || !strings.Contains(out, "2 workers, 3 draining") {
		t.Fatalf("relaunch scale 2: %d %q", code, out)
	}
	two := waitServing(t, sock, 1, 2)
	if !slices.Equal(two, pids[:2]) {
		t.Errorf("workers %v after scale 2; want %v", two, pids[:2])
	}
	if left := waitProcsGone(five[2:], 20*time.Second); len(left) > 0 {
		t.Errorf("scaled-away workers still there: %v", describeProcs(left))
	}
	waitLoadOK(t, load, okSoFar(load)+50, 10*time.Second)
	if code, out := client(t, sock, "upgrade"); code != 0 {
		t.Fatalf("relaunch upgrade: %d %s", code, out)
	}
	waitServing(t, sock, 2, 2)
	waitLoadOK(t, load, okSoFar(load)+50, 10*time.Second)
	stopLoad(t, load)
}

// A single-process node app (testdata/apps/server.js) with --workers 2:
// each worker seen accepting in /proc (--ready listen), 5 upgrades under
// load, 0 errors; both workers answer; the old ones exit.
func TestWorkersNode(t *testing.T) {
	t.Parallel()
	needE2E(t, "relaunch")
	node := needCommand(t, "node", "nodejs")
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "ctl.sock")
	addr := freeAddr(t)
	startRelaunch(t, "--listen", addr, "--no-watch-binary", "--workers", "2", "--drain-signal", "TERM", "--ready", "listen",
		"--control", sock, "--", node, testdataPath(t, "apps/server.js"))
	waitHTTP(t, addr, "version=node ", 20*time.Second)
	pids := waitServing(t, sock, 1, 2)
	load := startLoad(t, addr)
	waitLoadOK(t, load, 20, 10*time.Second)
	for g := 2; g <= 6; g++ {
		if code, out := client(t, sock, "upgrade"); code != 0 {
			t.Fatalf("upgrade to gen %d: %d %s", g, code, out)
		}
		news := waitServing(t, sock, g, 2)
		if left := waitProcsGone(pids, 20*time.Second); len(left) > 0 {
			t.Fatalf("gen %d's workers still there: %v", g-1, describeProcs(left))
		}
		pids = news
		waitLoadOK(t, load, okSoFar(load)+20, 10*time.Second)
	}
	res := stopLoad(t, load)
	if res.Gens["6"] == 0 {
		t.Errorf("gen 6 answered none of the load: %v", res.Gens)
	}
	if got := answering(t, addr, pids); len(got) != 2 {
		t.Errorf("answered by %v; want both workers %v", got, pids)
	}
}

// relaunch SIGKILLed under load with --workers 2: its workers keep
// serving, and a relaunch started again adopts them as one generation of
// two (same pids), upgrades them together; 0 errors.
func TestWorkersAdopt(t *testing.T) {
	t.Parallel()
	needE2E(t)
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "ctl.sock")
	addr := freeAddr(t)
	args := []string{"-l", addr, "--no-watch-binary", "--workers", "2", "--ready", "notify", "--control", sock, "--", demoBin}
	a := startRelaunch(t, args...)
	waitHTTP(t, addr, "gen=1", 20*time.Second)
	pids := waitServing(t, sock, 1, 2)
	load := startLoad(t, addr)
	waitLoadOK(t, load, 100, 10*time.Second)
	a.Signal(syscall.SIGKILL)
	a.MustWait(10 * time.Second)
	waitLoadOK(t, load, okSoFar(load)+200, 15*time.Second)

	b := startRelaunch(t, args...)
	b.WaitLog(t, "adopted gen 1", 10*time.Second)
	if got := waitServing(t, sock, 1, 2); !slices.Equal(got, pids) {
		t.Errorf("adopted workers %v; want %v", got, pids)
	}
	if code, out := client(t, sock, "upgrade"); code != 0 {
		t.Fatalf("relaunch upgrade: %d %s", code, out)
	}
	waitServing(t, sock, 2, 2)
	if left := waitProcsGone(pids, 20*time.Second); len(left) > 0 {
		t.Errorf("the adopted workers are still there: %v", describeProcs(left))
	}
	waitLoadOK(t, load, okSoFar(load)+100, 15*time.Second)
	stopLoad(t, load)
}
