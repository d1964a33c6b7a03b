//go:build linux

// End-to-end tests of what a hostile neighbour or a broken environment can
// do to relaunch: links planted where the pidfile's temporary file goes, an
// endless control request, a stderr reader that goes away; and the limits
// of the status client. A pidfile directory other users can write is a CLI
// script (testdata/script/pidfile.txtar).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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

	"github.com/relaunch/relaunch/launcher"
	"github.com/relaunch/relaunch/sdlisten"
)

// procStatusField returns a field of /proc/PID/status ("VmHWM", "SigIgn").
func procStatusField(t testing.TB, pid int, field string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

// procStatusKB returns a "N kB" field of /proc/PID/status in KiB.
func procStatusKB(t testing.TB, pid int, field string) int {
	t.Helper()
	v := procStatusField(t, pid, field)
	n, err := strconv.Atoi(strings.TrimSuffix(v, " kB"))
	if err != nil {
		t.Fatalf("/proc/%d/status %s: %q", pid, field, v)
	}
	return n
}

// readProcInt reads a number from a /proc file.
func readProcInt(t testing.TB, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The pidfile used to be written through PATH.tmp<pid>, following links:
// a user who can write the directory (the sticky /tmp here, with a
// planted link for every pid the next process may get) made a root
// relaunch overwrite any file. The file the links point to stays intact,
// the pidfile is a regular file holding relaunch's pid, and nothing but
// the farm is left at exit.
func TestSecurityPidfileSymlinkFarm(t *testing.T) {
	needE2E(t)
	// Not parallel: the farm covers the pids the next processes get.
	port := freePort(t)
	tmp, env := cliTmp(t)
	dir := shortTempDir(t)
	if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil { // like /tmp: allowed, as it is sticky
		t.Fatal(err)
	}
	pidfile := filepath.Join(dir, "app.pid")
	victim := filepath.Join(shortTempDir(t), "shadow")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const farmSize = 3000
	last := readProcInt(t, "/proc/sys/kernel/ns_last_pid")
	pidMax := readProcInt(t, "/proc/sys/kernel/pid_max")
	var farm []int
	for i, pid := 0, last; i < farmSize; i++ {
		if pid++; pid >= pidMax {
			pid = 300 // where the kernel wraps
		}
		farm = append(farm, pid)
		if err := os.Symlink(victim, pidfile+".tmp"+strconv.Itoa(pid)); err != nil {
			t.Fatal(err)
		}
	}
	p := startRelaunchOpts(t, procOpts{Env: env}, "--pidfile", pidfile, "-l", cliAddr(port), "--", demoBin)
	if !slices.Contains(farm, p.Pid()) {
		t.Fatalf("relaunch got pid %d, outside the farm (%d to %d): the test proves nothing this time", p.Pid(), farm[0], farm[len(farm)-1])
	}
	waitHTTP(t, cliAddr(port), "version=1", cliStartTimeout)
	if fi, err := os.Lstat(pidfile); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("pidfile: %v, %v; want a regular file", fi, err)
	}
	if data, _ := os.ReadFile(pidfile); string(data) != strconv.Itoa(p.Pid())+"\n" {
		t.Errorf("pidfile holds %q, want %d", data, p.Pid())
	}
	if data, err := os.ReadFile(victim); err != nil || string(data) != "precious\n" {
		t.Errorf("the file the planted links point to now holds %q (%v): relaunch wrote through a link", data, err)
	}
	cliStop(t, p)
	cliCheckNothingLeft(t, p, tmp, []int{port}, []string{pidfile})
	if ents, _ := os.ReadDir(dir); len(ents) != farmSize {
		t.Errorf("%d entries next to the pidfile after exit, want the %d planted links only", len(ents), farmSize)
	}
}

// A control request without an end used to be buffered whole: 32 MiB
// without a newline are cut after a few KiB with an answer that says so,
// relaunch's peak memory does not grow, and status still answers, its
// text and JSON each ending in one newline.
func TestSecurityControlLongRequest(t *testing.T) {
	needE2E(t)
	t.Parallel()
	sock := filepath.Join(shortTempDir(t), "ctl.sock")
	p, _ := startServing(t, "--control", sock, "--", demoBin)
	if code, out := client(t, sock, "status"); code != 0 {
		t.Fatalf("status: %d %s", code, out)
	}
	hwm0 := procStatusKB(t, p.Pid(), "VmHWM")

	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	// The write fails once relaunch cuts the connection; then the
	// end of the request, for a relaunch that would still wait for it.
	_, werr := c.Write(bytes.Repeat([]byte("x"), 32<<20))
	c.(*net.UnixConn).CloseWrite()
	ans, rerr := io.ReadAll(io.LimitReader(c, 1<<16))
	if !strings.Contains(string(ans), "request too long") {
		t.Errorf("answer to 32 MiB without a newline: %q (write: %v, read: %v); want \"request too long\"", ans, werr, rerr)
	}
	if grew := procStatusKB(t, p.Pid(), "VmHWM") - hwm0; grew > 8<<10 {
		t.Errorf("relaunch's peak RSS grew by %d KiB while it read the request; want a few KiB", grew)
	}
	t.Logf("VmRSS after: %s", procStatusField(t, p.Pid(), "VmRSS"))

	code, out := client(t, sock, "status", "--json")
	var st launcher.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.Pid != p.Pid() {
		t.Fatalf("status --json after the long request: exit %d, %v, %q", code, err, out)
	}
	checkOneNewline(t, "status --json", out)
	code, out = client(t, sock, "status")
	if code != 0 || !strings.Contains(out, "gen 1  pid") {
		t.Errorf("status after the long request: exit %d, %q", code, out)
	}
	checkOneNewline(t, "status", out)
	code, out = client(t, sock, "rollback")
	if code != 1 || !strings.Contains(out, "nothing to roll back to") {
		t.Errorf("rollback with nothing to roll back to: exit %d, %q", code, out)
	}
	checkOneNewline(t, "rollback's error", out)
}

// checkOneNewline checks that out ends with exactly one newline.
func checkOneNewline(t testing.TB, what, out string) {
	t.Helper()
	if !strings.HasSuffix(out, "\n") || strings.HasSuffix(out, "\n\n") {
		t.Errorf("%s output does not end with exactly one newline: %q", what, out)
	}
}

// relaunch 2>&1 | logger, and logger restarted: relaunch's stderr reader
// is gone. relaunch used to die of SIGPIPE at its next log line, leaving
// the app orphaned and its runtime directory behind. It keeps running: an
// upgrade still happens, TERM still stops it cleanly; and the app gets
// SIGPIPE's default action, not an ignored SIGPIPE.
func TestSecurityStderrReaderGone(t *testing.T) {
	needE2E(t)
	t.Parallel()
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "ctl.sock")
	// The app's own output goes elsewhere: this is about relaunch's.
	app := filepath.Join(dir, "app")
	if err := os.WriteFile(app, []byte("#!/bin/sh\nexec "+demoBin+" \"$@\" >/dev/null 2>&1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	port := freePort(t)
	tmp, env := cliTmp(t)
	p := startRelaunchOpts(t, procOpts{Env: env, Output: w}, "-l", cliAddr(port), "--no-watch-binary", "--control", sock, "--", app)
	w.Close()
	waitHTTP(t, cliAddr(port), "gen=1", cliStartTimeout)
	r.Close() // the reader goes away

	current := func() (gen, pid int) {
		st, _, ok := tryStatus(t, sock)
		if !ok {
			return 0, 0
		}
		for _, g := range st.Generations {
			if g.State == "current" {
				return g.Generation, g.Pid
			}
		}
		return 0, 0
	}
	checkSigpipeDefault := func(pid int) {
		t.Helper()
		mask, err := strconv.ParseUint(procStatusField(t, pid, "SigIgn"), 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		if mask&(1<<(syscall.SIGPIPE-1)) != 0 {
			t.Errorf("the app (pid %d) has SIGPIPE ignored (SigIgn %x): relaunch must not pass an ignored SIGPIPE on", pid, mask)
		}
	}
	if _, pid := current(); pid != 0 {
		checkSigpipeDefault(pid)
	}

	p.Signal(syscall.SIGUSR2) // relaunch logs the upgrade to the closed pipe
	var gen, pid int
	if !waitUntil(cliStartTimeout, 20*time.Millisecond, func() bool {
		gen, pid = current()
		return gen == 2 || p.Exited()
	}) || gen != 2 {
		code, _ := p.Wait(time.Second)
		t.Fatalf("no gen 2 current after SIGUSR2 with stderr's reader gone (current gen %d); relaunch exited: %v (status %d)", gen, p.Exited(), code)
	}
	checkSigpipeDefault(pid)
	cliStop(t, p)
	cliCheckNothingLeft(t, p, tmp, []int{port}, []string{sock})
}

// Port 0 twice in -l is two ports, not a duplicate: relaunch starts. The
// duplicates and --max-draining's bounds are usage errors in the CLI
// scripts (testdata/script: listen, usage).
func TestCLIPortZeroTwice(t *testing.T) {
	needE2E(t)
	t.Parallel()
	tmp, env := cliTmp(t)
	p := startRelaunchOpts(t, procOpts{Env: env}, "-l", "127.0.0.1:0", "-l", "127.0.0.1:0", "--", demoBin)
	p.WaitLog(t, "gen 1 (pid", cliStartTimeout)
	p.WaitLog(t, "ready", cliStartTimeout)
	cliStop(t, p)
	cliCheckNothingLeft(t, p, tmp, nil, nil)
}

// Which pairs of addresses overlap.
func TestSameSocket(t *testing.T) {
	cases := []struct {
		a, b string
		same bool
	}{
		{"127.0.0.1:80", "127.0.0.1:80", true},
		{"127.0.0.1:80", "127.0.0.1:81", false},
		{"127.0.0.1:80", "127.0.0.2:80", false},
		{"127.0.0.1:80", "udp://127.0.0.1:80", false},
		{"udp://:53", "udp4://127.0.0.1:53", true},
		{":80", "[::1]:80", true},
		{":80", "tcp4://:80", true},
		{":80", "tcp6://:80", true},
		{"tcp4://:80", "tcp6://:80", false},
		{"tcp4://:80", "[::1]:80", false},
		{"tcp6://:80", "127.0.0.1:80", false},
		{"tcp://0.0.0.0:80", "127.0.0.1:80", true},
		{"tcp://0.0.0.0:80", "[::]:80", false},
		{"[::]:80", "[::1]:80", true},
		{"127.0.0.1:0", "127.0.0.1:0", false},
		{":0", ":0", false},
		{"localhost:80", "LOCALHOST:80", true},
		{"localhost:80", "tcp6://localhost:80", false},
		{"localhost:80", ":80", true},
		{"localhost:80", "tcp4://:80", false}, // it may resolve to IPv6
		{"tcp4://localhost:80", "tcp4://:80", true},
		{"web=127.0.0.1:80", "api=127.0.0.1:80", true},
		{"unix:///a.sock", "unix:///a.sock", false}, // the second bind says it is in use
	}
	for _, c := range cases {
		a, err := sdlisten.ParseAddr(c.a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := sdlisten.ParseAddr(c.b)
		if err != nil {
			t.Fatal(err)
		}
		if got := sameSocket(a, b); got != c.same || sameSocket(b, a) != got {
			t.Errorf("sameSocket(%s, %s) = %v (reversed %v), want %v", a, b, got, sameSocket(b, a), c.same)
		}
	}
}

// status against a control socket that accepts and never answers: exit 1
// within its own short timeout (not the upgrade's 2 minutes), one line;
// --timeout still sets it.
func TestControlStatusStuck(t *testing.T) {
	needE2E(t)
	t.Parallel()
	sock := filepath.Join(shortTempDir(t), "stuck.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c // held open, never answered
		}
	}()
	defer func() {
		for len(conns) > 0 {
			(<-conns).Close()
		}
	}()
	run := func(args ...string) (int, string, time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		out, err := exec.CommandContext(ctx, relaunchBin, append([]string{"status", "--control", sock}, args...)...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, string(out), time.Since(start)
	}
	code, out, took := run()
	if code != 1 || took > 10*time.Second || !strings.Contains(out, sock) || !strings.Contains(out, "no answer within 5s") {
		t.Errorf("status against a stuck socket: exit %d after %v, %q; want 1 within 5s and a line naming %s", code, took.Round(time.Millisecond), out, sock)
	}
	checkOneNewline(t, "status's error", out)
	if n := strings.Count(out, "\n"); n != 1 {
		t.Errorf("status's error is %d lines: %q", n, out)
	}
	code, out, took = run("--timeout", "1s")
	if code != 1 || took < time.Second || took > 5*time.Second || !strings.Contains(out, "no answer within 1s") {
		t.Errorf("status --timeout 1s against a stuck socket: exit %d after %v, %q", code, took.Round(time.Millisecond), out)
	}
}
