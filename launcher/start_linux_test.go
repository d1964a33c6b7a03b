package launcher

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaunch/relaunch/internal/exechelper"
)

// startSh starts sh -c script with st, LISTEN_FDS=1 in its environment,
// and returns what it wrote on its stdout (a file) and its pid, once it
// has exited with status 0.
func startSh(t *testing.T, st *starter, script string) (out string, pid int) {
	t.Helper()
	sh := "/bin/sh"
	outFile := filepath.Join(t.TempDir(), "out")
	execErr := make(chan error, 1)
	status := make(chan syscall.WaitStatus, 1)
	p := procSpec{path: sh, argv: []string{"sh", "-c", script + " >" + outFile},
		env: []string{"LISTEN_FDS=1", "PATH=/usr/bin:/bin"}}
	pid, err := st.start(p, func(err error) { execErr <- err }, func(ws syscall.WaitStatus) { status <- ws })
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	select {
	case err := <-execErr:
		if err != nil {
			t.Fatalf("exec: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exec report in 10s")
	}
	select {
	case ws := <-status:
		if !ws.Exited() || ws.ExitStatus() != 0 {
			t.Fatalf("sh ended: %v", ws)
		}
	case <-time.After(10 * time.Second):
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatal("sh did not end in 10s")
	}
	b, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), pid
}

// tracedCalls counts the traced starts st makes, passing them on to fn.
func tracedCalls(st *starter, fn func(procSpec) (int, *syscall.WaitStatus, error)) *int {
	n := new(int)
	st.trace = func(p procSpec) (int, *syscall.WaitStatus, error) {
		*n++
		return fn(p)
	}
	return n
}

// By default a start is traced: the process is the app from its exec,
// LISTEN_PID its pid, and prepare starts no warm helper.
func TestStarterTraced(t *testing.T) {
	st := newStarter(false, nil)
	calls := tracedCalls(st, startTraced)
	out, pid := startSh(t, st, `echo "$LISTEN_PID $$"`)
	if want := fmt.Sprintf("%d %d\n", pid, pid); out != want || *calls != 1 {
		t.Errorf("traced start: %q after %d traced start(s); want %q after 1", out, *calls, want)
	}
	if pid, err := st.prepare(procSpec{env: []string{"LISTEN_FDS=1"}}); pid != 0 || err != nil || st.warm.w != nil {
		t.Errorf("prepare with traced starts: pid %d, %v; want no warm helper", pid, err)
	}
}

// Once ptrace is refused, this start and every later one go through the
// exec helper (LISTEN_PID still right), and the log says so once.
func TestStarterPtraceRefused(t *testing.T) {
	var log bytes.Buffer
	st := newStarter(false, NewLogger(&log, LogOptions{}))
	calls := tracedCalls(st, func(procSpec) (int, *syscall.WaitStatus, error) {
		return 0, nil, fmt.Errorf("%w: operation not permitted", exechelper.ErrNotTraced)
	})
	for i := 0; i < 2; i++ {
		out, pid := startSh(t, st, `echo "$LISTEN_PID $$"`)
		if want := fmt.Sprintf("%d %d\n", pid, pid); out != want {
			t.Errorf("start %d through the helper: %q; want %q", i+1, out, want)
		}
	}
	if *calls != 1 || st.traced {
		t.Errorf("%d traced start(s), traced now %v; want 1, then the helper only", *calls, st.traced)
	}
	if n := strings.Count(log.String(), "exec helper from now on"); n != 1 {
		t.Errorf("log says the helper takes over %d times; want once:\n%s", n, log.String())
	}
	pid, err := st.prepare(procSpec{env: []string{"LISTEN_FDS=1"}, stdin: 0})
	if err != nil || pid == 0 {
		t.Fatalf("prepare once starts use the helper: pid %d, %v; want a warm helper", pid, err)
	}
	st.warm.discard()
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		t.Errorf("the discarded warm helper %d: kill 0 says %v; want it gone", pid, err)
	}
}

// A traced start that fails otherwise (the exec, a set-ID file) goes
// through the helper this time, and the next start is traced again.
func TestStarterTracedExecFails(t *testing.T) {
	st := newStarter(false, nil)
	calls := tracedCalls(st, func(procSpec) (int, *syscall.WaitStatus, error) {
		return 0, nil, syscall.ETXTBSY
	})
	out, pid := startSh(t, st, `echo "$LISTEN_PID"`)
	if out != strconv.Itoa(pid)+"\n" || !st.traced {
		t.Errorf("after a failed traced exec: %q, traced %v; want the helper's start with LISTEN_PID %d, traced still", out, st.traced, pid)
	}
	startSh(t, st, `true`)
	if *calls != 2 {
		t.Errorf("%d traced starts; want 2", *calls)
	}
}

// --no-ptrace: no traced start at all.
func TestStarterNoPtrace(t *testing.T) {
	st := newStarter(true, nil)
	calls := tracedCalls(st, startTraced)
	out, pid := startSh(t, st, `echo "$LISTEN_PID"`)
	if out != strconv.Itoa(pid)+"\n" || *calls != 0 {
		t.Errorf("--no-ptrace: %q after %d traced start(s); want LISTEN_PID %d, none", out, *calls, pid)
	}
}
