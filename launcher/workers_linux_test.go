package launcher

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaunch/relaunch/sdlisten"
)

// --workers on the fake system: a generation of N processes, ready once
// all are, each restarted alone, upgraded together.

func (m *machine) worker(id, i int) *generation {
	m.t.Helper()
	g := m.gen(id)
	if g == nil || i >= len(g.workers) {
		m.t.Fatalf("no gen %d worker %d", id, i)
	}
	return g.workers[i]
}

// readyWorker makes worker i of generation id send READY=1.
func (m *machine) readyWorker(id, i int) {
	m.t.Helper()
	w := m.worker(id, i)
	m.l.onNotify(w, sdlisten.NotifyMessage{Pid: w.pid, Fields: []string{"READY=1"}}, true)
	m.settle()
}

// readyAll makes every worker of generation id send READY=1.
func (m *machine) readyAll(id int) {
	m.t.Helper()
	for i := range m.gen(id).workers {
		m.readyWorker(id, i)
	}
}

func (m *machine) crashWorker(id, i int, ws syscall.WaitStatus) {
	m.t.Helper()
	m.exit(m.proc(m.worker(id, i).pid), ws)
	m.settle()
}

// pids are the pids of generation id's workers.
func (m *machine) pids(id int) []int {
	var p []int
	for _, w := range m.gen(id).workers {
		p = append(p, w.pid)
	}
	return p
}

func (m *machine) got(pid int) []syscall.Signal { return m.proc(pid).got }

func envOf(spec procSpec, key string) string {
	for _, kv := range spec.env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// Three processes, RELAUNCH_WORKER 0..2, each on a slot of its own and a
// notify socket of its own; the generation is ready when all three are,
// and the route spreads over their three slots.
func TestMachineWorkersStart(t *testing.T) {
	m := steeredMachine(t, 9, Config{Workers: 3})
	if len(m.procs) != 3 {
		t.Fatalf("%d processes started; want 3", len(m.procs))
	}
	notify := map[string]bool{}
	for i, pr := range m.procs {
		if got := envOf(pr.spec, "RELAUNCH_WORKER"); got != fmt.Sprint(i) {
			t.Errorf("process %d has RELAUNCH_WORKER=%q; want %d", i, got, i)
		}
		if got := envOf(pr.spec, "RELAUNCH_GENERATION"); got != "1" {
			t.Errorf("process %d has RELAUNCH_GENERATION=%q; want 1", i, got)
		}
		notify[envOf(pr.spec, "NOTIFY_SOCKET")] = true
		if fd := pr.spec.socks[0].Fd(); fd != m.l.cfg.Listeners[0].Pool.Slot(i).Fd() {
			t.Errorf("worker %d was given fd %d; want slot %d's", i, fd, i)
		}
	}
	if len(notify) != 3 {
		t.Errorf("the workers share notify sockets: %v", notify)
	}
	m.readyWorker(1, 0)
	m.readyWorker(1, 2)
	m.want("1:starting")
	m.readyWorker(1, 1)
	m.want("1:current")
	if got := m.route().Slots; !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("route to slots %v; want [0 1 2]", got)
	}
	st := m.l.statusReport().Generations[0]
	if st.Pid != m.procs[0].pid || len(st.Workers) != 3 {
		t.Fatalf("status: pid %d, %d workers; want worker 0's pid %d and 3", st.Pid, len(st.Workers), m.procs[0].pid)
	}
	for i, w := range st.Workers {
		if w.Worker != i || w.Pid != m.procs[i].pid || w.Slot != i || w.State != "serving" || w.Restarts != 0 {
			t.Errorf("status of worker %d: %+v", i, w)
		}
	}
}

// Shared sockets: every worker gets the one socket.
func TestMachineWorkersShared(t *testing.T) {
	s, err := sdlisten.Bind(sdlisten.Addr{Network: "udp", Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, Workers: 2, Listeners: []Listener{{Socket: s}}})
	for i, pr := range m.procs {
		if pr.spec.socks[0] != s {
			t.Errorf("worker %d was not given the shared socket", i)
		}
	}
	m.readyAll(1)
	m.want("1:current")
}

// A worker that exits by itself is restarted alone, on its slot, in the
// same generation, with a backoff of its own; its slot is out of the route
// until it is ready again.
func TestMachineWorkerCrashRestartsAlone(t *testing.T) {
	m := steeredMachine(t, 9, Config{Workers: 3})
	m.readyAll(1)
	before := m.pids(1)
	m.crashWorker(1, 1, killedBy(syscall.SIGKILL))
	m.want("1:current")
	if got := m.route().Slots; !slices.Equal(got, []int{0, 2}) {
		t.Errorf("with worker 1 down, route to %v; want [0 2]", got)
	}
	if ws := m.l.statusReport().Generations[0].Workers; ws[1].State != "restarting" {
		t.Errorf("worker 1 is %q in status; want restarting", ws[1].State)
	}
	m.advance(backoffMin - time.Millisecond)
	if len(m.procs) != 3 {
		t.Fatal("worker 1 restarted before its backoff")
	}
	m.advance(time.Millisecond)
	if len(m.procs) != 4 {
		t.Fatalf("%d processes; want worker 1 alone restarted", len(m.procs))
	}
	w := m.worker(1, 1)
	if w.slot != 1 || w.pid == before[1] || envOf(m.procs[3].spec, "RELAUNCH_WORKER") != "1" || envOf(m.procs[3].spec, "RELAUNCH_GENERATION") != "1" {
		t.Errorf("the restart: slot %d pid %d env %v", w.slot, w.pid, m.procs[3].spec.env)
	}
	if after := m.pids(1); after[0] != before[0] || after[2] != before[2] {
		t.Errorf("the other workers changed: %v → %v", before, after)
	}
	for _, pid := range []int{before[0], before[2]} {
		if len(m.got(pid)) != 0 {
			t.Errorf("pid %d got %v", pid, m.got(pid))
		}
	}
	if got := m.route().Slots; !slices.Equal(got, []int{0, 2}) {
		t.Errorf("worker 1 not ready yet, but routed to %v", got)
	}
	m.readyWorker(1, 1)
	if got := m.route().Slots; !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("worker 1 back, route %v; want [0 1 2]", got)
	}
	// Its backoff doubles; worker 2's own starts at the minimum.
	m.crashWorker(1, 1, exitCode(1))
	m.crashWorker(1, 2, exitCode(1))
	m.advance(backoffMin)
	if m.worker(1, 2).exited == true || m.worker(1, 1).exited == false {
		t.Errorf("after %s: worker 1 exited %v (want still waiting: 200ms), worker 2 exited %v (want restarted)",
			backoffMin, m.worker(1, 1).exited, m.worker(1, 2).exited)
	}
	m.advance(backoffMin)
	if m.worker(1, 1).exited {
		t.Error("worker 1 not restarted after 200ms")
	}
	if r := m.l.statusReport().Generations[0].Workers; r[1].Restarts != 2 || r[2].Restarts != 1 || r[0].Restarts != 0 {
		t.Errorf("restarts in status: %+v", r)
	}
	if m.l.lastID != 1 {
		t.Errorf("a worker's restart made gen %d", m.l.lastID)
	}
}

// --restart on-failure: a worker that exits 0 is not restarted; the
// generation ends when its last worker does, and relaunch with it.
func TestMachineWorkerExitZero(t *testing.T) {
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, Workers: 2})
	m.readyAll(1)
	m.crashWorker(1, 0, exitCode(0))
	m.advance(time.Second)
	m.want("1:current")
	if m.l.done {
		t.Fatal("relaunch ended with one worker still running")
	}
	m.crashWorker(1, 1, exitCode(0))
	if !m.l.done || m.l.status != 0 {
		t.Errorf("done %v status %d; want done with 0", m.l.done, m.l.status)
	}
}

// An upgrade starts N new workers, steers to them once all are ready,
// and drains the old N; --max-draining counts generations.
func TestMachineWorkersUpgrade(t *testing.T) {
	m := steeredMachine(t, 12, Config{Workers: 3})
	m.readyAll(1)
	old := m.pids(1)
	m.signal(syscall.SIGUSR2)
	m.want("1:current 2:starting")
	if got := m.gen(2).slots(); !slices.Equal(got, []int{3, 4, 5}) {
		t.Fatalf("gen 2 on slots %v; want [3 4 5]", got)
	}
	m.readyWorker(2, 0)
	m.readyWorker(2, 1)
	if got := m.route().Slots; !slices.Equal(got, []int{0, 1, 2}) {
		t.Fatalf("steered to %v before every new worker was ready", got)
	}
	m.readyWorker(2, 2)
	m.want("1:settling 2:current")
	if got := m.route().Slots; !slices.Equal(got, []int{3, 4, 5}) {
		t.Fatalf("route %v; want [3 4 5]", got)
	}
	m.advance(100 * time.Millisecond)
	for _, pid := range old {
		if !slices.Equal(m.got(pid), []syscall.Signal{syscall.SIGQUIT}) {
			t.Errorf("old worker %d got %v; want SIGQUIT", pid, m.got(pid))
		}
	}
	m.want("2:current")

	// --max-draining 1: a third generation while two drain kills the
	// oldest generation, all of its workers.
	m.l.cfg.MaxDraining = 1
	for _, pr := range m.procs {
		pr.stuck = true
	}
	m.signal(syscall.SIGUSR2)
	m.readyAll(3)
	m.advance(100 * time.Millisecond)
	m.want("2:draining 3:current")
	stuck2 := m.pids(2)
	for _, pr := range m.procs {
		pr.stuck = true
	}
	m.signal(syscall.SIGUSR2)
	m.readyAll(4)
	m.advance(100 * time.Millisecond)
	m.want("3:draining 4:current")
	for _, pid := range stuck2 {
		if m.proc(pid).alive {
			t.Errorf("gen 2's worker %d still runs past --max-draining 1", pid)
		}
	}
}

// One new worker that fails fails the upgrade: the other new ones are
// stopped, the old ones are not touched.
func TestMachineWorkersFailedUpgrade(t *testing.T) {
	m := steeredMachine(t, 12, Config{Workers: 3})
	m.readyAll(1)
	old := m.pids(1)
	m.signal(syscall.SIGUSR2)
	m.readyWorker(2, 0)
	news := m.pids(2)
	m.crashWorker(2, 1, exitCode(3))
	for _, pid := range []int{news[0], news[2]} {
		if m.proc(pid).alive {
			t.Errorf("new worker %d still runs after its sibling failed", pid)
		}
	}
	m.want("1:current")
	for _, pid := range old {
		if len(m.got(pid)) != 0 {
			t.Errorf("old worker %d got %v", pid, m.got(pid))
		}
	}
	if got := m.route().Slots; !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("route %v; want the old [0 1 2]", got)
	}
	if want := "its worker 1 (pid"; !strings.Contains(m.l.lastFailure, want) || !strings.Contains(m.l.lastFailure, "status 3") {
		t.Errorf("last failure %q; want it to name worker 1 and status 3", m.l.lastFailure)
	}
	// Not ready in time: every new worker is killed.
	m.signal(syscall.SIGUSR2)
	m.readyWorker(3, 2)
	m.advance(time.Minute)
	m.want("1:current")
	if !strings.Contains(m.l.lastFailure, "worker(s) 0, 1 still waiting") {
		t.Errorf("last failure %q; want the workers not ready", m.l.lastFailure)
	}
	// The next one works.
	m.signal(syscall.SIGUSR2)
	m.readyAll(4)
	m.want("1:settling 4:current")
}

// A stop reaches every worker, and one waiting for its restart is not
// restarted.
func TestMachineWorkersStop(t *testing.T) {
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, Workers: 3})
	m.readyAll(1)
	m.crashWorker(1, 2, exitCode(1))
	m.signal(syscall.SIGTERM)
	if !m.l.done {
		t.Fatalf("not done after SIGTERM; generations %q", m.states())
	}
	m.advance(time.Second)
	if len(m.procs) != 3 {
		t.Errorf("a worker was restarted during the stop")
	}
}

// relaunch scale: up starts workers on free slots, routed to once ready;
// down steers away from the last ones, then drains them; the next
// generation keeps the count.
func TestMachineWorkersScale(t *testing.T) {
	m := steeredMachine(t, 12, Config{Workers: 2})
	m.readyAll(1)
	if a := m.l.scale(4); a.Error != "" {
		t.Fatal(a.Error)
	}
	if len(m.gen(1).workers) != 4 || len(m.procs) != 4 {
		t.Fatalf("%d workers, %d processes after scale 4", len(m.gen(1).workers), len(m.procs))
	}
	if got := m.route().Slots; !slices.Equal(got, []int{0, 1}) {
		t.Errorf("new workers routed to before they are ready: %v", got)
	}
	m.readyWorker(1, 2)
	m.readyWorker(1, 3)
	if got := m.route().Slots; !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Errorf("route %v after scale 4; want [0 1 2 3]", got)
	}
	if envOf(m.procs[3].spec, "RELAUNCH_WORKER") != "3" {
		t.Errorf("the fourth worker's env: %v", m.procs[3].spec.env)
	}
	gone := m.pids(1)[1:]
	if a := m.l.scale(1); a.Error != "" {
		t.Fatal(a.Error)
	}
	if got := m.route().Slots; !slices.Equal(got, []int{0}) {
		t.Errorf("route %v after scale 1; want [0]", got)
	}
	for _, pid := range gone {
		if len(m.got(pid)) != 0 {
			t.Errorf("worker %d signalled before --settle", pid)
		}
	}
	if ws := m.l.statusReport().Generations[0].Workers; len(ws) != 4 || ws[1].State != "draining" {
		t.Errorf("status while draining: %+v", ws)
	}
	m.advance(100 * time.Millisecond)
	for _, pid := range gone {
		if m.proc(pid).alive || !slices.Equal(m.got(pid), []syscall.Signal{syscall.SIGQUIT}) {
			t.Errorf("worker %d: alive %v, got %v; want drained by SIGQUIT", pid, m.proc(pid).alive, m.got(pid))
		}
	}
	if ws := m.l.statusReport().Generations[0].Workers; len(ws) != 1 {
		t.Errorf("status after the drain: %+v; want one worker", ws)
	}
	m.want("1:current")
	// The next generation keeps the count.
	if a := m.l.scale(3); a.Error != "" {
		t.Fatal(a.Error)
	}
	m.signal(syscall.SIGUSR2)
	if n := len(m.gen(2).workers); n != 3 {
		t.Errorf("the next generation has %d workers; want 3", n)
	}
	// Refused: while an upgrade runs, past the pool, without --workers.
	if a := m.l.scale(2); !strings.Contains(a.Error, "is starting") {
		t.Errorf("scale during an upgrade: %+v", a)
	}
	m.readyAll(2)
	if a := m.l.scale(7); !strings.Contains(a.Error, "at most 6") {
		t.Errorf("scale 7 on a pool of 12 (unbounded --max-draining): %+v", a)
	}
	m2 := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}})
	if a := m2.l.scale(2); !strings.Contains(a.Error, "without --workers") {
		t.Errorf("scale without --workers: %+v", a)
	}
}

// --health with workers: each worker is probed on its own slot once
// ready; the generation is ready when every worker answered 2xx. A
// canary of workers gets its share over all its slots.
func TestMachineWorkersHealthCanary(t *testing.T) {
	m := steeredMachine(t, 12, Config{Workers: 2, Health: &Health{Path: "/healthz"}, Canary: Canary{Pct: 20, For: time.Minute}})
	m.readyAll(1)
	if len(m.probes) != 2 {
		t.Fatalf("%d probes in flight; want one per worker", len(m.probes))
	}
	slots := []int{m.probes[0].spec.slot, m.probes[1].spec.slot}
	slices.Sort(slots)
	if !slices.Equal(slots, []int{0, 1}) {
		t.Fatalf("probes to slots %v; want [0 1]", slots)
	}
	m.answer(200)
	m.want("1:starting")
	m.answer(503)
	m.want("1:starting")
	m.advance(healthRetry)
	m.answer(200)
	m.want("1:current")

	m.signal(syscall.SIGUSR2)
	m.readyAll(2)
	m.answer(200)
	m.answer(200)
	m.want("1:current 2:canary")
	if r := m.route(); !slices.Equal(r.Slots, []int{0, 1}) || !slices.Equal(r.Canary, []int{2, 3}) || r.CanaryPct != 20 {
		t.Fatalf("route %s; want [0 1], canary 20%% to [2 3]", r)
	}
	// A worker of the canary that exits aborts it.
	m.crashWorker(2, 1, exitCode(1))
	m.advance(time.Second)
	m.want("1:current")
	if r := m.route(); !slices.Equal(r.Slots, []int{0, 1}) || len(r.Canary) != 0 {
		t.Errorf("route %s after the abort; want [0 1] alone", r)
	}
	if !strings.Contains(m.l.lastFailure, "canary aborted") {
		t.Errorf("last failure %q", m.l.lastFailure)
	}
}

// A relaunch started again after its own death adopts a generation of
// workers as one: its workers on their slots, the route over them; a
// worker that exits is restarted alone; the next upgrade drains them all.
func TestMachineWorkersAdopt(t *testing.T) {
	a, _ := sdlisten.ParseAddr("127.0.0.1:0")
	p, err := sdlisten.BindPool(a, 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, Listeners: []Listener{{Pool: p}}, Settle: 100 * time.Millisecond,
		MaxDraining: -1, Workers: 2}, func(m *machine) {
		m.l.state = &savedState{Format: 1, LastID: 3}
		for i, pid := range []int{2001, 2002} {
			m.l.state.Gens = append(m.l.state.Gens, savedGen{ID: 3, Pid: pid, Slot: 4 + i, State: "current"})
			m.orphan(pid)
			m.adopting = append(m.adopting, adoptable{id: 3, pid: pid, slot: 4 + i, worker: i})
		}
	})
	m.want("3:current")
	if g := m.gen(3); len(g.workers) != 2 || g.pid != 2001 || m.worker(3, 1).pid != 2002 {
		t.Fatalf("adopted %v with workers %v", g, g.workers)
	}
	if got := m.route().Slots; !slices.Equal(got, []int{4, 5}) {
		t.Errorf("route %v; want the adopted workers' slots [4 5]", got)
	}
	m.exit(m.proc(2002), exitCode(1))
	m.settle()
	m.want("3:current")
	m.advance(backoffMin)
	if w := m.worker(3, 1); w.exited || w.restarts != 1 || w.slot != 5 || envOf(m.procs[len(m.procs)-1].spec, "RELAUNCH_WORKER") != "1" {
		t.Errorf("worker 1 after its exit: exited %v restarts %d slot %d", w.exited, w.restarts, w.slot)
	}
	m.readyWorker(3, 1)
	m.signal(syscall.SIGUSR2)
	m.readyAll(4)
	m.advance(100 * time.Millisecond)
	m.want("4:current")
}
