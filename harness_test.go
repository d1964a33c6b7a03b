//go:build linux

// The end-to-end harness: TestMain builds relaunch, the demo app and the
// gosystemd app once into a temporary directory; the helpers below start
// them, wait for conditions with deadlines, and leave no process behind.
//
// Every helper that waits takes a timeout and fails the test when it passes
// (waitUntil, the polling loop of most, leaves that to its caller); none
// sleeps as a means of synchronisation. Processes started here run in
// their own process group and carry a marker variable (harnessMarkerEnv) in
// their environment, inherited by every generation, so that the cleanup can
// find and SIGKILL all of them by pid even after relaunch itself is gone.
//
// With -short, nothing is built and every test that calls needE2E (all the
// helpers that start a binary do) is skipped. The CLI scripts
// (script_test.go, testdata/script) run either way: this test binary is
// their relaunch.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/relaunch/relaunch/internal/loadtest"
	"github.com/relaunch/relaunch/launcher"
)

// The binaries TestMain builds, all in e2eDir.
var (
	e2eDir        string // removed when the tests end
	relaunchBin   string // relaunch, built with -race when the tests are
	demoBin       string // testdata/demo, default version "1"
	demoV2Bin     string // testdata/demo built with -X main.defaultVersion=2: answers version=2 without flags
	relaunchV2Bin string // relaunch built with -X main.version=test-2: what a reexec upgrades to
	gosystemdBin  string // testdata/gosystemd (its own module)
	buildErrs     = map[string]error{}
)

const harnessMarkerEnv = "RELAUNCH_E2E_MARKER"

// TestMain hands over to testscript, which runs the test binary as the
// scripts' relaunch when it is started under that name, and otherwise runs
// harnessM: the builds, then the tests.
func TestMain(m *testing.M) {
	// A relaunch run by a script starts its exec helper from this binary
	// (/proc/self/exe) with the app's argv: internal/exechelper's init
	// execs the app before any test code runs.
	testscript.Main(harnessM{m}, map[string]func(){"relaunch": func() { os.Exit(relaunchMain()) }})
}

type harnessM struct{ m *testing.M }

func (h harnessM) Run() int {
	m := h.m
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "relaunch-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 1
	}
	e2eDir = dir
	relaunchBin = filepath.Join(dir, "relaunch")
	demoBin = filepath.Join(dir, "demo-v1")
	demoV2Bin = filepath.Join(dir, "demo-v2")
	relaunchV2Bin = filepath.Join(dir, "relaunch-v2")
	gosystemdBin = filepath.Join(dir, "gosystemd")

	var relaunchFlags []string
	if raceEnabled() && os.Getenv("RELAUNCH_E2E_RACE") != "0" {
		// relaunch's own data races show up in its output; the cleanup
		// of startRelaunch fails the test when they do.
		relaunchFlags = append(relaunchFlags, "-race")
	}
	builds := []struct {
		name, dir string
		args      []string
	}{
		{"relaunch", ".", append(append([]string{"build"}, relaunchFlags...), "-o", relaunchBin, ".")},
		{"relaunch-v2", ".", append(append([]string{"build"}, relaunchFlags...), "-ldflags", "-X main.version=test-2", "-o", relaunchV2Bin, ".")},
		{"demo", ".", []string{"build", "-o", demoBin, "./testdata/demo"}},
		{"demo-v2", ".", []string{"build", "-ldflags", "-X main.defaultVersion=2", "-o", demoV2Bin, "./testdata/demo"}},
		{"gosystemd", "testdata/gosystemd", []string{"build", "-o", gosystemdBin, "."}},
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, b := range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("go", b.args...)
			cmd.Dir = b.dir
			cmd.Env = append(os.Environ(), "GOWORK=off")
			if out, err := cmd.CombinedOutput(); err != nil {
				mu.Lock()
				buildErrs[b.name] = fmt.Errorf("go %s: %v\n%s", strings.Join(b.args, " "), err, out)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	code := m.Run()
	os.RemoveAll(dir)
	return code
}

func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// needE2E skips the test with -short and fails it when one of the named
// builds ("relaunch", "demo", "demo-v2", "gosystemd"; none: relaunch and
// demo) failed.
func needE2E(t testing.TB, builds ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	if len(builds) == 0 {
		builds = []string{"relaunch", "demo"}
	}
	for _, b := range builds {
		if err := buildErrs[b]; err != nil {
			t.Fatalf("build of %s failed: %v", b, err)
		}
	}
}

// copyBinary copies the executable src to dst the way deploys must: into a
// temporary file in dst's directory, then renamed over dst (a running binary
// cannot be overwritten in place: ETXTBSY).
func copyBinary(t testing.TB, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	if err != nil {
		t.Fatal(err)
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o755)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		t.Fatal(err)
	}
}

// appCopy is a new short directory holding a copy of the demo app, "app",
// and the path of a control socket next to it, "ctl.sock".
func appCopy(t testing.TB) (dir, app, sock string) {
	t.Helper()
	dir = shortTempDir(t)
	app = filepath.Join(dir, "app")
	copyBinary(t, demoBin, app)
	return dir, app, filepath.Join(dir, "ctl.sock")
}

// buildDemo builds testdata/demo into dst (written in place by the go tool)
// with version as the answer's default version.
func buildDemo(t testing.TB, dst, version string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-ldflags", "-X main.defaultVersion="+version, "-o", dst, "./testdata/demo")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build demo: %v\n%s", err, out)
	}
}

// shortTempDir returns a new directory with a short path (unix socket paths
// are limited to 107 bytes; t.TempDir's include the test name), removed at
// the end of the test.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// freePort returns a tcp port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// freeAddr returns a tcp address "127.0.0.1:PORT" that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", freePort(t))
}

// freeUDPPort returns a udp port on 127.0.0.1 that was free a moment ago.
func freeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// addrPort is the port of a "host:port" address.
func addrPort(t testing.TB, addr string) int {
	t.Helper()
	_, ps, _ := net.SplitHostPort(addr)
	port, err := strconv.Atoi(ps)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// waitUntil calls cond every `every` until it returns true, and reports
// whether it did before timeout passed; the caller fails the test (or not)
// with what cond saw last.
func waitUntil(timeout, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(every)
	}
	return true
}

// listenFile returns a new listening socket as a blocking, close-on-exec
// *os.File, ready for exec.Cmd.ExtraFiles (network "tcp": addr is
// "127.0.0.1:PORT", port 0 for any; "unix": a path). It is closed at the end
// of the test. The socket is made with raw syscalls, as relaunch makes its
// own: a Go net.Listener's File() would hand children a socket whose
// O_NONBLOCK flips under them.
func listenFile(t testing.TB, network, addr string) *os.File {
	t.Helper()
	var fd int
	var err error
	switch network {
	case "tcp":
		host, portStr, serr := net.SplitHostPort(addr)
		port, perr := strconv.Atoi(portStr)
		ip := net.ParseIP(host).To4()
		if serr != nil || perr != nil || ip == nil {
			t.Fatalf("listenFile: want 127.0.0.1:PORT, got %q", addr)
		}
		sa := &syscall.SockaddrInet4{Port: port}
		copy(sa.Addr[:], ip)
		if fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0); err == nil {
			syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			err = syscall.Bind(fd, sa)
		}
	case "unix":
		if fd, err = syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0); err == nil {
			err = syscall.Bind(fd, &syscall.SockaddrUnix{Name: addr})
		}
	default:
		t.Fatalf("listenFile: network %q", network)
	}
	if err == nil {
		err = syscall.Listen(fd, 128)
	}
	if err != nil {
		if fd > 0 {
			syscall.Close(fd)
		}
		t.Fatalf("listenFile %s %s: %v", network, addr, err)
	}
	f := os.NewFile(uintptr(fd), network+":"+addr)
	t.Cleanup(func() { f.Close() })
	return f
}

// fileAddr is the "host:port" or path a socket made by listenFile is bound to.
func fileAddr(t testing.TB, f *os.File) string {
	t.Helper()
	sa, err := syscall.Getsockname(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return net.JoinHostPort(net.IP(sa.Addr[:]).String(), strconv.Itoa(sa.Port))
	case *syscall.SockaddrUnix:
		return sa.Name
	}
	t.Fatalf("fileAddr: %T", sa)
	return ""
}

// syncBuffer collects a process's output; every write wakes the waiters.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced at every write
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{})} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return n, err
}

// snapshot returns the content so far and a channel closed at the next write.
func (b *syncBuffer) snapshot() (string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String(), b.changed
}

// procOpts are the less common ways to start a process.
type procOpts struct {
	Env   []string // extra KEY=VALUE entries, overriding the inherited ones
	Dir   string   // working directory; "" is the test's (the package directory)
	Stdin io.Reader
	// ExtraFiles become the process's fds 3, 4, ... .
	ExtraFiles []*os.File
	// Activation passes ExtraFiles the systemd way: LISTEN_FDS=len,
	// LISTEN_PID=the process's own pid (through sh -c 'LISTEN_PID=$$ exec
	// ...'), and LISTEN_FDNAMES=FdNames joined with ':' when FdNames is set.
	Activation bool
	FdNames    []string
	// Output, when set, takes the process's stdout and stderr instead of
	// the captured pipe (Stderr is then empty).
	Output *os.File
}

// relaunchProc is a process started by startRelaunch or startProc.
type relaunchProc struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	marker string
	out    *syncBuffer
	outEOF chan struct{} // closed when every holder of the output pipe is gone
	outR   *os.File
	done   chan struct{} // closed when the process has exited and been reaped
	state  *os.ProcessState
	werr   error
}

var markerSeq atomic.Int64

// startRelaunch starts the built relaunch with args, e.g.
// startRelaunch(t, "--listen", addr, "--", demoBin, "-version", "2").
func startRelaunch(t testing.TB, args ...string) *relaunchProc {
	t.Helper()
	return startRelaunchOpts(t, procOpts{}, args...)
}

// startRelaunchOpts is startRelaunch with options.
func startRelaunchOpts(t testing.TB, o procOpts, args ...string) *relaunchProc {
	t.Helper()
	needE2E(t, "relaunch")
	return startProc(t, o, append([]string{relaunchBin}, args...)...)
}

// startProc starts argv in its own process group with the inherited
// environment minus LISTEN_*, NOTIFY_SOCKET, WATCHDOG_* and RELAUNCH_* (a
// developer's RELAUNCH_LISTEN must not change the tests), plus o.Env,
// capturing its stdout and stderr (and its children's) in one buffer, echoed
// to t.Log when the test fails (always with RELAUNCH_E2E_LOG=1). The cleanup
// SIGKILLs it, its process group, every descendant and their groups, waits
// for it, and fails the test if the output shows a data race.
func startProc(t testing.TB, o procOpts, argv ...string) *relaunchProc {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	name := filepath.Base(argv[0])
	marker := fmt.Sprintf("%d-%d", os.Getpid(), markerSeq.Add(1))
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "LISTEN_") || k == "NOTIFY_SOCKET" || strings.HasPrefix(k, "WATCHDOG_") || strings.HasPrefix(k, "RELAUNCH_") {
			continue
		}
		env = append(env, kv)
	}
	// relaunch's runtime directory goes in a short per-test directory,
	// removed after the cleanup's SIGKILL (which leaves no chance to remove
	// it): RUNTIME_DIRECTORY, as systemd's RuntimeDirectory= sets it, comes
	// before /run/relaunch, where a root relaunch goes otherwise.
	tmp := shortTempDir(t)
	env = append(env, harnessMarkerEnv+"="+marker, "TMPDIR="+tmp, "RUNTIME_DIRECTORY="+tmp, "XDG_RUNTIME_DIR=")
	if o.Activation {
		env = append(env, "LISTEN_FDS="+strconv.Itoa(len(o.ExtraFiles)))
		if o.FdNames != nil {
			env = append(env, "LISTEN_FDNAMES="+strings.Join(o.FdNames, ":"))
		}
		argv = append([]string{"/bin/sh", "-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$@"`, "sh"}, argv...)
	}
	env = append(env, o.Env...)

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = o.Dir
	cmd.Stdin = o.Stdin
	cmd.Stdout = w
	cmd.Stderr = w
	if o.Output != nil {
		cmd.Stdout, cmd.Stderr = o.Output, o.Output
	}
	cmd.ExtraFiles = o.ExtraFiles
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &relaunchProc{
		t:      t,
		name:   name,
		cmd:    cmd,
		marker: marker,
		out:    newSyncBuffer(),
		outEOF: make(chan struct{}),
		outR:   r,
		done:   make(chan struct{}),
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatalf("start %q: %v", argv, err)
	}
	go func() {
		io.Copy(p.out, r)
		close(p.outEOF)
	}()
	go func() {
		p.werr = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(p.cleanup)
	return p
}

// Pid is the process's pid (relaunch's, for startRelaunch).
func (p *relaunchProc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process only (not its group).
func (p *relaunchProc) Signal(sig syscall.Signal) {
	p.t.Helper()
	select {
	case <-p.done:
		p.t.Fatalf("signal %v: %s has exited already\n%s", sig, p.name, p.Stderr())
	default:
	}
	if err := syscall.Kill(p.Pid(), sig); err != nil {
		p.t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// Wait waits up to timeout for the process to exit and returns its exit
// status, 128+N when killed by signal N. The error says it is still running.
func (p *relaunchProc) Wait(timeout time.Duration) (int, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		return -1, fmt.Errorf("%s (pid %d) still running after %v", p.name, p.Pid(), timeout)
	}
	return exitStatus(p.state), nil
}

// Exited reports whether the process has exited.
func (p *relaunchProc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// MustWait is Wait that fails the test on timeout.
func (p *relaunchProc) MustWait(timeout time.Duration) int {
	p.t.Helper()
	code, err := p.Wait(timeout)
	if err != nil {
		p.t.Fatalf("%v\noutput:\n%s", err, p.Stderr())
	}
	return code
}

func exitStatus(st *os.ProcessState) int {
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return st.ExitCode()
}

// Stderr is everything the process and its children wrote to stdout and
// stderr so far.
func (p *relaunchProc) Stderr() string {
	s, _ := p.out.snapshot()
	return s
}

// outputDone waits up to timeout until the output pipe is closed (every
// holder gone: once the process has exited, all its output is in) and
// reports whether it is.
func (p *relaunchProc) outputDone(timeout time.Duration) bool {
	select {
	case <-p.outEOF:
		return true
	case <-time.After(timeout):
		return false
	}
}

// waitOutput waits until the output pipe of an exited process is closed:
// then all its output is in.
func waitOutput(t testing.TB, p *relaunchProc) {
	t.Helper()
	if !p.outputDone(5 * time.Second) {
		t.Errorf("the output pipe of %s is still open 5s after it exited", p.name)
	}
}

// WaitLog waits until the output contains substr and returns the first line
// that contains it; it fails the test after timeout, or when the process
// exits without writing it.
func (p *relaunchProc) WaitLog(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	return p.WaitLogN(t, substr, 1, timeout)
}

// WaitLogN waits until the output contains substr n times (on n lines) and
// returns the n-th line that contains it.
func (p *relaunchProc) WaitLogN(t testing.TB, substr string, n int, timeout time.Duration) string {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	exited := p.done
	for {
		s, changed := p.out.snapshot()
		if line, ok := nthLine(s, substr, n); ok {
			return line
		}
		select {
		case <-changed:
		case <-exited:
			// Exited: the output may still be arriving from its pipe.
			exited = nil
			select {
			case <-p.outEOF:
			case <-timer.C:
			}
			s, _ = p.out.snapshot()
			if line, ok := nthLine(s, substr, n); ok {
				return line
			}
			t.Fatalf("%s exited (%s) without logging %q (x%d); output:\n%s", p.name, p.state, substr, n, s)
		case <-timer.C:
			t.Fatalf("%q (x%d) not logged by %s within %v; output:\n%s", substr, n, p.name, timeout, p.Stderr())
		}
	}
}

func nthLine(s, substr string, n int) (string, bool) {
	if strings.Count(s, substr) < n {
		return "", false
	}
	for line := range strings.Lines(s) {
		if strings.Contains(line, substr) {
			if n--; n == 0 {
				return strings.TrimSuffix(line, "\n"), true
			}
		}
	}
	// Found only across lines (substr contains a newline).
	return s, true
}

// Children returns the process's children (for relaunch: its generations,
// and orphans it adopted as a subreaper), from /proc; not relaunch's
// keeper (keeperOf), which is no part of the app.
func (p *relaunchProc) Children() []int {
	return slices.DeleteFunc(procChildren(p.Pid()), isKeeper)
}

// isKeeper says whether pid is a relaunch keeper (internal/keeper).
func isKeeper(pid int) bool {
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(comm)) == "relaunch-keeper"
}

// Descendants returns every descendant of the process, from /proc.
func (p *relaunchProc) Descendants() []int { return procDescendants(p.Pid()) }

// procChildren reads /proc/PID/task/*/children, without relaunch's warm
// exec helper (launcher/warm_linux.go): it is no generation's yet
// (TestWarmExecHelper checks it).
func procChildren(pid int) []int {
	kids := procChildrenAll(pid)
	return slices.DeleteFunc(kids, isWarmHelper)
}

// isWarmHelper says whether pid is a warm exec helper, from its argv.
func isWarmHelper(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.HasPrefix(string(b), "relaunch-exec-helper\x00")
}

// procChildrenAll reads /proc/PID/task/*/children.
func procChildrenAll(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var kids []int
	for _, f := range tasks {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(data)) {
			if k, err := strconv.Atoi(s); err == nil && !slices.Contains(kids, k) {
				kids = append(kids, k)
			}
		}
	}
	return kids
}

// procDescendants walks the process tree below pid.
func procDescendants(pid int) []int {
	var all []int
	queue := procChildren(pid)
	for len(queue) > 0 {
		k := queue[0]
		queue = queue[1:]
		if slices.Contains(all, k) {
			continue
		}
		all = append(all, k)
		queue = append(queue, procChildren(k)...)
	}
	return all
}

// procStat is the part of /proc/PID/stat the harness uses.
type procStat struct {
	State byte // R, S, D, Z, T, ...
	PPid  int
	PGid  int
}

func readProcStat(pid int) (procStat, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	// pid (comm) state ppid pgrp ...; comm may contain spaces and ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 3 || len(f[0]) != 1 {
		return procStat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	pgid, _ := strconv.Atoi(f[2])
	return procStat{State: f[0][0], PPid: ppid, PGid: pgid}, true
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	st, ok := readProcStat(pid)
	return ok && st.State != 'Z' && st.State != 'X'
}

// processZombie reports whether pid is a zombie (exited, not reaped).
func processZombie(pid int) bool {
	st, ok := readProcStat(pid)
	return ok && st.State == 'Z'
}

// describeProc is "pid (cmdline) state S ppid P" for failure messages.
func describeProc(pid int) string {
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	st, ok := readProcStat(pid)
	if !ok {
		return fmt.Sprintf("%d (gone)", pid)
	}
	return fmt.Sprintf("%d (%s) state %c ppid %d pgid %d", pid,
		strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " ")), st.State, st.PPid, st.PGid)
}

// describeProcs is describeProc of each pid.
func describeProcs(pids []int) []string {
	var desc []string
	for _, pid := range pids {
		desc = append(desc, describeProc(pid))
	}
	return desc
}

// noProcessesLeft fails the test unless every pid has exited and been reaped
// (no zombie either) within a short grace period for the kernel to finish.
func noProcessesLeft(t testing.TB, pids []int) {
	t.Helper()
	if left := waitProcsGone(pids, 5*time.Second); len(left) > 0 {
		t.Errorf("processes left behind (alive or zombie):\n  %s", strings.Join(describeProcs(left), "\n  "))
	}
}

// waitProcsGone waits until no pid exists any more (zombies count as
// existing) and returns the ones still there after timeout. It checks /proc
// every 10ms: these are not our children, so there is nothing to wait on,
// and a zombie stays until someone else reaps it.
func waitProcsGone(pids []int, timeout time.Duration) []int {
	var left []int
	waitUntil(timeout, 10*time.Millisecond, func() bool {
		left = nil
		for _, pid := range pids {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				left = append(left, pid)
			}
		}
		return len(left) == 0
	})
	return left
}

// zombieChildren describes the children of pid that are zombies.
func zombieChildren(pid int) []string {
	var z []string
	for _, k := range procChildren(pid) {
		if processZombie(k) {
			z = append(z, describeProc(k))
		}
	}
	return z
}

// waitNoZombieChildren polls until pid has no zombie child; it fails the
// test after timeout.
func waitNoZombieChildren(t testing.TB, pid int, timeout time.Duration) {
	t.Helper()
	var z []string
	if !waitUntil(timeout, 10*time.Millisecond, func() bool { z = zombieChildren(pid); return len(z) == 0 }) {
		t.Errorf("zombies under relaunch (pid %d) after %v:\n  %s", pid, timeout, strings.Join(z, "\n  "))
	}
}

// fdCount is the number of open fds of pid.
func fdCount(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// fdTargets maps each open fd of pid to its readlink target
// ("socket:[123]", "anon_inode:inotify", a path...).
func fdTargets(pid int) (map[int]string, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	m := map[int]string{}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil {
			m[fd] = target
		}
	}
	return m, nil
}

// parseKV parses "K=V" lines (the demo's /env answer, /proc/P/environ split
// on NUL).
func parseKV(lines []string) map[string]string {
	m := map[string]string{}
	for _, l := range lines {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

// procEnviron is the initial environment of pid.
func procEnviron(t testing.TB, pid int) map[string]string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatalf("environ of %s: %v", describeProc(pid), err)
	}
	return parseKV(strings.Split(string(data), "\x00"))
}

// netSock is a socket of a /proc/net table (tcp, tcp6, udp, udp6).
type netSock struct {
	table                 string // "tcp", ...
	localPort, remotePort int
	state                 string // for tcp, "0A" is TCP_LISTEN
	queued                int    // rx_queue: for a listening socket, its accept queue
	inode                 uint64
}

// procNetSockets lists the sockets of the /proc/net tables; a table that
// does not exist (no IPv6) has none.
func procNetSockets(tables ...string) []netSock {
	var socks []netSock
	for _, table := range tables {
		data, err := os.ReadFile("/proc/net/" + table)
		if err != nil {
			continue
		}
		lines := strings.Split(string(data), "\n")
		for _, line := range lines[1:] { // after the header
			// Addresses are hex "0100007F:1F90"; the queues "tx:rx".
			f := strings.Fields(line)
			if len(f) < 10 {
				continue
			}
			s := netSock{table: table, state: f[3]}
			s.localPort = hexPort(f[1])
			s.remotePort = hexPort(f[2])
			_, rxq, _ := strings.Cut(f[4], ":")
			q, _ := strconv.ParseInt(rxq, 16, 64)
			s.queued = int(q)
			s.inode, _ = strconv.ParseUint(f[9], 10, 64)
			socks = append(socks, s)
		}
	}
	return socks
}

// hexPort is the port of a /proc/net address ("0100007F:1F90"), -1 if none.
func hexPort(addr string) int {
	_, h, _ := strings.Cut(addr, ":")
	port, err := strconv.ParseUint(h, 16, 16)
	if err != nil {
		return -1
	}
	return int(port)
}

// tcpListeners lists the listening TCP sockets on port (IPv4 and IPv6).
func tcpListeners(port int) []netSock {
	var out []netSock
	for _, s := range procNetSockets("tcp", "tcp6") {
		if s.state == "0A" && s.localPort == port {
			out = append(out, s)
		}
	}
	return out
}

// parseFdList parses the demo app's /fds answer ("N -> target" lines).
// Note that a Go 1.25+ program (the demo included) keeps
// /sys/fs/cgroup/.../cpu.max (or cpu.cfs_quota_us and cpu.cfs_period_us)
// open from start-up to track its CPU limit: those are the runtime's own,
// not leaks; isGoRuntimeFd tells them.
func parseFdList(body string) map[int]string {
	m := map[int]string{}
	for line := range strings.Lines(body) {
		n, target, ok := strings.Cut(strings.TrimSuffix(line, "\n"), " -> ")
		if fd, err := strconv.Atoi(n); ok && err == nil {
			m[fd] = target
		}
	}
	return m
}

// fdsAtStart is the demo's GET /fds?at=start answer on addr (its open fds
// as at the top of its main) and its parse.
func fdsAtStart(t testing.TB, addr string) (string, map[int]string) {
	t.Helper()
	body, err := httpGet(addr, "/fds?at=start")
	if err != nil {
		t.Fatalf("GET /fds?at=start: %v", err)
	}
	return body, parseFdList(body)
}

// demoEnv is the demo's GET /env answer on addr (its environment, "K=V"
// lines) and its parse.
func demoEnv(t testing.TB, addr string) (string, map[string]string) {
	t.Helper()
	body, err := httpGet(addr, "/env")
	if err != nil {
		t.Fatalf("GET /env: %v", err)
	}
	return body, parseKV(strings.Split(body, "\n"))
}

// isGoRuntimeFd reports whether an fd target is one the Go runtime opens by
// itself in any Go program (the cgroup CPU limit files of Go 1.25+).
func isGoRuntimeFd(target string) bool {
	return strings.HasPrefix(target, "/sys/fs/cgroup/")
}

// inode of a "socket:[123]" target, 0 if it is not a socket.
func socketInode(target string) uint64 {
	s, ok := strings.CutPrefix(target, "socket:[")
	if !ok {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
	return n
}

// bodyField returns the value of key in a "version=1 pid=2 gen=3" body.
func bodyField(body, key string) string {
	for _, f := range strings.Fields(body) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

// splitTarget turns an address (as for httpGet) or an "http://host:port/path"
// URL into the address and the path.
func splitTarget(target string) (addr, path string) {
	if rest, ok := strings.CutPrefix(target, "http://"); ok {
		addr, path, _ = strings.Cut(rest, "/")
		return addr, "/" + path
	}
	return target, "/"
}

// httpGet sends GET path on a new connection to addr ("host:port", or a unix
// socket as a path or "unix:PATH") with Connection: close, so that no probe
// keeps a connection open to a draining generation. A status other than 200
// is an error that quotes the body.
func httpGet(addr, path string) (string, error) {
	network, a := "tcp", addr
	switch {
	case strings.HasPrefix(addr, "unix:"):
		network, a = "unix", strings.TrimPrefix(strings.TrimPrefix(addr, "unix:"), "//")
	case strings.HasPrefix(addr, "/"), strings.HasPrefix(addr, "./"):
		network = "unix"
	}
	host := addr
	if network == "unix" {
		host = "localhost"
	}
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, a)
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + host + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return string(body), err
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("GET %s: %s: %q", path, resp.Status, body)
	}
	return string(body), nil
}

// waitHTTP polls GET on target (an address for GET /, as for httpGet, or an
// "http://host:port/path" URL) every 20ms until the body contains want, and
// returns that body; it fails the test after timeout with the last answer.
func waitHTTP(t testing.TB, target, want string, timeout time.Duration) string {
	t.Helper()
	addr, path := splitTarget(target)
	var body string
	var err error
	if !waitUntil(timeout, 20*time.Millisecond, func() bool {
		body, err = httpGet(addr, path)
		return err == nil && strings.Contains(body, want)
	}) {
		t.Fatalf("GET %s: no answer containing %q within %v; last: %q, %v", target, want, timeout, body, err)
	}
	return body
}

// recordEvent is one line of the demo app's -record file:
// "EVENT NS [ARG...] gen=G pid=P".
type recordEvent struct {
	Event string   // listening, ready, drain, usr1, exit
	NS    int64    // unix nanoseconds
	Args  []string // drain: the signal ("SIGQUIT")
	Gen   string
	Pid   int
}

func (e recordEvent) Time() time.Time { return time.Unix(0, e.NS) }

// readRecord parses a demo -record file; a missing file is no events.
func readRecord(t testing.TB, path string) []recordEvent {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var evs []recordEvent
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			t.Fatalf("record %s: bad line %q", path, sc.Text())
		}
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			t.Fatalf("record %s: bad line %q", path, sc.Text())
		}
		e := recordEvent{Event: f[0], NS: ns}
		for _, x := range f[2:] {
			if v, ok := strings.CutPrefix(x, "gen="); ok {
				e.Gen = v
			} else if v, ok := strings.CutPrefix(x, "pid="); ok {
				e.Pid, _ = strconv.Atoi(v)
			} else {
				e.Args = append(e.Args, x)
			}
		}
		evs = append(evs, e)
	}
	return evs
}

// findEvent returns the first event named event of generation gen ("" for
// any) and whether there is one.
func findEvent(evs []recordEvent, event, gen string) (recordEvent, bool) {
	for _, e := range evs {
		if e.Event == event && (gen == "" || e.Gen == gen) {
			return e, true
		}
	}
	return recordEvent{}, false
}

// markedProcs returns the pids of every process whose environment carries
// marker: whatever a started process and its descendants left, wherever
// they were reparented.
func markedProcs(marker string) []int {
	want := []byte(harnessMarkerEnv + "=" + marker + "\x00")
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(append([]byte{0}, env...), append([]byte{0}, want...)) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// killTree SIGKILLs every pid and the process group each one leads (never
// the test's own group).
func killTree(pids []int) {
	own := syscall.Getpgrp()
	for _, pid := range pids {
		if st, ok := readProcStat(pid); ok && st.PGid == pid && pid != own && pid > 1 {
			syscall.Kill(-pid, syscall.SIGKILL)
		}
		if pid > 1 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func (p *relaunchProc) cleanup() {
	t := p.t
	pid := p.Pid()
	if !p.Exited() {
		// Freeze it so it starts nothing new while its tree is killed.
		syscall.Kill(pid, syscall.SIGSTOP)
	}
	for range 3 {
		pids := procDescendants(pid)
		pids = append(pids, markedProcs(p.marker)...)
		if len(pids) == 0 {
			break
		}
		killTree(pids)
	}
	if !p.Exited() {
		syscall.Kill(-pid, syscall.SIGKILL)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if _, err := p.Wait(10 * time.Second); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	// Whatever escaped (reparented after the parent died): kill by marker.
	left := markedProcs(p.marker)
	killTree(left)
	if left = waitProcsGone(left, 5*time.Second); len(left) > 0 {
		t.Errorf("cleanup: could not kill: %s", strings.Join(describeProcs(left), "; "))
	}
	if !p.outputDone(5 * time.Second) {
		t.Errorf("cleanup: output pipe of %s still open (a process outside the tree holds it)", p.name)
	}
	p.outR.Close()
	out := p.Stderr()
	if strings.Contains(out, "WARNING: DATA RACE") {
		t.Errorf("%s reported a data race", p.name)
	}
	if t.Failed() || os.Getenv("RELAUNCH_E2E_LOG") == "1" {
		t.Logf("%s (pid %d, %v) output:\n%s", p.name, pid, p.state, out)
	}
}

// TestHarnessSmoke runs the test apps without relaunch, to prove that the
// harness and the apps work: the demo app on a port of its own (-listen) and
// on an inherited socket, the demo's refusal of a LISTEN_PID that is not its
// own, and the gosystemd app on an inherited socket.
func TestHarnessSmoke(t *testing.T) {
	needE2E(t, "demo", "demo-v2", "gosystemd")

	t.Run("listen", func(t *testing.T) {
		addr := freeAddr(t)
		rec := filepath.Join(t.TempDir(), "record")
		p := startProc(t, procOpts{Env: []string{"RELAUNCH_GENERATION=7"}}, demoBin, "-listen", addr, "-record", rec, "-version", "3")
		body := waitHTTP(t, addr, "version=3", 10*time.Second)
		if want := fmt.Sprintf("version=3 pid=%d gen=7\n", p.Pid()); body != want {
			t.Errorf("GET / = %q, want %q", body, want)
		}
		p.WaitLog(t, fmt.Sprintf("demo: gen 7 pid %d version 3 listening on 1 sockets", p.Pid()), 5*time.Second)
		env, err := httpGet(addr, "/env")
		if err != nil || !strings.Contains(env, fmt.Sprintf("PID=%d\n", p.Pid())) || !strings.Contains(env, "LISTEN_FDS=\n") {
			t.Errorf("GET /env = %q, %v", env, err)
		}
		if body := waitHTTP(t, "http://"+addr+"/sleep?d=10ms", "gen=7", 5*time.Second); !strings.HasPrefix(body, "version=3") {
			t.Errorf("GET /sleep = %q", body)
		}
		if n, err := fdCount(p.Pid()); err != nil || n < 4 {
			t.Errorf("fdCount = %d, %v", n, err)
		}
		p.Signal(syscall.SIGTERM)
		if code := p.MustWait(10 * time.Second); code != 0 {
			t.Errorf("exit status %d after SIGTERM, want 0", code)
		}
		p.WaitLog(t, fmt.Sprintf("demo: gen 7 pid %d exiting", p.Pid()), 5*time.Second)
		evs := readRecord(t, rec)
		var names []string
		for _, e := range evs {
			names = append(names, e.Event)
			if e.Pid != p.Pid() || e.Gen != "7" {
				t.Errorf("record event %+v: wrong pid or gen", e)
			}
		}
		if got := strings.Join(slices.DeleteFunc(names, func(n string) bool { return n == "served" }), " "); got != "init listening drain exit" {
			t.Errorf("record events %q, want init listening drain exit (and served)", got)
		}
		if d, _ := findEvent(evs, "drain", ""); len(d.Args) != 1 || d.Args[0] != "SIGTERM" {
			t.Errorf("drain event %+v", d)
		}
		noProcessesLeft(t, []int{p.Pid()})
	})

	t.Run("inherited", func(t *testing.T) {
		dir := shortTempDir(t)
		tcp := listenFile(t, "tcp", "127.0.0.1:0")
		unix := listenFile(t, "unix", filepath.Join(dir, "d.sock"))
		rec := filepath.Join(dir, "record")
		p := startProc(t, procOpts{
			ExtraFiles: []*os.File{tcp, unix},
			Activation: true,
			FdNames:    []string{"web", "admin"},
			Env:        []string{"RELAUNCH_GENERATION=1"},
		}, demoV2Bin, "-record", rec)
		addr := fileAddr(t, tcp)
		body := waitHTTP(t, addr, "version=2", 10*time.Second)
		if pid := bodyField(body, "pid"); pid != strconv.Itoa(p.Pid()) {
			t.Errorf("answer from pid %s, want %d", pid, p.Pid())
		}
		waitHTTP(t, fileAddr(t, unix), "version=2", 5*time.Second)
		if names, err := httpGet(addr, "/names"); err != nil || names != "web\nadmin\n" {
			t.Errorf("GET /names = %q, %v", names, err)
		}
		fds, m := fdsAtStart(t, addr)
		if socketInode(m[3]) == 0 || socketInode(m[4]) == 0 {
			t.Errorf("fds 3 and 4 at start are not sockets: %q", fds)
		}
		if _, ok := findEvent(readRecord(t, rec), "ready", ""); ok {
			t.Error("ready recorded without NOTIFY_SOCKET")
		}
		p.Signal(syscall.SIGQUIT)
		if code := p.MustWait(10 * time.Second); code != 0 {
			t.Errorf("exit status %d after SIGQUIT, want 0", code)
		}
	})

	t.Run("wrong LISTEN_PID", func(t *testing.T) {
		tcp := listenFile(t, "tcp", "127.0.0.1:0")
		p := startProc(t, procOpts{ExtraFiles: []*os.File{tcp}, Env: []string{"LISTEN_FDS=1", "LISTEN_PID=1"}}, demoBin)
		if code := p.MustWait(10 * time.Second); code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
		p.WaitLog(t, "is not my pid", time.Second)
	})

	t.Run("gosystemd", func(t *testing.T) {
		tcp := listenFile(t, "tcp", "127.0.0.1:0")
		p := startProc(t, procOpts{ExtraFiles: []*os.File{tcp}, Activation: true}, gosystemdBin)
		waitHTTP(t, fileAddr(t, tcp), fmt.Sprintf("gosystemd pid=%d", p.Pid()), 10*time.Second)
		p.Signal(syscall.SIGTERM)
		if code := p.MustWait(10 * time.Second); code != 0 {
			t.Errorf("exit status %d after SIGTERM, want 0", code)
		}

		q := startProc(t, procOpts{}, gosystemdBin)
		if code := q.MustWait(10 * time.Second); code != 1 {
			t.Errorf("gosystemd without sockets: exit status %d, want 1", code)
		}
		q.WaitLog(t, "no sockets passed", time.Second)
	})
}

// waitAccepted waits until pid holds the server side of the TCP connection
// c (found in /proc/net/tcp by its two ports): the app has accepted it.
func waitAccepted(t testing.TB, pid int, c net.Conn, timeout time.Duration) {
	t.Helper()
	local, remote := c.LocalAddr().(*net.TCPAddr), c.RemoteAddr().(*net.TCPAddr)
	if !waitUntil(timeout, 5*time.Millisecond, func() bool {
		var ino uint64
		for _, s := range procNetSockets("tcp") {
			// The server's side: its local port is the client's remote one.
			if s.localPort == remote.Port && s.remotePort == local.Port {
				ino = s.inode
			}
		}
		if ino == 0 {
			return false
		}
		fds, err := fdTargets(pid)
		if err != nil {
			return false
		}
		for _, target := range fds {
			if socketInode(target) == ino {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("pid %d did not accept the connection from port %d within %v", pid, local.Port, timeout)
	}
}

// needCommand returns the path of the command name or fails the test with
// the Debian package to install. nginx and haproxy live in /usr/sbin, which
// is not on every user's PATH.
func needCommand(t testing.TB, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		if name == "python3" {
			return realPython(p)
		}
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	t.Fatalf("%s is needed for this test: apt-get install %s (.ci/run installs it)", name, pkg)
	return ""
}

// realPython is the interpreter py runs: where python3 on the PATH is a
// wrapper (pyenv's shim is a shell script that takes a second or more to
// start on a busy machine), an app's start-up would be mostly the wrapper's.
var realPython = func() func(py string) string {
	var once sync.Once
	var exe string
	return func(py string) string {
		once.Do(func() {
			out, err := exec.Command(py, "-c", "import sys; print(sys.executable)").Output()
			if e := strings.TrimSpace(string(out)); err == nil && filepath.IsAbs(e) {
				exe = e
			}
		})
		if exe == "" {
			return py
		}
		return exe
	}
}()

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Generations, as relaunch's log tells them.

var startedRe = regexp.MustCompile(`gen (\d+) \(pid (\d+)\) started`)

// genPids maps each generation relaunch started to its pid, from its log.
func genPids(p *relaunchProc) map[int]int {
	m := map[int]int{}
	for _, sm := range startedRe.FindAllStringSubmatch(p.Stderr(), -1) {
		g, _ := strconv.Atoi(sm[1])
		pid, _ := strconv.Atoi(sm[2])
		m[g] = pid
	}
	return m
}

// genPidRange lists the pids of generations from..to (both included), from
// relaunch's log.
func genPidRange(p *relaunchProc, from, to int) []int {
	pids := genPids(p)
	var r []int
	for g := from; g <= to; g++ {
		r = append(r, pids[g])
	}
	return r
}

// upgradeTo sends SIGUSR2 and waits until generation gen is ready.
func upgradeTo(t testing.TB, p *relaunchProc, gen int) {
	t.Helper()
	p.Signal(syscall.SIGUSR2)
	p.WaitLog(t, fmt.Sprintf("gen %d (pid", gen), 10*time.Second)
	p.WaitLog(t, fmt.Sprintf("gen %d (pid %d) ready in", gen, waitPid(t, p, gen)), 10*time.Second)
}

// waitPid waits until relaunch logs generation gen and returns its pid.
func waitPid(t testing.TB, p *relaunchProc, gen int) int {
	t.Helper()
	p.WaitLog(t, fmt.Sprintf("gen %d (pid", gen), 10*time.Second)
	return genPids(p)[gen]
}

// upgradeAndWait upgrades to generation gen and waits up to timeout until
// the previous one has exited.
func upgradeAndWait(t testing.TB, p *relaunchProc, gen int, timeout time.Duration) {
	t.Helper()
	upgradeTo(t, p, gen)
	p.WaitLog(t, fmt.Sprintf("gen %d (pid %d) exited", gen-1, genPids(p)[gen-1]), timeout)
}

var readyRe = regexp.MustCompile(`gen (\d+) \(pid \d+\) ready in`)

// lastReady is the newest generation relaunch has said is ready.
func lastReady(p *relaunchProc) int {
	last := 0
	for _, m := range readyRe.FindAllStringSubmatch(p.Stderr(), -1) {
		last, _ = strconv.Atoi(m[1])
	}
	return last
}

// settled: the newest started generation is the newest ready one.
func settled(p *relaunchProc) bool {
	pids := genPids(p)
	return lastReady(p) == len(pids)
}

// signalStorm sends relaunch (serving addr) 30 SIGUSR2 in one second and
// waits until they have settled: one child left, and it is the last
// generation that got ready, which answers. It returns that generation.
func signalStorm(t testing.TB, p *relaunchProc, addr string) int {
	t.Helper()
	for range 30 {
		p.Signal(syscall.SIGUSR2)
		time.Sleep(33 * time.Millisecond) // the storm's pace, not synchronisation
	}
	if !waitUntil(30*time.Second, 20*time.Millisecond, func() bool { return len(p.Children()) == 1 && settled(p) }) {
		t.Fatalf("not settled on one generation: children %v\n%s", p.Children(), p.Stderr())
	}
	last := lastReady(p)
	if last < 2 {
		t.Fatalf("no upgrade happened:\n%s", p.Stderr())
	}
	waitHTTP(t, addr, fmt.Sprintf("gen=%d", last), 5*time.Second)
	return last
}

// checkOnlyGen checks that relaunch's only child is generation gen.
func checkOnlyGen(t testing.TB, p *relaunchProc, gen int) {
	t.Helper()
	if kids := p.Children(); len(kids) != 1 || kids[0] != genPids(p)[gen] {
		t.Errorf("relaunch's children are %v; want only gen %d (pid %d)", kids, gen, genPids(p)[gen])
	}
}

// checkNoZombies checks that no descendant of relaunch is a zombie.
func checkNoZombies(t testing.TB, p *relaunchProc) {
	t.Helper()
	for _, pid := range p.Descendants() {
		if processZombie(pid) {
			t.Errorf("zombie left: %s", describeProc(pid))
		}
	}
}

// startServing starts relaunch with "--listen ADDR --no-watch-binary" on a
// free 127.0.0.1 address, then args (more options, "--" and the command),
// and waits until gen 1 answers. It returns relaunch and ADDR.
func startServing(t testing.TB, args ...string) (*relaunchProc, string) {
	t.Helper()
	addr := freeAddr(t)
	p := startRelaunch(t, append([]string{"--listen", addr, "--no-watch-binary"}, args...)...)
	waitHTTP(t, addr, "gen=1", 10*time.Second)
	return p, addr
}

// Load and requests.

// loadClients is the number of clients of startLoad.
const loadClients = 6

// startLoadConfig starts cfg's load, stopped at the end of the test if the
// test does not stop it.
func startLoadConfig(t testing.TB, cfg loadtest.Config) *loadtest.Runner {
	t.Helper()
	r, err := loadtest.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })
	return r
}

// startLoad puts a mixed load (new and keep-alive connections) on addr.
func startLoad(t testing.TB, addr string) *loadtest.Runner {
	t.Helper()
	return startLoadConfig(t, loadtest.Config{
		Addr: addr, Clients: loadClients, KeepAliveFraction: 0.5, Timeout: 20 * time.Second,
	})
}

// stopLoad ends the load and fails the test on any error.
func stopLoad(t testing.TB, r *loadtest.Runner) *loadtest.Result {
	t.Helper()
	res := r.Stop()
	t.Logf("load: %s", res)
	if res.Failed() > 0 || res.OK == 0 {
		t.Errorf("load: %d of %d requests failed (want 0), %d ok: %v", res.Failed(), res.Total, res.OK, res.ErrorMessages)
	}
	return res
}

// waitLoadOK waits until the load has had n successful requests.
func waitLoadOK(t testing.TB, r *loadtest.Runner, n int, timeout time.Duration) {
	t.Helper()
	var ok, failed int
	if !waitUntil(timeout, 5*time.Millisecond, func() bool { ok, failed = r.Progress(); return ok >= n }) {
		t.Fatalf("load: %d requests ok (%d failed) within %v, want %d", ok, failed, timeout, n)
	}
}

// checkBacklogWhileDown kills gen 1 of relaunch p (serving addr, running an
// appScript app) with a slow restart, then checks that 20 clients that
// connect while nothing runs wait in the backlog and are all served by the
// restarted generation.
func checkBacklogWhileDown(t testing.TB, p *relaunchProc, addr string, setFlags func(string)) {
	t.Helper()
	setFlags("-init-delay 1s") // the restart takes 100ms back-off + 1s
	syscall.Kill(waitPid(t, p, 1), syscall.SIGKILL)
	p.WaitLog(t, "restarting in", 5*time.Second)
	res, err := loadtest.Run(context.Background(), loadtest.Config{Addr: addr, Clients: 20, Requests: 20, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed() > 0 || res.OK != 20 || res.Gens["2"] != 20 {
		t.Errorf("while down: %s; want 20 ok, all from gen 2: %v", res, res.ErrorMessages)
	}
}

// httpAnswer is what httpGet returned.
type httpAnswer struct {
	body string
	err  error
}

// getAccepted sends GET path to addr in the background and returns the
// answer's channel once the generation pid has accepted the connection.
// The request is in its hands once it is being served; the demo has no
// hook for that, so this waits until the connection is accepted: pid then
// holds one more socket fd (for 5s at most, without failing).
func getAccepted(addr, path string, pid int) <-chan httpAnswer {
	done := make(chan httpAnswer, 1)
	go func() {
		b, err := httpGet(addr, path)
		done <- httpAnswer{b, err}
	}()
	n0, _ := fdCount(pid)
	waitUntil(5*time.Second, 5*time.Millisecond, func() bool {
		n, _ := fdCount(pid)
		return n > n0
	})
	return done
}

// relaunch's own messages.

// seeHelp is the pointer to --help that may follow a usage error.
const seeHelp = "see 'relaunch --help'"

// outputLines returns the non-empty lines of out.
func outputLines(out string) []string {
	var lines []string
	for l := range strings.Lines(out) {
		if l = strings.TrimRight(l, "\n"); strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// checkOnlyMessage checks that out is exactly one "relaunch: ..." line,
// plus at most a pointer to --help, and that this line contains every want.
func checkOnlyMessage(t testing.TB, out string, wants ...string) {
	t.Helper()
	lines := outputLines(out)
	if len(lines) == 2 && lines[1] == seeHelp {
		lines = lines[:1]
	}
	if len(lines) != 1 {
		t.Errorf("want one message line (plus at most %q), got %d lines:\n%s", seeHelp, len(lines), out)
		return
	}
	checkMessageLine(t, lines[0], wants...)
}

// checkMessageLine checks that line is one of relaunch's messages
// ("relaunch: ...") and contains every want.
func checkMessageLine(t testing.TB, line string, wants ...string) {
	t.Helper()
	if !strings.HasPrefix(line, "relaunch: ") {
		t.Errorf("message %q does not start with \"relaunch: \"", line)
	}
	for _, w := range wants {
		if !strings.Contains(line, w) {
			t.Errorf("message %q does not contain %q", line, w)
		}
	}
}

// containsAll reports whether s contains every one of subs.
func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// tryStatus asks the relaunch at the control socket sock for `status
// --json`; ok is false when it does not answer or the answer does not parse.
func tryStatus(t *testing.T, sock string) (st launcher.Status, out string, ok bool) {
	t.Helper()
	code, out := client(t, sock, "status", "--json")
	return st, out, code == 0 && json.Unmarshal([]byte(out), &st) == nil
}

// statusOf is tryStatus, failing the test when there is no answer.
func statusOf(t *testing.T, sock string) launcher.Status {
	t.Helper()
	st, out, ok := tryStatus(t, sock)
	if !ok {
		t.Fatalf("relaunch status --json: %s", out)
	}
	return st
}
