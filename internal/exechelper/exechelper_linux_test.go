package exechelper

import (
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// selfAndPipe returns this test binary's path and a pipe for a helper's
// error reports (its read end closed when the test ends).
func selfAndPipe(t *testing.T) (self string, pr, pw *os.File) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if pr, pw, err = os.Pipe(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Close() })
	return self, pr, pw
}

// helper starts this test binary as the exec helper of path with argv: its
// init execs path. Fd 3 is the error pipe (errFd 4 when sockets is set: fd 3
// is then a stand-in socket), and one more fd, not close-on-exec, follows.
func helper(t *testing.T, path string, listenFds bool, argv ...string) (out string, pipe string, status int) {
	t.Helper()
	self, pr, pw := selfAndPipe(t)
	extra, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	files := []*os.File{pw, extra}
	errFd := 3
	env := []string{"PATH=/usr/bin:/bin"}
	if listenFds {
		files = append([]*os.File{extra}, files...)
		errFd = 4
		env = append(env, "LISTEN_FDS=1")
	}
	cmd := &exec.Cmd{Path: self, Args: argv, ExtraFiles: files,
		Env: append(env, Env(path, errFd)...)}
	o, err := cmd.Output()
	pw.Close()
	b, _ := io.ReadAll(pr)
	if ee, ok := err.(*exec.ExitError); ok {
		status = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(o), string(b), status
}

// The command runs with its own argv, LISTEN_PID is its pid (set only with
// LISTEN_FDS), the helper's variables are gone, and no fd from the error
// pipe up survives the exec; the pipe reads EOF: success.
func TestHelperExecs(t *testing.T) {
	script := `echo "$0|$1|$LISTEN_PID|$$|${RELAUNCH_EXEC_PATH-unset}|${RELAUNCH_EXEC_ERRFD-unset}"; ls /proc/$$/fd`
	out, pipe, status := helper(t, "/bin/sh", true, "sh", "-c", script, "zero", "one")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	f := strings.Split(lines[0], "|")
	if status != 0 || pipe != "" || len(f) != 6 {
		t.Fatalf("status %d, pipe %q, output %q", status, pipe, out)
	}
	if f[0] != "zero" || f[1] != "one" || f[2] != f[3] || f[4] != "unset" || f[5] != "unset" {
		t.Errorf("argv, LISTEN_PID, pid, helper variables: %q; want zero|one|PID|PID|unset|unset", lines[0])
	}
	// sh's fds: 0-2, the stand-in socket 3; not the error pipe (4) nor
	// the extra fd (5).
	for _, fd := range lines[1:] {
		if fd == "4" || fd == "5" {
			t.Errorf("fd %s survived the exec: sh has %q", fd, lines[1:])
		}
	}
	if !slices.Contains(lines[1:], "3") {
		t.Errorf("the socket, fd 3, did not survive the exec: sh has %q", lines[1:])
	}

	out, _, _ = helper(t, "/bin/sh", false, "sh", "-c", `echo "${LISTEN_PID-unset}"`)
	if strings.TrimSpace(out) != "unset" {
		t.Errorf("without LISTEN_FDS, LISTEN_PID = %q; want unset", out)
	}
}

// A command that cannot be exec'd: the pipe says why, the status is a
// shell's.
func TestHelperExecFails(t *testing.T) {
	_, pipe, status := helper(t, "/nonexistent/app", false, "app")
	if status != 127 || pipe != "/nonexistent/app: no such file or directory" {
		t.Errorf("status %d, pipe %q; want 127 and the path with ENOENT", status, pipe)
	}
	dir := t.TempDir()
	_, pipe, status = helper(t, dir, false, "app")
	if status != 126 || !strings.HasPrefix(pipe, dir+": permission denied") {
		t.Errorf("a directory: status %d, pipe %q; want 126, permission denied", status, pipe)
	}
}

func TestItoaAtoi(t *testing.T) {
	for _, n := range []int{0, 7, 10, 4242, 123456789} {
		s := itoa(n)
		if s != strconv.Itoa(n) {
			t.Errorf("itoa(%d) = %q", n, s)
		}
		if m, ok := atoi(s); !ok || m != n {
			t.Errorf("atoi(%q) = %d, %v", s, m, ok)
		}
	}
	if itoa(-12) != "-12" {
		t.Errorf("itoa(-12) = %q", itoa(-12))
	}
	for _, s := range []string{"", "-1", "1x", "1234567890"} {
		if _, ok := atoi(s); ok {
			t.Errorf("atoi(%q) ok", s)
		}
	}
}

// warmHelper starts this test binary as a warm helper, sends it order (none
// when nil: EOF) and returns what it printed, what its error pipe said and
// its exit status.
func warmHelper(t *testing.T, order func(pid int) []byte) (out, pipe string, status int) {
	t.Helper()
	self, pr, pw := selfAndPipe(t)
	cr, cw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer cw.Close()
	var stdout strings.Builder
	cmd := &exec.Cmd{Path: self, Args: WarmArgv, ExtraFiles: []*os.File{pw, cr}, Stdout: &stdout,
		Env: append([]string{"PATH=/usr/bin:/bin", "HELPER_ONLY=1"}, WarmEnv(3, 4)...)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	cr.Close()
	if order != nil {
		if _, err := cw.Write(order(cmd.Process.Pid)); err != nil {
			t.Fatal(err)
		}
	}
	cw.Close()
	err = cmd.Wait()
	b, _ := io.ReadAll(pr)
	if ee, ok := err.(*exec.ExitError); ok {
		status = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), string(b), status
}

// A warm helper execs its order with exactly the order's argv and
// environment (none of its own), LISTEN_PID set to its pid when the order
// has LISTEN_FDS (a stale LISTEN_PID replaced); no order: exit 0, silent; a
// bad order or a missing file: the pipe says why, with a shell's status.
func TestWarmHelper(t *testing.T) {
	script := `echo "$0|$1|${LISTEN_PID-unset}|$$|${HELPER_ONLY-unset}|${RELAUNCH_EXEC_WAIT-unset}|$KEEP"`
	out, pipe, status := warmHelper(t, func(pid int) []byte {
		return Order(pid, "/bin/sh", []string{"sh", "-c", script, "zero", "one"},
			[]string{"LISTEN_FDS=1", "LISTEN_PID=1", "KEEP=old", "KEEP=a=b"})
	})
	f := strings.Split(strings.TrimSpace(out), "|")
	if status != 0 || pipe != "" || len(f) != 7 {
		t.Fatalf("status %d, pipe %q, output %q", status, pipe, out)
	}
	if f[0] != "zero" || f[1] != "one" || f[2] != f[3] || f[4] != "unset" || f[5] != "unset" || f[6] != "a=b" {
		t.Errorf("argv, LISTEN_PID, pid, the helper's own variables, KEEP: %q; want zero|one|PID|PID|unset|unset|a=b", out)
	}
	out, _, _ = warmHelper(t, func(pid int) []byte {
		return Order(pid, "/bin/sh", []string{"sh", "-c", `echo "${LISTEN_PID-unset}"`}, nil)
	})
	if strings.TrimSpace(out) != "unset" {
		t.Errorf("without LISTEN_FDS, LISTEN_PID = %q; want unset", out)
	}

	if out, pipe, status := warmHelper(t, nil); status != 0 || pipe != "" || out != "" {
		t.Errorf("no order: status %d, pipe %q, output %q; want 0 and nothing", status, pipe, out)
	}
	_, pipe, status = warmHelper(t, func(int) []byte { return []byte("/bin/sh\x003\x00sh\x00") })
	if status != 127 || pipe != "the exec helper got a bad order" {
		t.Errorf("a bad order: status %d, pipe %q", status, pipe)
	}
	_, pipe, status = warmHelper(t, func(pid int) []byte { return Order(pid, "/nonexistent/app", []string{"app"}, nil) })
	if status != 127 || pipe != "/nonexistent/app: no such file or directory" {
		t.Errorf("a missing file: status %d, pipe %q", status, pipe)
	}
}

// The app a warm helper runs gets the soft limit on open files the helper
// was started with, not the hard limit Go raised the helper's own to.
func TestWarmHelperKeepsNofile(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Max < 1024+16 {
		t.Fatalf("hard RLIMIT_NOFILE %d: too low to tell a lowered soft limit from it", lim.Max)
	}
	low := lim
	low.Cur = 1024
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil { // the helper inherits it
		t.Fatal(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	out, pipe, status := warmHelper(t, func(pid int) []byte {
		return Order(pid, "/bin/sh", []string{"sh", "-c", "ulimit -n"}, nil)
	})
	if status != 0 || pipe != "" || strings.TrimSpace(out) != "1024" {
		t.Errorf("the app's soft RLIMIT_NOFILE: %q (status %d, pipe %q); want 1024, the helper's at its start", out, status, pipe)
	}
}

// An order larger than what the helper prepared for still runs.
func TestWarmHelperLargeOrder(t *testing.T) {
	env := []string{"BIG=" + strings.Repeat("x", orderBuf)}
	for i := range orderFields + 10 {
		env = append(env, "V"+strconv.Itoa(i)+"=1")
	}
	out, pipe, status := warmHelper(t, func(pid int) []byte {
		return Order(pid, "/bin/sh", []string{"sh", "-c", `echo "${#BIG} $V2057"`}, env)
	})
	if status != 0 || pipe != "" || strings.TrimSpace(out) != strconv.Itoa(orderBuf)+" 1" {
		t.Errorf("status %d, pipe %q, output %q; want %d 1", status, pipe, out, orderBuf)
	}
}

func TestParseOrder(t *testing.T) {
	b := Order(42, "/app", []string{"app", "-x"}, []string{"A=0", "LISTEN_PID=7", "A=1", "LISTEN_FDS=2"})
	path, av, ev, ok := parseOrder(b, nil, nil)
	cstr := func(p *byte) string {
		var s []byte
		for q := unsafe.Pointer(p); *(*byte)(q) != 0; q = unsafe.Add(q, 1) {
			s = append(s, *(*byte)(q))
		}
		return string(s)
	}
	var got []string
	for _, p := range append(av[:len(av)-1:len(av)-1], ev[:len(ev)-1]...) {
		got = append(got, cstr(p))
	}
	if !ok || string(path) != "/app" || av[len(av)-1] != nil || ev[len(ev)-1] != nil ||
		!slices.Equal(got, []string{"app", "-x", "A=1", "LISTEN_FDS=2", "LISTEN_PID=42"}) {
		t.Errorf("parseOrder(Order(...)) = %q, %q, %v", path, got, ok)
	}
	for _, bad := range []string{"", "/app", "/app\x00", "/app\x000\x00", "/app\x002\x00a\x00", "/app\x00x\x00a\x00", "/app\x001\x00a"} {
		if _, _, _, ok := parseOrder([]byte(bad), nil, nil); ok {
			t.Errorf("parseOrder(%q) ok", bad)
		}
	}
}
