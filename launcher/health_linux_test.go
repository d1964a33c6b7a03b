package launcher

import (
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaunch/relaunch/sdlisten"
)

// answer answers the oldest health probe in flight with an HTTP status.
func (m *machine) answer(status int) {
	m.t.Helper()
	if len(m.probes) == 0 {
		m.t.Fatalf("no health probe in flight to answer %d", status)
	}
	p := m.probes[0]
	m.probes = m.probes[1:]
	p.done(probeResult{status: status})
	m.settle()
}

// probedSlot is the slot the one probe in flight is steered to.
func (m *machine) probedSlot() int {
	m.t.Helper()
	r := m.l.cfg.Listeners[0].Pool.Route()
	if len(m.probes) != 1 || len(r.Probes) != 1 {
		m.t.Fatalf("%d probe(s) in flight, %d in the route; want 1", len(m.probes), len(r.Probes))
	}
	for _, s := range r.Probes {
		return s
	}
	return -1
}

// steeredMachine is a machine on a real pool of n slots, with cfg.
func steeredMachine(t *testing.T, n int, cfg Config) *machine {
	t.Helper()
	a, _ := sdlisten.ParseAddr("127.0.0.1:0")
	p, err := sdlisten.BindPool(a, n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	cfg.Listeners = []Listener{{Pool: p}}
	if cfg.Ready.Mode == ReadyAuto {
		cfg.Ready = Readiness{Mode: ReadyNotify}
	}
	if cfg.Settle == 0 {
		cfg.Settle = 100 * time.Millisecond
	}
	cfg.MaxDraining = -1
	return newMachine(t, cfg)
}

func (m *machine) route() sdlisten.Route { return m.l.cfg.Listeners[0].Pool.Route() }

// --health: ready is --ready and then a 2xx from a probe steered to the
// generation's own slot; until then clients stay on the old one, which
// gets no drain signal.
func TestMachineHealthGate(t *testing.T) {
	m := steeredMachine(t, 3, Config{Health: &Health{Path: "/healthz"}})
	m.ready(1)
	m.want("1:starting")
	if s := m.probedSlot(); s != 0 {
		t.Fatalf("the first probe goes to slot %d; want 0", s)
	}
	if p := m.probes[0].spec; p.path != "/healthz" || !strings.HasPrefix(p.host, "127.0.0.1:") {
		t.Fatalf("probe %+v; want GET /healthz on 127.0.0.1", p)
	}
	m.answer(503)
	m.want("1:starting")
	if len(m.route().Probes) != 0 {
		t.Fatalf("an answered probe stays in the route: %v", m.route())
	}
	m.advance(healthRetry - time.Millisecond)
	if len(m.probes) != 0 {
		t.Fatal("probed again before 100ms")
	}
	m.advance(time.Millisecond)
	m.answer(200)
	m.want("1:current")

	m.signal(syscall.SIGUSR2)
	m.ready(2)
	m.want("1:current 2:starting")
	if s := m.probedSlot(); s != 1 {
		t.Fatalf("gen 2's probe goes to slot %d; want its own, 1", s)
	}
	if r := m.route(); !slices.Equal(r.Slots, []int{0}) {
		t.Fatalf("clients steered to %v before gen 2 is healthy; want [0]", r.Slots)
	}
	m.answer(500)
	m.advance(time.Second)
	m.answer(204)
	m.want("1:settling 2:current")
	if r := m.route(); !slices.Equal(r.Slots, []int{1}) || len(r.Probes) != 0 {
		t.Fatalf("route %s once gen 2 is healthy; want slot 1 alone", r)
	}
	if len(m.signals(1)) != 0 {
		t.Fatalf("gen 1 got %v before its settle time", m.signals(1))
	}
	m.advance(100 * time.Millisecond)
	m.want("2:current")
	if !strings.Contains(m.log.String(), "then GET /healthz answered 204 No Content") {
		t.Errorf("the ready line does not say the health check passed:\n%s", m.log)
	}
}

// Never healthy: killed at --ready-timeout, the old one never drained, and
// the failure names the last answer.
func TestMachineHealthNeverHealthy(t *testing.T) {
	m := steeredMachine(t, 3, Config{Health: &Health{Path: "/healthz"}, ReadyTimeout: 2 * time.Second})
	m.ready(1)
	m.answer(200)
	m.signal(syscall.SIGUSR2)
	m.ready(2)
	for range 5 {
		m.answer(503)
		m.advance(healthRetry)
	}
	m.advance(2 * time.Second)
	m.want("1:current")
	if len(m.signals(1)) != 0 {
		t.Fatalf("gen 1 got %v", m.signals(1))
	}
	if !strings.Contains(m.l.lastFailure, "not healthy after 2s") || !strings.Contains(m.l.lastFailure, "503 Service Unavailable") {
		t.Fatalf("last failure %q; want it to say not healthy and name the 503", m.l.lastFailure)
	}
	if r := m.route(); !slices.Equal(r.Slots, []int{0}) || len(r.Probes) != 0 {
		t.Fatalf("route %s after the failure; want slot 0 alone", r)
	}
}

// --health-interval: three failures in a row start a fresh generation; the
// failing one drains once the fresh one is healthy, and status says why.
func TestMachineLiveness(t *testing.T) {
	m := steeredMachine(t, 3, Config{Health: &Health{Path: "/healthz"}, HealthInterval: time.Second})
	m.ready(1)
	m.answer(200)
	m.want("1:current")
	m.advance(time.Second)
	m.answer(200)
	m.advance(time.Second)
	m.answer(503)
	m.advance(time.Second)
	m.answer(200) // not in a row
	for range 2 {
		m.advance(time.Second)
		m.answer(503)
	}
	m.want("1:current")
	m.advance(time.Second)
	if s := m.probedSlot(); s != 0 {
		t.Fatalf("the liveness probe goes to slot %d; want the current one's, 0", s)
	}
	m.answer(503)
	m.want("1:current 2:starting")
	st := m.l.statusReport()
	if g := st.Generations[0]; !strings.Contains(g.Unhealthy, "3 health checks failed in a row (last: 503") {
		t.Errorf("status of gen 1: %+v; want it to say why it is replaced", g)
	}
	if g := st.Generations[1]; !strings.Contains(g.Why, "gen 1 (pid 1000) is unhealthy") {
		t.Errorf("status of gen 2: %+v; want it to say why it started", g)
	}
	if len(m.signals(1)) != 0 {
		t.Fatalf("gen 1 got %v before the fresh one is healthy", m.signals(1))
	}
	// Gen 1 goes on failing while gen 2 starts: no second upgrade.
	for range 2 * failsInARow {
		m.advance(time.Second)
		m.answer(503)
	}
	m.ready(2)
	m.answer(200)
	m.want("1:settling 2:current")
	m.advance(100 * time.Millisecond)
	m.want("2:current")
	if got := m.signals(1); !slices.Equal(got, []syscall.Signal{syscall.SIGQUIT}) {
		t.Errorf("gen 1 got %v; want the drain signal", got)
	}
}

// --canary: the new generation gets its share and the old one the rest,
// with no drain signal, until DURATION; then all, and the old one drains.
// `relaunch upgrade` answers at the promotion.
func TestMachineCanary(t *testing.T) {
	m := steeredMachine(t, 3, Config{Canary: Canary{Pct: 25, For: 4 * time.Second}})
	m.ready(1)
	if m.l.canary != nil {
		t.Fatal("the first generation is a canary: there is nothing to compare it with")
	}
	ans := make(chan Answer, 1)
	m.l.onControl(Request{Cmd: "upgrade"}, ans)
	m.settle()
	m.ready(2)
	m.want("1:current 2:canary")
	if r := m.route(); !slices.Equal(r.Slots, []int{0}) || !slices.Equal(r.Canary, []int{1}) || r.CanaryPct != 25 {
		t.Fatalf("route %s; want slot 0, 25%% to slot 1", r)
	}
	m.advance(3 * time.Second)
	c := m.l.statusReport().Canary
	if c == nil || c.Generation != 2 || c.Pct != 25 || c.LeftMS != 1000 {
		t.Fatalf("status canary %+v; want gen 2, 25%%, 1000ms left", c)
	}
	if len(m.signals(1)) != 0 || len(ans) != 0 {
		t.Fatalf("during the canary: gen 1 got %v, the upgrade answered %d", m.signals(1), len(ans))
	}
	m.signal(syscall.SIGUSR2) // waits for the canary's end
	m.want("1:current 2:canary")
	m.advance(time.Second)
	m.want("1:settling 2:current 3:starting")
	if r := m.route(); !slices.Equal(r.Slots, []int{1}) || r.CanaryPct != 0 {
		t.Fatalf("route %s after the promotion; want slot 1 alone", r)
	}
	m.ready(3) // the queued upgrade: a canary of its own
	m.want("1:settling 2:current 3:canary")
	m.advance(100 * time.Millisecond)
	m.want("2:current 3:canary")
	// The waiter got the outcome of the newest upgrade: not yet.
	m.advance(4 * time.Second)
	m.want("3:current")
	if a := <-ans; a.Outcome == nil || !a.Outcome.OK || a.Outcome.Generation != 3 {
		t.Fatalf("relaunch upgrade got %+v; want gen 3's promotion", a)
	}
}

// A canary that crashes: every connection back to the old generation,
// which was never told to drain; no restart; `relaunch upgrade` fails
// saying why.
func TestMachineCanaryCrash(t *testing.T) {
	m := steeredMachine(t, 3, Config{Canary: Canary{Pct: 25, For: 4 * time.Second}})
	m.ready(1)
	ans := make(chan Answer, 1)
	m.l.onControl(Request{Cmd: "upgrade"}, ans)
	m.settle()
	m.ready(2)
	m.advance(1500 * time.Millisecond)
	m.crash(2, killedBy(syscall.SIGSEGV))
	m.want("1:current")
	if r := m.route(); !slices.Equal(r.Slots, []int{0}) || r.CanaryPct != 0 {
		t.Fatalf("route %s after the canary crashed; want slot 0 alone", r)
	}
	a := <-ans
	if a.Outcome == nil || a.Outcome.OK || !strings.HasPrefix(a.Outcome.Reason, "canary aborted: gen 2 (pid 1001) exited (killed by SIGSEGV)") {
		t.Fatalf("relaunch upgrade got %+v; want canary aborted and why", a.Outcome)
	}
	m.advance(time.Minute)
	m.want("1:current")
	if len(m.procs) != 2 || len(m.signals(1)) != 0 {
		t.Fatalf("%d processes started (want 2: no restart), gen 1 got %v (want nothing)", len(m.procs), m.signals(1))
	}
	if m.l.statusReport().Canary != nil {
		t.Error("status still shows a canary")
	}
}

// Three failed probes end a canary; it drains after the settle time.
func TestMachineCanaryUnhealthy(t *testing.T) {
	m := steeredMachine(t, 3, Config{Health: &Health{Path: "/healthz"}, Canary: Canary{Pct: 50, For: time.Minute}})
	m.ready(1)
	m.answer(200)
	m.signal(syscall.SIGUSR2)
	m.ready(2)
	m.answer(200)
	m.want("1:current 2:canary")
	for i := range failsInARow {
		m.advance(canaryProbe)
		if s := m.probedSlot(); s != 1 {
			t.Fatalf("probe %d of the canary goes to slot %d; want 1", i, s)
		}
		m.answer(502)
	}
	m.want("1:current 2:settling")
	if r := m.route(); !slices.Equal(r.Slots, []int{0}) || r.CanaryPct != 0 {
		t.Fatalf("route %s after the abort; want slot 0 alone", r)
	}
	m.advance(100 * time.Millisecond)
	m.want("1:current")
	if !strings.Contains(m.l.lastFailure, "canary aborted: 3 health checks failed in a row (last: 502 Bad Gateway)") {
		t.Errorf("last failure %q", m.l.lastFailure)
	}
}

// relaunch promote and relaunch abort while a canary runs, and without one.
func TestMachineCanaryControl(t *testing.T) {
	m := steeredMachine(t, 3, Config{Canary: Canary{Pct: 25, For: time.Hour}})
	m.ready(1)
	ctl := func(cmd string) Answer {
		ans := make(chan Answer, 1)
		m.l.onControl(Request{Cmd: cmd}, ans)
		m.settle()
		return <-ans
	}
	if a := ctl("promote"); !strings.Contains(a.Error, "no canary is running") {
		t.Fatalf("promote without a canary: %+v", a)
	}
	m.signal(syscall.SIGUSR2)
	m.ready(2)
	if a := ctl("promote"); !strings.Contains(a.Said, "canary gen 2 (pid 1001) promoted") {
		t.Fatalf("promote: %+v", a)
	}
	m.want("1:settling 2:current")
	m.advance(time.Second)
	m.signal(syscall.SIGUSR2)
	m.ready(3)
	m.want("2:current 3:canary")
	if a := ctl("abort"); !strings.Contains(a.Said, "canary gen 3 (pid 1002) aborted: gen 2 (pid 1001) serves") {
		t.Fatalf("abort: %+v", a)
	}
	m.want("2:current 3:settling")
	m.advance(time.Second)
	m.want("2:current")
	if got := m.signals(3); !slices.Equal(got, []syscall.Signal{syscall.SIGQUIT}) {
		t.Errorf("the aborted canary got %v; want the drain signal", got)
	}
	if len(m.signals(2)) != 0 {
		t.Errorf("gen 2 got %v", m.signals(2))
	}
}

// The current generation exits while a canary runs: the canary, healthy
// and serving its share, takes over at once; nothing restarts.
func TestMachineCanaryCurrentExits(t *testing.T) {
	m := steeredMachine(t, 3, Config{Canary: Canary{Pct: 25, For: time.Hour}})
	m.ready(1)
	m.signal(syscall.SIGUSR2)
	m.ready(2)
	m.want("1:current 2:canary")
	m.crash(1, killedBy(syscall.SIGSEGV))
	m.want("2:current")
	if r := m.route(); !slices.Equal(r.Slots, []int{1}) || r.CanaryPct != 0 {
		t.Fatalf("route %s; want slot 1 alone", r)
	}
	m.advance(time.Minute)
	if len(m.procs) != 2 {
		t.Fatalf("%d processes started; want 2 (no restart)", len(m.procs))
	}
}

// Liveness whose fresh generation is not healthy either: it is killed at
// --ready-timeout, the failing one keeps serving, and 3 more failures try
// again.
func TestMachineLivenessFreshFails(t *testing.T) {
	m := steeredMachine(t, 3, Config{Health: &Health{Path: "/healthz"}, HealthInterval: time.Second, ReadyTimeout: 5 * time.Second})
	m.ready(1)
	m.answer(200)
	// answerAll answers every probe in flight: gen 1's (slot 0) with
	// onCur, any other's with 503.
	answerAll := func(onCur int) {
		for len(m.probes) > 0 {
			st := 503
			if m.probes[0].spec.slot == 0 {
				st = onCur
			}
			m.answer(st)
		}
	}
	for range failsInARow {
		m.advance(time.Second)
		answerAll(503)
	}
	m.want("1:current 2:starting")
	m.ready(2)
	for i := 0; i < 100 && m.gen(2) != nil; i++ {
		answerAll(200) // gen 1 is fine meanwhile: no second upgrade queued
		m.advance(healthRetry)
	}
	m.want("1:current")
	if !strings.Contains(m.l.lastFailure, "not healthy after 5s") {
		t.Fatalf("last failure %q", m.l.lastFailure)
	}
	if len(m.signals(1)) != 0 {
		t.Fatalf("gen 1 got %v", m.signals(1))
	}
	for range failsInARow {
		m.advance(time.Second)
		answerAll(503)
	}
	m.want("1:current 3:starting")
}

// SteeredFor: --health probes the first TCP --listen address or the one
// named, and refuses one that is not steered.
func TestSteeredFor(t *testing.T) {
	pool := func(s string) Listener {
		a, _ := sdlisten.ParseAddr(s)
		p, err := sdlisten.BindPool(a, 2)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return Listener{Pool: p}
	}
	shared := func(s string) Listener {
		a, _ := sdlisten.ParseAddr(s)
		so, err := sdlisten.Bind(a)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { so.Close() })
		return Listener{Socket: so}
	}
	dir := t.TempDir()
	ls := []Listener{shared("unix://" + dir + "/a.sock"), pool("web=127.0.0.1:0"), pool("api=127.0.0.1:0"), shared("plain=127.0.0.1:0")}
	for _, tc := range []struct {
		name string
		want int
		err  string
	}{
		{"", 1, ""},
		{"api", 2, ""},
		{"plain", -1, "is not steered"},
	} {
		cfg := Config{Listeners: ls, Health: &Health{Name: tc.name, Path: "/healthz"}}
		err := SteeredFor(&cfg)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("--health %s=: %v; want an error saying %q", tc.name, err, tc.err)
		case tc.err == "" && (err != nil || cfg.Health.Listener != tc.want):
			t.Errorf("--health %s=: listener %d, %v; want %d", tc.name, cfg.Health.Listener, err, tc.want)
		}
	}
	if err := SteeredFor(&Config{Listeners: ls[:1], Canary: Canary{Pct: 10, For: time.Minute}}); err == nil {
		t.Error("--canary with no steered listener was accepted")
	}
}

// What an aborted canary left queued on its slot is reset at once (no
// generation is coming for it), not held for the next one; with an
// upgrade waiting, it is held for it.
func TestRescueAbortedCanary(t *testing.T) {
	for _, pending := range []bool{false, true} {
		r := newSlotRig(t, RescueAuto)
		r.do(func() {
			r.l.steerTo(1)
			r.l.abandoned = map[int]bool{0: true}
			if pending {
				r.l.pending = "SIGUSR2"
			}
		})
		c := r.strand(t, 0)
		if pending {
			r.until(t, "held", func() bool { return r.l.rescued.Held == 1 })
			continue
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second)) // far less than holdFor
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the client read %v; want a reset at once", err)
		}
		r.until(t, "counted", func() bool { return r.l.rescued.Reset == 1 && r.l.rescued.Held == 0 })
		if !strings.Contains(r.logs.String(), "left queued on tcp://") || !strings.Contains(r.logs.String(), "by the aborted canary: reset") {
			t.Errorf("the log does not say so:\n%s", r.logs)
		}
	}
}
