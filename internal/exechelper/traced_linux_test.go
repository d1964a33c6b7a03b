package exechelper

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// tracedSh starts sh -c script with the traced start, its stdout a pipe,
// and returns what it wrote, its pid and how it ended.
func tracedSh(t *testing.T, env []string, script string) (out string, pid int, ws syscall.WaitStatus) {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	return traced(t, sh, []string{"sh", "-c", script}, env)
}

// traced starts path with the traced start, its stdout a pipe, and returns
// what it wrote, its pid and how it ended.
func traced(t *testing.T, path string, argv, env []string) (out string, pid int, ws syscall.WaitStatus) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pid, died, err := StartTraced(path, argv, env, &syscall.ProcAttr{
		Env: []string{"IGNORED=1"}, Files: []uintptr{0, w.Fd(), 2}, Sys: &syscall.SysProcAttr{Setpgid: true},
	})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.ReadFrom(r)
	if died != nil {
		return b.String(), pid, *died
	}
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		t.Fatal(err)
	}
	return b.String(), pid, ws
}

// The started process has LISTEN_PID equal to its own pid, in its
// environment as every reader sees it, and /proc/PID/environ holds the
// value before NULs; it is not traced any more, it got no SIGTRAP, and
// the environment is the one given (a variable set twice: its last value).
func TestStartTraced(t *testing.T) {
	env := []string{"LISTEN_FDS=1", "A=1", "LISTEN_PID=1", "A=2", "PATH=/usr/bin:/bin"}
	script := `echo "$$ $LISTEN_PID $A $IGNORED"; grep TracerPid /proc/$$/status; tr '\0' '\n' </proc/$$/environ | grep -c .`
	out, pid, ws := tracedSh(t, env, script)
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("sh ended with %v; output %q", ws, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("output %q: want 3 lines", out)
	}
	if want := strconv.Itoa(pid) + " " + strconv.Itoa(pid) + " 2 "; lines[0] != want {
		t.Errorf("$$ $LISTEN_PID $A $IGNORED: %q; want %q", lines[0], want)
	}
	if f := strings.Fields(lines[1]); len(f) != 2 || f[1] != "0" {
		t.Errorf("after the start: %q; want TracerPid 0", lines[1])
	}
	// sh adds PWD, SHLVL, _ of its own; the given ones are LISTEN_FDS, A,
	// PATH and LISTEN_PID: at least 4, and no duplicate A or LISTEN_PID.
	if n, _ := strconv.Atoi(lines[2]); n < 4 {
		t.Errorf("%s non-empty entries in /proc/PID/environ; want at least 4", lines[2])
	}
}

// /proc/PID/environ, read while the process runs, names LISTEN_PID once,
// with the pid.
func TestStartTracedEnviron(t *testing.T) {
	env := []string{"LISTEN_FDS=1", "LISTEN_PID=99", "PATH=/usr/bin:/bin"}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	pid, died, err := StartTraced(sleep, []string{"sleep", "30"}, env, &syscall.ProcAttr{Files: []uintptr{0, w.Fd(), 2}})
	w.Close()
	if err != nil || died != nil {
		t.Fatalf("StartTraced: %v, died %v", err, died)
	}
	defer func() {
		syscall.Kill(pid, syscall.SIGKILL)
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
	}()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, kv := range strings.Split(string(b), "\x00") {
		if strings.HasPrefix(kv, "LISTEN_PID=") {
			got = append(got, kv)
		}
	}
	if want := "LISTEN_PID=" + strconv.Itoa(pid); len(got) != 1 || got[0] != want {
		t.Errorf("LISTEN_PID in /proc/%d/environ: %q; want [%s]", pid, got, want)
	}
	// Running, not stopped or traced.
	st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if !bytes.Contains(st, []byte("TracerPid:\t0\n")) || bytes.Contains(st, []byte("State:\tt")) {
		t.Errorf("/proc/%d/status after the start:\n%s", pid, st)
	}
}

// Without LISTEN_FDS nothing is traced, and LISTEN_PID is not set.
func TestStartTracedNoSockets(t *testing.T) {
	out, _, ws := tracedSh(t, []string{"LISTEN_PID=7", "PATH=/usr/bin:/bin"}, `echo "[$LISTEN_PID]"`)
	if !ws.Exited() || ws.ExitStatus() != 0 || out != "[]\n" {
		t.Errorf("sh: %q, %v; want [] and status 0", out, ws)
	}
}

// A file that is not there fails as ForkExec does, and leaves no process.
func TestStartTracedExecFails(t *testing.T) {
	_, _, err := StartTraced("/nonexistent/app", []string{"app"}, []string{"LISTEN_FDS=1"}, &syscall.ProcAttr{})
	if !errors.Is(err, syscall.ENOENT) {
		t.Errorf("StartTraced of a missing file: %v; want ENOENT", err)
	}
	var ws syscall.WaitStatus
	if n, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); err != syscall.ECHILD {
		t.Errorf("a child is left: wait4 %d, %v", n, err)
	}
}

// Set-ID files and files with capabilities are refused (a traced exec
// would run them without their privileges); others pass.
func TestSetIDOrCaps(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := SetIDOrCaps(plain); err != nil {
		t.Errorf("plain file: %v", err)
	}
	suid := filepath.Join(dir, "suid")
	if err := os.WriteFile(suid, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(suid, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	if err := SetIDOrCaps(suid); err == nil || !strings.Contains(err.Error(), "set-user-ID") {
		t.Errorf("set-user-ID file: %v", err)
	}
	// A capability set (VFS_CAP_REVISION_2: magic and flags, then
	// permitted/inheritable of two words): cap_net_bind_service (10) permitted.
	caps := filepath.Join(dir, "caps")
	if err := os.WriteFile(caps, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	v := []byte{0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if err := syscall.Setxattr(caps, "security.capability", v, 0); err != nil {
		if os.Geteuid() == 0 && !errors.Is(err, syscall.ENOTSUP) && !errors.Is(err, syscall.EOPNOTSUPP) {
			t.Fatalf("setxattr security.capability as root: %v", err)
		}
		t.Logf("file capabilities not settable here (%v): that case unchecked", err)
		return
	}
	if err := SetIDOrCaps(caps); err == nil || !strings.Contains(err.Error(), "capabilities") {
		t.Errorf("file with capabilities: %v", err)
	}
}

// The traced start against a plain fork/exec: a start, then the wait for
// the exit of a program that does nothing (/bin/true). The difference is
// the stop at the exec and the pid written in.
func BenchmarkStartTraced(b *testing.B) { benchStart(b, true) }

func BenchmarkForkExec(b *testing.B) { benchStart(b, false) }

func benchStart(b *testing.B, traced bool) {
	path, err := exec.LookPath("true")
	if err != nil {
		b.Fatal(err)
	}
	env := []string{"LISTEN_FDS=1", "PATH=/usr/bin:/bin"}
	attr := &syscall.ProcAttr{Env: env, Files: []uintptr{0, 1, 2}}
	for b.Loop() {
		var pid int
		if traced {
			pid, _, err = StartTraced(path, []string{"true"}, env, attr)
		} else {
			pid, err = syscall.ForkExec(path, []string{"true"}, attr)
		}
		if err != nil {
			b.Fatal(err)
		}
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
	}
}

// A script (#!): the kernel execs its interpreter with the same
// environment, and the placeholder is found there too.
func TestStartTracedScript(t *testing.T) {
	script := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$LISTEN_PID $$\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, pid, ws := traced(t, script, []string{"app"}, []string{"LISTEN_FDS=1", "PATH=/usr/bin:/bin"})
	if want := strconv.Itoa(pid) + " " + strconv.Itoa(pid) + "\n"; out != want || ws.ExitStatus() != 0 {
		t.Errorf("script: %q, %v; want %q, status 0", out, ws, want)
	}
}
