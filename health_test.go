//go:build linux

package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaunch/relaunch/internal/loadtest"
)

// End-to-end tests of the cutover on evidence: --health (a probe steered
// by its source port to the new generation), --health-interval (liveness)
// and --canary, under load. The demo's -record file says when each
// generation first answered /healthz with 2xx ("healthy"), first answered
// a client ("served"), and got its drain signal ("drain").

// healthStart starts relaunch on an appScript demo that records its events,
// with args before "--", and waits until gen 1 answers. It returns the
// relaunch, its address, the control socket, the record file and the
// demo's flag setter (the record flag is kept).
func healthStart(t *testing.T, args ...string) (p *relaunchProc, addr, sock, rec string, setFlags func(string)) {
	t.Helper()
	dir := shortTempDir(t)
	app, set := appScript(t, dir)
	rec = filepath.Join(dir, "record")
	setFlags = func(f string) { set("-record " + rec + " " + f) }
	setFlags("")
	sock = filepath.Join(dir, "ctl.sock")
	p, addr = steerStart(t, append(append([]string{"--ready", "notify", "--control", sock}, args...), "--", app)...)
	return p, addr, sock, rec, setFlags
}

// eventAt is when generation gen recorded event; the test fails if it
// did not.
func eventAt(t *testing.T, rec, event, gen string) time.Time {
	t.Helper()
	e, ok := findEvent(readRecord(t, rec), event, gen)
	if !ok {
		t.Fatalf("gen %s recorded no %q event", gen, event)
	}
	return e.Time()
}

// READY=1 at once, healthy 1.5 s later: no client request is answered by
// the new generation before its first 2xx, and the old one's drain signal
// comes after it; 0 errors.
func TestHealthGate(t *testing.T) {
	t.Parallel()
	p, addr, _, rec, setFlags := healthStart(t, "--health", "/healthz")
	load := startLoad(t, addr)
	waitLoadOK(t, load, 50, 10*time.Second)
	setFlags("-healthy-after 1.5s")
	upgradeTo(t, p, 2)
	p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", genPids(p)[1]), 20*time.Second)
	waitLoadOK(t, load, okSoFar(load)+50, 10*time.Second)
	res := stopLoad(t, load)
	if res.Gens["2"] == 0 {
		t.Fatalf("gen 2 answered no client: %v", res.Gens)
	}
	listening, healthy := eventAt(t, rec, "listening", "2"), eventAt(t, rec, "healthy", "2")
	served, drain := eventAt(t, rec, "served", "2"), eventAt(t, rec, "drain", "1")
	if healthy.Sub(listening) < 1500*time.Millisecond {
		t.Fatalf("gen 2 healthy %s after it listened; the demo says 1.5s", healthy.Sub(listening))
	}
	if served.Before(healthy) {
		t.Errorf("gen 2 answered a client %s before its first 2xx to /healthz", healthy.Sub(served))
	}
	if drain.Before(healthy) {
		t.Errorf("gen 1 got its drain signal %s before gen 2 was healthy", healthy.Sub(drain))
	}
	line := p.WaitLog(t, fmt.Sprintf("gen 2 (pid %d) ready in", genPids(p)[2]), time.Second)
	if !strings.Contains(line, "READY=1, then GET /healthz answered 200 OK") {
		t.Errorf("the ready line does not say how: %q", line)
	}
	t.Logf("gen 2: healthy %s after listening; first client answer %s after healthy; gen 1's drain %s after healthy",
		healthy.Sub(listening).Round(time.Millisecond), served.Sub(healthy).Round(time.Millisecond), drain.Sub(healthy).Round(time.Millisecond))
}

// Never healthy: stopped at --ready-timeout, the old generation never
// drained, the log names the 503; 0 errors.
func TestHealthNeverHealthy(t *testing.T) {
	t.Parallel()
	p, addr, sock, rec, setFlags := healthStart(t, "--health", "/healthz", "--ready-timeout", "3s")
	load := startLoad(t, addr)
	setFlags("-health-status 503")
	p.Signal(syscall.SIGUSR2)
	line := p.WaitLog(t, "upgrade failed", 20*time.Second)
	if !containsAll(line, "gen 2", "not healthy after 3s", "503 Service Unavailable", "gen 1", "still serves") {
		t.Errorf("the failure's line %q should name gen 2, the timeout, the 503 and gen 1 still serving", line)
	}
	waitLoadOK(t, load, okSoFar(load)+50, 10*time.Second)
	res := stopLoad(t, load)
	if res.Gens["2"] != 0 {
		t.Errorf("gen 2, never healthy, answered %d client requests", res.Gens["2"])
	}
	if _, ok := findEvent(readRecord(t, rec), "drain", "1"); ok {
		t.Error("gen 1 got a drain signal")
	}
	if st := statusOf(t, sock); !strings.Contains(st.LastFailure, "503") || len(st.Generations) != 1 {
		t.Errorf("status: last failure %q, generations %+v; want the 503 and gen 1 alone", st.LastFailure, st.Generations)
	}
}

// Liveness: the current generation turns unhealthy; a fresh one replaces
// it, and its drain comes after the fresh one is healthy; 0 errors.
func TestHealthLiveness(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	app, set := appScript(t, dir)
	rec := filepath.Join(dir, "record")
	set("-record " + rec + " -unhealthy-after 1s")
	sock := filepath.Join(dir, "ctl.sock")
	p, addr := steerStart(t, "--ready", "notify", "--control", sock, "--health", "/healthz", "--health-interval", "200ms", "--", app)
	set("-record " + rec) // the fresh generation is healthy
	load := startLoad(t, addr)
	line := p.WaitLog(t, "3 health checks failed in a row", 20*time.Second)
	if !containsAll(line, "gen 1", "503", "starting a fresh generation") {
		t.Errorf("the line %q should name gen 1, the 503 and what relaunch does", line)
	}
	p.WaitLog(t, fmt.Sprintf("gen 2 (pid %d) ready in", waitPid(t, p, 2)), 20*time.Second)
	st := statusOf(t, sock)
	var why string
	for _, g := range st.Generations {
		if g.Generation == 2 {
			why = g.Why
		}
	}
	if !strings.Contains(why, "gen 1") || !strings.Contains(why, "health checks failed") {
		t.Errorf("status says gen 2 started for %q; want gen 1's failed health checks", why)
	}
	p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", genPids(p)[1]), 20*time.Second)
	res := stopLoad(t, load)
	if drain, healthy := eventAt(t, rec, "drain", "1"), eventAt(t, rec, "healthy", "2"); drain.Before(healthy) {
		t.Errorf("gen 1 drained %s before gen 2 was healthy", healthy.Sub(drain))
	}
	if res.Gens["2"] == 0 {
		t.Errorf("gen 2 answered no client: %v", res.Gens)
	}
	if strings.Contains(p.Stderr(), "gen 3 (pid") {
		t.Errorf("a third generation started:\n%s", p.Stderr())
	}
}

// Canary 25% for 4s: new connections split (10 to 45% to the canary), the
// old generation gets no drain signal meanwhile; then all go to the new one.
func TestCanary(t *testing.T) {
	t.Parallel()
	p, addr, _, rec, _ := healthStart(t, "--health", "/healthz", "--canary", "25:4s")
	p.Signal(syscall.SIGUSR2)
	p.WaitLog(t, "it is a canary: 25% of new connections for 4s", 20*time.Second)
	cfg := loadtest.Config{Addr: addr, Clients: 4, Requests: 200, Timeout: 10 * time.Second}
	res := runLoad(t, cfg)
	if strings.Contains(p.Stderr(), "promoted") {
		t.Fatalf("the canary was promoted before 200 requests were done (a slow machine?): the split is not measured\n%s", p.Stderr())
	}
	if _, ok := findEvent(readRecord(t, rec), "drain", "1"); ok {
		t.Error("gen 1 got a drain signal during the canary")
	}
	share := float64(res.Gens["2"]) / float64(res.OK)
	t.Logf("canary 25%%: %d of %d requests on new connections answered by gen 2 (%.0f%%)", res.Gens["2"], res.OK, 100*share)
	if res.Gens["1"]+res.Gens["2"] != res.OK || share < 0.10 || share > 0.45 {
		t.Errorf("gen 2, the canary, answered %.0f%% (%v); want 10 to 45%%", 100*share, res.Gens)
	}
	p.WaitLog(t, "canary gen 2", 20*time.Second)
	p.WaitLog(t, "promoted (4s passed)", 20*time.Second)
	p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", genPids(p)[1]), 20*time.Second)
	after := runLoad(t, loadtest.Config{Addr: addr, Clients: 4, Requests: 50, Timeout: 10 * time.Second})
	if after.Gens["2"] != after.OK {
		t.Errorf("after the promotion: %v; want every answer from gen 2", after.Gens)
	}
}

// okSoFar is how many requests of the load succeeded so far.
func okSoFar(r *loadtest.Runner) int {
	ok, _ := r.Progress()
	return ok
}

// runLoad runs a bounded load to its end and fails the test on any error.
func runLoad(t *testing.T, cfg loadtest.Config) *loadtest.Result {
	t.Helper()
	res := startLoadConfig(t, cfg).Wait()
	t.Logf("load: %s", res)
	if res.Failed() > 0 || res.OK == 0 {
		t.Errorf("load: %d of %d requests failed (want 0), %d ok: %v", res.Failed(), res.Total, res.OK, res.ErrorMessages)
	}
	return res
}

// upgradeAsync runs `relaunch upgrade` and returns its status and output
// when it ends.
func upgradeAsync(sock string) <-chan [2]string {
	done := make(chan [2]string, 1)
	go func() {
		out, err := exec.Command(relaunchBin, "upgrade", "--control", sock).CombinedOutput()
		code := "0"
		if ee, ok := err.(*exec.ExitError); ok {
			code = fmt.Sprint(ee.ExitCode())
		} else if err != nil {
			code = err.Error()
		}
		done <- [2]string{code, string(out)}
	}()
	return done
}

// A canary that crashes after 1.5s: everything back to the old generation,
// never drained; at most the requests in flight on the canary fail, none
// refused; no restart; `relaunch upgrade` exits 1 saying why.
func TestCanaryCrash(t *testing.T) {
	t.Parallel()
	p, addr, sock, rec, setFlags := healthStart(t, "--health", "/healthz", "--canary", "25:20s")
	load := startLoad(t, addr)
	setFlags("-crash-after 1.5s")
	up := upgradeAsync(sock)
	p.WaitLog(t, "it is a canary", 20*time.Second)
	line := p.WaitLog(t, "canary aborted", 20*time.Second)
	if !containsAll(line, "gen 2", "exited (killed by SIGKILL)", "gen 1") {
		t.Errorf("the abort line %q should say the canary gen 2 was killed and gen 1 serves", line)
	}
	var r [2]string
	select {
	case r = <-up:
	case <-time.After(20 * time.Second):
		t.Fatal("relaunch upgrade did not return after the abort")
	}
	if r[0] != "1" || !strings.Contains(r[1], "canary aborted: gen 2") {
		t.Errorf("relaunch upgrade: status %s, %q; want 1 and canary aborted: why", r[0], r[1])
	}
	waitLoadOK(t, load, okSoFar(load)+100, 10*time.Second)
	res := load.Stop()
	t.Logf("load: %s; errors %v %v", res, res.Errors, res.ErrorMessages)
	if res.Errors[loadtest.Refused] > 0 || res.Failed() > loadClients {
		t.Errorf("%d requests failed (%v); want none refused and at most the %d in flight", res.Failed(), res.Errors, loadClients)
	}
	if res.Gens["2"] == 0 {
		t.Errorf("the canary answered nothing before its crash: %v", res.Gens)
	}
	waitHTTP(t, addr, "gen=1", 5*time.Second)
	if _, ok := findEvent(readRecord(t, rec), "drain", "1"); ok {
		t.Error("gen 1 got a drain signal")
	}
	if strings.Contains(p.Stderr(), "gen 3 (pid") || strings.Contains(p.Stderr(), "restarting in") {
		t.Errorf("the crashed canary was restarted:\n%s", p.Stderr())
	}
}

// relaunch promote and relaunch abort while a canary runs; 0 errors.
func TestCanaryPromoteAbort(t *testing.T) {
	t.Parallel()
	p, addr, sock, _, _ := healthStart(t, "--canary", "25:1h")
	load := startLoad(t, addr)
	p.Signal(syscall.SIGUSR2)
	p.WaitLog(t, "it is a canary", 20*time.Second)
	st := statusOf(t, sock)
	if c := st.Canary; c == nil || c.Generation != 2 || c.Pct != 25 || c.LeftMS < 3_500_000 {
		t.Fatalf("status canary %+v; want gen 2, 25%%, about an hour left", c)
	}
	if code, out := client(t, sock, "status"); code != 0 || !strings.Contains(out, "canary: gen 2 gets 25% of new connections") {
		t.Errorf("relaunch status: %d %q", code, out)
	}
	if code, out := client(t, sock, "promote"); code != 0 || !strings.Contains(out, "canary gen 2") || !strings.Contains(out, "promoted") {
		t.Fatalf("relaunch promote: %d %q", code, out)
	}
	p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", genPids(p)[1]), 20*time.Second)
	waitHTTP(t, addr, "gen=2", 5*time.Second)

	p.Signal(syscall.SIGUSR2)
	p.WaitLog(t, "gen 3 (pid", 20*time.Second)
	p.WaitLogN(t, "it is a canary", 2, 20*time.Second)
	if code, out := client(t, sock, "abort"); code != 0 || !strings.Contains(out, "canary gen 3") || !strings.Contains(out, "aborted: gen 2") {
		t.Fatalf("relaunch abort: %d %q", code, out)
	}
	p.WaitLog(t, fmt.Sprintf("gen 3 (pid %d) exited", genPids(p)[3]), 20*time.Second)
	if code, out := client(t, sock, "abort"); code != 1 || !strings.Contains(out, "no canary is running") {
		t.Errorf("relaunch abort without a canary: %d %q; want 1 and why", code, out)
	}
	waitLoadOK(t, load, okSoFar(load)+50, 10*time.Second)
	res := stopLoad(t, load)
	if res.Gens["3"] == 0 {
		t.Logf("the canary gen 3 answered none of %d requests (it ran briefly)", res.OK)
	}
	if st := statusOf(t, sock); st.Canary != nil || len(st.Generations) != 1 || st.Generations[0].Generation != 2 {
		t.Errorf("status after the abort: canary %+v, generations %+v; want gen 2 alone", st.Canary, st.Generations)
	}
}
