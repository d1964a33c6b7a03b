//go:build linux

package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/internal/loadtest"
)

// End-to-end tests of upgrades, readiness, draining and crash restarts
//, each under real load.

// appScript writes an executable script at dir/app that runs the demo with
// the flags in dir/flags, so a test changes what the next generation does
// by writing that file. exec keeps the pid, so LISTEN_PID stays right.
func appScript(t testing.TB, dir string) (app string, setFlags func(string)) {
	t.Helper()
	flags := filepath.Join(dir, "flags")
	setFlags = func(f string) {
		if err := os.WriteFile(flags, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setFlags("")
	app = filepath.Join(dir, "app")
	script := fmt.Sprintf("#!/bin/sh\nexec %s $(cat %s) \"$@\"\n", demoBin, flags)
	if err := os.WriteFile(app, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return app, setFlags
}

func TestUpgradesUnderLoad(t *testing.T) {
	t.Parallel()
	p, addr := startServing(t, "--", demoBin, "-init-delay", "50ms")
	load := startLoad(t, addr)
	const n = 20
	var fds0 int
	for g := 2; g <= n+1; g++ {
		if g == 3 { // after the first upgrade: relaunch holds the previous binary for a rollback from then on
			var err error
			if fds0, err = fdCount(p.Pid()); err != nil {
				t.Fatal(err)
			}
		}
		upgradeAndWait(t, p, g, 20*time.Second)
	}
	res := stopLoad(t, load)
	waitHTTP(t, addr, fmt.Sprintf("gen=%d", n+1), 5*time.Second)
	if len(res.Gens) < n/2 {
		t.Errorf("the load saw only generations %v; want most of 1..%d", res.Gens, n+1)
	}
	noProcessesLeft(t, genPidRange(p, 1, n))
	checkOnlyGen(t, p, n+1)
	// No fd is left behind by 20 generations: notify sockets, exec pipes.
	fds1, err := fdCount(p.Pid())
	if err != nil {
		t.Fatal(err)
	}
	// A leak grows with the upgrades; the count can be one lower at the end
	// (a /proc file a scan had open when the first count was taken).
	if fds1 > fds0 {
		t.Errorf("relaunch has %d fds after %d upgrades, %d after the first upgrade", fds1, n, fds0)
	}
}

// Each bad build: the old generation keeps serving with 0 errors, nothing of
// the failed build is left, and the next good build upgrades.
func TestBadDeployKeepsServing(t *testing.T) {
	cases := []struct {
		name  string
		flags string   // the bad generation's demo flags
		chmod bool     // make the app not executable instead
		args  []string // extra relaunch options
		why   string   // in the failure's log line
	}{
		{name: "exits at start", flags: "-exit-at-start 1", why: "exited before it was ready (status 1)"},
		{name: "never ready", flags: "-no-notify", args: []string{"--ready", "notify", "--ready-timeout", "2s"}, why: "not ready after 2s"},
		{name: "not executable", chmod: true, why: "is not executable"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := shortTempDir(t)
			app, setFlags := appScript(t, dir)
			p, addr := startServing(t, slices.Concat(c.args, []string{"--", app})...)
			load := startLoad(t, addr)

			setFlags(c.flags)
			if c.chmod {
				os.Chmod(app, 0o644)
			}
			p.Signal(syscall.SIGUSR2)
			line := p.WaitLog(t, "upgrade failed", 15*time.Second)
			if !containsAll(line, c.why, "gen 1", "still serves") {
				t.Errorf("the failure's log line %q should say %q and that gen 1 still serves", line, c.why)
			}
			if !c.chmod {
				if pid := genPids(p)[2]; pid == 0 {
					t.Errorf("no gen 2 was started")
				} else {
					noProcessesLeft(t, []int{pid})
				}
			}
			waitHTTP(t, addr, "gen=1", 5*time.Second)

			// relaunch stays up and the next good build upgrades.
			setFlags("")
			os.Chmod(app, 0o755)
			next := 3
			if c.chmod {
				next = 2 // nothing was started for a file it cannot run
			}
			upgradeTo(t, p, next)
			waitHTTP(t, addr, fmt.Sprintf("gen=%d", next), 5*time.Second)
			res := stopLoad(t, load)
			if res.Gens["1"] == 0 {
				t.Errorf("gen 1 answered nothing during the failed upgrade: %v", res.Gens)
			}
		})
	}
}

// SIGKILL of the current generation under load. The requests the killed
// process had already accepted die with it (the kernel resets them; no
// launcher can answer for a process that is gone); every other request,
// those that arrive while nothing runs included, must succeed: nothing is
// refused, nothing times out.
func TestCrashRestartUnderLoad(t *testing.T) {
	t.Parallel()
	p, addr := startServing(t, "--", demoBin, "-init-delay", "50ms")
	load := startLoad(t, addr)
	var kills []time.Time
	for g := 1; g <= 3; g++ {
		pid := waitPid(t, p, g)
		p.WaitLog(t, fmt.Sprintf("gen %d (pid %d) ready", g, pid), 10*time.Second)
		kills = append(kills, time.Now())
		syscall.Kill(pid, syscall.SIGKILL)
		p.WaitLog(t, fmt.Sprintf("gen %d (pid %d) exited by itself: killed by SIGKILL", g, pid), 10*time.Second)
		waitHTTP(t, addr, fmt.Sprintf("gen=%d", g+1), 10*time.Second)
	}
	res := load.Stop()
	t.Logf("load: %s", res)
	checkOnlyHeldFailed(t, res, kills)
	if res.OK == 0 || res.Gens["4"] == 0 {
		t.Errorf("the restarted generations served nothing: %s", res)
	}
	if !strings.Contains(p.Stderr(), "restarting in 100ms") {
		t.Errorf("the first restart should wait the minimal back-off of 100ms")
	}
}

// checkOnlyHeldFailed checks that every failed request of res was in
// flight at one of kills (a generation killed with SIGKILL held it) and
// was cut, not refused nor timed out, and that there are at most one per
// client per kill.
func checkOnlyHeldFailed(t testing.TB, res *loadtest.Result, kills []time.Time) {
	t.Helper()
	inFlight := 0
	for _, s := range res.Samples {
		if s.Err == "" {
			continue
		}
		held := false
		for _, k := range kills {
			held = held || !s.Start.After(k) && !s.Start.Add(s.Latency).Before(k)
		}
		if !held || s.Err == loadtest.Refused || s.Err == loadtest.Timeout {
			t.Errorf("a request that the killed process did not hold failed: %+v", s)
		}
		inFlight++
	}
	if max := loadClients * len(kills); inFlight > max {
		t.Errorf("%d requests died with the killed generations; at most %d (one per client per kill) can be in flight", inFlight, max)
	}
	t.Logf("%d requests were in flight in the %d killed generations", inFlight, len(kills))
}

// A crash restart keeps the sockets: connections made while nothing runs
// wait in the backlog and are served by the restarted generation.
func TestBacklogWhileDown(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	app, setFlags := appScript(t, dir)
	p, addr := startServing(t, "--", app)
	checkBacklogWhileDown(t, p, addr, setFlags)
}

func TestLongRequestSurvivesUpgrade(t *testing.T) {
	t.Parallel()
	p, addr := startServing(t, "--", demoBin)
	pid := waitPid(t, p, 1)
	done := getAccepted(addr, "/sleep?d=3s", pid)
	upgradeTo(t, p, 2)
	p.WaitLog(t, "gen 1 (pid", 5*time.Second)
	a := <-done
	if a.err != nil || !strings.Contains(a.body, "gen=1") {
		t.Fatalf("the 3s request across the upgrade: %q, %v; want gen 1's answer", a.body, a.err)
	}
	p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited: status 0", pid), 10*time.Second)
}

// 30 SIGUSR2 in one second settle on one current generation, with no zombie
// and no error.
func TestSignalStorm(t *testing.T) {
	t.Parallel()
	p, addr := startServing(t, "--", demoBin, "-init-delay", "50ms")
	load := startLoad(t, addr)
	last := signalStorm(t, p, addr)
	res := stopLoad(t, load)
	checkOnlyGen(t, p, last)
	checkNoZombies(t, p)
	t.Logf("30 signals → %d generations, load %s", last, res)
}

// READY=1 from a process outside the generation does not count.
func TestNotifyFromOutsideIgnored(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	app, setFlags := appScript(t, dir)
	p, addr := startServing(t, "--ready", "notify", "--ready-timeout", "3s", "--", app)
	setFlags("-no-notify")
	p.Signal(syscall.SIGUSR2)
	pid := waitPid(t, p, 2)
	// Gen 2 serves on the shared socket (so the listener exists) but never
	// notifies; the test sends READY=1 to gen 2's own NOTIFY_SOCKET.
	var sock string
	if !waitUntil(5*time.Second, 5*time.Millisecond, func() bool {
		// None while the exec helper has not exec'd yet.
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		sock = parseKV(strings.Split(string(env), "\x00"))["NOTIFY_SOCKET"]
		return sock != ""
	}) {
		t.Fatalf("gen 2 (pid %d) has no NOTIFY_SOCKET", pid)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("READY=1")); err != nil {
		t.Fatal(err)
	}
	p.WaitLog(t, fmt.Sprintf("ignored an sd_notify message from pid %d", os.Getpid()), 5*time.Second)
	p.WaitLog(t, "upgrade failed: gen 2", 10*time.Second)
	if strings.Contains(p.Stderr(), "gen 2 (pid") && strings.Contains(p.Stderr(), fmt.Sprintf("gen 2 (pid %d) ready", pid)) {
		t.Errorf("gen 2 was taken as ready from an outside READY=1")
	}
	waitHTTP(t, addr, "gen=1", 5*time.Second)
}

// A draining app that does not handle SIGQUIT gets one warning that names
// the fix.
func TestDrainSignalWarning(t *testing.T) {
	t.Parallel()
	p, _ := startServing(t, "--", demoBin, "-ignore-quit")
	upgradeTo(t, p, 2)
	line := p.WaitLog(t, "does not drain on SIGQUIT", 10*time.Second)
	if !strings.Contains(line, "--drain-signal TERM") {
		t.Errorf("the warning %q should suggest --drain-signal TERM", line)
	}
	upgradeTo(t, p, 3)
	p.WaitLog(t, "gen 2 (pid", 10*time.Second)
	p.WaitLog(t, fmt.Sprintf("gen 2 (pid %d) exited", genPids(p)[2]), 10*time.Second)
	if n := strings.Count(p.Stderr(), "does not drain on"); n != 1 {
		t.Errorf("the warning appeared %d times; want once", n)
	}
}

// --drain-signal, --drain-timeout and --max-draining.
func TestDrainTimeoutAndMaxDraining(t *testing.T) {
	t.Parallel()
	rec := filepath.Join(shortTempDir(t), "rec")
	// USR1 is not a drain for the demo: generations stay until killed.
	p, _ := startServing(t, "--drain-signal", "USR1", "--drain-timeout", "1s", "--max-draining", "1",
		"--", demoBin, "-record", rec)
	upgradeTo(t, p, 2)
	upgradeTo(t, p, 3) // two would drain: gen 1 is killed at once
	p.WaitLog(t, "gen 1 (pid", 5*time.Second)
	line := p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", genPids(p)[1]), 5*time.Second)
	if !strings.Contains(line, "--max-draining") {
		t.Errorf("gen 1's exit %q should name --max-draining", line)
	}
	line = p.WaitLog(t, fmt.Sprintf("gen 2 (pid %d) exited", genPids(p)[2]), 10*time.Second)
	if !strings.Contains(line, "--drain-timeout") {
		t.Errorf("gen 2's exit %q should name --drain-timeout", line)
	}
	if _, ok := findEvent(readRecord(t, rec), "usr1", "2"); !ok {
		t.Errorf("gen 2 did not get the drain signal USR1")
	}
}

// SIGQUIT to relaunch: graceful stop of every generation; USR1 goes to the
// current one only.
func TestQuitAndUSR1(t *testing.T) {
	t.Parallel()
	rec := filepath.Join(shortTempDir(t), "rec")
	p, _ := startServing(t, "--", demoBin, "-record", rec)
	p.Signal(syscall.SIGUSR1)
	if !waitUntil(5*time.Second, 10*time.Millisecond, func() bool {
		_, ok := findEvent(readRecord(t, rec), "usr1", "1")
		return ok
	}) {
		t.Fatal("USR1 was not passed to the current generation")
	}
	p.Signal(syscall.SIGQUIT)
	if st := p.MustWait(10 * time.Second); st != 0 {
		t.Errorf("relaunch exited %d after QUIT; want the app's 0", st)
	}
	ev, ok := findEvent(readRecord(t, rec), "drain", "1")
	if !ok || len(ev.Args) == 0 || ev.Args[0] != "SIGQUIT" {
		t.Errorf("gen 1 should have drained on SIGQUIT: %+v", ev)
	}
}

// USR1 while a generation starts: the current one gets it at once, the
// starting one once it is ready (before, it may not handle USR1 yet), and
// the first generation, starting with none current, gets it too.
func TestUSR1WhileStarting(t *testing.T) {
	t.Parallel()
	rec := filepath.Join(shortTempDir(t), "rec")
	const delay = time.Second
	p := startRelaunch(t, "--listen", freeAddr(t), "--no-watch-binary", "--ready", "delay="+delay.String(),
		"--", demoBin, "-record", rec)
	waitEvent := func(event, gen string, n int) recordEvent {
		t.Helper()
		var got []recordEvent
		if !waitUntil(10*time.Second, 5*time.Millisecond, func() bool {
			got = got[:0]
			for _, e := range readRecord(t, rec) {
				if e.Event == event && e.Gen == gen {
					got = append(got, e)
				}
			}
			return len(got) >= n
		}) {
			t.Fatalf("gen %s: %d %q event(s) within 10s, want %d", gen, len(got), event, n)
		}
		return got[n-1]
	}
	// Each generation is ready delay after its exec: USR1 comes no sooner
	// than delay after its process started (the app's own start-up, before
	// it records "listening", may take long on a busy machine).
	checkAfterReady := func(gen string) {
		t.Helper()
		waitEvent("listening", gen, 1)
		usr1 := waitEvent("usr1", gen, 1)
		g, _ := strconv.Atoi(gen)
		started := procStartTime(t, genPids(p)[g])
		// /proc counts in clock ticks (10 ms).
		if d := usr1.Time().Sub(started); d < delay-20*time.Millisecond {
			t.Errorf("gen %s got USR1 %v after its process started, before it was ready (after %v)", gen, d, delay)
		}
	}

	waitEvent("listening", "1", 1)
	p.Signal(syscall.SIGUSR1) // no generation current yet
	checkAfterReady("1")

	p.Signal(syscall.SIGUSR2)
	waitEvent("listening", "2", 1)
	p.Signal(syscall.SIGUSR1) // gen 1 current, gen 2 starting
	waitEvent("usr1", "1", 2)
	checkAfterReady("2")
}

// Orphans of the app are reaped: the demo forks helpers it never waits for;
// when its generation exits they come to relaunch, which reaps them.
func TestNoZombies(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	p := startRelaunch(t, "--listen", addr, "--no-watch-binary", "--", demoBin, "-fork-helpers")
	for g := 1; g <= 20; g++ {
		waitHTTP(t, addr, fmt.Sprintf("gen=%d", g), 10*time.Second)
		for range 3 {
			httpGet(addr, "/")
		}
		if g < 20 {
			upgradeTo(t, p, g+1)
		}
	}
	noProcessesLeft(t, genPidRange(p, 1, 19))
	waitNoZombieChildren(t, p.Pid(), 5*time.Second)
}

// Idle means idle: no polling loops or tickers in relaunch.
func TestIdleUsesNoCPU(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	p := startRelaunch(t, "--listen", addr, "--", demoBin)
	waitHTTP(t, addr, "gen=1", 10*time.Second)
	upgradeTo(t, p, 2)
	p.WaitLog(t, "gen 1 (pid", 5*time.Second)
	p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", genPids(p)[1]), 10*time.Second)
	t0 := cpuTicks(t, p.Pid())
	time.Sleep(3 * time.Second) // the idle period being measured
	if d := cpuTicks(t, p.Pid()) - t0; d > 2 {
		t.Errorf("relaunch used %d clock ticks of CPU in 3s of idling; want ~0", d)
	}
}

// cpuTicks is utime+stime of pid, in clock ticks.
func cpuTicks(t testing.TB, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return u + s
}

// BenchmarkUpgradeLatency measures from SIGUSR2 to the first response of
// the new generation, minus the app's own start (fork to READY=1, from
// relaunch's "ready in" log): the time relaunch itself adds.
func BenchmarkUpgradeLatency(b *testing.B) {
	needE2E(b)
	p, addr := startServing(b, "--", demoBin)
	readyIn := regexp.MustCompile(`ready in (\d+)ms`)
	var total, app time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		gen := i + 2
		t0 := time.Now()
		p.Signal(syscall.SIGUSR2)
		want := fmt.Sprintf("gen=%d", gen)
		for {
			body, err := httpGet(addr, "/")
			if err == nil && strings.Contains(body, want) {
				break
			}
			time.Sleep(200 * time.Microsecond)
		}
		total += time.Since(t0)
		line := p.WaitLog(b, fmt.Sprintf("gen %d (pid %d) ready in", gen, waitPid(b, p, gen)), 10*time.Second)
		if m := readyIn.FindStringSubmatch(line); m != nil {
			ms, _ := strconv.Atoi(m[1])
			app += time.Duration(ms) * time.Millisecond
		}
		p.WaitLog(b, fmt.Sprintf("gen %d (pid %d) exited", gen-1, genPids(p)[gen-1]), 10*time.Second)
	}
	b.StopTimer()
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms-to-first-response/op")
	b.ReportMetric(float64(app.Microseconds())/1000/float64(b.N), "ms-app-start/op")
	b.ReportMetric(float64((total-app).Microseconds())/1000/float64(b.N), "ms-overhead/op")
}

// procStartTime is when pid started, from /proc (to the clock tick).
func procStartTime(t testing.TB, pid int) time.Time {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	ticks, _ := strconv.ParseInt(f[19], 10, 64) // field 22: starttime
	// starttime counts from boot (CLOCK_BOOTTIME), in USER_HZ ticks: 100
	// on every Linux ABI.
	var boot unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err != nil {
		t.Fatal(err)
	}
	sinceStart := time.Duration(boot.Nano()) - time.Duration(ticks)*10*time.Millisecond
	return time.Now().Add(-sinceStart)
}
