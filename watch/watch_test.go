package watch

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// setupBinary writes the first version (/bin/true) at dir/app and starts a
// watcher on it.
func setupBinary(t *testing.T) (dir, app string, w *Watcher, v2 []byte) {
	t.Helper()
	a, b := binaries(t)
	dir = tempDir(t)
	app = filepath.Join(dir, "app")
	writeFile(t, app, a, 0o755)
	w = startWatcher(t, Options{Binary: app})
	return dir, app, w, b
}

func TestMvOverBinary(t *testing.T) {
	t.Parallel()
	dir, app, w, v2 := setupBinary(t)
	writeFile(t, filepath.Join(dir, "app.new"), v2, 0o755)
	run(t, dir, "mv", "app.new", "app")
	expectBinaryChange(t, w, app)
}

func TestMvFromOtherDirectory(t *testing.T) {
	t.Parallel()
	_, app, w, v2 := setupBinary(t)
	other := filepath.Join(tempDir(t), "build")
	writeFile(t, other, v2, 0o755)
	run(t, "", "mv", other, app)
	expectBinaryChange(t, w, app)
}

func TestInstall(t *testing.T) {
	t.Parallel()
	dir, app, w, v2 := setupBinary(t)
	src := filepath.Join(tempDir(t), "app")
	writeFile(t, src, v2, 0o644)
	run(t, dir, "install", "-m", "0755", src, app)
	expectBinaryChange(t, w, app)
}

func TestCpRemoveDestination(t *testing.T) {
	t.Parallel()
	dir, app, w, v2 := setupBinary(t)
	src := filepath.Join(tempDir(t), "app")
	writeFile(t, src, v2, 0o755)
	run(t, dir, "cp", "--remove-destination", src, app)
	expectBinaryChange(t, w, app)
}

// TestRsyncStyle: rsync writes a temporary file in the target directory
// (slowly, in pieces), sets its mode, then renames it over the target.
func TestRsyncStyle(t *testing.T) {
	t.Parallel()
	dir, app, w, v2 := setupBinary(t)
	tmp := filepath.Join(dir, ".app.Xy12Zq")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	for chunk := range splitN(v2, 8) {
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
		time.Sleep(testDebounce / 5) // a slow transfer, not synchronisation
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, app); err != nil {
		t.Fatal(err)
	}
	expectBinaryChange(t, w, app)
}

// splitN yields data in n pieces.
func splitN(data []byte, n int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		size := (len(data) + n - 1) / n
		for len(data) > 0 {
			k := min(size, len(data))
			if !yield(data[:k]) {
				return
			}
			data = data[k:]
		}
	}
}

// writeSlowly rewrites path in place (truncate, then pieces with pauses
// shorter than the debounce), as "go build -o" does across filesystems and
// returns when the last byte is written.
func writeSlowly(t *testing.T, path string, data []byte, pieces int) time.Time {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	for chunk := range splitN(data, pieces) {
		time.Sleep(testDebounce / 5) // a slow copy, not synchronisation
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	done := time.Now()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return done
}

// TestGoBuildAcrossFilesystems simulates "go build -o app" where $WORK is on
// another filesystem (tmpfs /dev/shm here): the go command cannot rename, so
// it truncates the target and copies into it; the watcher must wait for the
// last write. Also a plain cross-filesystem mv (unlink, create, copy).
func TestGoBuildAcrossFilesystems(t *testing.T) {
	a, b := binaries(t)
	shm, err := os.MkdirTemp("/dev/shm", "relaunch-watch-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	dir := tempDir(t)
	var s1, s2 syscall.Stat_t
	if syscall.Stat(shm, &s1) != nil || syscall.Stat(dir, &s2) != nil || s1.Dev == s2.Dev {
		t.Skip("/dev/shm and the temporary directory are on the same filesystem")
	}

	t.Run("copy into the target", func(t *testing.T) {
		t.Parallel()
		app := filepath.Join(tempDir(t), "app")
		writeFile(t, app, a, 0o755)
		built := filepath.Join(shm, "b001-exe-a.out")
		writeFile(t, built, b, 0o755)
		w := startWatcher(t, Options{Binary: app})
		data, err := os.ReadFile(built)
		if err != nil {
			t.Fatal(err)
		}
		done := writeSlowly(t, app, data, 24)
		c := waitChange(t, w)
		if got := time.Now(); got.Before(done) {
			t.Fatalf("Change at %v, before the last write at %v", got, done)
		}
		if !c.Binary || c.Path != app {
			t.Fatalf("got %+v", c)
		}
		expectNoChange(t, w, "the copy")
	})
	// A copy slower than the debounce: partial files are evaluated, found
	// incomplete, and waited on; the Change comes once, for the whole file.
	t.Run("copy slower than the debounce", func(t *testing.T) {
		t.Parallel()
		app := filepath.Join(tempDir(t), "app")
		writeFile(t, app, a, 0o755)
		w := startWatcher(t, Options{Binary: app})
		f, err := os.OpenFile(app, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		written := 0
		for chunk := range splitN(b, 4) {
			if _, err := f.Write(chunk); err != nil {
				t.Fatal(err)
			}
			if written += len(chunk); written < len(b) {
				expectNoChange(t, w, "a partial write") // longer than the debounce
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		expectBinaryChange(t, w, app)
	})
	t.Run("mv", func(t *testing.T) {
		t.Parallel()
		dir := tempDir(t)
		app := filepath.Join(dir, "app")
		writeFile(t, app, a, 0o755)
		built := filepath.Join(shm, "mv-src")
		writeFile(t, built, b, 0o755)
		w := startWatcher(t, Options{Binary: app})
		run(t, dir, "mv", built, app)
		expectBinaryChange(t, w, app)
	})
}

// TestGoBuild runs the real "go build -o" twice with different sources (a
// Change), then once more unchanged (the go command only touches the file:
// no Change).
func TestGoBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go program")
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	t.Parallel()
	src := tempDir(t)
	dir := tempDir(t)
	app := filepath.Join(dir, "app")
	writeFile(t, filepath.Join(src, "go.mod"), []byte("module tiny\n\ngo 1.21\n"), 0o644)
	build := func(msg string) {
		t.Helper()
		writeFile(t, filepath.Join(src, "main.go"),
			[]byte("package main\n\nfunc main() { println(\""+msg+"\") }\n"), 0o644)
		cmd := exec.Command(goCmd, "build", "-o", app, ".")
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-trimpath")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	build("one")
	w := startWatcher(t, Options{Binary: app})
	build("two")
	expectBinaryChange(t, w, app)
	build("two")
	expectNoChange(t, w, "an unchanged rebuild")
}

// TestSymlinkSwap: app -> app-v1 swapped to app-v2 the atomic way
// (ln -sfn to a temporary name, then rename).
func TestSymlinkSwap(t *testing.T) {
	t.Parallel()
	a, b := binaries(t)
	dir := tempDir(t)
	writeFile(t, filepath.Join(dir, "app-v1"), a, 0o755)
	writeFile(t, filepath.Join(dir, "app-v2"), b, 0o755)
	run(t, dir, "ln", "-sfn", "app-v1", "app")
	w := startWatcher(t, Options{Binary: filepath.Join(dir, "app")})
	run(t, dir, "ln", "-sfn", "app-v2", "app.tmp")
	run(t, dir, "mv", "-T", "app.tmp", "app")
	expectBinaryChange(t, w, filepath.Join(dir, "app-v2"))
}

// TestDirectorySymlinkSwap: the command is ./current/app with
// current -> releases/v1, swapped to releases/v2 and back.
func TestDirectorySymlinkSwap(t *testing.T) {
	a, b := binaries(t)
	dir := tempDir(t)
	for v, data := range map[string][]byte{"v1": a, "v2": b} {
		if err := os.MkdirAll(filepath.Join(dir, "releases", v), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "releases", v, "app"), data, 0o755)
	}
	run(t, dir, "ln", "-sfn", "releases/v1", "current")
	t.Chdir(dir)
	w := startWatcher(t, Options{Binary: "./current/app"})

	run(t, dir, "ln", "-sfn", "releases/v2", "current.tmp")
	run(t, dir, "mv", "-T", "current.tmp", "current")
	expectBinaryChange(t, w, filepath.Join(dir, "releases", "v2", "app"))

	// The new release directory is watched now: a rebuild there is seen.
	deploy(t, filepath.Join(dir, "releases", "v2", "app"), a)
	expectBinaryChange(t, w, filepath.Join(dir, "releases", "v2", "app"))

	run(t, dir, "ln", "-sfn", "releases/v1", "current.tmp")
	run(t, dir, "mv", "-T", "current.tmp", "current")
	expectBinaryChange(t, w, filepath.Join(dir, "releases", "v1", "app"))

	// The old release directory is not watched any more.
	deploy(t, filepath.Join(dir, "releases", "v2", "app"), b)
	expectNoChange(t, w, "a change in a release no longer current")
}

func TestTouchAndChmodAreNotChanges(t *testing.T) {
	t.Parallel()
	dir, app, w, _ := setupBinary(t)
	run(t, dir, "touch", app)
	expectNoChange(t, w, "touch")
	run(t, dir, "chmod", "0700", app)
	expectNoChange(t, w, "chmod")
	run(t, dir, "touch", "-d", "2001-01-01", app)
	expectNoChange(t, w, "touch -d")
}

// TestIdenticalRewrite: the same bytes under a new inode (a rebuild that
// produced the same binary, renamed over it) is not a change.
func TestIdenticalRewrite(t *testing.T) {
	t.Parallel()
	dir, app, w, _ := setupBinary(t)
	run(t, dir, "cp", app, "app.new")
	run(t, dir, "mv", "app.new", "app")
	expectNoChange(t, w, "an identical rewrite")
	run(t, dir, "install", "-m", "0755", app, filepath.Join(dir, "app.same"))
	run(t, dir, "cp", "--remove-destination", "app.same", "app")
	expectNoChange(t, w, "an identical cp --remove-destination")
}

func TestTruncatedThenGood(t *testing.T) {
	t.Parallel()
	_, app, w, v2 := setupBinary(t)
	deploy(t, app, v2[:len(v2)/2])
	expectNoChange(t, w, "a truncated ELF file")
	deploy(t, app, v2[:40]) // not even the whole ELF header
	expectNoChange(t, w, "a truncated ELF header")
	deploy(t, app, v2)
	expectBinaryChange(t, w, app)
}

func TestNotExecutableThenChmod(t *testing.T) {
	t.Parallel()
	dir, app, w, v2 := setupBinary(t)
	tmp := filepath.Join(dir, "app.tmp")
	writeFile(t, tmp, v2, 0o644)
	run(t, dir, "mv", tmp, app)
	expectNoChange(t, w, "a non-executable file")
	run(t, dir, "chmod", "+x", app)
	expectBinaryChange(t, w, app)
}

func TestDeleteThenRestore(t *testing.T) {
	t.Parallel()
	dir, app, w, _ := setupBinary(t)
	a, _ := binaries(t)
	if err := os.Remove(app); err != nil {
		t.Fatal(err)
	}
	expectNoChange(t, w, "the binary was deleted")
	writeFile(t, filepath.Join(dir, "restore"), a, 0o755) // the same content as before
	run(t, dir, "mv", "restore", "app")
	expectBinaryChange(t, w, app)
}

func TestBinaryAppearsLater(t *testing.T) {
	t.Parallel()
	a, _ := binaries(t)
	dir := tempDir(t)
	app := filepath.Join(dir, "bin", "app")
	w := startWatcher(t, Options{Binary: app}) // neither bin nor bin/app exist
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	expectNoChange(t, w, "mkdir bin")
	deploy(t, app, a)
	expectBinaryChange(t, w, app)
}

func TestPATHLookup(t *testing.T) {
	a, b := binaries(t)
	d1, d2 := tempDir(t), tempDir(t)
	t.Setenv("PATH", d1+string(os.PathListSeparator)+d2)
	const name = "relaunch-watch-test-app"
	writeFile(t, filepath.Join(d2, name), a, 0o755)
	w := startWatcher(t, Options{Binary: name})

	deploy(t, filepath.Join(d2, name), b)
	expectBinaryChange(t, w, filepath.Join(d2, name))

	// A non-executable file earlier in PATH does not shadow it.
	writeFile(t, filepath.Join(d1, name), a, 0o644)
	expectNoChange(t, w, "a non-executable file earlier in PATH")
	// An executable one does.
	if err := os.Chmod(filepath.Join(d1, name), 0o755); err != nil {
		t.Fatal(err)
	}
	expectBinaryChange(t, w, filepath.Join(d1, name))

	if err := os.Remove(filepath.Join(d1, name)); err != nil {
		t.Fatal(err)
	}
	expectBinaryChange(t, w, filepath.Join(d2, name))
}

func TestWatchDirectory(t *testing.T) {
	t.Parallel()
	dir := tempDir(t)
	for _, d := range []string{"sub", ".git/objects"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "sub", "a.conf"), []byte("a"), 0o644)
	w := startWatcher(t, Options{Paths: []string{dir}})

	// Ignored: editor files, .git, attribute changes.
	for _, name := range []string{"a.conf.swp", ".a.conf.swx", "a.conf~", ".#a.conf", "4913"} {
		writeFile(t, filepath.Join(dir, "sub", name), []byte("x"), 0o644)
		if err := os.Remove(filepath.Join(dir, "sub", name)); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, ".git", "x"), []byte("x"), 0o644)
	writeFile(t, filepath.Join(dir, ".git", "objects", "y"), []byte("x"), 0o644)
	run(t, dir, "chmod", "0600", filepath.Join(dir, "sub", "a.conf"))
	run(t, dir, "touch", filepath.Join(dir, "sub", "a.conf"))
	expectNoChange(t, w, "editor files, .git and chmod")

	// A write in an existing subdirectory.
	f := filepath.Join(dir, "sub", "a.conf")
	writeFile(t, f, []byte("b"), 0o644)
	c := waitChange(t, w)
	if !hasFile(c, f) || c.Binary {
		t.Fatalf("got %+v, want %s", c, f)
	}
	expectNoChange(t, w, "the Change")

	// A new subdirectory, then a file in it: both seen.
	nd := filepath.Join(dir, "new")
	if err := os.Mkdir(nd, 0o755); err != nil {
		t.Fatal(err)
	}
	waitFileChange(t, w, nd)
	nf := filepath.Join(nd, "b.conf")
	writeFile(t, nf, []byte("b"), 0o644)
	waitFileChange(t, w, nf)

	// mkdir -p and a file at once: the file is found when the new
	// directories are walked, even if created before their watch.
	deep := filepath.Join(dir, "x", "y", "z")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	df := filepath.Join(deep, "c.conf")
	writeFile(t, df, []byte("c"), 0o644)
	waitFileChange(t, w, df)
	expectNoChange(t, w, "the Changes")

	// The new deep directory is watched.
	run(t, dir, "rm", filepath.Join(deep, "c.conf"))
	waitFileChange(t, w, df)

	// A removed directory, then one made again with the same name.
	if err := os.RemoveAll(filepath.Join(dir, "x")); err != nil {
		t.Fatal(err)
	}
	waitFileChange(t, w, filepath.Join(dir, "x"))
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	waitFileChange(t, w, filepath.Join(dir, "x"))
	writeFile(t, df, []byte("d"), 0o644)
	waitFileChange(t, w, df)

	// A directory renamed within the tree: watched under its new name.
	if err := os.Rename(filepath.Join(dir, "x"), filepath.Join(dir, "renamed")); err != nil {
		t.Fatal(err)
	}
	waitFileChange(t, w, filepath.Join(dir, "renamed"))
	rf := filepath.Join(dir, "renamed", "y", "z", "e.conf")
	writeFile(t, rf, []byte("e"), 0o644)
	waitFileChange(t, w, rf)
}

// TestWatchRootReplaced: a watched directory removed, then made again, is
// watched again; so is one swapped through a symlink.
func TestWatchRootReplaced(t *testing.T) {
	t.Parallel()
	dir := tempDir(t)
	conf := filepath.Join(dir, "conf")
	for _, d := range []string{"conf", "conf-v2/sub"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("conf", filepath.Join(dir, "cur")); err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, Options{Paths: []string{conf}})
	w2 := startWatcher(t, Options{Paths: []string{filepath.Join(dir, "cur")}})

	if err := os.Remove(conf); err != nil {
		t.Fatal(err)
	}
	waitFileChange(t, w, conf)
	waitChange(t, w2) // its target is gone too
	if err := os.Mkdir(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	waitFileChange(t, w, conf)
	waitChange(t, w2)
	expectNoChange(t, w, "mkdir")
	f := filepath.Join(conf, "a")
	writeFile(t, f, []byte("a"), 0o644)
	waitFileChange(t, w, f)
	waitFileChange(t, w2, f)

	// cur -> conf-v2: a Change, and conf-v2's tree is watched.
	run(t, dir, "ln", "-sfn", "conf-v2", "cur.tmp")
	run(t, dir, "mv", "-T", "cur.tmp", "cur")
	waitFileChange(t, w2, filepath.Join(dir, "cur"))
	g := filepath.Join(dir, "conf-v2", "sub", "b")
	writeFile(t, g, []byte("b"), 0o644)
	waitFileChange(t, w2, g)
	writeFile(t, f, []byte("a2"), 0o644) // the old target: not watched by w2
	waitFileChange(t, w, f)
	expectNoChange(t, w2, "a write in the old target")
}

// TestManyFiles: a burst of many files is one or a few Changes listing at
// most 20 files each.
func TestManyFiles(t *testing.T) {
	t.Parallel()
	dir := tempDir(t)
	w := startWatcher(t, Options{Paths: []string{dir}})
	for i := range 50 {
		writeFile(t, filepath.Join(dir, "f"+strconv.Itoa(i)), []byte("x"), 0o644)
	}
	c := waitChange(t, w)
	if len(c.Files) == 0 || len(c.Files) > maxFiles {
		t.Fatalf("%d files listed", len(c.Files))
	}
	seen := map[string]bool{}
	for _, f := range c.Files {
		if seen[f] {
			t.Fatalf("%s listed twice", f)
		}
		seen[f] = true
	}
}

func TestWatchFile(t *testing.T) {
	t.Parallel()
	dir := tempDir(t)
	f := filepath.Join(dir, "app.conf")
	writeFile(t, f, []byte("a"), 0o644)
	writeFile(t, filepath.Join(dir, "other"), []byte("a"), 0o644)
	w := startWatcher(t, Options{Paths: []string{f}})

	writeFile(t, filepath.Join(dir, "other"), []byte("b"), 0o644)
	run(t, dir, "chmod", "0600", f)
	expectNoChange(t, w, "a write to another file and a chmod")

	writeFile(t, f, []byte("b"), 0o644)
	if c := waitChange(t, w); !hasFile(c, f) {
		t.Fatalf("got %+v", c)
	}
	expectNoChange(t, w, "the Change")

	deploy(t, f, []byte("c")) // renamed over: still watched
	if c := waitChange(t, w); !hasFile(c, f) {
		t.Fatalf("got %+v", c)
	}
	writeFile(t, f, []byte("d"), 0o644)
	if c := waitChange(t, w); !hasFile(c, f) {
		t.Fatalf("got %+v", c)
	}
}

func TestWatchPathMissing(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(tempDir(t), "no-such-dir")
	w, err := New(Options{Paths: []string{missing}})
	if err == nil {
		w.Close()
		t.Fatal("New succeeded with a missing --watch path")
	}
	if !strings.Contains(err.Error(), missing) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("error %q does not name %s", err, missing)
	}
}

// TestMaxDelay: a stream of writes closer together than the debounce gives a
// Change after MaxDelay, not only when it stops.
// Not parallel: the writes must keep coming closer together than the
// debounce.
func TestMaxDelay(t *testing.T) {
	dir := tempDir(t)
	f := filepath.Join(dir, "log")
	w := startWatcher(t, Options{Paths: []string{dir}, Debounce: 150 * time.Millisecond, MaxDelay: 450 * time.Millisecond})
	start := time.Now()
	for {
		writeFile(t, f, []byte(time.Now().String()), 0o644)
		select {
		case c := <-w.Changes():
			if !hasFile(c, f) {
				t.Fatalf("got %+v", c)
			}
			if d := time.Since(start); d < 400*time.Millisecond {
				t.Fatalf("Change after %v, before MaxDelay", d)
			}
			return
		case <-time.After(20 * time.Millisecond): // the pace of the writes
		}
		if time.Since(start) > changeWait {
			t.Fatal("no Change while events kept coming")
		}
	}
}

// TestOverflow: on ErrEventOverflow the watcher rescans.
func TestOverflow(t *testing.T) {
	t.Parallel()
	a, b := binaries(t)
	dir := tempDir(t)
	app := filepath.Join(dir, "app")
	writeFile(t, app, a, 0o755)
	w := startWatcher(t, Options{Binary: app})

	// Nothing changed: no Change.
	w.fsw.Errors <- fsnotify.ErrEventOverflow
	expectNoChange(t, w, "an overflow without a change")

	// Events lost (the watch is dropped to lose them for sure): the rescan
	// finds the new binary and watches again.
	if err := w.fsw.Remove(dir); err != nil {
		t.Fatal(err)
	}
	deploy(t, app, b)
	expectNoChange(t, w, "a change without events")
	w.fsw.Errors <- fsnotify.ErrEventOverflow
	expectBinaryChange(t, w, app)
	deploy(t, app, a)
	expectBinaryChange(t, w, app)

	// With --watch paths, an overflow reports them, conservatively.
	wd := tempDir(t)
	w2 := startWatcher(t, Options{Paths: []string{wd}})
	w2.fsw.Errors <- fsnotify.ErrEventOverflow
	if c := waitChange(t, w2); !hasFile(c, wd) {
		t.Fatalf("got %+v, want %s", c, wd)
	}
}

func TestCloseClosesChanges(t *testing.T) {
	t.Parallel()
	_, app, w, v2 := setupBinary(t)
	deploy(t, app, v2) // a Change may be pending: Close must not block on it
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for range w.Changes() {
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNoBinaryNoPaths(t *testing.T) {
	t.Parallel()
	w := startWatcher(t, Options{})
	expectNoChange(t, w, "New")
}

func TestEmitMerges(t *testing.T) {
	w := &Watcher{}
	w.emit(Change{Files: []string{"a", "b"}})
	w.emit(Change{Binary: true, Path: "/x/v1", Files: []string{"b", "c"}})
	w.emit(Change{Binary: true, Path: "/x/v2"})
	got := *w.out
	if !got.Binary || got.Path != "/x/v2" || strings.Join(got.Files, ",") != "a,b,c" {
		t.Fatalf("merged %+v", got)
	}
}

func TestLimitErrors(t *testing.T) {
	for _, tc := range []struct {
		errno  syscall.Errno
		sysctl string
	}{
		{syscall.ENOSPC, "sysctl -w fs.inotify.max_user_watches=524288"},
		{syscall.EMFILE, "sysctl -w fs.inotify.max_user_instances="},
	} {
		err := limitError(tc.errno, "watching /x")
		if !errors.Is(err, tc.errno) || !strings.Contains(err.Error(), tc.sysctl) || !strings.Contains(err.Error(), "/x") {
			t.Errorf("limitError(%v) = %q", tc.errno, err)
		}
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	w := startWatcher(t, Options{Debounce: -1})
	if w.debounce != 250*time.Millisecond || w.maxDelay != 2500*time.Millisecond {
		t.Fatalf("debounce %v, max delay %v", w.debounce, w.maxDelay)
	}
	w = startWatcher(t, Options{Debounce: 10 * time.Millisecond})
	if w.maxDelay != 2*time.Second {
		t.Fatalf("max delay %v", w.maxDelay)
	}
}

// Ignore patterns: by name (a directory's whole subtree) and by absolute
// path (a build's output binary inside the watched tree).
func TestIgnorePatterns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, d := range []string{"vendor/x", "src"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "app")
	w, err := New(Options{Paths: []string{dir}, Debounce: 50 * time.Millisecond, Ignore: []string{"vendor", out, "*.log"}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for _, f := range []string{"vendor/x/a.go", "vendor/b.go", "app", "debug.log"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case c := <-w.Changes():
		t.Fatalf("ignored files made a change: %+v", c)
	case <-time.After(500 * time.Millisecond): // proving a negative: 10× the debounce
	}
	if err := os.WriteFile(filepath.Join(dir, "src", "main.go"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-w.Changes():
		if len(c.Files) != 1 || filepath.Base(c.Files[0]) != "main.go" {
			t.Errorf("change %+v; want only src/main.go", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no change for src/main.go")
	}
}
