package listenprobe

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// probeListener creates a listening socket the way relaunch does (raw,
// blocking, 127.0.0.1:0) and returns it as an *os.File for ExtraFiles: a
// blocking fd stays blocking in os.NewFile, and the File owns it.
func probeListener(t testing.TB) (*os.File, int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "listener")
	t.Cleanup(func() { f.Close() })
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return f, sa.(*unix.SockaddrInet4).Port
}

// startProbed starts argv with ln as fd 3, in its own process group; the
// cleanup kills the group (a shell's children too) and waits.
func startProbed(t testing.TB, ln *os.File, env []string, argv ...string) *exec.Cmd {
	t.Helper()
	out, err := os.Create(filepath.Join(t.TempDir(), "output"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.ExtraFiles = []*os.File{ln}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		syscall.Kill(-pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(out.Name())
			t.Logf("output of %v:\n%s", argv, b)
		}
		out.Close()
	})
	return cmd
}

// probePython3 returns the python3 interpreter itself: where python3 on
// the PATH is a wrapper (pyenv's shim is a shell script that takes a second
// or more to start), asking it once spares each test that start.
func probePython3(t testing.TB) string {
	t.Helper()
	py, err := python3()
	if err != nil {
		t.Fatal("python3 is needed:", err)
	}
	return py
}

var python3 = sync.OnceValues(func() (string, error) {
	py, err := exec.LookPath("python3")
	if err != nil {
		return "", err
	}
	out, err := exec.Command(py, "-c", "import sys; print(sys.executable)").Output()
	if exe := strings.TrimSpace(string(out)); err == nil && filepath.IsAbs(exe) {
		return exe, nil
	}
	return py, nil
})

// waitAccepting scans every ms until the tree accepts on the socket.
func waitAccepting(t testing.TB, p *Probe, pid int, within time.Duration) Result {
	t.Helper()
	var r Result
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if r = p.Scan(pid); r.Accepting {
			return r
		}
	}
	t.Fatalf("not seen accepting within %s (last scan: %+v)", within, r)
	return r
}

// neverAccepting scans for d and fails if the tree is ever seen accepting.
func neverAccepting(t testing.TB, p *Probe, pid int, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if r := p.Scan(pid); r.Accepting || r.OwnSocket != "" {
			t.Fatalf("scan saw %+v", r)
		}
	}
}

func probeFor(ln *os.File) *Probe { return New([]int{int(ln.Fd())}) }

// probeWaitFile waits for a stamp file an app writes.
func probeWaitFile(t testing.TB, path string, within time.Duration) string {
	t.Helper()
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if b, err := os.ReadFile(path); err == nil && strings.HasSuffix(string(b), "\n") {
			return string(b)
		}
	}
	t.Fatalf("%s not written within %s", path, within)
	return ""
}

func TestListenProbeSupported(t *testing.T) {
	if !Supported() {
		t.Fatal("this kernel (Linux ≥ 4.13 expected) shows no epoll targets in fdinfo")
	}
}

func TestListenProbeGoEpoll(t *testing.T) {
	t.Parallel()
	ln, _ := probeListener(t)
	cmd := startProbed(t, ln, []string{goAppEnv}, goAppPath(t))
	r := waitAccepting(t, probeFor(ln), cmd.Process.Pid, 10*time.Second)
	// net.FileListener dups fd 3 before it adds it to epoll.
	want := regexp.MustCompile(`^pid ` + strconv.Itoa(cmd.Process.Pid) + ` polls fd 3 \(epoll(, as its fd \d+)?\)$`)
	if !want.MatchString(r.How) {
		t.Errorf("How = %q, want %s", r.How, want)
	}
	t.Log(r.How)
}

func TestListenProbePythonAccept(t *testing.T) {
	t.Parallel()
	ln, _ := probeListener(t)
	cmd := startProbed(t, ln, nil, probePython3(t), "testdata/probe_accept.py")
	r := waitAccepting(t, probeFor(ln), cmd.Process.Pid, 10*time.Second)
	if want := fmt.Sprintf("pid %d blocks in accept on fd 3", cmd.Process.Pid); r.How != want {
		t.Errorf("How = %q, want %q", r.How, want)
	}
}

// The listener is a grandchild of the root: sh does not exec the last
// command when another follows it.
func TestListenProbeTree(t *testing.T) {
	t.Parallel()
	ln, _ := probeListener(t)
	cmd := startProbed(t, ln, nil, "sh", "-c", `"$0" testdata/probe_accept.py; exit $?`, probePython3(t))
	root := cmd.Process.Pid
	r := waitAccepting(t, probeFor(ln), root, 10*time.Second)
	m := regexp.MustCompile(`^pid (\d+) blocks in accept on fd 3$`).FindStringSubmatch(r.How)
	if m == nil {
		t.Fatalf("How = %q", r.How)
	}
	pid, _ := strconv.Atoi(m[1])
	if pid == root {
		t.Fatalf("How = %q names the shell itself (did sh exec python?)", r.How)
	}
	if ppid := probeTestPpid(pid); ppid != root {
		t.Errorf("pid %d's parent is %d, want the shell %d", pid, ppid, root)
	}
	t.Log(r.How)
}

func TestListenProbeNode(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is needed for this test:", err)
	}
	ln, _ := probeListener(t)
	cmd := startProbed(t, ln, nil, node, "testdata/probe_node.js")
	r := waitAccepting(t, probeFor(ln), cmd.Process.Pid, 10*time.Second)
	want := regexp.MustCompile(`^pid ` + strconv.Itoa(cmd.Process.Pid) + ` polls fd 3 \(epoll(, as its fd \d+)?\)$`)
	if !want.MatchString(r.How) {
		t.Errorf("How = %q, want %s", r.How, want)
	}
	t.Log(r.How)
}

// A Python server waiting in select() on fd 3 (its own fd 3: Python's
// socket(fileno=3) keeps the number) is seen through its fd_set.
func TestListenProbePythonSelect(t *testing.T) {
	t.Parallel()
	ln, _ := probeListener(t)
	cmd := startProbed(t, ln, nil, probePython3(t), "testdata/probe_select.py")
	r := waitAccepting(t, probeFor(ln), cmd.Process.Pid, 10*time.Second)
	if want := fmt.Sprintf("pid %d polls fd 3 (select)", cmd.Process.Pid); r.How != want {
		t.Errorf("How = %q, want %q", r.How, want)
	}
}

// Each raw call, the listener among other fds and at a number other than
// 3 (fd 70: the second 64-bit word of an fd_set, the third pollfd after a
// negative one).
func TestListenProbeSelectPoll(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ mode, poller string }{
		{"select", "select"}, {"pselect", "select"}, {"poll", "poll"}, {"ppoll", "poll"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			t.Parallel()
			ln, _ := probeListener(t)
			cmd := startProbed(t, ln, []string{waitAppEnv + "=" + c.mode}, goAppPath(t))
			r := waitAccepting(t, probeFor(ln), cmd.Process.Pid, 10*time.Second)
			if want := fmt.Sprintf("pid %d polls fd 3 (%s, as its fd 70)", cmd.Process.Pid, c.poller); r.How != want {
				t.Errorf("How = %q, want %q", r.How, want)
			}
		})
	}
}

// A process that holds the listener but polls something else, or polls
// the listener for writing only, is not accepting.
func TestListenProbePollOther(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"pipe-only", "poll-write"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ln, _ := probeListener(t)
			cmd := startProbed(t, ln, []string{waitAppEnv + "=" + mode}, goAppPath(t))
			waitInPoll(t, cmd.Process.Pid)
			neverAccepting(t, probeFor(ln), cmd.Process.Pid, 300*time.Millisecond)
		})
	}
}

// waitInPoll waits until a thread of pid sits in poll or ppoll.
func waitInPoll(t testing.TB, pid int) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", pid, task.Name()))
			var args [6]uint64
			if nr, ok := syscallArgs(b, &args); ok && waitCallOf(nr) == callPoll {
				return
			}
		}
	}
	t.Fatalf("pid %d never waited in poll", pid)
}

// A process that holds fd 3 but does nothing with it.
func TestListenProbeIdleHolder(t *testing.T) {
	t.Parallel()
	ln, _ := probeListener(t)
	cmd := startProbed(t, ln, nil, "sleep", "30")
	pid := cmd.Process.Pid
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); string(b) == "sleep\n" {
			break
		}
		if time.Now().After(end) {
			t.Fatal("sleep did not start")
		}
	}
	neverAccepting(t, probeFor(ln), pid, 300*time.Millisecond)
}

// An app that binds its own socket on relaunch's port instead of using fd 3.
func TestListenProbeOwnSocket(t *testing.T) {
	t.Parallel()
	for _, host := range []string{"127.0.0.2", "::1"} {
		t.Run(host, func(t *testing.T) {
			t.Parallel()
			ln, port := probeListener(t)
			cmd := startProbed(t, ln, nil, probePython3(t), "testdata/probe_own.py", host)
			pid := cmd.Process.Pid
			p := probeFor(ln)
			want := fmt.Sprintf("pid %d listens on %s itself", pid, probeHostPort(host, port))
			var r Result
			for end := time.Now().Add(10 * time.Second); r.OwnSocket == ""; time.Sleep(time.Millisecond) {
				if time.Now().After(end) {
					t.Fatalf("own socket not seen (last scan: %+v)", r)
				}
				if st := probeTestExit(pid); st >= 0 {
					if st == 77 && host == "::1" {
						t.Skip("no IPv6 loopback here")
					}
					t.Fatalf("probe_own.py exited: status %d", st)
				}
				r = p.Scan(pid)
			}
			if r.OwnSocket != want || r.Accepting {
				t.Errorf("scan = %+v, want OwnSocket %q and not Accepting", r, want)
			}
			t.Log(r.OwnSocket)
		})
	}
}

// An app that closes the socket it was given and listens elsewhere: named,
// on its own port, with Closed.
func TestListenProbeClosedOwnPort(t *testing.T) {
	t.Parallel()
	ln, port := probeListener(t)
	stamp := filepath.Join(t.TempDir(), "stamp")
	cmd := startProbed(t, ln, []string{"PROBE_STAMP=" + stamp}, probePython3(t), "testdata/probe_closed.py")
	own := strings.TrimSpace(strings.TrimPrefix(probeWaitFile(t, stamp, 10*time.Second), "port "))
	if own == strconv.Itoa(port) {
		t.Fatalf("the app's own port %s is relaunch's", own)
	}
	want := fmt.Sprintf("pid %d listens on 127.0.0.1:%s itself", cmd.Process.Pid, own)
	r := probeFor(ln).Scan(cmd.Process.Pid)
	if !r.Closed || r.OwnSocket != want || r.Accepting {
		t.Errorf("scan = %+v, want Closed and OwnSocket %q", r, want)
	}
	if g, want := probeFor(ln).Given(), fmt.Sprintf("fd 3, 127.0.0.1:%d", port); len(g) != 1 || g[0] != want {
		t.Errorf("Given() = %q, want [%q]", g, want)
	}
}

// TestListenProbeDetectionDelay measures how long after an app is ready the
// probe, scanning every ms, sees it: the apps write a timestamp right before
// they serve (Go) or accept (python).
func TestListenProbeDetectionDelay(t *testing.T) {
	if testing.Short() {
		t.Skip("a measurement of 10 app starts: not in -short")
	}
	py := probePython3(t)
	const runs = 5
	for _, app := range []struct {
		name  string
		env   []string
		argv  []string
		stamp string // the line of the stamp file to measure from
	}{
		{"go net/http", []string{goAppEnv}, []string{goAppPath(t)}, "serve"},
		{"python accept", nil, []string{py, "testdata/probe_accept.py"}, "accept"},
	} {
		var delays, sinceListener []time.Duration
		for range runs {
			ln, _ := probeListener(t)
			stampFile := filepath.Join(t.TempDir(), "stamp")
			cmd := startProbed(t, ln, append([]string{"PROBE_STAMP=" + stampFile}, app.env...), app.argv...)
			p := probeFor(ln)
			var seen time.Time
			for end := time.Now().Add(10 * time.Second); seen.IsZero(); time.Sleep(time.Millisecond) {
				if time.Now().After(end) {
					t.Fatalf("%s: not seen accepting", app.name)
				}
				if p.Scan(cmd.Process.Pid).Accepting {
					seen = time.Now()
				}
			}
			stamps := probeTestStamps(t, probeWaitFile(t, stampFile, 10*time.Second))
			delays = append(delays, seen.Sub(stamps[app.stamp]))
			if l, ok := stamps["listener"]; ok {
				sinceListener = append(sinceListener, seen.Sub(l))
			}
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		t.Logf("%s: seen accepting %s after its %q stamp (%d runs, min/median/max, polling every 1 ms)",
			app.name, probeTestSpread(delays), app.stamp, runs)
		if sinceListener != nil {
			t.Logf("%s: and %s after it created the listener", app.name, probeTestSpread(sinceListener))
		}
	}
}

func BenchmarkListenProbeScan(b *testing.B) {
	b.Run("go-accepting", func(b *testing.B) {
		ln, _ := probeListener(b)
		cmd := startProbed(b, ln, []string{goAppEnv}, goAppPath(b))
		p := probeFor(ln)
		waitAccepting(b, p, cmd.Process.Pid, 10*time.Second)
		b.ReportAllocs()
		for b.Loop() {
			if !p.Scan(cmd.Process.Pid).Accepting {
				b.Fatal("no longer accepting")
			}
		}
	})
	// A thread blocked in select(): its fd_set read from its memory.
	b.Run("select-accepting", func(b *testing.B) {
		ln, _ := probeListener(b)
		cmd := startProbed(b, ln, []string{waitAppEnv + "=select"}, goAppPath(b))
		p := probeFor(ln)
		waitAccepting(b, p, cmd.Process.Pid, 10*time.Second)
		b.ReportAllocs()
		for b.Loop() {
			if !p.Scan(cmd.Process.Pid).Accepting {
				b.Fatal("no longer accepting")
			}
		}
	})
	// The scan the launcher repeats while it waits: the whole tree walked,
	// nothing found. A shell and, under it, a process that holds the
	// listener and polls only a pipe (its pollfd array read each time).
	b.Run("tree-not-yet", func(b *testing.B) {
		ln, _ := probeListener(b)
		cmd := startProbed(b, ln, []string{waitAppEnv + "=pipe-only"}, "sh", "-c", `"$0"; exit $?`, goAppPath(b))
		var app int
		for end := time.Now().Add(10 * time.Second); app == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(end) {
				b.Fatal("the app under sh did not start")
			}
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
			app, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		waitInPoll(b, app)
		p := probeFor(ln)
		b.ReportAllocs()
		for b.Loop() {
			if p.Scan(cmd.Process.Pid).Accepting {
				b.Fatal("a pipe poller seen accepting")
			}
		}
	})
}

func probeHostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

// probeTestPpid reads a process's parent from /proc/P/stat.
func probeTestPpid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return -1
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// probeTestExit returns a child's exit status once it has exited, -1 while
// it runs: a zombie's /proc/P/stat holds it (field 52), and cmd.Wait in the
// cleanup still reaps it.
func probeTestExit(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 50 || f[0] != "Z" {
		return -1
	}
	ws, _ := strconv.Atoi(f[49])
	return syscall.WaitStatus(ws).ExitStatus()
}

// probeTestStamps parses "name ns" lines.
func probeTestStamps(t testing.TB, s string) map[string]time.Time {
	m := map[string]time.Time{}
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		name, v, _ := strings.Cut(line, " ")
		ns, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("bad stamp line %q", line)
		}
		m[name] = time.Unix(0, ns)
	}
	return m
}

func probeTestSpread(d []time.Duration) string {
	s := slices.Clone(d)
	slices.Sort(s)
	f := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) }
	return f(s[0]) + "/" + f(s[len(s)/2]) + "/" + f(s[len(s)-1]) + " ms"
}
