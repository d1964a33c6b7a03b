package watch

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testDebounce is small so that tests are quick; "no change" is asserted by
// waiting quietWait, a few debounces.
const (
	testDebounce = 50 * time.Millisecond
	quietWait    = 4 * testDebounce
	changeWait   = 10 * time.Second
)

var (
	elfOnce      sync.Once
	elfA, elfB   []byte // /bin/true and /bin/false: real ELF executables
	elfReadError error
)

// binaries returns two different real ELF executables.
func binaries(t testing.TB) (a, b []byte) {
	t.Helper()
	elfOnce.Do(func() {
		elfA, elfReadError = os.ReadFile("/bin/true")
		if elfReadError == nil {
			elfB, elfReadError = os.ReadFile("/bin/false")
		}
	})
	if elfReadError != nil {
		t.Skipf("no /bin/true or /bin/false: %v", elfReadError)
	}
	if !bytes.HasPrefix(elfA, []byte("\x7fELF")) || bytes.Equal(elfA, elfB) {
		t.Skip("/bin/true and /bin/false are not two different ELF files")
	}
	return elfA, elfB
}

// tempDir is t.TempDir with symlinks resolved, since the watcher reports
// physical paths.
func tempDir(t testing.TB) string {
	t.Helper()
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // WriteFile's mode is masked by umask
		t.Fatal(err)
	}
}

// deploy writes data next to path and renames it over path (the atomic way).
func deploy(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".deploy-tmp"
	writeFile(t, tmp, data, 0o755)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func run(t testing.TB, dir string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// tlogWriter sends the watcher's log lines to t.Log (shown with -v or on
// failure).
type tlogWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tlogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	tw := &tlogWriter{t: t}
	t.Cleanup(func() {
		tw.mu.Lock()
		tw.done = true
		tw.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(tw, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func startWatcher(t testing.TB, opts Options) *Watcher {
	t.Helper()
	if opts.Debounce == 0 {
		opts.Debounce = testDebounce
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	w, err := New(opts)
	if err != nil {
		t.Fatalf("New(%+v): %v", opts, err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func waitChange(t testing.TB, w *Watcher) Change {
	t.Helper()
	select {
	case c, ok := <-w.Changes():
		if !ok {
			t.Fatal("Changes closed")
		}
		return c
	case <-time.After(changeWait):
		t.Fatalf("no Change within %v", changeWait)
	}
	return Change{}
}

func expectNoChange(t testing.TB, w *Watcher, after string) {
	t.Helper()
	select {
	case c := <-w.Changes():
		t.Fatalf("after %s: unexpected %+v", after, c)
	case <-time.After(quietWait):
	}
}

// expectBinaryChange waits for a Change of the binary to path, and then
// checks no second one follows.
func expectBinaryChange(t testing.TB, w *Watcher, path string) {
	t.Helper()
	c := waitChange(t, w)
	if !c.Binary || c.Path != path {
		t.Fatalf("got %+v, want a binary Change to %s", c, path)
	}
	expectNoChange(t, w, "the Change")
}

func hasFile(c Change, path string) bool {
	for _, f := range c.Files {
		if f == path {
			return true
		}
	}
	return false
}

// waitFileChange waits for Changes until one lists path.
func waitFileChange(t testing.TB, w *Watcher, path string) Change {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), changeWait)
	defer cancel()
	for {
		select {
		case c := <-w.Changes():
			if hasFile(c, path) {
				return c
			}
			t.Logf("Change without %s: %+v", path, c)
		case <-ctx.Done():
			t.Fatalf("no Change listing %s within %v", path, changeWait)
		}
	}
}

// inspect opens path and returns its fingerprint and whether it is a whole
// executable, and, when hashIf returns true for the fingerprint (and the
// file is valid), the hash of its content, all through one descriptor.
func inspect(path string, hashIf func(fingerprint) bool) (inspected, *uint64, error) {
	f, in, err := openBinary(path)
	if err != nil {
		return in, nil, err
	}
	defer f.Close()
	if in.bad != "" || hashIf == nil || !hashIf(in.fp) {
		return in, nil, nil
	}
	p := newPrefixHash(in.fp.size)
	if _, err := p.finish(f, nil); err != nil {
		return in, nil, err
	}
	sum := p.whole()
	return in, &sum, nil
}

// settleRef does what the watcher does once a Change has been taken: it
// hashes the new reference to its end (and closes it).
func settleRef(w *Watcher) {
	if w.bin != nil && w.bin.ref != nil {
		w.completeRef(w.bin.ref)
	}
}

// watchApp writes data as the executable "app" in a new directory and
// watches it as the binary.
func watchApp(t testing.TB, data []byte) (*Watcher, string) {
	t.Helper()
	app := filepath.Join(tempDir(t), "app")
	writeFile(t, app, data, 0o755)
	return startWatcher(t, Options{Binary: app}), app
}

// waitDeciding waits until the watcher has read n bytes in all to decide
// whether the binary changed: an evaluation it was expected to make is
// done.
func waitDeciding(t testing.TB, w *Watcher, n int64) {
	t.Helper()
	waitRead(t, &w.readDeciding, n, "to decide")
}

// waitRead waits until counter, one of the watcher's counts of bytes read,
// reaches n.
func waitRead(t testing.TB, counter *atomic.Int64, n int64, what string) {
	t.Helper()
	deadline := time.Now().Add(changeWait)
	for counter.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the watcher read %d bytes %s within %v, want %d", counter.Load(), what, changeWait, n)
		}
		time.Sleep(time.Millisecond)
	}
}
