//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// End-to-end tests of relaunch as a good citizen: the sd_notify protocol
// it speaks to the service manager that started it, PID 1 of a PID namespace (a container's init), relaunch itself started
// by socket activation, and --log-format json.
//
// The "20 upgrades of an app that forks helpers, no zombie under relaunch"
// case is TestNoZombies in upgrade_test.go: the zombies relaunch answers for
// are its own children (the orphans it adopts as a subreaper); a zombie whose
// parent is a live generation is that app's to reap, not relaunch's.

// outerMsg is one datagram relaunch sent to the test's NOTIFY_SOCKET.
type outerMsg struct {
	Fields []string // its KEY=VALUE lines, in order
	Pid    int      // the sender, from SCM_CREDENTIALS
	Fds    []int    // passed with it (FDSTORE=1), open until the test ends
	At     time.Time
}

func (m outerMsg) get(key string) (string, bool) {
	for _, f := range m.Fields {
		if k, v, ok := strings.Cut(f, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

func (m outerMsg) String() string { return fmt.Sprintf("%q from pid %d", m.Fields, m.Pid) }

// isWatchdog: a ping and nothing else.
func (m outerMsg) isWatchdog() bool { return len(m.Fields) == 1 && m.Fields[0] == "WATCHDOG=1" }

// notifySink is a service manager's end of sd_notify: a unixgram socket
// with SO_PASSCRED, so that every datagram names its sender. Its methods
// are for the test goroutine only.
type notifySink struct {
	t     testing.TB
	path  string
	conn  *net.UnixConn
	ch    chan outerMsg
	done  chan struct{} // the reader ended
	fds   []int         // every fd received, the reader's
	all   []outerMsg    // every datagram received, in order
	queue []outerMsg    // state messages received by collect, not yet taken by nextState
}

func newNotifySink(t testing.TB, dir string) *notifySink {
	t.Helper()
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		t.Fatalf("SO_PASSCRED: %v %v", err, serr)
	}
	s := &notifySink{t: t, path: path, conn: conn, ch: make(chan outerMsg, 4096), done: make(chan struct{})}
	t.Cleanup(func() {
		conn.Close()
		<-s.done
		for _, fd := range s.fds {
			syscall.Close(fd)
		}
	})
	go s.read()
	return s
}

func (s *notifySink) read() {
	defer close(s.ch)
	defer close(s.done)
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred)+syscall.CmsgSpace(16*4))
	for {
		n, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		m := outerMsg{At: time.Now()}
		if cmsgs, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for i := range cmsgs {
				if cred, err := syscall.ParseUnixCredentials(&cmsgs[i]); err == nil {
					m.Pid = int(cred.Pid)
				}
				if fds, err := syscall.ParseUnixRights(&cmsgs[i]); err == nil {
					for _, fd := range fds {
						syscall.CloseOnExec(fd)
					}
					s.fds = append(s.fds, fds...) // closed when the reader ends
					m.Fds = append(m.Fds, fds...)
				}
			}
		}
		for _, f := range strings.Split(string(buf[:n]), "\n") {
			if f != "" {
				m.Fields = append(m.Fields, f)
			}
		}
		s.ch <- m
	}
}

// recv returns the next datagram, or false when none came within d.
func (s *notifySink) recv(d time.Duration) (outerMsg, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case m, ok := <-s.ch:
		if !ok {
			return outerMsg{}, false
		}
		s.all = append(s.all, m)
		return m, true
	case <-timer.C:
		return outerMsg{}, false
	}
}

// nextState returns the next message that is not a lone WATCHDOG=1; it
// fails the test when none comes within timeout.
func (s *notifySink) nextState(what string, timeout time.Duration) outerMsg {
	s.t.Helper()
	if len(s.queue) > 0 {
		m := s.queue[0]
		s.queue = s.queue[1:]
		return m
	}
	deadline := time.Now().Add(timeout)
	for {
		m, ok := s.recv(time.Until(deadline))
		if !ok {
			s.t.Fatalf("no %s on NOTIFY_SOCKET within %v; received so far: %v", what, timeout, s.all)
		}
		if !m.isWatchdog() {
			return m
		}
	}
}

// collect receives for d (an observation window, not a synchronisation)
// and returns the watchdog pings seen; state messages are kept for
// nextState.
func (s *notifySink) collect(d time.Duration) (pings int) {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return pings
		}
		m, ok := s.recv(left)
		if !ok {
			return pings
		}
		if m.isWatchdog() {
			pings++
		} else {
			s.queue = append(s.queue, m)
		}
	}
}

// monoUsec is CLOCK_MONOTONIC in microseconds, as MONOTONIC_USEC= carries it.
func monoUsec(t testing.TB) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatalf("clock_gettime: %v", err)
	}
	return ts.Nano() / 1000
}

// TestOuterNotify: relaunch started by a service manager with NOTIFY_SOCKET
// and WATCHDOG_USEC speaks sd_notify to it as systemd's Type=notify expects:
// READY=1 with a STATUS= naming gen 1 once it is
// ready, RELOADING=1 with a current MONOTONIC_USEC= then READY=1 around
// every upgrade (a failed one included), STOPPING=1 on SIGTERM, WATCHDOG=1
// every WATCHDOG_USEC/2, never MAINPID, and nothing from any other process.
// The generations never see that socket nor WATCHDOG_*.
func TestOuterNotify(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	sink := newNotifySink(t, dir)
	app, setFlags := appScript(t, dir)
	addr := freeAddr(t)
	p := startRelaunchOpts(t, procOpts{Env: []string{"NOTIFY_SOCKET=" + sink.path, "WATCHDOG_USEC=200000"}},
		"--listen", addr, "--no-watch-binary", "--", app)

	// READY=1 first, naming gen 1 and its pid.
	m := sink.nextState("READY=1 for gen 1", 15*time.Second)
	pid1 := waitPid(t, p, 1)
	status, _ := m.get("STATUS")
	if len(m.Fields) == 0 || m.Fields[0] != "READY=1" || !strings.Contains(status, "gen 1 ") || !strings.Contains(status, strconv.Itoa(pid1)) {
		t.Errorf("first message %v; want READY=1 with a STATUS= naming gen 1 (pid %d)", m, pid1)
	}
	for _, k := range []string{"RELOADING", "STOPPING"} {
		if _, ok := m.get(k); ok {
			t.Errorf("first message %v carries %s", m, k)
		}
	}
	waitHTTP(t, addr, "gen=1", 10*time.Second)

	// The generation has relaunch's own notify socket, not the outer one,
	// and no WATCHDOG_*.
	_, env := demoEnv(t, addr)
	ns := env["NOTIFY_SOCKET"]
	if ns == "" || ns == sink.path || strings.HasPrefix(ns, dir+"/") || !strings.HasPrefix(filepath.Base(filepath.Dir(ns)), "relaunch-") {
		t.Errorf("gen 1's NOTIFY_SOCKET=%q; want a socket in relaunch's own runtime directory (relaunch-*), not the outer %q", ns, sink.path)
	} else if fi, err := os.Stat(ns); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("gen 1's NOTIFY_SOCKET=%q is not a socket: %v", ns, err)
	}
	penv := procEnviron(t, pid1)
	for k, v := range penv {
		if strings.HasPrefix(k, "WATCHDOG_") || v == sink.path {
			t.Errorf("gen 1 (pid %d) has %s=%s in its environment", pid1, k, v)
		}
	}
	if penv["NOTIFY_SOCKET"] != ns {
		t.Errorf("gen 1's environ has NOTIFY_SOCKET=%q, its /env says %q", penv["NOTIFY_SOCKET"], ns)
	}

	// reload upgrades once and checks RELOADING=1 … READY=1.
	reload := func(want string) {
		t.Helper()
		t0 := monoUsec(t)
		p.Signal(syscall.SIGUSR2)
		m := sink.nextState("RELOADING=1", 15*time.Second)
		t1 := monoUsec(t)
		if len(m.Fields) == 0 || m.Fields[0] != "RELOADING=1" {
			t.Fatalf("after SIGUSR2: %v; want RELOADING=1", m)
		}
		v, ok := m.get("MONOTONIC_USEC")
		usec, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil || usec < t0 || usec > t1 {
			t.Errorf("RELOADING=1 carries MONOTONIC_USEC=%q; want CLOCK_MONOTONIC µs between %d (SIGUSR2 sent) and %d (message read)", v, t0, t1)
		}
		m = sink.nextState("READY=1 after the upgrade", 20*time.Second)
		status, _ := m.get("STATUS")
		if len(m.Fields) == 0 || m.Fields[0] != "READY=1" || !strings.Contains(status, want) {
			t.Errorf("after RELOADING=1: %v; want READY=1 with a STATUS= containing %q", m, want)
		}
	}
	for g := 2; g <= 3; g++ {
		reload(fmt.Sprintf("gen %d ", g))
		p.WaitLog(t, fmt.Sprintf("gen %d (pid %d) ready", g, waitPid(t, p, g)), 10*time.Second)
		waitHTTP(t, addr, fmt.Sprintf("gen=%d", g), 10*time.Second)
	}
	// A failed upgrade ends the reload too: systemd must not stay "reloading".
	setFlags("-exit-at-start 1")
	reload("gen 3 ")
	p.WaitLog(t, "upgrade failed: gen 4", 10*time.Second)
	setFlags("")
	waitHTTP(t, addr, "gen=3", 5*time.Second)

	// WATCHDOG_USEC=200000: a ping every 100ms.
	if n := sink.collect(500 * time.Millisecond); n < 2 {
		t.Errorf("%d WATCHDOG=1 in 500ms with WATCHDOG_USEC=200000; want at least 2 (one every 100ms)", n)
	}

	p.Signal(syscall.SIGTERM)
	m = sink.nextState("STOPPING=1", 15*time.Second)
	if len(m.Fields) == 0 || m.Fields[0] != "STOPPING=1" {
		t.Errorf("after SIGTERM: %v; want STOPPING=1", m)
	}
	if code := p.MustWait(15 * time.Second); code != 0 {
		t.Errorf("relaunch exited %d after SIGTERM; want the app's 0", code)
	}
	// What relaunch sent before it exited is queued in the socket already.
	sink.collect(200 * time.Millisecond)
	if len(sink.queue) > 0 {
		t.Errorf("state messages after STOPPING=1: %v", sink.queue)
	}

	var kinds []string
	pings := 0
	for _, m := range sink.all {
		if m.Pid != p.Pid() {
			t.Errorf("message %v not from relaunch (pid %d)", m, p.Pid())
		}
		if _, ok := m.get("MAINPID"); ok {
			t.Errorf("message %v sets MAINPID: relaunch must stay the main pid", m)
		}
		if m.isWatchdog() {
			pings++
			continue
		}
		kinds = append(kinds, m.Fields[0])
	}
	want := "READY=1 RELOADING=1 READY=1 RELOADING=1 READY=1 RELOADING=1 READY=1 STOPPING=1"
	if got := strings.Join(kinds, " "); got != want {
		t.Errorf("state messages %q; want %q\nall: %v", got, want, sink.all)
	}
	t.Logf("%d datagrams, %d of them WATCHDOG=1", len(sink.all), pings)
	noProcessesLeft(t, slices.Collect(maps.Values(genPids(p))))
}

// TestOuterNotifyStatusAfterCrash: STATUS= carries the
// current generation and pid. After a crash restart the service manager
// must learn which generation serves now; a STATUS= naming the dead
// process would send an operator to the wrong pid.
func TestOuterNotifyStatusAfterCrash(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	sink := newNotifySink(t, dir)
	addr := freeAddr(t)
	p := startRelaunchOpts(t, procOpts{Env: []string{"NOTIFY_SOCKET=" + sink.path}},
		"--listen", addr, "--no-watch-binary", "--", demoBin)
	m := sink.nextState("READY=1 for gen 1", 15*time.Second)
	if len(m.Fields) == 0 || m.Fields[0] != "READY=1" {
		t.Fatalf("first message %v; want READY=1", m)
	}
	pid1 := waitPid(t, p, 1)
	syscall.Kill(pid1, syscall.SIGKILL)
	pid2 := waitPid(t, p, 2)
	p.WaitLog(t, fmt.Sprintf("gen 2 (pid %d) ready", pid2), 15*time.Second)
	waitHTTP(t, addr, "gen=2", 10*time.Second)
	want := fmt.Sprintf("gen 2 (pid %d)", pid2)
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, ok := sink.recv(time.Until(deadline))
		if !ok {
			t.Fatalf("no STATUS= naming %s on NOTIFY_SOCKET within 5s of its being ready after gen 1 (pid %d) crashed; the manager still has: %v", want, pid1, sink.all)
		}
		if st, ok := m.get("STATUS"); ok && strings.Contains(st, want) {
			if _, ok := m.get("RELOADING"); ok {
				t.Errorf("a crash restart is not a reload: %v", m)
			}
			break
		}
	}
}

// nsPid is the pid of outer (a pid in the test's namespace) in the
// innermost PID namespace it belongs to, from the NSpid line of
// /proc/PID/status (readable for zombies too); 0 when it is gone.
func nsPid(outer int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", outer))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0
			}
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	return 0
}

// outerPid finds, among the descendants of root (outer pids), the process
// whose pid in its own namespace is inner; 0 if there is none.
func outerPid(root, inner int) int {
	for _, pid := range procDescendants(root) {
		if nsPid(pid) == inner {
			return pid
		}
	}
	return 0
}

// TestPID1: relaunch as PID 1 of a new PID namespace, as in a container.
// The app leaves orphans two ways, and all of them
// must come to relaunch and be reaped, with no zombie left:
//   - a double fork: the app script starts `sh -c 'cat <FIFO &'`, whose
//     intermediate sh exits at once, so the cat is an orphan while its
//     generation serves; it exits when the test opens and closes the FIFO
//     (no timing involved);
//   - the demo's -fork-helpers: every request forks /bin/true and never
//     waits for it; those zombies of gen 1 are orphaned when gen 1 exits at
//     an upgrade.
//
// SIGTERM to relaunch then reaches the app; relaunch exits 0, and so does
// unshare.
func TestPID1(t *testing.T) {
	t.Parallel()
	needE2E(t)
	unshare := needCommand(t, "unshare", "util-linux")
	dir := shortTempDir(t)
	rec := filepath.Join(dir, "rec")
	orphans := filepath.Join(dir, "orphans")
	app := filepath.Join(dir, "app")
	// The script waits for the intermediate sh, so by the time the demo
	// runs the cat is an orphan of this generation: relaunch's child.
	script := fmt.Sprintf(`#!/bin/sh
f=%[1]s/fifo.$RELAUNCH_GENERATION
mkfifo "$f" || exit 1
sh -c 'cat <"$1" >/dev/null & echo "$RELAUNCH_GENERATION $!" >>"$2"' sh "$f" %[2]s
exec %[3]s -fork-helpers -record %[4]s "$@"
`, dir, orphans, demoBin, rec)
	if err := os.WriteFile(app, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := startProc(t, procOpts{}, unshare, "--pid", "--fork", "--mount-proc",
		relaunchBin, "-l", addr, "--no-watch-binary", "--", app)

	// relaunch is unshare's child; in its namespace, pid 1.
	var rpid int
	deadline := time.Now().Add(10 * time.Second)
	for rpid == 0 {
		for _, k := range p.Children() {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", k)); exe == relaunchBin {
				rpid = k
			}
		}
		if rpid != 0 {
			break
		}
		if p.Exited() {
			waitOutput(t, p)
			t.Fatalf("unshare exited (%v) before running relaunch; it needs root (CAP_SYS_ADMIN), as the tests and CI run:\n%s", p.state, p.Stderr())
		}
		if time.Now().After(deadline) {
			t.Fatalf("unshare (pid %d) has not started relaunch within 10s; children %v", p.Pid(), p.Children())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := nsPid(rpid); n != 1 {
		t.Fatalf("relaunch (pid %d) is pid %d in its namespace; want 1", rpid, n)
	}

	// orphan returns the outer pid of generation gen's double-forked cat,
	// checks that relaunch is its parent, and lets it exit.
	orphan := func(gen int) int {
		t.Helper()
		data, _ := os.ReadFile(orphans)
		in := 0
		for line := range strings.Lines(string(data)) {
			if f := strings.Fields(line); len(f) == 2 && f[0] == strconv.Itoa(gen) {
				in, _ = strconv.Atoi(f[1])
			}
		}
		out := outerPid(rpid, in)
		if in == 0 || out == 0 {
			t.Fatalf("gen %d's double-forked cat (pid %d in the namespace) is not under relaunch (pid %d); orphans file %q", gen, in, rpid, data)
		}
		if st, _ := readProcStat(out); st.PPid != rpid || st.State == 'Z' {
			t.Errorf("gen %d's double-forked cat %s: want it alive, a child of relaunch (pid %d)", gen, describeProc(out), rpid)
		}
		// A non-blocking open for writing succeeds while cat waits to read;
		// the close gives it EOF.
		w, err := os.OpenFile(filepath.Join(dir, "fifo."+strconv.Itoa(gen)), os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			t.Fatalf("release gen %d's cat: %v", gen, err)
		}
		w.Close()
		return out
	}

	waitHTTP(t, addr, "gen=1", 15*time.Second)
	in1 := waitPid(t, p, 1)
	gen1 := outerPid(rpid, in1)
	if gen1 == 0 {
		t.Fatalf("gen 1 (pid %d in the namespace) not found under relaunch (pid %d)", in1, rpid)
	}
	// The double fork's orphan exits while gen 1 serves: relaunch reaps it.
	noProcessesLeft(t, []int{orphan(1)})

	// Helpers that gen 1 never waits for: zombies of gen 1 while it lives.
	for range 5 {
		if _, err := httpGet(addr, "/"); err != nil {
			t.Fatal(err)
		}
	}
	hbody, err := httpGet(addr, "/helpers")
	if err != nil {
		t.Fatal(err)
	}
	var helpers []int
	for _, s := range strings.Fields(hbody) {
		in, _ := strconv.Atoi(s)
		if out := outerPid(gen1, in); out != 0 {
			helpers = append(helpers, out)
		} else {
			t.Errorf("gen 1's helper (pid %d in the namespace) is not under gen 1", in)
		}
	}
	if len(helpers) < 5 {
		t.Fatalf("gen 1 forked %d helpers (%q); want at least 5", len(helpers), hbody)
	}

	// Upgrade: gen 1 exits and its unreaped helpers go to relaunch. A zombie
	// is reaped only by its parent: once gen 1 is gone, only relaunch can.
	syscall.Kill(rpid, syscall.SIGUSR2)
	in2 := waitPid(t, p, 2)
	p.WaitLog(t, fmt.Sprintf("gen 2 (pid %d) ready", in2), 15*time.Second)
	p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", in1), 15*time.Second)
	waitHTTP(t, addr, "gen=2", 10*time.Second)
	noProcessesLeft(t, append([]int{gen1}, helpers...))
	noProcessesLeft(t, []int{orphan(2)})
	waitNoZombieChildren(t, rpid, 5*time.Second)
	if t.Failed() {
		t.Fatalf("relaunch (PID 1) left processes or zombies; its children: %v", procChildren(rpid))
	}

	// SIGTERM to relaunch reaches the app; relaunch and unshare exit 0.
	gen2 := outerPid(rpid, in2)
	syscall.Kill(rpid, syscall.SIGTERM)
	if code := p.MustWait(20 * time.Second); code != 0 {
		t.Errorf("unshare exited %d after SIGTERM to relaunch; want 0 (relaunch's, the app's)", code)
	}
	ev, ok := findEvent(readRecord(t, rec), "drain", "2")
	if !ok || len(ev.Args) == 0 || ev.Args[0] != "SIGTERM" {
		t.Errorf("gen 2 should have drained on SIGTERM: %+v (record %v)", ev, readRecord(t, rec))
	}
	p.WaitLog(t, fmt.Sprintf("gen 2 (pid %d) exited: status 0", in2), time.Second)
	noProcessesLeft(t, []int{rpid, gen2})
}

// TestSocketActivated: relaunch started by systemd-socket-activate, with no
// --listen: it passes the socket it inherited (LISTEN_FDS, its own
// LISTEN_PID, the name) to every generation, each with its own LISTEN_PID,
// and 5 upgrades under load lose nothing.
func TestSocketActivated(t *testing.T) {
	t.Parallel()
	needE2E(t)
	sa := needCommand(t, "systemd-socket-activate", "systemd")
	addr := freeAddr(t)
	// It binds addr, waits for the first connection, then execs relaunch
	// (same pid) with LISTEN_FDS=1, LISTEN_PID and LISTEN_FDNAMES=web.
	p := startProc(t, procOpts{}, sa, "-l", addr, "--fdname=web", "-E", harnessMarkerEnv, "-E", "TMPDIR", "-E", "RUNTIME_DIRECTORY", "--",
		relaunchBin, "--no-watch-binary", "--", demoBin, "-init-delay", "50ms")
	waitHTTP(t, addr, "gen=1", 20*time.Second)
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid())); exe != relaunchBin {
		t.Fatalf("pid %d runs %q; want relaunch exec'd by systemd-socket-activate", p.Pid(), exe)
	}

	envBody, env := demoEnv(t, addr)
	if env["LISTEN_FDS"] != "1" || env["LISTEN_PID"] != env["PID"] || env["LISTEN_FDNAMES"] != "web" {
		t.Errorf("gen 1's /env:\n%s\nwant LISTEN_FDS=1, LISTEN_PID = its own PID, LISTEN_FDNAMES=web", envBody)
	}
	if env["PID"] != strconv.Itoa(waitPid(t, p, 1)) {
		t.Errorf("gen 1's PID=%s; relaunch says it started pid %d", env["PID"], waitPid(t, p, 1))
	}
	// The very socket systemd-socket-activate bound, not a new one.
	rfds, err := fdTargets(p.Pid())
	if err != nil {
		t.Fatal(err)
	}
	_, fds := fdsAtStart(t, addr)
	if in, out := socketInode(rfds[3]), socketInode(fds[3]); in == 0 || in != out {
		t.Errorf("gen 1's fd 3 is %q, relaunch's fd 3 is %q; want the same inherited socket", fds[3], rfds[3])
	}

	load := startLoad(t, addr)
	for g := 2; g <= 6; g++ {
		upgradeAndWait(t, p, g, 20*time.Second)
	}
	res := stopLoad(t, load)
	if len(res.Gens) < 2 {
		t.Errorf("the load saw only generations %v", res.Gens)
	}
	envBody, env = demoEnv(t, addr)
	if env["RELAUNCH_GENERATION"] != "6" || env["LISTEN_PID"] != env["PID"] || env["LISTEN_FDS"] != "1" {
		t.Errorf("gen 6's /env:\n%s\nwant RELAUNCH_GENERATION=6, LISTEN_FDS=1, LISTEN_PID = its own PID", envBody)
	}

	p.Signal(syscall.SIGTERM)
	if code := p.MustWait(15 * time.Second); code != 0 {
		t.Errorf("relaunch exited %d after SIGTERM; want 0", code)
	}
	noProcessesLeft(t, slices.Collect(maps.Values(genPids(p))))
}

var genMsgRe = regexp.MustCompile(`^(?:upgrade failed: )?gen (\d+) \(pid (\d+)\) (started|ready|draining|exited)`)

// TestJSONLog: with --log-format json every line relaunch writes is one
// JSON object with time, level and msg; the lines about a generation carry
// generation and pid, an exit its status, a failed upgrade its reason. The
// demo's own lines ("demo: …") pass through untouched.
func TestJSONLog(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	app, setFlags := appScript(t, dir)
	addr := freeAddr(t)
	p := startRelaunch(t, "--log-format", "json", "--listen", addr, "--no-watch-binary", "--", app)
	waitHTTP(t, addr, "gen=1", 10*time.Second)
	p.Signal(syscall.SIGUSR2)
	p.WaitLog(t, `"generation":2`, 10*time.Second)
	waitHTTP(t, addr, "gen=2", 10*time.Second)
	p.WaitLog(t, "gen 1 (pid", 10*time.Second)
	p.WaitLog(t, `draining`, 10*time.Second)
	setFlags("-exit-at-start 1")
	p.Signal(syscall.SIGUSR2)
	p.WaitLog(t, "upgrade failed", 10*time.Second)
	setFlags("")
	p.Signal(syscall.SIGTERM)
	if code := p.MustWait(15 * time.Second); code != 0 {
		t.Errorf("relaunch exited %d after SIGTERM; want 0", code)
	}
	waitOutput(t, p)

	seen := map[string]int{}
	failed := 0
	for line := range strings.Lines(p.Stderr()) {
		line = strings.TrimSuffix(line, "\n")
		if strings.HasPrefix(line, "demo:") || line == "" {
			continue
		}
		if !strings.HasPrefix(line, "{") {
			t.Errorf("a line that is neither JSON nor the app's: %q", line)
			continue
		}
		var rec map[string]any
		dec := json.NewDecoder(bytes.NewReader([]byte(line)))
		dec.UseNumber()
		if err := dec.Decode(&rec); err != nil || dec.More() {
			t.Errorf("not one JSON object: %q: %v", line, err)
			continue
		}
		ts, _ := rec["time"].(string)
		level, _ := rec["level"].(string)
		msg, _ := rec["msg"].(string)
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("bad time %q in %s", ts, line)
		}
		if level != "INFO" && level != "WARN" && level != "ERROR" {
			t.Errorf("bad level %q in %s", level, line)
		}
		if msg == "" {
			t.Errorf("no msg in %s", line)
		}
		num := func(key string) (int, bool) {
			n, ok := rec[key].(json.Number)
			if !ok {
				return 0, false
			}
			i, err := n.Int64()
			return int(i), err == nil
		}
		if sm := genMsgRe.FindStringSubmatch(msg); sm != nil {
			kind := sm[3]
			if strings.HasPrefix(msg, "upgrade failed") {
				kind = "failed"
			}
			seen[kind]++
			g, gok := num("generation")
			pid, pok := num("pid")
			if !gok || !pok || strconv.Itoa(g) != sm[1] || strconv.Itoa(pid) != sm[2] {
				t.Errorf("%s line without generation=%s and pid=%s as numbers: %s", kind, sm[1], sm[2], line)
			}
			if _, ok := num("status"); kind == "exited" && !ok {
				t.Errorf("exited line without a numeric status: %s", line)
			}
		}
		if strings.Contains(msg, "upgrade failed") {
			failed++
			if r, _ := rec["reason"].(string); r == "" || level != "ERROR" {
				t.Errorf("failed upgrade line without a reason, or not an ERROR: %s", line)
			}
		}
	}
	// gen 1, 2, 3 started; 1 and 2 ready; 1 draining; 1 and 2 exited; 3 failed.
	for kind, n := range map[string]int{"started": 3, "ready": 2, "draining": 1, "exited": 2, "failed": 1} {
		if seen[kind] != n {
			t.Errorf("%d %q lines about a generation; want %d (seen %v)\n%s", seen[kind], kind, n, seen, p.Stderr())
		}
	}
	if failed != 1 {
		t.Errorf("%d failed-upgrade lines; want 1", failed)
	}
}

// TestJSONLogStartupFailure: a start-up failure is one
// of relaunch's own lines too; once --log-format json has been parsed, a
// log pipeline that reads JSON must get it as JSON (level ERROR), not as
// a plain "relaunch: …" line it cannot parse. (A usage error, status 2,
// may stay plain: the format may not be known yet.)
func TestJSONLogStartupFailure(t *testing.T) {
	t.Parallel()
	busy := listenFile(t, "tcp", "127.0.0.1:0") // the address is in use
	cases := map[string][]string{
		"address in use":  {"--log-format", "json", "--listen", fileAddr(t, busy), "--", demoBin},
		"missing command": {"--log-format", "json", "--listen", "127.0.0.1:0", "--", "/nonexistent/app"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			p := startRelaunch(t, args...)
			if code := p.MustWait(15 * time.Second); code != 1 {
				t.Errorf("exit status %d; want 1 (start-up failure)", code)
			}
			waitOutput(t, p)
			out := strings.TrimSpace(p.Stderr())
			if out == "" {
				t.Fatal("no message")
			}
			errors := 0
			for line := range strings.Lines(out) {
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Errorf("--log-format json, yet the start-up failure is not JSON: %q", strings.TrimSpace(line))
					continue
				}
				if msg, _ := rec["msg"].(string); rec["level"] == "ERROR" && msg != "" {
					errors++
				}
			}
			if errors == 0 {
				t.Errorf("no JSON line with level ERROR and a msg says why relaunch did not start:\n%s", out)
			}
		})
	}
}

// TestExampleUnits checks examples/*.service and *.socket with
// `systemd-analyze verify` (it needs no running systemd), with the
// ExecStart path pointed at the relaunch the tests built: verify insists
// that the command exists. Any complaint fails the test.
func TestExampleUnits(t *testing.T) {
	t.Parallel()
	needE2E(t, "relaunch")
	analyze := needCommand(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	var units []string
	for _, name := range []string{"relaunch.service", "relaunch.socket", "relaunch-activated.service"} {
		data, err := os.ReadFile(filepath.Join("examples", name))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, ".service") && !bytes.Contains(data, []byte("ExecStart=/usr/local/bin/relaunch ")) {
			t.Errorf("%s: ExecStart should run /usr/local/bin/relaunch", name)
		}
		checkUnit(t, name, string(data))
		data = bytes.ReplaceAll(data, []byte("/usr/local/bin/relaunch"), []byte(relaunchBin))
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, path)
	}
	cmd := exec.Command(analyze, append([]string{"verify"}, units...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// checkUnit checks the settings the README promises in an example unit.
func checkUnit(t *testing.T, name, text string) {
	t.Helper()
	set := map[string]string{}
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			set[k] = v
		}
	}
	want := map[string]string{"FileDescriptorName": "web", "Service": "relaunch-activated.service"}
	if strings.HasSuffix(name, ".service") {
		want = map[string]string{
			"Type": "notify", "NotifyAccess": "main", "KillMode": "mixed",
			"ExecReload": "/bin/kill -USR2 $MAINPID", "Restart": "on-failure",
		}
		m := regexp.MustCompile(`--stop-timeout (\S+)`).FindStringSubmatch(set["ExecStart"])
		if m == nil {
			m = []string{"", "(none)"}
		}
		stop, err1 := time.ParseDuration(m[1])
		limit, err2 := time.ParseDuration(set["TimeoutStopSec"])
		if err1 != nil || err2 != nil || limit <= stop {
			t.Errorf("%s: TimeoutStopSec=%s should exceed relaunch's --stop-timeout %v (%v, %v)", name, set["TimeoutStopSec"], stop, err1, err2)
		}
	}
	for k, v := range want {
		if set[k] != v {
			t.Errorf("%s: %s=%q; want %q", name, k, set[k], v)
		}
	}
}
