//go:build linux

// End-to-end tests of relaunch's command line and of what a child gets:
// strict LISTEN_PID readers, the exact fd table, named
// listeners, systemd socket activation of relaunch itself, a privileged
// port refused, exit statuses, the pidfile, and UDP. The errors that need
// no app, --help and --version are CLI scripts (testdata/script). Every
// test runs real processes on real sockets and leaves no process, socket
// or file behind; all waits have deadlines.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	cliStartTimeout = 20 * time.Second // a -race relaunch and its app start on a busy 2-core machine
	cliExitTimeout  = 20 * time.Second
)

func cliAddr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// cliTmp returns a private, empty TMPDIR for one relaunch (where it makes
// its runtime directory) and the environment entries that select it.
func cliTmp(t testing.TB) (string, []string) {
	t.Helper()
	dir := shortTempDir(t)
	return dir, []string{"TMPDIR=" + dir, "RUNTIME_DIRECTORY=" + dir, "XDG_RUNTIME_DIR="}
}

// cliRun starts relaunch, waits for it to exit and for its output to end,
// checks that its exit status is want, and returns it and its output.
func cliRun(t testing.TB, o procOpts, want int, args ...string) (*relaunchProc, string) {
	t.Helper()
	p := startRelaunchOpts(t, o, args...)
	code := p.MustWait(cliExitTimeout)
	waitOutput(t, p)
	if code != want {
		t.Errorf("exit status %d, want %d", code, want)
	}
	return p, p.Stderr()
}

// cliCheckNothingLeft checks, after relaunch p exited, that no process it
// started is left (alive; zombies have no environment and are the
// reaper's business), that every tcp port is free again (by binding it),
// that no path exists, and that tmp (its TMPDIR, "" for none) is empty.
func cliCheckNothingLeft(t testing.TB, p *relaunchProc, tmp string, ports []int, paths []string) {
	t.Helper()
	if !p.Exited() {
		t.Errorf("relaunch (pid %d) is still running", p.Pid())
	}
	var left []int
	if !waitUntil(5*time.Second, 10*time.Millisecond, func() bool { left = markedProcs(p.marker); return len(left) == 0 }) {
		t.Errorf("processes left behind by relaunch:\n  %s", strings.Join(describeProcs(left), "\n  "))
	}
	for _, port := range ports {
		l, err := net.Listen("tcp", cliAddr(port))
		if err != nil {
			t.Errorf("port %d still bound after relaunch exited: %v", port, err)
			continue
		}
		l.Close()
	}
	for _, path := range paths {
		if _, err := os.Lstat(path); err == nil {
			t.Errorf("%s still exists after relaunch exited", path)
		}
	}
	if tmp != "" {
		ents, err := os.ReadDir(tmp)
		if err != nil {
			t.Error(err)
		}
		for _, e := range ents {
			t.Errorf("left in TMPDIR after relaunch exited: %s", filepath.Join(tmp, e.Name()))
		}
	}
}

// cliWaitChild waits until relaunch has a child whose command name is comm
// (the exec helper has exec'd the app) and that sleeps (the exec is over),
// and returns its pid.
func cliWaitChild(t testing.TB, p *relaunchProc, comm string, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, k := range p.Children() {
			c, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", k))
			st, ok := readProcStat(k)
			if err == nil && strings.TrimSpace(string(c)) == comm && ok && st.State == 'S' {
				return k
			}
		}
		if p.Exited() {
			t.Fatalf("relaunch exited (%v) before a child %q ran; output:\n%s", p.state, comm, p.Stderr())
		}
		if time.Now().After(deadline) {
			t.Fatalf("no child %q of relaunch within %v; children %v; output:\n%s", comm, timeout, p.Children(), p.Stderr())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cliSocketInodes returns the inodes of the sockets bound to local port
// port in /proc/net/<table> (tcp, tcp6, udp, udp6); for tcp tables only
// listening ones.
func cliSocketInodes(t testing.TB, port int, tables ...string) []uint64 {
	t.Helper()
	var inodes []uint64
	for _, s := range procNetSockets(tables...) {
		if s.localPort != port || strings.HasPrefix(s.table, "tcp") && s.state != "0A" { // TCP_LISTEN
			continue
		}
		if s.inode != 0 {
			inodes = append(inodes, s.inode)
		}
	}
	return inodes
}

// cliFdNumbers returns the sorted fd numbers of m, leaving out the Go
// runtime's own files.
func cliFdNumbers(m map[int]string) []int {
	var fds []int
	for fd, target := range m {
		if !isGoRuntimeFd(target) {
			fds = append(fds, fd)
		}
	}
	slices.Sort(fds)
	return fds
}

// cliFdsAtStart checks that the demo on addr had exactly the fds want at
// start (the Go runtime's own left out), and returns them.
func cliFdsAtStart(t testing.TB, addr string, want ...int) map[int]string {
	t.Helper()
	body, m := fdsAtStart(t, addr)
	if got := cliFdNumbers(m); !slices.Equal(got, want) {
		t.Errorf("demo's fds at start (Go runtime's own left out) are %v, want %v; listing:\n%s", got, want, body)
	}
	return m
}

// cliCheckEnv checks that the environment of the demo on addr (its GET
// /env) has every want ("K=V\n").
func cliCheckEnv(t testing.TB, addr string, wants ...string) {
	t.Helper()
	body, _ := demoEnv(t, addr)
	for _, want := range wants {
		if !strings.Contains(body, want) {
			t.Errorf("demo's /env lacks %q:\n%s", want, body)
		}
	}
}

// cliCheckSocketFd checks that target is the socket bound to port in one
// of tables.
func cliCheckSocketFd(t testing.TB, what, target string, port int, tables ...string) {
	t.Helper()
	ino := socketInode(target)
	if ino == 0 {
		t.Errorf("%s is %q, not a socket", what, target)
		return
	}
	if inodes := cliSocketInodes(t, port, tables...); !slices.Contains(inodes, ino) {
		t.Errorf("%s is socket inode %d, not the one bound to port %d in /proc/net/%v (inodes %v)", what, ino, port, tables, inodes)
	}
}

// cliReadyPid waits until the app answers on addr with want, and until
// relaunch says that gen 1, which answered, is ready; it returns the pid of
// the answer.
func cliReadyPid(t testing.TB, p *relaunchProc, addr, want string) int {
	t.Helper()
	body := waitHTTP(t, addr, want, cliStartTimeout)
	pid, err := strconv.Atoi(bodyField(body, "pid"))
	if err != nil {
		t.Fatalf("answer %q: no pid", body)
	}
	p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) ready", pid), cliStartTimeout)
	return pid
}

// cliStop sends SIGTERM to relaunch and checks that it exits with 0.
func cliStop(t testing.TB, p *relaunchProc) {
	t.Helper()
	p.Signal(syscall.SIGTERM)
	if code := p.MustWait(cliExitTimeout); code != 0 {
		t.Errorf("relaunch exited with %d after SIGTERM, want 0 (the app's status); output:\n%s", code, p.Stderr())
	}
}

// 1. A strict reader (coreos/go-systemd activation.Listeners, which checks
// LISTEN_PID) takes the socket, and the pid it reports is relaunch's child.
func TestCLIGoSystemd(t *testing.T) {
	needE2E(t, "relaunch", "gosystemd")
	t.Parallel()
	port := freePort(t)
	tmp, env := cliTmp(t)
	p := startRelaunchOpts(t, procOpts{Env: env}, "-l", cliAddr(port), "--", gosystemdBin)
	pid := cliReadyPid(t, p, cliAddr(port), "gosystemd pid=")
	if kids := p.Children(); !slices.Contains(kids, pid) {
		t.Errorf("answer from pid %d, but relaunch's children are %v", pid, kids)
	}
	cliStop(t, p)
	cliCheckNothingLeft(t, p, tmp, []int{port}, nil)
}

// 2. The child's fd table is exactly 0, 1, 2, 3 even when relaunch itself
// inherited fds without close-on-exec (on 3 and 9), seen by a Go app (the
// demo's own listing at the top of main) and by a non-Go app (/bin/sleep,
// inspected through /proc).
func TestCLIChildFds(t *testing.T) {
	needE2E(t)
	t.Parallel()

	// leakFiles returns the files relaunch inherits as fds 3 and 9
	// (ExtraFiles[i] is fd 3+i; nil entries are closed).
	leakFiles := func(t *testing.T) ([]*os.File, []string) {
		dir := t.TempDir()
		var files []*os.File
		var names []string
		for _, n := range []string{"leak-fd3", "leak-fd9"} {
			f, err := os.Create(filepath.Join(dir, n))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			files = append(files, f)
			names = append(names, f.Name())
		}
		return []*os.File{files[0], nil, nil, nil, nil, nil, files[1]}, names
	}
	// checkRelaunchHas proves the set-up: relaunch does hold the two files.
	checkRelaunchHas := func(t *testing.T, p *relaunchProc, names []string) {
		m, err := fdTargets(p.Pid())
		if err != nil {
			t.Fatal(err)
		}
		if m[3] != names[0] || m[9] != names[1] {
			t.Fatalf("set-up: relaunch's fd 3 = %q, fd 9 = %q; want %q and %q", m[3], m[9], names[0], names[1])
		}
	}

	t.Run("go app", func(t *testing.T) {
		t.Parallel()
		extra, names := leakFiles(t)
		port := freePort(t)
		tmp, env := cliTmp(t)
		p := startRelaunchOpts(t, procOpts{Env: env, ExtraFiles: extra}, "-l", cliAddr(port), "--", demoBin)
		addr := cliAddr(port)
		body := waitHTTP(t, addr, "version=1", cliStartTimeout)
		checkRelaunchHas(t, p, names)
		pid, _ := strconv.Atoi(bodyField(body, "pid"))
		if kids := p.Children(); !slices.Contains(kids, pid) {
			t.Errorf("answer from pid %d, but relaunch's children are %v", pid, kids)
		}

		m := cliFdsAtStart(t, addr, 0, 1, 2, 3)
		cliCheckSocketFd(t, "demo's fd 3", m[3], port, "tcp")
		cliCheckEnv(t, addr, "LISTEN_FDS=1\n", fmt.Sprintf("LISTEN_PID=%d\n", pid), "LISTEN_FDNAMES=\n", fmt.Sprintf("PID=%d\n", pid), "RELAUNCH_GENERATION=1\n")
		cliStop(t, p)
		cliCheckNothingLeft(t, p, tmp, []int{port}, nil)
	})

	t.Run("non-go app", func(t *testing.T) {
		t.Parallel()
		extra, names := leakFiles(t)
		port := freePort(t)
		tmp, env := cliTmp(t)
		// What a service manager (or an ancestor's activation) gave
		// relaunch must not reach the app as is: an outer
		// NOTIFY_SOCKET (a real one, so relaunch can talk to it), the
		// watchdog, FDSTORE, and LISTEN_* meant for another process.
		outer := filepath.Join(shortTempDir(t), "outer-notify.sock")
		oc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: outer, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer oc.Close()
		// It reads as systemd does, and keeps what is stored until the
		// unit stops.
		var stored []int
		read := make(chan struct{})
		go func() {
			defer close(read)
			buf, oob := make([]byte, 4096), make([]byte, 1024)
			for {
				_, oobn, _, _, err := oc.ReadMsgUnix(buf, oob)
				if err != nil {
					return
				}
				cmsgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
				for _, c := range cmsgs {
					fds, _ := syscall.ParseUnixRights(&c)
					stored = append(stored, fds...)
				}
			}
		}()
		env = append(env, "NOTIFY_SOCKET="+outer, "WATCHDOG_USEC=600000000", "FDSTORE=1",
			"LISTEN_PID=1", "LISTEN_FDS=5", "LISTEN_FDNAMES=a:b:c:d:e", "LISTEN_PIDFDID=12345")
		p := startRelaunchOpts(t, procOpts{Env: env, ExtraFiles: extra}, "-l", cliAddr(port), "--ready", "delay=10ms", "--", "/bin/sleep", "60")
		pid := cliWaitChild(t, p, "sleep", cliStartTimeout)
		p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) ready", pid), cliStartTimeout)
		checkRelaunchHas(t, p, names)
		m, err := fdTargets(pid)
		if err != nil {
			t.Fatal(err)
		}
		var fds []int
		for fd := range m {
			fds = append(fds, fd)
		}
		slices.Sort(fds)
		if !slices.Equal(fds, []int{0, 1, 2, 3}) {
			t.Errorf("sleep's fds are %v, want [0 1 2 3]: %v", fds, m)
		}
		cliCheckSocketFd(t, "sleep's fd 3", m[3], port, "tcp")
		e := procEnviron(t, pid)
		if e["LISTEN_FDS"] != "1" || e["LISTEN_PID"] != strconv.Itoa(pid) {
			t.Errorf("sleep (pid %d) got LISTEN_FDS=%q LISTEN_PID=%q, want 1 and its pid", pid, e["LISTEN_FDS"], e["LISTEN_PID"])
		}
		for _, k := range []string{"LISTEN_FDNAMES", "LISTEN_PIDFDID", "WATCHDOG_USEC", "WATCHDOG_PID", "FDSTORE"} {
			if v, ok := e[k]; ok {
				t.Errorf("sleep got %s=%q: relaunch's own, passed through", k, v)
			}
		}
		if ns := e["NOTIFY_SOCKET"]; ns == outer || !strings.HasPrefix(ns, tmp+"/") {
			t.Errorf("sleep got NOTIFY_SOCKET=%q, want relaunch's own (in its TMPDIR %s), not the outer %s", ns, tmp, outer)
		}
		p.Signal(syscall.SIGTERM)
		// sleep, the current generation, dies of SIGTERM: relaunch exits
		// with its status.
		if code := p.MustWait(cliExitTimeout); code != 128+int(syscall.SIGTERM) {
			t.Errorf("relaunch exited with %d after SIGTERM, want %d (sleep killed by SIGTERM)", code, 128+int(syscall.SIGTERM))
		}
		// With FDSTORE set, relaunch stored its sockets in the outer
		// manager's fd store, which holds them until the unit stops.
		oc.Close()
		<-read
		if len(stored) == 0 {
			t.Error("relaunch stored nothing in the outer manager's fd store, with FDSTORE set")
		}
		for _, fd := range stored {
			syscall.Close(fd)
		}
		cliCheckNothingLeft(t, p, tmp, []int{port}, nil)
	})
}

// 3. Named listeners: LISTEN_FDNAMES in order, unnamed ones "unknown", and
// every socket serves (the unix one through a unix-socket client); the
// unix socket file is removed when relaunch exits.
func TestCLINamedListeners(t *testing.T) {
	needE2E(t)
	t.Parallel()

	t.Run("web and admin", func(t *testing.T) {
		t.Parallel()
		port := freePort(t)
		tmp, env := cliTmp(t)
		sock := filepath.Join(shortTempDir(t), "admin.sock")
		// A stale socket file (nobody listens on it) is replaced.
		stale := listenFile(t, "unix", sock)
		stale.Close()
		if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
			t.Fatalf("set-up: no stale socket file at %s: %v", sock, err)
		}
		p := startRelaunchOpts(t, procOpts{Env: env}, "-l", "web="+cliAddr(port), "-l", "admin=unix://"+sock, "--", demoBin)
		waitHTTP(t, cliAddr(port), "version=1", cliStartTimeout)
		waitHTTP(t, sock, "version=1", cliStartTimeout)
		if names, err := httpGet(cliAddr(port), "/names"); err != nil || names != "web\nadmin\n" {
			t.Errorf("GET /names = %q, %v; want web, admin", names, err)
		}
		if envBody, err := httpGet(sock, "/env"); err != nil || !strings.Contains(envBody, "LISTEN_FDNAMES=web:admin\n") || !strings.Contains(envBody, "LISTEN_FDS=2\n") {
			t.Errorf("GET /env over the unix socket = %q, %v; want LISTEN_FDS=2 and LISTEN_FDNAMES=web:admin", envBody, err)
		}
		_, m := fdsAtStart(t, sock)
		cliCheckSocketFd(t, "fd 3 (web)", m[3], port, "tcp")
		if socketInode(m[4]) == 0 {
			t.Errorf("fd 4 (admin) is %q, not a socket", m[4])
		}
		cliStop(t, p)
		cliCheckNothingLeft(t, p, tmp, []int{port}, []string{sock})
	})

	t.Run("named and unnamed", func(t *testing.T) {
		t.Parallel()
		web, other := freePort(t), freePort(t)
		tmp, env := cliTmp(t)
		p := startRelaunchOpts(t, procOpts{Env: env}, "-l", "web="+cliAddr(web), "-l", cliAddr(other), "--", demoBin)
		waitHTTP(t, cliAddr(web), "version=1", cliStartTimeout)
		waitHTTP(t, cliAddr(other), "version=1", cliStartTimeout)
		if names, err := httpGet(cliAddr(other), "/names"); err != nil || names != "web\nunknown\n" {
			t.Errorf("GET /names = %q, %v; want web, unknown", names, err)
		}
		if envBody, err := httpGet(cliAddr(web), "/env"); err != nil || !strings.Contains(envBody, "LISTEN_FDNAMES=web:unknown\n") {
			t.Errorf("GET /env = %q, %v; want LISTEN_FDNAMES=web:unknown", envBody, err)
		}
		cliStop(t, p)
		cliCheckNothingLeft(t, p, tmp, []int{web, other}, nil)
	})
}

// 4. relaunch started by systemd socket activation passes the socket it
// got first, with its name, then its own --listen ones.
func TestCLISocketActivated(t *testing.T) {
	needE2E(t)
	t.Parallel()
	sa := needCommand(t, "systemd-socket-activate", "systemd")
	outer, inner := freePort(t), freePort(t)
	tmp, _ := cliTmp(t)
	// systemd-socket-activate passes on only TERM, PATH, USER, HOME and -E
	// ones: the harness's marker and the runtime directory's go explicitly.
	p := startProc(t, procOpts{Env: []string{"TMPDIR=" + tmp, "RUNTIME_DIRECTORY=" + tmp}}, sa,
		"-l", cliAddr(outer), "--fdname=outer", "-E", harnessMarkerEnv, "-E", "TMPDIR", "-E", "RUNTIME_DIRECTORY",
		"--", relaunchBin, "-l", cliAddr(inner), "--", demoBin)
	// systemd-socket-activate (without --accept) execs its command at the
	// first connection, which waits in the outer socket's backlog meanwhile.
	body := waitHTTP(t, cliAddr(outer), "version=1", cliStartTimeout)
	waitHTTP(t, cliAddr(inner), "version=1", cliStartTimeout)
	pid, _ := strconv.Atoi(bodyField(body, "pid"))
	if kids := p.Children(); !slices.Contains(kids, pid) {
		t.Errorf("answer from pid %d, but relaunch's (pid %d) children are %v", pid, p.Pid(), kids)
	}
	cliCheckEnv(t, cliAddr(inner), "LISTEN_FDS=2\n", "LISTEN_FDNAMES=outer:unknown\n", fmt.Sprintf("LISTEN_PID=%d\n", pid))
	if names, err := httpGet(cliAddr(outer), "/names"); err != nil || names != "outer\nunknown\n" {
		t.Errorf("GET /names = %q, %v; want outer, unknown", names, err)
	}
	m := cliFdsAtStart(t, cliAddr(outer), 0, 1, 2, 3, 4)
	cliCheckSocketFd(t, "fd 3 (inherited by relaunch)", m[3], outer, "tcp")
	cliCheckSocketFd(t, "fd 4 (relaunch's --listen)", m[4], inner, "tcp")
	cliStop(t, p)
	cliCheckNothingLeft(t, p, tmp, []int{outer, inner}, nil)
}

// 5. Every user error: its exit status, one line naming the bad value, and
// nothing left bound, running or on disk. The rest are CLI scripts
// (testdata/script: usage, listen, startup, command); this one binds a
// privileged port as a user who may not.
func TestCLIPermissionDenied(t *testing.T) {
	needE2E(t)
	t.Parallel()
	cliPermissionDenied(t)
}

// cliPermissionDenied binds a privileged port as a user who may not: as
// uid/gid 65534 when the tests run as root, as the test's own user
// otherwise.
func cliPermissionDenied(t *testing.T) {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		t.Fatal(err)
	}
	start, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	if start <= 1 {
		t.Skipf("net.ipv4.ip_unprivileged_port_start=%d: no port is privileged on this machine", start)
	}
	port := start - 1
	addr := cliAddr(port)

	// A directory everyone can use: the relaunch binary (e2eDir is private
	// to root), its TMPDIR and a unix socket it binds before failing.
	dir := shortTempDir(t)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "relaunch")
	copyBinary(t, relaunchBin, bin)
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o777); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	args := []string{"-l", "unix://" + sock, "-l", addr, "--", "/bin/true"}
	wants := []string{addr, "permission denied", strconv.Itoa(port)}

	if os.Geteuid() != 0 {
		p, out := cliRun(t, procOpts{Env: []string{"TMPDIR=" + tmp, "XDG_RUNTIME_DIR="}}, 1, args...)
		checkOnlyMessage(t, out, wants...)
		cliCheckNothingLeft(t, p, tmp, nil, []string{sock})
		return
	}

	// Root: run relaunch as nobody, with the harness's marker so that
	// anything it left can be found.
	marker := fmt.Sprintf("%d-%d", os.Getpid(), markerSeq.Add(1))
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "XDG_RUNTIME_DIR=", harnessMarkerEnv+"="+marker)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	// The copy's write fd may still be open in a child another test is
	// forking right now (golang/go#22315): retry while the file is busy.
	err = cmd.Start()
	for i := 0; i < 50 && errors.Is(err, syscall.ETXTBSY); i++ {
		time.Sleep(10 * time.Millisecond)
		cmd = cloneCmd(cmd)
		err = cmd.Start()
	}
	if err != nil {
		t.Fatalf("start relaunch as uid 65534: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { killTree(markedProcs(marker)) })
	select {
	case <-done:
	case <-time.After(cliExitTimeout):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("relaunch as uid 65534 still running after %v; output:\n%s", cliExitTimeout, out.String())
	}
	if code := exitStatus(cmd.ProcessState); code != 1 {
		t.Errorf("exit status %d, want 1; output:\n%s", code, out.String())
	}
	checkOnlyMessage(t, out.String(), wants...)
	if left := waitProcsGone(markedProcs(marker), 5*time.Second); len(left) > 0 {
		t.Errorf("processes left behind: %v", left)
	}
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("unix socket %s of the first --listen still exists", sock)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) > 0 {
		t.Errorf("left in TMPDIR: %v", ents)
	}
}

// 6. Exit statuses: TERM is forwarded and relaunch exits with the app's
// status; with --restart never relaunch exits with the app's own status or
// 128+signal; on-failure ends with 0 when the app exits 0.
func TestCLIExitStatus(t *testing.T) {
	needE2E(t)
	t.Parallel()

	t.Run("TERM forwarded", func(t *testing.T) {
		t.Parallel()
		port := freePort(t)
		tmp, env := cliTmp(t)
		rec := filepath.Join(shortTempDir(t), "record")
		p := startRelaunchOpts(t, procOpts{Env: env}, "-l", cliAddr(port), "--", demoBin, "-record", rec)
		pid := cliReadyPid(t, p, cliAddr(port), "version=1")
		cliStop(t, p)
		evs := readRecord(t, rec)
		d, ok := findEvent(evs, "drain", "1")
		if !ok || d.Pid != pid || !slices.Equal(d.Args, []string{"SIGTERM"}) {
			t.Errorf("record: drain event %+v (found %v), want SIGTERM to pid %d; all: %+v", d, ok, pid, evs)
		}
		if _, ok := findEvent(evs, "exit", "1"); !ok {
			t.Errorf("record: no exit event: %+v", evs)
		}
		cliCheckNothingLeft(t, p, tmp, []int{port}, nil)
	})

	// A generation that is running but not ready yet (the first start,
	// --ready notify from an app that never notifies) is killed by the
	// forwarded TERM: relaunch must exit with its status, as it does once
	// the generation is ready (143 in TestCLIChildFds/non-go_app), not 0,
	// which the README reserves for "no generation running".
	// Fails as of this writing: launcher.stop takes the status of l.cur
	// only, and sets 0 when no generation is current yet.
	t.Run("TERM while starting", func(t *testing.T) {
		t.Parallel()
		port := freePort(t)
		tmp, env := cliTmp(t)
		p := startRelaunchOpts(t, procOpts{Env: env}, "-l", cliAddr(port), "--ready", "notify", "--", "/bin/sleep", "60")
		pid := cliWaitChild(t, p, "sleep", cliStartTimeout)
		p.Signal(syscall.SIGTERM)
		p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited: killed by SIGTERM", pid), cliExitTimeout)
		if code := p.MustWait(cliExitTimeout); code != 128+int(syscall.SIGTERM) {
			t.Errorf("relaunch exited with %d, want %d: its only generation, running, was killed by the forwarded SIGTERM", code, 128+int(syscall.SIGTERM))
		}
		cliCheckNothingLeft(t, p, tmp, []int{port}, nil)
	})

	// exitOnInput runs, under relaunch, a shell that exits with status
	// once it reads a line on stdin (relaunch passes its own stdin on),
	// which the test writes once relaunch says the generation is ready: it
	// exits by itself while current.
	exitOnInput := func(t *testing.T, status int, restart string) (int, string) {
		port := freePort(t)
		tmp, env := cliTmp(t)
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		p := startRelaunchOpts(t, procOpts{Env: env, Stdin: r}, "-l", cliAddr(port), "--restart", restart, "--ready", "delay=10ms",
			"--", "/bin/sh", "-c", "read line; exit "+strconv.Itoa(status))
		r.Close()
		p.WaitLog(t, "gen 1 (pid", cliStartTimeout)
		p.WaitLog(t, "ready in", cliStartTimeout)
		if _, err := w.Write([]byte("go\n")); err != nil {
			t.Fatal(err)
		}
		code := p.MustWait(cliExitTimeout)
		cliCheckNothingLeft(t, p, tmp, []int{port}, nil)
		return code, p.Stderr()
	}

	t.Run("never, exits 3", func(t *testing.T) {
		t.Parallel()
		if code, out := exitOnInput(t, 3, "never"); code != 3 {
			t.Errorf("exit status %d, want 3; output:\n%s", code, out)
		}
	})

	t.Run("never, exits 3 before ready", func(t *testing.T) {
		t.Parallel()
		port := freePort(t)
		tmp, env := cliTmp(t)
		p, _ := cliRun(t, procOpts{Env: env}, 3, "-l", cliAddr(port), "--restart", "never", "--", demoBin, "-exit-at-start", "3")
		cliCheckNothingLeft(t, p, tmp, []int{port}, nil)
	})

	t.Run("never, SIGKILL", func(t *testing.T) {
		t.Parallel()
		port := freePort(t)
		tmp, env := cliTmp(t)
		p := startRelaunchOpts(t, procOpts{Env: env}, "-l", cliAddr(port), "--restart", "never", "--", demoBin)
		pid := cliReadyPid(t, p, cliAddr(port), "version=1")
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if code := p.MustWait(cliExitTimeout); code != 137 {
			t.Errorf("exit status %d, want 137; output:\n%s", code, p.Stderr())
		}
		cliCheckNothingLeft(t, p, tmp, []int{port}, nil)
	})

	t.Run("on-failure, exits 0", func(t *testing.T) {
		t.Parallel()
		if code, out := exitOnInput(t, 0, "on-failure"); code != 0 {
			t.Errorf("exit status %d, want 0; output:\n%s", code, out)
		}
	})
}

// 7. --pidfile: relaunch's pid while it runs, removed at exit. Its
// directory's checks are a CLI script (testdata/script/pidfile.txtar).
func TestCLIPidfile(t *testing.T) {
	needE2E(t)
	t.Parallel()

	t.Run("written and removed", func(t *testing.T) {
		t.Parallel()
		port := freePort(t)
		tmp, env := cliTmp(t)
		dir := shortTempDir(t)
		pidfile := filepath.Join(dir, "relaunch.pid")
		p := startRelaunchOpts(t, procOpts{Env: env}, "--pidfile", pidfile, "-l", cliAddr(port), "--", demoBin)
		waitHTTP(t, cliAddr(port), "version=1", cliStartTimeout)
		data, err := os.ReadFile(pidfile)
		if err != nil {
			t.Fatalf("pidfile while running: %v", err)
		}
		if got := strings.TrimSpace(string(data)); got != strconv.Itoa(p.Pid()) || !strings.HasSuffix(string(data), "\n") {
			t.Errorf("pidfile holds %q, want \"%d\\n\"", data, p.Pid())
		}
		cliStop(t, p)
		cliCheckNothingLeft(t, p, tmp, []int{port}, []string{pidfile})
		if ents, _ := os.ReadDir(dir); len(ents) > 0 {
			t.Errorf("left next to the pidfile: %v", ents)
		}
	})
}

// 8. A UDP socket is passed like the others: fd 3 of a non-Go app is the
// bound udp socket; next to a tcp one, the demo gets it as fd 4.
func TestCLIUDP(t *testing.T) {
	needE2E(t)
	t.Parallel()

	t.Run("non-go app", func(t *testing.T) {
		t.Parallel()
		port := freeUDPPort(t)
		tmp, env := cliTmp(t)
		p := startRelaunchOpts(t, procOpts{Env: env}, "-l", fmt.Sprintf("udp://127.0.0.1:%d", port), "--", "/bin/sleep", "60")
		p.WaitLog(t, fmt.Sprintf("listening on udp://127.0.0.1:%d (fd 3,", port), cliStartTimeout)
		pid := cliWaitChild(t, p, "sleep", cliStartTimeout)
		m, err := fdTargets(pid)
		if err != nil {
			t.Fatal(err)
		}
		cliCheckSocketFd(t, "sleep's fd 3", m[3], port, "udp")
		if e := procEnviron(t, pid); e["LISTEN_FDS"] != "1" || e["LISTEN_PID"] != strconv.Itoa(pid) {
			t.Errorf("sleep got LISTEN_FDS=%q LISTEN_PID=%q, want 1 and %d", e["LISTEN_FDS"], e["LISTEN_PID"], pid)
		}
		p.Signal(syscall.SIGTERM)
		p.MustWait(cliExitTimeout)
		cliCheckNothingLeft(t, p, tmp, nil, nil)
		if inodes := cliSocketInodes(t, port, "udp"); len(inodes) > 0 {
			t.Errorf("udp port %d still bound after relaunch exited (inodes %v)", port, inodes)
		}
	})

	t.Run("next to tcp", func(t *testing.T) {
		t.Parallel()
		tport, uport := freePort(t), freeUDPPort(t)
		tmp, env := cliTmp(t)
		p := startRelaunchOpts(t, procOpts{Env: env}, "-l", cliAddr(tport), "-l", fmt.Sprintf("udp://127.0.0.1:%d", uport), "--", demoBin)
		waitHTTP(t, cliAddr(tport), "version=1", cliStartTimeout)
		m := cliFdsAtStart(t, cliAddr(tport), 0, 1, 2, 3, 4)
		cliCheckSocketFd(t, "demo's fd 3", m[3], tport, "tcp")
		cliCheckSocketFd(t, "demo's fd 4", m[4], uport, "udp")
		cliStop(t, p)
		cliCheckNothingLeft(t, p, tmp, []int{tport}, nil)
	})
}

// cloneCmd is a fresh exec.Cmd with cmd's settings: one cannot be started twice.
func cloneCmd(cmd *exec.Cmd) *exec.Cmd {
	c := exec.Command(cmd.Path, cmd.Args[1:]...)
	c.Dir, c.Env, c.Stdout, c.Stderr, c.SysProcAttr = cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr, cmd.SysProcAttr
	return c
}
