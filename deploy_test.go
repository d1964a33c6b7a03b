//go:build linux

// End-to-end tests of deploying by replacing the binary on disk: every
// common deploy style, under load, gives exactly one new generation running
// the new version and not one failed request; attribute-only changes,
// identical rebuilds, a partial binary and a deleted one give none; changes
// under --watch directories; a deploy during a crash backoff; and a
// benchmark of the time from the rename to the first answer of the new
// version.
//
// Every helper here is prefixed with "dep" so that this file does not clash
// with the other end-to-end files of package main.
package main

import (
	"bytes"
	"fmt"
	"io"
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

	"github.com/relaunch/relaunch/internal/loadtest"
)

const (
	// depDebounce is the --debounce of the tests that prove a negative, to
	// keep their bounded waits short.
	depDebounce = 100 * time.Millisecond
	// depDefaultDebounce is relaunch's default --debounce.
	depDefaultDebounce = 250 * time.Millisecond
	// depQuiet is how long, past the debounce, a test watches for something
	// that must not happen (a second upgrade, an upgrade at all).
	depQuiet = time.Second
	// depTimeout bounds every wait for something that must happen.
	depTimeout = 30 * time.Second
)

var depListenRE = regexp.MustCompile(`listening on tcp[46]?://(\S+) \(fd 3[,)]`)

// depServer is relaunch running the demo app on 127.0.0.1 with gen 1 ready.
type depServer struct {
	p        *relaunchProc
	addr     string        // 127.0.0.1:PORT
	pid1     int           // gen 1's pid
	debounce time.Duration // the --debounce in effect
}

// depStart starts relaunch in dir (its working directory) on 127.0.0.1:0
// with opts before "--" and cmd after it, and waits until gen 1 is ready and
// answers. debounce 0 leaves relaunch's default.
func depStart(t testing.TB, dir string, debounce time.Duration, opts []string, cmd ...string) *depServer {
	t.Helper()
	needE2E(t, "relaunch", "demo", "demo-v2")
	args := []string{"--listen", "127.0.0.1:0"}
	s := &depServer{debounce: depDefaultDebounce}
	if debounce > 0 {
		args = append(args, "--debounce", debounce.String())
		s.debounce = debounce
	}
	args = append(append(append(args, opts...), "--"), cmd...)
	s.p = startRelaunchOpts(t, procOpts{Dir: dir}, args...)
	m := depListenRE.FindStringSubmatch(s.p.WaitLog(t, "listening on ", depTimeout))
	if m == nil {
		t.Fatal("cannot parse the address from relaunch's log")
	}
	s.addr = m[1]
	s.p.WaitLog(t, "gen 1 (pid", depTimeout)
	s.p.WaitLogN(t, "ready in", 1, depTimeout)
	body := waitHTTP(t, s.addr, "gen=1", depTimeout)
	pid, err := strconv.Atoi(bodyField(body, "pid"))
	if err != nil {
		t.Fatalf("gen 1 answered %q", body)
	}
	s.pid1 = pid
	return s
}

// depStartApp lays out version 1 as app in a new directory dir and starts
// relaunch there (depStart) on "./app", with depDebounce and opts.
func depStartApp(t testing.TB, opts ...string) (s *depServer, dir, app string) {
	t.Helper()
	dir = t.TempDir()
	app = filepath.Join(dir, "app")
	copyBinary(t, demoBin, app)
	return depStart(t, dir, depDebounce, opts, "./app"), dir, app
}

// depLines counts the lines of relaunch's output (its log and the demo's)
// that contain substr.
func (s *depServer) depLines(substr string) int {
	n := 0
	for line := range strings.Lines(s.p.Stderr()) {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

// depAsk asks for GET / on a new connection and returns the answer's
// version, gen and pid fields.
func (s *depServer) depAsk(t testing.TB) (version, gen string, pid int) {
	t.Helper()
	body, err := httpGet(s.addr, "/")
	if err != nil {
		t.Fatalf("GET /: %v", err)
	}
	pid, _ = strconv.Atoi(bodyField(body, "pid"))
	return bodyField(body, "version"), bodyField(body, "gen"), pid
}

// depHold is a bounded wait that proves a negative: whatever relaunch would
// wrongly do (an upgrade from a trailing file event, a restart from a
// cancelled timer) has had the debounce and depQuiet to happen.
func (s *depServer) depHold() {
	time.Sleep(s.debounce + depQuiet)
}

// depNoUpgrade checks, after depHold, that gen 1 still serves alone and that
// relaunch started nothing new.
func (s *depServer) depNoUpgrade(t testing.TB, what string) {
	t.Helper()
	if n := s.depLines("upgrade:"); n != 0 {
		t.Errorf("%s: %d upgrade(s), want none", what, n)
	}
	if n := s.depLines(" started: "); n != 1 {
		t.Errorf("%s: %d generation(s) started, want only gen 1", what, n)
	}
	if v, g, pid := s.depAsk(t); v != "1" || g != "1" || pid != s.pid1 {
		t.Errorf("%s: answer from version=%s gen=%s pid=%d, want version=1 gen=1 pid=%d", what, v, g, pid, s.pid1)
	}
	if kids := s.p.Children(); !slices.Equal(kids, []int{s.pid1}) {
		t.Errorf("%s: relaunch's children are %v, want only gen 1 (pid %d)", what, kids, s.pid1)
	}
}

// depExpectGen waits for generation gen to take over from prevPid after
// the deploy under test, then proves it is the only new one: prevPid is
// gone, gen answers with version, and after depHold the log has exactly
// gen-1 "upgrade:" lines (every generation after the first comes from an
// upgrade), gen-failed "ready in" lines, failed "upgrade failed" lines and
// nothing about a generation gen+1. failed is the number of generations
// that were expected to fail on the way (0 but in a test that works around
// a known bug). With r, it first lets the load run on gen for a while. It
// returns gen's pid.
func (s *depServer) depExpectGen(t testing.TB, r *loadtest.Runner, prevPid, gen int, version string, failed int) int {
	t.Helper()
	s.depWaitReady(t, gen-failed)
	if left := waitProcsGone([]int{prevPid}, depTimeout); len(left) > 0 {
		t.Errorf("the previous generation is still there after the upgrade: %s", describeProc(prevPid))
	}
	v, g, pid := s.depAsk(t)
	if v != version || g != strconv.Itoa(gen) {
		t.Errorf("after the upgrade: answer from version=%s gen=%s, want version=%s gen=%d", v, g, version, gen)
	}
	if r != nil {
		ok0, _ := r.Progress()
		waitLoadOK(t, r, ok0+20, depTimeout)
	}
	s.depHold()
	if n := s.depLines("upgrade:"); n != gen-1 {
		t.Errorf("%d upgrade: lines, want %d", n, gen-1)
	}
	if n := s.depLines("ready in"); n != gen-failed {
		t.Errorf("%d ready in lines, want %d", n, gen-failed)
	}
	if n := s.depLines(fmt.Sprintf("gen %d (pid", gen+1)); n != 0 {
		t.Errorf("a generation %d was started: one change gave more than one upgrade", gen+1)
	}
	for _, c := range []struct {
		substr string
		want   int
	}{{"upgrade failed", failed}, {"error:", failed}, {"queued", 0}} {
		if n := s.depLines(c.substr); n != c.want {
			t.Errorf("%d log line(s) with %q, want %d", n, c.substr, c.want)
		}
	}
	s.depOnlyChild(t, gen, pid)
	return pid
}

// depOnlyChild checks that relaunch's only child is generation gen, pid.
func (s *depServer) depOnlyChild(t testing.TB, gen, pid int) {
	t.Helper()
	if kids := s.p.Children(); !slices.Equal(kids, []int{pid}) {
		t.Errorf("relaunch's children are %v, want only gen %d (pid %d)", kids, gen, pid)
	}
}

// depGrace is how long a deploy may still succeed after a failed upgrade
// (a later event, a retry) before the test gives up on it.
const depGrace = 5 * time.Second

// depWaitReady waits until relaunch's output has n "ready in" lines. Once
// an upgrade has failed it waits at most depGrace more, so that a deploy
// that relaunch dropped fails the test quickly and says so.
func (s *depServer) depWaitReady(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(depTimeout)
	failedSeen := false
	for {
		out, changed := s.p.out.snapshot()
		if strings.Count(out, "ready in") >= n {
			return
		}
		if !failedSeen && strings.Contains(out, "upgrade failed") {
			failedSeen = true
			if g := time.Now().Add(depGrace); g.Before(deadline) {
				deadline = g
			}
		}
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-changed:
			timer.Stop()
			continue
		case <-s.p.done:
			timer.Stop()
			t.Fatalf("relaunch exited (%v) before %d generations were ready", s.p.state, n)
		case <-timer.C:
		}
		if failedSeen {
			t.Fatalf("the deploy was dropped: an upgrade failed and no new generation was ready within %v after it", depGrace)
		}
		t.Fatalf("%d generations not ready within %v", n, depTimeout)
	}
}

// depWaitAny waits until relaunch's output contains one of substrs and
// returns the index of the first one found.
func (s *depServer) depWaitAny(t testing.TB, substrs ...string) int {
	t.Helper()
	timer := time.NewTimer(depTimeout)
	defer timer.Stop()
	for {
		out, changed := s.p.out.snapshot()
		for i, sub := range substrs {
			if strings.Contains(out, sub) {
				return i
			}
		}
		select {
		case <-changed:
		case <-s.p.done:
			t.Fatalf("relaunch exited (%v) without logging any of %q", s.p.state, substrs)
		case <-timer.C:
			t.Fatalf("none of %q logged within %v", substrs, depTimeout)
		}
	}
}

// depLoad starts the load generator on addr: a few clients, half of them on
// keep-alive connections, the others on a new connection per request, at a
// fixed rate; it returns once requests are being answered.
func depLoad(t testing.TB, addr string) *loadtest.Runner {
	t.Helper()
	r := depLoad0(t, addr)
	waitLoadOK(t, r, 20, depTimeout)
	return r
}

// depLoad0 starts the load generator like depLoad but returns at once: the
// server may not be serving yet.
func depLoad0(t testing.TB, addr string) *loadtest.Runner {
	t.Helper()
	return startLoadConfig(t, loadtest.Config{Addr: addr, Clients: 4, KeepAliveFraction: 0.5, Rate: 200})
}

// depCheckLoad stops the load and checks that no request failed, that only
// the generations in gens answered, the last of them with version.
func depCheckLoad(t testing.TB, r *loadtest.Runner, version string, gens ...string) {
	t.Helper()
	res := r.Stop()
	t.Logf("load: %s", res)
	if err := res.Err(); err != nil {
		t.Errorf("load: %v", err)
	}
	for g := range res.Gens {
		if !slices.Contains(gens, g) {
			t.Errorf("load: answers from gen %s, want only gens %v", g, gens)
		}
	}
	if last := gens[len(gens)-1]; res.Gens[last] == 0 {
		t.Errorf("load: no answer from gen %s", last)
	}
	if res.Versions[version] == 0 {
		t.Errorf("load: no answer with version=%s", version)
	}
}

// depRun runs a command (a deploy tool) in dir and fails the test if it fails.
func depRun(t testing.TB, dir string, env []string, argv ...string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

// depWriteFile writes data to path with mode, creating the directories.
func depWriteFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
}

// depCopyBinary is copyBinary into a directory it creates if need be.
func depCopyBinary(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	copyBinary(t, src, dst)
}

// depRead reads a file.
func depRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// depStat is stat(2) of a path (following symlinks): its device (Dev) and
// inode (Ino).
func depStat(t testing.TB, path string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// depOtherFS returns a new directory on another filesystem than dir
// (/dev/shm), removed at the end of the test, or skips the test when there
// is none.
func depOtherFS(t testing.TB, dir string) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err != nil || !fi.IsDir() {
		t.Skip("cross-filesystem deploy: no /dev/shm")
	}
	if depStat(t, "/dev/shm").Dev == depStat(t, dir).Dev {
		t.Skipf("cross-filesystem deploy: /dev/shm is on the same filesystem as %s", dir)
	}
	other, err := os.MkdirTemp("/dev/shm", "relaunch-deploy-")
	if err != nil {
		t.Skipf("cross-filesystem deploy: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(other) })
	return other
}

// depGoBuild really runs "go build -ldflags -X main.defaultVersion=V -o dst
// ./testdata/demo" in the package directory, with the go tool's work
// directory (where the linker writes) in gotmp, and checks with -x that the
// go tool put the result in place the way the test means: "mv" (a rename,
// same filesystem) or "cp" (removed, then written in place: across
// filesystems).
func depGoBuild(t testing.TB, dst, version, gotmp, how string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-x", "-ldflags", "-X main.defaultVersion="+version, "-o", dst, "./testdata/demo")
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOTMPDIR="+gotmp)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	for line := range strings.Lines(string(out)) {
		if strings.HasPrefix(line, how+" ") && strings.HasSuffix(strings.TrimSpace(line), " "+dst) {
			return
		}
	}
	t.Fatalf("go build did not %s its result to %s:\n%s", how, dst, out)
}

// depSlowCopy copies src to dst the way a copy across filesystems does (a
// cross-filesystem mv, or go build's copy of its result): dst is removed,
// created again and written in chunks, with pauses shorter than relaunch's
// debounce between them (a slow disk or a big binary). The pauses make the
// writer slow; they are not synchronisation.
func depSlowCopy(t testing.TB, src, dst string, chunks int, pause time.Duration) {
	t.Helper()
	data := depRead(t, src)
	if err := os.Remove(dst); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	n := (len(data) + chunks - 1) / chunks
	for off := 0; off < len(data); off += n {
		if off > 0 {
			time.Sleep(pause)
		}
		if _, err := f.Write(data[off:min(off+n, len(data))]); err != nil {
			f.Close()
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// depStyle is one way to deploy: setup lays out version 1 in dir and returns
// the command as the user would give it (relative to dir, relaunch's
// working directory, or absolute); deploy replaces it with version 2.
// relaunch runs with its default --debounce, as a user's would.
type depStyle struct {
	name   string
	setup  func(t *testing.T, dir string) []string
	deploy func(t *testing.T, dir string)
	// after, if set, checks the log once the upgrade is done.
	after func(t *testing.T, s *depServer)
}

// depPlainApp lays out dir/app (version 1) and returns "./app", or its
// absolute path.
func depPlainApp(abs bool) func(t *testing.T, dir string) []string {
	return func(t *testing.T, dir string) []string {
		copyBinary(t, demoBin, filepath.Join(dir, "app"))
		if abs {
			return []string{filepath.Join(dir, "app")}
		}
		return []string{"./app"}
	}
}

// depReleases lays out dir/releases/v1/app and dir/current -> releases/v1,
// and returns ./current/app, or its absolute path.
func depReleases(abs bool) func(t *testing.T, dir string) []string {
	return func(t *testing.T, dir string) []string {
		depCopyBinary(t, demoBin, filepath.Join(dir, "releases", "v1", "app"))
		if err := os.Symlink("releases/v1", filepath.Join(dir, "current")); err != nil {
			t.Fatal(err)
		}
		if abs {
			return []string{filepath.Join(dir, "current", "app")}
		}
		return []string{"./current/app"}
	}
}

// depSwapReleases deploys releases/v2 and swaps current to it atomically.
func depSwapReleases(t *testing.T, dir string) {
	depCopyBinary(t, demoV2Bin, filepath.Join(dir, "releases", "v2", "app"))
	depRun(t, dir, nil, "sh", "-c", "ln -sfn releases/v2 current.tmp && mv -T current.tmp current")
}

func depStyles() []depStyle {
	return []depStyle{
		{
			name:  "mv",
			setup: depPlainApp(false),
			deploy: func(t *testing.T, dir string) {
				depRun(t, dir, nil, "cp", demoV2Bin, "stage-app")
				depRun(t, dir, nil, "mv", "stage-app", "app")
			},
		},
		{
			name:  "install",
			setup: depPlainApp(true),
			deploy: func(t *testing.T, dir string) {
				depRun(t, dir, nil, "install", "-m", "0755", demoV2Bin, filepath.Join(dir, "app"))
			},
		},
		{
			name:  "cp --remove-destination",
			setup: depPlainApp(false),
			deploy: func(t *testing.T, dir string) {
				depRun(t, dir, nil, "cp", "--remove-destination", demoV2Bin, "app")
			},
		},
		{
			name:  "go build same fs",
			setup: depPlainApp(true),
			deploy: func(t *testing.T, dir string) {
				gotmp := filepath.Join(filepath.Dir(dir), "gotmp")
				if err := os.MkdirAll(gotmp, 0o755); err != nil {
					t.Fatal(err)
				}
				if depStat(t, gotmp).Dev != depStat(t, dir).Dev {
					t.Fatalf("%s and %s are on different filesystems", gotmp, dir)
				}
				before := depStat(t, filepath.Join(dir, "app")).Ino
				depGoBuild(t, filepath.Join(dir, "app"), "2", gotmp, "mv")
				if depStat(t, filepath.Join(dir, "app")).Ino == before {
					t.Fatal("go build wrote the app in place: expected a rename of a new file")
				}
			},
		},
		{
			// The go tool's work directory on another filesystem: its
			// rename fails with EXDEV and it copies the result over.
			name:  "go build across fs",
			setup: depPlainApp(false),
			deploy: func(t *testing.T, dir string) {
				depGoBuild(t, filepath.Join(dir, "app"), "2", depOtherFS(t, dir), "cp")
			},
		},
		{
			// Built on another filesystem, then copied across slowly:
			// REMOVE, CREATE and writes spread over more than the
			// debounce's cap (10 x 250ms), so relaunch looks at the
			// partial file at least once and must wait for the whole one.
			name:  "build in shm, slow copy across fs",
			setup: depPlainApp(true),
			deploy: func(t *testing.T, dir string) {
				built := filepath.Join(depOtherFS(t, dir), "app")
				depGoBuild(t, built, "2", filepath.Dir(built), "mv")
				depSlowCopy(t, built, filepath.Join(dir, "app"), 20, 150*time.Millisecond)
			},
			after: func(t *testing.T, s *depServer) {
				if s.depLines("waiting for its deploy to finish") == 0 {
					t.Error("relaunch never reported the partial binary as being written, though the copy outlasted the debounce's cap (10 x 250ms)")
				}
				if n := s.depLines("text file busy"); n > 0 {
					t.Errorf("relaunch tried to run the binary while it was still being written (%d x text file busy)", n)
				}
			},
		},
		{
			name:  "rsync",
			setup: depPlainApp(false),
			deploy: func(t *testing.T, dir string) {
				needCommand(t, "rsync", "rsync")
				// -I: copy even when size and mtime happen to match.
				depRun(t, dir, nil, "rsync", "-a", "-I", demoV2Bin, "app")
			},
		},
		{
			name: "ln -sfn binary symlink",
			setup: func(t *testing.T, dir string) []string {
				depCopyBinary(t, demoBin, filepath.Join(dir, "releases", "app-v1"))
				if err := os.Symlink("releases/app-v1", filepath.Join(dir, "app")); err != nil {
					t.Fatal(err)
				}
				return []string{"./app"}
			},
			deploy: func(t *testing.T, dir string) {
				copyBinary(t, demoV2Bin, filepath.Join(dir, "releases", "app-v2"))
				depRun(t, dir, nil, "sh", "-c", "ln -sfn releases/app-v2 app.tmp && mv -T app.tmp app")
			},
		},
		{
			name:   "ln -sfn directory symlink, relative",
			setup:  depReleases(false),
			deploy: depSwapReleases,
		},
		{
			name:   "ln -sfn directory symlink, absolute",
			setup:  depReleases(true),
			deploy: depSwapReleases,
		},
	}
}

// TestDeployStyles deploys version 2 over version 1 in every common way,
// under load, and checks that exactly one new generation serves version 2,
// that gen 1 is gone and that no request failed.
func TestDeployStyles(t *testing.T) {
	needE2E(t, "relaunch", "demo", "demo-v2")
	t.Parallel()
	for _, st := range depStyles() {
		t.Run(st.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cmd := st.setup(t, dir)
			s := depStart(t, dir, 0, nil, cmd...)
			r := depLoad(t, s.addr)
			st.deploy(t, dir)
			s.depExpectGen(t, r, s.pid1, 2, "2", 0)
			depCheckLoad(t, r, "2", "1", "2")
			if st.after != nil {
				st.after(t, s)
			}
		})
	}
}

// TestDeployNoUpgrade checks that what does not change the binary's content
// starts no generation: touch, chmod, a copy of the same bytes renamed over
// it (new inode), and a real "go build" that finds the binary up to date.
// Each then deploys version 2, which must give exactly one upgrade: the
// watch was alive all along, and its reference is still right.
func TestDeployNoUpgrade(t *testing.T) {
	needE2E(t, "relaunch", "demo", "demo-v2")
	t.Parallel()
	cases := []struct {
		name   string
		change func(t *testing.T, s *depServer, app string)
	}{
		{"touch", func(t *testing.T, s *depServer, app string) {
			depRun(t, "", nil, "touch", app)
		}},
		{"chmod", func(t *testing.T, s *depServer, app string) {
			depRun(t, "", nil, "chmod", "0700", app)
		}},
		{"chmod -x then +x", func(t *testing.T, s *depServer, app string) {
			depRun(t, "", nil, "chmod", "-x", app)
			s.p.WaitLog(t, ": not executable (mode 0644); the running generation keeps serving", depTimeout)
			depRun(t, "", nil, "chmod", "+x", app)
		}},
		{"same bytes, new inode", func(t *testing.T, s *depServer, app string) {
			before := depStat(t, app).Ino
			copyBinary(t, demoBin, app)
			if depStat(t, app).Ino == before {
				t.Fatal("copyBinary kept the inode")
			}
		}},
		{"identical go build", func(t *testing.T, s *depServer, app string) {
			// The same build as TestMain's demoBin: the go tool finds the
			// target up to date and only updates its times (or, if it
			// relinks, renames identical bytes over it).
			before := depRead(t, app)
			depRun(t, "", []string{"GOWORK=off"}, "go", "build", "-o", app, "./testdata/demo")
			if !bytes.Equal(depRead(t, app), before) {
				t.Fatal("go build did not reproduce the same bytes")
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s, _, app := depStartApp(t)
			c.change(t, s, app)
			s.depHold()
			s.depNoUpgrade(t, c.name)

			copyBinary(t, demoV2Bin, app)
			s.depExpectGen(t, nil, s.pid1, 2, "2", 0)
		})
	}
}

// TestDeployTruncatedThenGood renames half of version 2 over the app: gen 1
// keeps serving and no generation is even tried; then the whole version 2
// gives exactly one upgrade. Under load, without a failed request.
// (--ready-timeout bounds what a half binary that hangs would cost.)
func TestDeployTruncatedThenGood(t *testing.T) {
	needE2E(t, "relaunch", "demo", "demo-v2")
	t.Parallel()
	s, dir, app := depStartApp(t, "--ready-timeout", "10s")
	r := depLoad(t, s.addr)

	v2 := depRead(t, demoV2Bin)
	depWriteFile(t, filepath.Join(dir, ".app.partial"), v2[:len(v2)/2], 0o755)
	if err := os.Rename(filepath.Join(dir, ".app.partial"), app); err != nil {
		t.Fatal(err)
	}
	failed := 0
	switch s.depWaitAny(t, "app: truncated: segment", "gen 2 (pid") { // rejected the new binary .../app: ...
	case 0:
		s.depHold()
		s.depNoUpgrade(t, "half a binary")
	case 1:
		t.Errorf("relaunch started half a Go binary (%d of %d bytes) as gen 2: "+
			"the watcher took it for a whole executable (its ELF check only looks at the header tables, "+
			"which Go's linker puts at the start of the file)", len(v2)/2, len(v2))
		s.p.WaitLog(t, "upgrade failed: gen 2", depTimeout)
		failed = 1
	}
	if v, g, pid := s.depAsk(t); v != "1" || g != "1" || pid != s.pid1 {
		t.Errorf("after half a binary: answer from version=%s gen=%s pid=%d, want gen 1 (pid %d)", v, g, pid, s.pid1)
	}

	copyBinary(t, demoV2Bin, app)
	s.depExpectGen(t, r, s.pid1, 2+failed, "2", failed)
	depCheckLoad(t, r, "2", "1", strconv.Itoa(2+failed))
}

// TestDeployHeldOpenWhileWriting writes version 2 in place of a removed
// app (a new inode) in one go but closes it only three debounces later, as
// a writer whose fsync or close is slow does (dd conv=fsync, a network
// filesystem flushing at close). relaunch may try to run the file while it
// is open for writing (execve fails with ETXTBSY), but the deploy must not
// be lost: version 2 serves soon after the close, with no failed request.
func TestDeployHeldOpenWhileWriting(t *testing.T) {
	needE2E(t, "relaunch", "demo", "demo-v2")
	t.Parallel()
	s, _, app := depStartApp(t)
	r := depLoad(t, s.addr)

	if err := os.Remove(app); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(app, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(depRead(t, demoV2Bin)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * s.debounce) // the slow writer: the file stays open for writing
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	closed := time.Now()

	var body string
	if !waitUntil(depGrace, 20*time.Millisecond, func() bool {
		body, err = httpGet(s.addr, "/")
		return err == nil && bodyField(body, "version") == "2"
	}) {
		t.Fatalf("the deploy was dropped: version 2 has been whole and closed on disk for %v, but %q still answers (%v)",
			depGrace, body, err)
	}
	t.Logf("version 2 answered %v after the close", time.Since(closed).Round(time.Millisecond))
	gen, _ := strconv.Atoi(bodyField(body, "gen"))
	pid, _ := strconv.Atoi(bodyField(body, "pid"))
	if left := waitProcsGone([]int{s.pid1}, depTimeout); len(left) > 0 {
		t.Errorf("gen 1 is still there after the upgrade: %s", describeProc(s.pid1))
	}
	ok0, _ := r.Progress()
	waitLoadOK(t, r, ok0+20, depTimeout)
	s.depHold()
	if n := s.depLines("ready in"); n != 2 {
		t.Errorf("%d ready in lines, want 2", n)
	}
	for line := range strings.Lines(s.p.Stderr()) {
		if strings.Contains(line, "upgrade failed") {
			if !strings.Contains(line, "text file busy") {
				t.Errorf("an upgrade failed: %s", line)
			} else {
				t.Logf("tried while the file was open for writing: %s", strings.TrimSpace(line))
			}
		}
	}
	if n := s.depLines(fmt.Sprintf("gen %d (pid", gen+1)); n != 0 {
		t.Errorf("a generation %d was started after gen %d served version 2", gen+1, gen)
	}
	s.depOnlyChild(t, gen, pid)
	depCheckLoad(t, r, "2", "1", strconv.Itoa(gen))
}

// TestDeployDeletedThenRestored removes the binary: gen 1 keeps serving and
// relaunch says it waits for a new binary; then version 2 put back gives
// exactly one upgrade. Under load, without a failed request.
func TestDeployDeletedThenRestored(t *testing.T) {
	needE2E(t, "relaunch", "demo", "demo-v2")
	t.Parallel()
	s, dir, app := depStartApp(t)
	r := depLoad(t, s.addr)

	depRun(t, dir, nil, "rm", "app")
	s.p.WaitLog(t, "binary is gone", depTimeout)
	s.depHold()
	s.depNoUpgrade(t, "binary deleted")

	copyBinary(t, demoV2Bin, app)
	s.depExpectGen(t, r, s.pid1, 2, "2", 0)
	depCheckLoad(t, r, "2", "1", "2")
}

// TestDeployWatchDir runs relaunch with --watch DIR --no-watch-binary: a file
// created in a new subdirectory of DIR (mkdir, then write) gives exactly one
// upgrade, and a file written later in that new subdirectory another one
// (it is watched); editor droppings and anything under .git give none.
// Under load, without a failed request.
func TestDeployWatchDir(t *testing.T) {
	needE2E(t, "relaunch", "demo", "demo-v2")
	t.Parallel()
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	copyBinary(t, demoBin, app)
	site := filepath.Join(dir, "site")
	depWriteFile(t, filepath.Join(site, "index.html"), []byte("v1\n"), 0o644)
	depWriteFile(t, filepath.Join(site, ".git", "HEAD"), []byte("ref: refs/heads/main\n"), 0o644)
	s := depStart(t, dir, depDebounce, []string{"--watch", "site", "--no-watch-binary"}, app)
	r := depLoad(t, s.addr)

	// A new subdirectory and a file in it, at once.
	depWriteFile(t, filepath.Join(site, "new", "deeper", "page.html"), []byte("new\n"), 0o644)
	if line := s.p.WaitLog(t, "upgrade: ", depTimeout); !strings.Contains(line, filepath.Join(site, "new")) {
		t.Errorf("the upgrade does not name what changed: %q", line)
	}
	pid2 := s.depExpectGen(t, r, s.pid1, 2, "1", 0)

	// The new subdirectory is watched.
	depWriteFile(t, filepath.Join(site, "new", "deeper", "other.html"), []byte("other\n"), 0o644)
	pid3 := s.depExpectGen(t, r, pid2, 3, "1", 0)

	// Droppings of editors and git, old and new directories alike: nothing.
	for _, p := range []string{
		".index.html.swp", "new/deeper/.page.html.swp", "new/deeper/.page.html.swx",
		"index.html~", ".#index.html", "new/4913",
		".git/HEAD", ".git/objects/ab/cdef0123", "new/.git/config", "new/deeper/.git/index",
	} {
		depWriteFile(t, filepath.Join(site, p), []byte("x\n"), 0o644)
	}
	s.depHold()
	if n := s.depLines("upgrade:"); n != 2 {
		t.Errorf("%d upgrades, want 2: editor or .git files triggered one", n)
	}
	if n := s.depLines(" started: "); n != 3 {
		t.Errorf("%d generations started, want 3", n)
	}
	if _, g, pid := s.depAsk(t); g != "3" || pid != pid3 {
		t.Errorf("answer from gen %s pid %d, want gen 3 pid %d", g, pid, pid3)
	}
	depCheckLoad(t, r, "1", "1", "2", "3")
}

// TestDeployDuringCrashBackoff puts relaunch in a growing crash backoff
// (gen 1 killed, and every restart of its binary exits at once), waits
// until the backoff has reached 1.6s, then deploys version 2: it must
// answer well within the backoff (1s of the rename), clients that waited
// in the backlog meanwhile must all be served, and the cancelled restart
// must not start one more generation later.
func TestDeployDuringCrashBackoff(t *testing.T) {
	needE2E(t, "relaunch", "demo", "demo-v2")
	t.Parallel()
	// A crash restart runs the binary that crashed: app is a script that
	// runs version 1 with the flags in a file outside the watched directory.
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	flags := filepath.Join(shortTempDir(t), "flags")
	depWriteFile(t, flags, nil, 0o644)
	depWriteFile(t, app, []byte(fmt.Sprintf("#!/bin/sh\nexec %s $(cat %s) \"$@\"\n", demoBin, flags)), 0o755)
	s := depStart(t, dir, depDebounce, nil, "./app")

	// Gen 1 crashes, and every restart exits at once, backing off.
	depWriteFile(t, flags, []byte("-exit-at-start 1"), 0o644)
	if err := syscall.Kill(s.pid1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.p.WaitLog(t, "restarting in 1.6s", depTimeout)
	backoffFrom := time.Now()
	started := s.depLines(" started: ")

	r := depLoad0(t, s.addr) // every request waits in the backlog for now
	copyBinary(t, demoV2Bin, app)
	renamed := time.Now()
	body, err := httpGet(s.addr, "/") // waits in the backlog until a generation accepts
	took := time.Since(renamed)
	if err != nil {
		t.Fatalf("GET / after the deploy: %v", err)
	}
	t.Logf("version 2 answered %v after the rename (backoff 1.6s, debounce %v)", took.Round(time.Millisecond), s.debounce)
	want := fmt.Sprintf("version=2 pid=%s gen=%d", bodyField(body, "pid"), started+1)
	if !strings.HasPrefix(body, want) {
		t.Errorf("first answer after the deploy %q, want %q", body, want)
	}
	if took > time.Second {
		t.Errorf("version 2 answered %v after the rename: the deploy waited for the backoff instead of starting at once", took)
	}
	s.p.WaitLog(t, "upgrade: the binary changed", depTimeout)

	// Past the moment the cancelled restart was due: nothing more starts.
	time.Sleep(time.Until(backoffFrom.Add(1600*time.Millisecond)) + s.debounce + depQuiet)
	if n := s.depLines(" started: "); n != started+1 {
		t.Errorf("%d generations started, want %d: the cancelled restart started one more", n, started+1)
	}
	pid, _ := strconv.Atoi(bodyField(body, "pid"))
	s.depOnlyChild(t, started+1, pid)
	depCheckLoad(t, r, "2", strconv.Itoa(started+1))
}

// depRawGet sends "GET / HTTP/1.0" on a new connection and returns the body.
func depRawGet(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: bench\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	_, body, ok := strings.Cut(string(resp), "\r\n\r\n")
	if !ok || !(strings.HasPrefix(string(resp), "HTTP/1.0 200") || strings.HasPrefix(string(resp), "HTTP/1.1 200")) {
		return "", fmt.Errorf("bad answer %q", resp)
	}
	return body, nil
}

var depReadyRE = regexp.MustCompile(`ready in (\S+):`)

// BenchmarkDeployRenameToServe measures a deploy by rename: from the rename
// of a new binary over the app (versions 1 and 2 in turn) to the first
// answer of the new version, polling with a new connection every 1ms.
// relaunch runs with --debounce 50ms; the metrics are that time, that time
// minus the debounce (what relaunch and the app's start add), and the
// new generation's own start (relaunch's "ready in" figure: from the fork to
// READY=1). Run it with
//
//	go test -run XXX -bench BenchmarkDeployRenameToServe -benchtime 10x .
func BenchmarkDeployRenameToServe(b *testing.B) {
	needE2E(b, "relaunch", "demo", "demo-v2")
	const debounce = 50 * time.Millisecond
	dir := b.TempDir()
	stage := filepath.Join(dir, "stage")
	if err := os.Mkdir(stage, 0o755); err != nil {
		b.Fatal(err)
	}
	app := filepath.Join(dir, "app")
	copyBinary(b, demoBin, app)
	s := depStart(b, dir, debounce, nil, "./app")
	bins := [2][]byte{depRead(b, demoBin), depRead(b, demoV2Bin)}
	prevPid := s.pid1
	var total, ready time.Duration

	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		v := (i + 1) % 2 // version 2 first, then 1, 2, ...
		want := fmt.Sprintf("version=%d ", v+1)
		tmp := filepath.Join(stage, "app")
		if err := os.WriteFile(tmp, bins[v], 0o755); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		t0 := time.Now()
		if err := os.Rename(tmp, app); err != nil {
			b.Fatal(err)
		}
		next := t0
		for {
			body, err := depRawGet(s.addr)
			if err == nil && strings.HasPrefix(body, want) {
				break
			}
			if time.Since(t0) > depTimeout {
				b.Fatalf("no answer with %q within %v of the rename; last %q, %v", want, depTimeout, body, err)
			}
			next = next.Add(time.Millisecond) // the polling interval
			time.Sleep(time.Until(next))
		}
		d := time.Since(t0)

		b.StopTimer()
		total += d
		m := depReadyRE.FindStringSubmatch(s.p.WaitLogN(b, "ready in", i+2, depTimeout))
		if m == nil {
			b.Fatal("cannot parse the ready time from relaunch's log")
		}
		rd, err := time.ParseDuration(m[1])
		if err != nil {
			b.Fatal(err)
		}
		ready += rd
		if left := waitProcsGone([]int{prevPid}, depTimeout); len(left) > 0 {
			b.Fatalf("the previous generation is still there: %s", describeProc(prevPid))
		}
		_, _, prevPid = s.depAsk(b)
		b.StartTimer()
	}
	b.StopTimer()
	n := float64(b.N)
	msPer := float64(total.Microseconds()) / 1000 / n
	b.ReportMetric(msPer, "ms-rename-to-serve/op")
	b.ReportMetric(msPer-float64(debounce.Milliseconds()), "ms-minus-debounce/op")
	b.ReportMetric(float64(ready.Microseconds())/1000/n, "ms-gen-ready/op")
}
