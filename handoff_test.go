//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/relaunch/relaunch/handoff"
)

// End-to-end tests of the connection handoff with
// testdata/pingpong: long-lived TCP connections that keep their per-
// connection counter across upgrades, and the ways a generation can fail
// in the middle of a handoff.

var pingpong struct {
	once sync.Once
	bin  string
	err  error
}

// needPingpong builds testdata/pingpong once into the harness's directory.
func needPingpong(t testing.TB) string {
	t.Helper()
	needE2E(t, "relaunch")
	pingpong.once.Do(func() {
		pingpong.bin = filepath.Join(e2eDir, "pingpong")
		cmd := exec.Command("go", "build", "-o", pingpong.bin, "./testdata/pingpong")
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			pingpong.err = fmt.Errorf("go build ./testdata/pingpong: %v\n%s", err, out)
		}
	})
	if pingpong.err != nil {
		t.Fatal(pingpong.err)
	}
	return pingpong.bin
}

// startPingpong runs pingpong (with args) under relaunch, waits until gen 1
// is ready and opens n connections to it (dialPPs).
func startPingpong(t testing.TB, n int, args ...string) (*relaunchProc, string, []*ppConn) {
	t.Helper()
	bin := needPingpong(t)
	addr := freeAddr(t)
	p := startRelaunch(t, append([]string{"--listen", addr, "--no-watch-binary", "--ready", "notify", "--", bin}, args...)...)
	p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) ready in", waitPid(t, p, 1)), 10*time.Second)
	return p, addr, dialPPs(t, addr, n)
}

// ppConn is one client of pingpong: it checks that every pong continues
// its own count.
type ppConn struct {
	c net.Conn
	r *bufio.Reader
	n int // pongs received
}

func dialPP(addr string) (*ppConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &ppConn{c: c, r: bufio.NewReader(c)}, nil
}

// ping sends a ping and checks the answer is the next pong.
func (c *ppConn) ping(timeout time.Duration) error {
	if err := c.sendPing(); err != nil {
		return err
	}
	return c.readPong(timeout)
}

func (c *ppConn) sendPing() error {
	c.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := io.WriteString(c.c, "ping\n")
	return err
}

func (c *ppConn) readPong(timeout time.Duration) error {
	c.c.SetReadDeadline(time.Now().Add(timeout))
	line, err := c.r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("after pong %d: %w", c.n, err)
	}
	if want := fmt.Sprintf("pong %d\n", c.n+1); line != want {
		return fmt.Errorf("after pong %d: got %q, want %q (the count did not carry over)", c.n, line, want)
	}
	c.n++
	return nil
}

// who asks which generation serves the connection: "gen G pid P".
func (c *ppConn) who() (string, error) {
	c.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.c, "who\n"); err != nil {
		return "", err
	}
	line, err := c.r.ReadString('\n')
	return strings.TrimSpace(line), err
}

// dialPPs opens n connections and pings each once, 8 at a time.
func dialPPs(t testing.TB, addr string, n int) []*ppConn {
	t.Helper()
	conns := make([]*ppConn, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := dialPP(addr)
			if err == nil {
				conns[i] = c
				err = c.ping(10 * time.Second)
			}
			if err != nil {
				errs <- fmt.Errorf("connection %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.c.Close()
			}
		}
	})
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return conns
}

// forEach runs fn on every connection, 16 at a time, and returns the errors
// by connection index.
func forEach(conns []*ppConn, fn func(c *ppConn) error) map[int]error {
	var mu sync.Mutex
	errs := map[int]error{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, c := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(c); err != nil {
				mu.Lock()
				errs[i] = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

// ppLoad pings on every connection every `every`.
type ppLoad struct {
	conns []*ppConn
	pongs atomic.Int64
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	errs  map[int]error // the first error of each connection: it stops pinging
}

func startPPLoad(conns []*ppConn, every time.Duration) *ppLoad {
	l := &ppLoad{conns: conns, stop: make(chan struct{}), errs: map[int]error{}}
	for i, c := range conns {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			// Spread the pings over the period.
			select {
			case <-time.After(every * time.Duration(i) / time.Duration(len(conns))):
			case <-l.stop:
				return
			}
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				if err := c.ping(5 * time.Second); err != nil {
					l.mu.Lock()
					l.errs[i] = err
					l.mu.Unlock()
					return
				}
				l.pongs.Add(1)
				select {
				case <-tick.C:
				case <-l.stop:
					return
				}
			}
		}()
	}
	return l
}

func (l *ppLoad) halt() {
	close(l.stop)
	l.wg.Wait()
}

// waitPongs waits until the load has n pongs in all.
func (l *ppLoad) waitPongs(t testing.TB, n int64, timeout time.Duration) {
	t.Helper()
	if !waitUntil(timeout, 10*time.Millisecond, func() bool { return l.pongs.Load() >= n }) {
		l.mu.Lock()
		t.Fatalf("%d pongs after %v, want %d; errors: %v", l.pongs.Load(), timeout, n, l.errs)
	}
}

// 200 long-lived connections pinging every 100ms across 10 upgrades: none
// dropped, no pong missed, every counter continues, and each old generation
// exits right after handing over instead of draining.
func TestHandoffUpgrades(t *testing.T) {
	t.Parallel()
	const clients, upgrades = 200, 10
	p, _, conns := startPingpong(t, clients)
	load := startPPLoad(conns, 100*time.Millisecond)
	load.waitPongs(t, 2*clients, 10*time.Second)
	var exits []time.Duration
	for g := 2; g <= upgrades+1; g++ {
		before := load.pongs.Load()
		upgradeTo(t, p, g)
		old := genPids(p)[g-1]
		p.WaitLog(t, fmt.Sprintf("gen %d (pid %d) draining", g-1, old), 10*time.Second)
		drained := time.Now()
		waitHandover(t, p, g-1, clients)
		exits = append(exits, time.Since(drained))
		// Every connection pings at least twice on the new generation.
		load.waitPongs(t, before+2*clients, 10*time.Second)
	}
	load.halt()
	t.Logf("%d pongs; drain signal to exit of each old generation: %v", load.pongs.Load(), exits)
	if len(load.errs) > 0 {
		t.Errorf("%d of %d connections failed (dropped, or a pong missed or out of count):", len(load.errs), clients)
		for i, err := range load.errs {
			t.Errorf("  connection %d: %v", i, err)
		}
	}
	for i, d := range exits {
		if d > 2*time.Second {
			t.Errorf("gen %d exited %v after its drain signal; want it right after handing over", i+1, d)
		}
	}
	pids := genPids(p)
	want := fmt.Sprintf("gen %d pid %d", upgrades+1, pids[upgrades+1])
	errs := forEach(conns, func(c *ppConn) error {
		if who, err := c.who(); err != nil || who != want {
			return fmt.Errorf("who: %q, %v; want %q", who, err, want)
		}
		return c.ping(5 * time.Second) // the count still continues
	})
	for i, err := range errs {
		t.Errorf("connection %d at the end: %v", i, err)
	}
	noProcessesLeft(t, genPidRange(p, 1, upgrades))
	if p.Exited() {
		t.Fatalf("relaunch exited:\n%s", p.Stderr())
	}
}

// pingAll pings every connection once: the indexes of those that answered
// with the next count, and of those that are closed.
func pingAll(conns []*ppConn) (alive, closed []int, other map[int]error) {
	errs := forEach(conns, func(c *ppConn) error { return c.ping(5 * time.Second) })
	other = map[int]error{}
	for i := range conns {
		switch err := errs[i]; {
		case err == nil:
			alive = append(alive, i)
		case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
			closed = append(closed, i)
		default:
			other[i] = err
		}
	}
	return alive, closed, other
}

// servedBy checks that the connections at idx are served by generation gen.
func servedBy(t testing.TB, p *relaunchProc, conns []*ppConn, idx []int, gen int) {
	t.Helper()
	want := fmt.Sprintf("gen %d pid %d", gen, genPids(p)[gen])
	for _, i := range idx {
		if who, err := conns[i].who(); err != nil || who != want {
			t.Errorf("connection %d: who = %q, %v; want %q", i, who, err, want)
		}
	}
}

// waitHandover waits until generation gen has handed over n connections,
// then until it has exited with status 0.
func waitHandover(t testing.TB, p *relaunchProc, gen, n int) {
	t.Helper()
	pid := genPids(p)[gen]
	p.WaitLog(t, fmt.Sprintf("handoff: gen %d (pid %d) handed over %d connections", gen, pid, n), 10*time.Second)
	p.WaitLog(t, fmt.Sprintf("gen %d (pid %d) exited: status 0", gen, pid), 10*time.Second)
}

// checkContinue pings every connection once and checks that alive of them
// continue their count, served by generation gen, and that the others are
// closed; then that a new connection is served by gen too.
func checkContinue(t testing.TB, p *relaunchProc, addr string, conns []*ppConn, alive, gen int) {
	t.Helper()
	cont, closed, other := pingAll(conns)
	if len(cont) != alive || len(closed) != len(conns)-alive || len(other) > 0 {
		t.Fatalf("%d connections continue, %d are closed, other errors %v; want %d and %d", len(cont), len(closed), other, alive, len(conns)-alive)
	}
	servedBy(t, p, conns, cont, gen)
	stillServes(t, p, addr, gen)
}

// checkClosed checks that every connection gets EOF within 5s: closed (why).
func checkClosed(t testing.TB, conns []*ppConn, why string) {
	t.Helper()
	for i, c := range conns {
		c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.r.ReadByte(); err != io.EOF {
			t.Errorf("connection %d: %v; want EOF: %s", i, err, why)
		}
	}
}

// stillServes checks that relaunch is up and a new connection is served by
// generation gen.
func stillServes(t testing.TB, p *relaunchProc, addr string, gen int) {
	t.Helper()
	if p.Exited() {
		t.Fatalf("relaunch exited:\n%s", p.Stderr())
	}
	c, err := dialPP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.c.Close()
	if err := c.ping(5 * time.Second); err != nil {
		t.Fatalf("a new connection: %v", err)
	}
	servedBy(t, p, []*ppConn{c}, []int{0}, gen)
}

func TestHandoffFailures(t *testing.T) {
	t.Parallel()

	// The old generation hands over 40 of its 100 connections and dies:
	// the 40 continue on the new one, the 60 die with it.
	t.Run("sender dies half-way", func(t *testing.T) {
		t.Parallel()
		p, addr, conns := startPingpong(t, 100, "-gen", "1", "-handoff-die-after", "40")
		upgradeTo(t, p, 2)
		pid1 := genPids(p)[1]
		p.WaitLog(t, fmt.Sprintf("handoff: gen 1 (pid %d) went away without END after handing over 40 connections; relaunch keeps what it sent", pid1), 10*time.Second)
		p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited: killed by SIGKILL", pid1), 10*time.Second)
		checkContinue(t, p, addr, conns, 40, 2)
	})

	// The new generation takes 30 of 100 connections and dies: relaunch
	// restarts it, and the next generation gets the other 70.
	t.Run("receiver dies", func(t *testing.T) {
		t.Parallel()
		p, addr, conns := startPingpong(t, 100, "-gen", "2", "-receive-die-after", "30")
		upgradeTo(t, p, 2)
		pid2 := genPids(p)[2]
		p.WaitLog(t, fmt.Sprintf("gen 2 (pid %d) exited by itself: killed by SIGKILL", pid2), 10*time.Second)
		p.WaitLog(t, fmt.Sprintf("handoff: gen 2 (pid %d) took 30 connections", pid2), 10*time.Second)
		p.WaitLog(t, fmt.Sprintf("gen 3 (pid %d) ready in", waitPid(t, p, 3)), 10*time.Second)
		p.WaitLog(t, fmt.Sprintf("handoff: gen 1 (pid %d) handed over 100 connections", genPids(p)[1]), 10*time.Second)
		checkContinue(t, p, addr, conns, 70, 3)
	})

	// Malformed messages and fds that are not connections: each rejected
	// and closed, with a log line; the real handoff beside them is whole.
	t.Run("malformed messages", func(t *testing.T) {
		t.Parallel()
		p, addr, conns := startPingpong(t, 50, "-gen", "1", "-send-garbage")
		upgradeTo(t, p, 2)
		pid1 := genPids(p)[1]
		for i, why := range []string{
			"unknown message type 127",
			"a connection message with 0 fds instead of 1",
			"the fd is not a socket but a pipe",
			"a connection message with 2 fds instead of 1",
			"a state over 65536 bytes",
		} {
			p.WaitLog(t, fmt.Sprintf("handoff: gen 1 (pid %d): rejected message %d: %s", pid1, i+1, why), 10*time.Second)
		}
		reply := p.WaitLog(t, "garbage: relaunch replied", 10*time.Second)
		if !containsAll(reply, "type 6", "5 of 5 messages rejected") {
			t.Errorf("relaunch's reply to END: %q; want an ERROR (type 6) saying 5 of 5 rejected", reply)
		}
		p.WaitLog(t, "garbage: relaunch closed 4 of the 4 fds it was sent", 10*time.Second)
		waitHandover(t, p, 1, 50)
		checkContinue(t, p, addr, conns, 50, 2)
	})

	// A generation that does not opt in drains as before: it closes its
	// connections after the exchange in progress; relaunch holds nothing.
	// And a process outside the generations is refused.
	t.Run("no opt-in", func(t *testing.T) {
		t.Parallel()
		p, addr, conns := startPingpong(t, 20, "-gen", "1", "-no-handoff")
		pid1 := genPids(p)[1]
		env := procEnviron(t, pid1)
		if !strings.HasPrefix(env[handoff.Env], "/") {
			t.Fatalf("gen 1 has %s=%q", handoff.Env, env[handoff.Env])
		}
		if _, err := handoff.DialPath(env[handoff.Env]); !errors.Is(err, handoff.ErrRefused) || !strings.Contains(err.Error(), "not a process of any generation") {
			t.Errorf("the test process as a sender: %v; want refused", err)
		}
		upgradeTo(t, p, 2)
		p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited: status 0", pid1), 10*time.Second)
		checkClosed(t, conns, "closed by gen 1's usual drain")
		if strings.Contains(p.Stderr(), "handed over") {
			t.Errorf("relaunch logged a handoff for a generation that did not opt in")
		}
		stillServes(t, p, addr, 2)
	})

	// The current generation does not receive: relaunch holds the
	// connections (their pings wait) and gives them to the next one.
	t.Run("held for the next generation", func(t *testing.T) {
		t.Parallel()
		p, addr, conns := startPingpong(t, 20, "-gen", "2", "-no-receive")
		upgradeTo(t, p, 2)
		waitHandover(t, p, 1, 20)
		for _, c := range conns {
			if err := c.sendPing(); err != nil {
				t.Fatal(err)
			}
		}
		upgradeTo(t, p, 3)
		errs := forEach(conns, func(c *ppConn) error { return c.readPong(10 * time.Second) })
		for i, err := range errs {
			t.Errorf("connection %d: the ping sent while relaunch held it: %v", i, err)
		}
		all := make([]int, len(conns))
		for i := range all {
			all[i] = i
		}
		servedBy(t, p, conns, all, 3)
		stillServes(t, p, addr, 3)
	})

	// relaunch stops while it holds connections nobody took: it closes
	// them and says how many.
	t.Run("closed when relaunch stops", func(t *testing.T) {
		t.Parallel()
		p, _, conns := startPingpong(t, 15, "-gen", "2", "-no-receive")
		upgradeTo(t, p, 2)
		pid2 := genPids(p)[2]
		waitHandover(t, p, 1, 15)
		p.Signal(syscall.SIGTERM)
		if code := p.MustWait(10 * time.Second); code != 0 {
			t.Errorf("relaunch exited with %d, want 0", code)
		}
		p.WaitLog(t, fmt.Sprintf("pingpong: gen 2 pid %d: no handoff, draining the usual way: handoff: hello: refused by relaunch: gen 2 is the current generation", pid2), time.Second)
		p.WaitLog(t, "handoff: relaunch stops holding 15 connections that no generation took: closed", time.Second)
		checkClosed(t, conns, "relaunch closed it")
	})
}

// BenchmarkHandoff: one op is an upgrade of pingpong holding N idle
// connections, from SIGUSR2 to the old generation's exit. ms/handover is
// the part from the drain signal (relaunch's log line) to the new
// generation having received all N; ms/send is the old generation's own
// measure (from its drain to relaunch's reply to END).
func BenchmarkHandoff(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			var rl syscall.Rlimit
			if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); rl.Cur < uint64(n+1000) {
				rl.Cur = uint64(n + 1000)
				rl.Max = max(rl.Max, rl.Cur)
				if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
					b.Skipf("needs RLIMIT_NOFILE >= %d: %v", n+1000, err)
				}
			}
			p, _, conns := startPingpong(b, n, "-report", strconv.Itoa(n))
			g := 1
			var handover, send time.Duration
			for b.Loop() {
				g++
				prev := genPids(p)[g-1]
				p.Signal(syscall.SIGUSR2)
				pid := waitPid(b, p, g)
				p.WaitLog(b, fmt.Sprintf("gen %d (pid %d) ready in", g, pid), 30*time.Second)
				p.WaitLog(b, fmt.Sprintf("gen %d (pid %d) draining", g-1, prev), 30*time.Second)
				t0 := time.Now()
				p.WaitLog(b, fmt.Sprintf("pingpong: gen %d pid %d: received %d connections", g, pid, n), 60*time.Second)
				handover += time.Since(t0)
				line := p.WaitLog(b, fmt.Sprintf("pingpong: gen %d pid %d: handed over %d connections in ", g-1, prev, n), 30*time.Second)
				if d, err := time.ParseDuration(strings.Fields(strings.SplitAfter(line, " connections in ")[1])[0]); err == nil {
					send += d
				}
				p.WaitLog(b, fmt.Sprintf("gen %d (pid %d) exited: status 0", g-1, prev), 30*time.Second)
			}
			b.ReportMetric(float64(handover.Milliseconds())/float64(b.N), "ms/handover")
			b.ReportMetric(float64(handover.Microseconds())/float64(b.N)/float64(n), "µs/conn")
			b.ReportMetric(float64(send.Milliseconds())/float64(b.N), "ms/send")
			b.StopTimer()
			if errs := forEach(conns, func(c *ppConn) error { return c.ping(10 * time.Second) }); len(errs) > 0 {
				b.Fatalf("%d connections failed after the handovers, e.g. %v", len(errs), errs)
			}
		})
	}
}

// relaunch reexec between upgrades of an app that hands its connections
// over: the re-executed relaunch keeps the handoff socket and the current
// generation's receiver, so each next upgrade still hands every connection
// over, and none is dropped.
func TestHandoffReexec(t *testing.T) {
	t.Parallel()
	const clients = 50
	p, _, conns := startPingpong(t, clients)
	load := startPPLoad(conns, 100*time.Millisecond)
	load.waitPongs(t, 2*clients, 10*time.Second)
	for g := 2; g <= 4; g++ {
		p.Signal(syscall.SIGTTIN)
		p.WaitLogN(t, "took over in", g-1, 10*time.Second)
		before := load.pongs.Load()
		upgradeTo(t, p, g)
		waitHandover(t, p, g-1, clients)
		load.waitPongs(t, before+2*clients, 10*time.Second)
	}
	load.halt()
	for i, err := range load.errs {
		t.Errorf("connection %d: %v", i, err)
	}
	want := fmt.Sprintf("gen 4 pid %d", genPids(p)[4])
	for i, err := range forEach(conns, func(c *ppConn) error {
		if who, err := c.who(); err != nil || who != want {
			return fmt.Errorf("who: %q, %v; want %q", who, err, want)
		}
		return nil
	}) {
		t.Errorf("connection %d at the end: %v", i, err)
	}
	if strings.Contains(p.Stderr(), "reexec failed") {
		t.Errorf("a reexec failed:\n%s", p.Stderr())
	}
}
