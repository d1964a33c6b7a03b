//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaunch/relaunch/internal/loadtest"
)

// Real servers we did not write, under relaunch (docs/apps.md, "Works with"): each
// takes its listener from fd 3 its own way, drains on its own graceful
// signal, and goes through 5 upgrades (SIGUSR2) under load. Every upgrade
// must make the next generation ready, the old one must exit by itself with
// status 0 (a graceful drain, not a kill), nothing of the old generations
// (masters and workers) may be left, and the load must see no error, except
// for uvicorn, which closes connections it accepted but had not read yet
// when it shuts down: TestServerUvicorn asserts exactly that loss, with the
// steered and the shared handover.
//
// The servers come from Debian 12 packages (.ci/run installs them): gunicorn
// 20.1, uvicorn 0.17, haproxy 2.6, nginx 1.22, puma 5.6 (Ruby 3.1), nodejs;
// Python is any python3.
// The gunicorn and uvicorn scripts run Debian's /usr/bin/python3.
//
// Node's http module and a Python server blocking in accept() are also run
// by TestReadyListenPythonAndNode (3 upgrades); TestServerNode reuses the
// same testdata/apps/server.js for the 5 upgrades here.

// serverUpgrades is the number of upgrades each server goes through.
const serverUpgrades = 5

// testdataPath is the absolute path of a file under testdata/.
func testdataPath(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", rel))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// serverCase is one server under relaunch.
type serverCase struct {
	// args are relaunch's options after "--listen ADDR --no-watch-binary":
	// the drain signal, the readiness mode, "--" and the command.
	args []string
	// answer is in every answer of the server ("version=nginx ").
	answer string
	// ready: every generation's "ready in" log line contains one of these.
	ready []string
	// learning: under auto, the first learnGens generations may be ready
	// by one of these too (what they show teaches relaunch what to wait
	// for).
	learning  []string
	learnGens int
	// exit ends each old generation's exit line: "exited: status 0" when
	// empty (a graceful drain).
	exit string
	// gens: the answer says "gen=N" (RELAUNCH_GENERATION).
	gens bool
	// rate, when > 0, paces the load (requests per second) instead of
	// running its clients flat out.
	rate float64
}

// serverRun is what runServer measured.
type serverRun struct {
	p       *relaunchProc
	res     *loadtest.Result
	windows []upgradeWindow
}

// upgradeWindow is one upgrade, as the test saw it: from just before the
// SIGUSR2 to just after the old generation's exit was logged. Whatever the
// handover does to a request happens while the request overlaps it.
type upgradeWindow struct {
	gen      int // the new generation
	from, to time.Time
}

// runServer starts relaunch on addr with c, puts load on it, runs
// serverUpgrades upgrades, checks each one (ready, old generation gone with
// status 0, nothing left behind, the last generation serves), and returns
// the load's result, unchecked.
func runServer(t *testing.T, addr string, c serverCase) serverRun {
	t.Helper()
	args := append([]string{"--listen", addr, "--no-watch-binary"}, c.args...)
	// No __pycache__ in testdata from the Python servers.
	p := startRelaunchOpts(t, procOpts{Env: []string{"PYTHONDONTWRITEBYTECODE=1"}}, args...)
	waitHTTP(t, addr, c.answer, 20*time.Second)
	checkReadyLine(t, p, 1, c.readyBy(1))
	exit := c.exit
	if exit == "" {
		exit = "exited: status 0"
	}

	load := startLoadConfig(t, loadtest.Config{Addr: addr, Clients: loadClients, KeepAliveFraction: 0.5, Timeout: 20 * time.Second, Rate: c.rate})
	waitLoadOK(t, load, 1, 10*time.Second)
	run := serverRun{p: p}
	var old []int // every process of the old generations
	last := serverUpgrades + 1
	for g := 2; g <= last; g++ {
		prev := genPids(p)[g-1]
		old = append(append(old, prev), procDescendants(prev)...) // its workers
		from := time.Now()
		upgradeTo(t, p, g)
		checkReadyLine(t, p, g, c.readyBy(g))
		line := p.WaitLog(t, fmt.Sprintf("gen %d (pid %d) exited", g-1, prev), 60*time.Second) // puma under a busy machine finishes its keep-alive clients slowly
		run.windows = append(run.windows, upgradeWindow{gen: g, from: from, to: time.Now()})
		if !strings.HasSuffix(line, exit) {
			t.Errorf("gen %d did not drain gracefully: %q", g-1, line)
		}
	}
	// The last generation serves the load before it stops.
	ok, _ := load.Progress()
	waitLoadOK(t, load, ok+20, 10*time.Second)
	run.res = load.Stop()
	t.Logf("load: %s", run.res)

	cur := genPids(p)[last]
	if c.gens && run.res.Gens[strconv.Itoa(last)] == 0 {
		t.Errorf("gen %d answered none of the load: %v", last, run.res.Gens)
	}
	body := waitHTTP(t, addr, c.answer, 5*time.Second)
	if c.gens && bodyField(body, "gen") != strconv.Itoa(last) {
		t.Errorf("after %d upgrades the answer is %q; want gen=%d", serverUpgrades, body, last)
	}
	if pid, err := strconv.Atoi(bodyField(body, "pid")); err != nil {
		t.Errorf("answer %q: no pid", body)
	} else if pid != cur && !slices.Contains(procDescendants(cur), pid) {
		t.Errorf("answer %q is from pid %d, not gen %d (pid %d) or its workers %v", body, pid, last, cur, procDescendants(cur))
	}
	noProcessesLeft(t, old)
	checkOnlyGen(t, p, last)
	return run
}

// readyBy is what generation gen may be ready by.
func (c serverCase) readyBy(gen int) []string {
	if gen <= c.learnGens {
		return append(slices.Clip(c.ready), c.learning...)
	}
	return c.ready
}

// checkReadyLine checks how relaunch took generation gen as ready.
func checkReadyLine(t *testing.T, p *relaunchProc, gen int, want []string) {
	t.Helper()
	pid := waitPid(t, p, gen)
	line := p.WaitLog(t, fmt.Sprintf("gen %d (pid %d) ready in", gen, pid), 20*time.Second)
	for _, w := range want {
		if strings.Contains(line, w) {
			return
		}
	}
	t.Errorf("gen %d: ready line %q; want it ready by one of %q", gen, line, want)
}

// checkNoErrors fails the test on any failed request.
func checkNoErrors(t *testing.T, run serverRun) {
	t.Helper()
	if res := run.res; res.Failed() > 0 || res.OK == 0 {
		t.Errorf("load: %d of %d requests failed over %d upgrades (want 0), %d ok: %v",
			res.Failed(), res.Total, serverUpgrades, res.OK, res.ErrorMessages)
	}
}

// gunicorn 20.1 reads LISTEN_FDS itself (strict LISTEN_PID check) when it
// is given no --bind: `--bind fd://3` would take fd 3 a second time and
// fail with EBADF. Its master sends READY=1 as soon as it has the socket,
// before any worker exists, so --ready auto would learn that early signal;
// gthread workers poll the socket with epoll, which relaunch sees: --ready
// listen hands over when a worker of the new generation accepts, and a
// deploy whose workers cannot load the app is a failed upgrade (with the
// master's READY=1 it would be taken as ready, the old generation drained,
// and the service down). Sync workers' select() is seen too, and auto waits
// for READY=1 and that: TestServerGunicornAuto. TERM is gunicorn's
// graceful stop.
func TestServerGunicorn(t *testing.T) {
	t.Parallel()
	needE2E(t, "relaunch")
	gunicorn := needCommand(t, "gunicorn", "gunicorn")
	addr := freeAddr(t)
	// The app is a copy, so that a bad deploy can replace it.
	dir := t.TempDir()
	src, err := os.ReadFile(testdataPath(t, "servers/app.py"))
	if err != nil {
		t.Fatal(err)
	}
	app := filepath.Join(dir, "app.py")
	if err := os.WriteFile(app, src, 0o644); err != nil {
		t.Fatal(err)
	}
	run := runServer(t, addr, serverCase{
		args: []string{"--drain-signal", "TERM", "--ready", "listen", "--",
			gunicorn, "--workers", "2", "--worker-class", "gthread", "--threads", "4",
			"--chdir", dir, "app:wsgi"},
		answer: "version=gunicorn ",
		ready:  []string{"polls fd 3 (epoll"},
		gens:   true,
	})
	checkNoErrors(t, run)

	// A bad deploy: the workers cannot import the app; the master exits
	// with status 3 ("Worker failed to boot") and gen 6 keeps serving.
	last := serverUpgrades + 1
	if err := os.WriteFile(app, []byte("raise ImportError('a bad deploy')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run.p.Signal(syscall.SIGUSR2)
	line := run.p.WaitLog(t, "upgrade failed", 20*time.Second)
	if want := fmt.Sprintf("gen %d (pid %d) still serves", last, genPids(run.p)[last]); !strings.Contains(line, want) {
		t.Errorf("the bad deploy's log line %q should say %q", line, want)
	}
	waitHTTP(t, addr, fmt.Sprintf("gen=%d", last), 5*time.Second)
}

// gunicorn under --ready auto with no option, and its default sync
// workers, which wait with select() (decoded from their memory). The
// master says READY=1 before any worker exists: gen 1 is taken at its word,
// then watched until a worker accepts, and from then on every generation is
// ready only once it has sent READY=1 and a worker polls the socket. Gen 2,
// started as soon as gen 1 serves, may come before relaunch has seen gen 1's
// busy workers wait in select(): it may be ready by READY=1 alone.
func TestServerGunicornAuto(t *testing.T) {
	t.Parallel()
	needE2E(t, "relaunch")
	gunicorn := needCommand(t, "gunicorn", "gunicorn")
	appDir := filepath.Dir(testdataPath(t, "servers/app.py"))
	run := runServer(t, freeAddr(t), serverCase{
		args:   []string{"--drain-signal", "TERM", "--", gunicorn, "--workers", "2", "--chdir", appDir, "app:wsgi"},
		answer: "version=gunicorn ",
		// A busy machine may start gunicorn in over 2s: gen 1, before
		// anything was learned, is then ready by auto's blind fallback.
		learning:  []string{": READY=1", ": alive for 2s"},
		learnGens: 2,
		ready:     []string{"READY=1, then pid ", ", then READY=1"},
		gens:      true,
	})
	checkNoErrors(t, run)
	run.p.WaitLog(t, "waits for both from now on", time.Second)
	logReadyTimes(t, run.p)
}

// logReadyTimes logs each generation's ready line: how long it took, and
// by what.
func logReadyTimes(t *testing.T, p *relaunchProc) {
	t.Helper()
	for _, line := range strings.Split(p.Stderr(), "\n") {
		if strings.Contains(line, ") ready in ") {
			t.Log(line)
		}
	}
}

// uvicorn 0.17 takes the socket with --fd 3 and drains on TERM. asyncio
// polls it with epoll: --ready listen. On shutdown uvicorn stops accepting,
// then closes every connection that has no request in progress, including
// fresh ones it accepted whose request it had not read yet: those requests
// are lost (the client sees the connection closed or reset before any
// answer). That is uvicorn's own shutdown, not the handover. With a shared
// socket, the old uvicorn accepts from the one queue until it shuts down, so
// it loses a few; with the steered handover (relaunch's default for TCP) it
// gets no new connection for the --settle time before TERM, so the requests
// on the connections it has accepted arrive and are answered. Both modes
// run: the test asserts that every failure is exactly that loss, at most
// one per load client and upgrade, and logs how many there were.
func TestServerUvicorn(t *testing.T) {
	t.Parallel()
	needE2E(t, "relaunch")
	uvicorn := needCommand(t, "uvicorn", "uvicorn")
	appDir := filepath.Dir(testdataPath(t, "servers/app.py"))
	for _, handover := range []string{"auto", "shared"} {
		t.Run("handover="+handover, func(t *testing.T) {
			t.Parallel()
			addr := freeAddr(t)
			run := runServer(t, addr, serverCase{
				args: []string{"--handover", handover, "--drain-signal", "TERM", "--ready", "listen", "--",
					uvicorn, "--fd", "3", "--no-access-log", "--app-dir", appDir, "app:asgi"},
				answer: "version=uvicorn ",
				ready:  []string{"polls fd 3 (epoll"},
				gens:   true,
			})
			checkUvicornLoss(t, run)
		})
	}
}

// checkUvicornLoss checks that every failed request is one that uvicorn's
// shutdown closed unanswered during an upgrade, and logs the count.
func checkUvicornLoss(t *testing.T, run serverRun) {
	t.Helper()
	res := run.res
	if res.OK == 0 {
		t.Fatalf("no request succeeded: %s", res)
	}
	lost := map[loadtest.Kind]int{}
	perUpgrade := map[int]int{}
	for _, s := range res.Samples {
		if s.Err == "" {
			continue
		}
		lost[s.Err]++
		during := 0
		for _, w := range run.windows {
			if !s.Start.After(w.to) && !s.Start.Add(s.Latency).Before(w.from) {
				during = w.gen
			}
		}
		perUpgrade[during]++
		switch {
		case s.Err != loadtest.EOF && s.Err != loadtest.Reset:
			t.Errorf("a request failed otherwise than closed or reset before its answer: %+v", s)
		case !s.NewConn:
			t.Errorf("a request failed on a reused keep-alive connection, not retried: %+v", s)
		case during == 0:
			t.Errorf("a request failed outside every upgrade: %+v", s)
		}
	}
	// uvicorn stops accepting before it closes the idle connections, once:
	// each client, with one request in flight at a time, can lose at most
	// one request per upgrade.
	for gen, n := range perUpgrade {
		if gen != 0 && n > loadClients {
			t.Errorf("%d requests lost in the upgrade to gen %d; more than the %d clients is not uvicorn's shutdown: %v",
				n, gen, loadClients, res.ErrorMessages)
		}
	}
	t.Logf("uvicorn lost %d of %d requests over %d upgrades (%d eof, %d reset; by upgrade %v): requests on new "+
		"connections that the draining uvicorn had accepted but not read, closed by its shutdown; %d keep-alive requests were retried",
		res.Failed(), res.Total, serverUpgrades, lost[loadtest.EOF], lost[loadtest.Reset], perUpgrade, res.Retried)
}

// haproxy 2.6 takes the socket with `bind fd@3` and answers by itself (no
// backend). Run in the foreground without master-worker mode, it is the
// process relaunch signals: USR1 is its soft stop (TERM is a hard stop, QUIT
// only flushes pools). It polls with epoll: --ready listen.
func TestServerHAProxy(t *testing.T) {
	t.Parallel()
	needE2E(t, "relaunch")
	haproxy := needCommand(t, "haproxy", "haproxy")
	checkNoErrors(t, runServer(t, freeAddr(t), serverCase{
		args: []string{"--drain-signal", "USR1", "--ready", "listen", "--",
			haproxy, "-db", "-f", testdataPath(t, "servers/haproxy.cfg")},
		answer: "version=haproxy ",
		ready:  []string{"polls fd 3 (epoll"},
		gens:   true,
	}))
}

// nginx 1.22 takes the sockets named in the NGINX environment variable
// ("3;") for the `listen` directives with exactly their address. Its master
// only supervises; the workers poll with epoll: --ready listen. QUIT is its
// graceful stop. A pid file per generation: the generations overlap, and an
// exiting master deletes the pid file (the new master's, if they share it).
// The config has `accept_mutex on`: nginx leaves an inherited socket
// blocking, and a worker that loses an accept race then hangs in accept4()
// through its drain (testdata/servers/nginx.conf says more).
func TestServerNginx(t *testing.T) {
	t.Parallel()
	runNginx(t, true)
}

// nginx without accept_mutex, its workers all polling the socket, as its
// own binary upgrade runs it: relaunch passes the socket non-blocking
// (--nonblocking), so the worker that loses a race gets EAGAIN instead of
// hanging in accept4() through its drain.
func TestServerNginxNonblocking(t *testing.T) {
	t.Parallel()
	runNginx(t, false)
}

func runNginx(t *testing.T, mutex bool) {
	needE2E(t, "relaunch")
	nginx := needCommand(t, "nginx", "nginx")
	addr := freeAddr(t)
	dir := t.TempDir()
	tmpl, err := os.ReadFile(testdataPath(t, "servers/nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.ReplaceAll(string(tmpl), "@LISTEN@", addr)
	args := []string{"--ready", "listen"}
	if !mutex {
		const on = "accept_mutex on;"
		if !strings.Contains(conf, on) {
			t.Fatalf("testdata/servers/nginx.conf has no %q to turn off", on)
		}
		conf = strings.ReplaceAll(conf, on, "accept_mutex off;")
		args = append(args, "--nonblocking")
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `NGINX="3;" exec "$1" -e stderr -p "$2" -c nginx.conf -g "pid nginx-$RELAUNCH_GENERATION.pid;"`
	run := runServer(t, addr, serverCase{
		args:   append(args, "--", "/bin/sh", "-c", script, "sh", nginx, dir),
		answer: "version=nginx ",
		ready:  []string{"polls fd 3 (epoll"},
	})
	checkNoErrors(t, run)
	if n := strings.Count(run.p.Stderr(), `using inherited sockets from "3;"`); n != serverUpgrades+1 {
		t.Errorf("%d of %d nginx generations said they use the inherited socket", n, serverUpgrades+1)
	}
	// Each generation had its own pid file; the last one's is still there.
	last := serverUpgrades + 1
	if !mutex {
		// What makes the upgrades above safe: every worker polls a
		// non-blocking socket (a blocking one passes them as well, mostly).
		for _, w := range procDescendants(genPids(run.p)[last]) {
			if fl, err := fdFlags(w, 3); err != nil || fl&syscall.O_NONBLOCK == 0 {
				t.Errorf("nginx worker %d: fd 3 flags %#o, %v; want O_NONBLOCK", w, fl, err)
			}
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("nginx-%d.pid", last)))
	if pid := genPids(run.p)[last]; err != nil || strings.TrimSpace(string(data)) != strconv.Itoa(pid) {
		t.Errorf("nginx-%d.pid: %q, %v; want gen %d's pid %d", last, data, err, last, pid)
	}
}

// fdFlags reads the file status flags of pid's fd (octal in fdinfo).
func fdFlags(pid, fd int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "flags:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			return int(n), err
		}
	}
	return 0, fmt.Errorf("no flags in /proc/%d/fdinfo/%d", pid, fd)
}

// node's http module: server.listen({fd: 3}) (testdata/apps/server.js, which
// drains on TERM). libuv polls with epoll: --ready listen.
func TestServerNode(t *testing.T) {
	t.Parallel()
	needE2E(t, "relaunch")
	node := needCommand(t, "node", "nodejs")
	checkNoErrors(t, runServer(t, freeAddr(t), serverCase{
		args:   []string{"--drain-signal", "TERM", "--ready", "listen", "--", node, testdataPath(t, "apps/server.js")},
		answer: "version=node ",
		ready:  []string{"polls fd 3 (epoll"},
		gens:   true,
	}))
}

// Python's http.server (ThreadingHTTPServer) on fd 3, standard library only
// (testdata/servers/http_server.py). It says READY=1 itself: --ready
// notify (under auto, its poll(2) would be seen too:
// TestReadySelectAndPollServers). It drains on TERM.
func TestServerPythonHTTPServer(t *testing.T) {
	t.Parallel()
	needE2E(t, "relaunch")
	python := needCommand(t, "python3", "python3")
	checkNoErrors(t, runServer(t, freeAddr(t), serverCase{
		args:   []string{"--drain-signal", "TERM", "--ready", "notify", "--", python, testdataPath(t, "servers/http_server.py")},
		answer: "version=pyhttp ",
		ready:  []string{"READY=1"},
		gens:   true,
	}))
}

// Go with coreos/go-systemd's activation.Listeners() (testdata/gosystemd),
// which checks LISTEN_PID, sends READY=1 and drains on QUIT or TERM: the
// defaults (--ready auto, --drain-signal QUIT) fit.
func TestServerGoSystemd(t *testing.T) {
	t.Parallel()
	needE2E(t, "relaunch", "gosystemd")
	checkNoErrors(t, runServer(t, freeAddr(t), serverCase{
		args:   []string{"--", gosystemdBin},
		answer: "gosystemd pid=",
		// auto takes the first of READY=1 and the listener in epoll, and
		// this app shows both at once.
		ready: []string{"READY=1", "polls fd 3 (epoll"},
	}))
}

// puma 5.6 (Debian's) takes the socket from LISTEN_FDS when its own binding
// matches it: -b tcp://ADDR with relaunch's --listen address. In single
// mode its server thread waits with select() (decoded from its memory), so
// --ready auto with no option sees it accept. TERM is its graceful stop: it
// stops accepting, finishes the requests in hand, then re-raises SIGTERM
// (Ruby's convention), so a drained generation dies of SIGTERM; it caught
// it, so relaunch does not warn that it does not drain.
func TestServerPuma(t *testing.T) {
	t.Parallel()
	needE2E(t, "relaunch")
	puma := needCommand(t, "puma", "puma")
	addr := freeAddr(t)
	run := runServer(t, addr, serverCase{
		// -t 4:16: more threads than the load's clients. With puma's
		// default of 5, the load's 6 clients can fill the pool: its server
		// thread then stops accepting (3 connections were left in its
		// queue 1.1 s after the switch) and, drained in that state, puma
		// 5.6 sometimes never finished (1 full-suite run in 3 here).
		args:   []string{"--drain-signal", "TERM", "--", puma, "-t", "4:16", "-b", "tcp://" + addr, testdataPath(t, "servers/config.ru")},
		answer: "version=puma ",
		ready:  []string{"polls fd 3 (select"},
		rate:   300, // the load
		exit:   "exited: killed by SIGTERM",
		gens:   true,
	})
	checkNoErrors(t, run)
	if strings.Contains(run.p.Stderr(), "does not drain") {
		t.Errorf("puma drains on TERM, yet relaunch says it does not:\n%s", run.p.Stderr())
	}
	logReadyTimes(t, run.p)
}

// puma without -b binds its own address (here -p PORT; 0.0.0.0:9292 by
// default) and closes the socket relaunch gave it: relaunch names both and
// the fix.
func TestServerPumaWithoutBind(t *testing.T) {
	t.Parallel()
	needE2E(t, "relaunch")
	puma := needCommand(t, "puma", "puma")
	addr, own := freeAddr(t), freePort(t)
	p := startRelaunch(t, "--listen", addr, "--no-watch-binary", "--drain-signal", "TERM", "--",
		puma, "-p", strconv.Itoa(own), testdataPath(t, "servers/config.ru"))
	line := p.WaitLog(t, "the app closed the socket it was given", 20*time.Second)
	for _, want := range []string{
		"(fd 3, " + addr + ")",
		fmt.Sprintf("listens on 0.0.0.0:%d itself", own),
		"-b tcp://" + addr,
	} {
		if !strings.Contains(line, want) {
			t.Errorf("the warning %q should say %q", line, want)
		}
	}
	if strings.Contains(p.Stderr(), "select/poll server") {
		t.Errorf("relaunch still blames select/poll:\n%s", p.Stderr())
	}
	p.Signal(syscall.SIGTERM)
	p.MustWait(20 * time.Second)
}
