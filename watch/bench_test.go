package watch

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// BenchmarkRenameToChange measures the latency from rename() of a new binary
// over the watched one to its Change arriving, beyond the debounce (20ms):
// inotify delivery, resolution, validation and hashing. Reported as
// ms-beyond-debounce/op.
func BenchmarkRenameToChange(b *testing.B) {
	x, y := binaries(b)
	dir := tempDir(b)
	app := filepath.Join(dir, "app")
	writeFile(b, app, x, 0o755)
	const debounce = 20 * time.Millisecond
	w := startWatcher(b, Options{Binary: app, Debounce: debounce, Logger: testLoggerQuiet()})
	tmp := filepath.Join(dir, "app.new")
	var total time.Duration
	n := 0
	for i := 0; b.Loop(); i++ {
		n++
		data := y
		if i%2 == 1 {
			data = x
		}
		if err := os.WriteFile(tmp, data, 0o755); err != nil {
			b.Fatal(err)
		}
		_, change := renameToChange(b, w, tmp, app)
		total += change - debounce
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(n), "ms-beyond-debounce/op")
}

// renameToChange renames tmp over app and waits for the watcher's Change of
// the binary. It returns how long the rename took and how long the Change
// took to come, both from just before the rename.
func renameToChange(b *testing.B, w *Watcher, tmp, app string) (rename, change time.Duration) {
	b.Helper()
	start := time.Now()
	if err := os.Rename(tmp, app); err != nil {
		b.Fatal(err)
	}
	rename = time.Since(start)
	select {
	case c := <-w.Changes():
		if !c.Binary {
			b.Fatalf("got %+v", c)
		}
	case <-time.After(changeWait):
		b.Fatal("no Change")
	}
	return rename, time.Since(start)
}

func testLoggerQuiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// BenchmarkRenameToChange8MiB is BenchmarkRenameToChange with two Go
// binaries of 8 MiB (this test binary, padded), which differ, as two builds
// do, in their build ID in the first page: what the watcher reads after the
// debounce to tell a real change from an identical rewrite. As in the
// handover benchmark, the new file is synced before the rename, and the
// file renamed over stays on disk (there, the old generation runs it; here,
// a hard link keeps it), so that the rename is quick (rename-ms/op):
// renaming over the last link of a file frees its blocks and pages in the
// call, and on ext4 a rename over a file also starts the new one's
// writeback. The watcher finishes what it does after a Change before the
// next rename. Reported as ms-beyond-debounce/op.
func BenchmarkRenameToChange8MiB(b *testing.B) {
	x, y := goBinaries(b, 8<<20)
	dir := tempDir(b)
	app := filepath.Join(dir, "app")
	writeFile(b, app, x, 0o755)
	const debounce = 20 * time.Millisecond
	w := startWatcher(b, Options{Binary: app, Debounce: debounce, Logger: testLoggerQuiet()})
	tmp, prev := filepath.Join(dir, "app.new"), filepath.Join(dir, "app.prev")
	var total, renames time.Duration
	n := 0
	for i := 0; b.Loop(); i++ {
		n++
		data := y
		if i%2 == 1 {
			data = x
		}
		b.StopTimer()
		writeSynced(b, tmp, data)
		os.Remove(prev)
		if err := os.Link(app, prev); err != nil {
			b.Fatal(err)
		}
		// The watcher's work after the last Change is over: it has hashed
		// that version to its end (all of x at New; then, each time, what
		// the comparison had not read, all but the first prefix).
		waitRead(b, &w.readAfter, int64(len(x))+int64(i)*int64(len(x)-firstPrefix), "after a Change")
		b.StartTimer()
		rename, change := renameToChange(b, w, tmp, app)
		renames += rename
		total += change - debounce
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(n), "ms-beyond-debounce/op")
	b.ReportMetric(float64(renames.Microseconds())/1000/float64(n), "rename-ms/op")
}

// writeSynced writes an executable file and syncs it.
func writeSynced(b testing.TB, path string, data []byte) {
	b.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err == nil {
		_, err = f.Write(data)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		b.Fatal(err)
	}
}

// goBinaries returns two versions of a Go binary (this test binary) of at
// least size bytes (padded with zeros after its end: still a whole ELF
// file), which differ only in one byte of their Go build ID, near the start
// of the file as in two builds of the same program.
func goBinaries(b testing.TB, size int) (x, y []byte) {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Skip(err)
	}
	x, err = os.ReadFile(exe)
	if err != nil {
		b.Skip(err)
	}
	if !bytes.HasPrefix(x, []byte("\x7fELF")) {
		b.Skip("the test binary is not an ELF file")
	}
	if len(x) < size {
		x = append(x, make([]byte, size-len(x))...)
	}
	y = bytes.Clone(x)
	i := bytes.Index(x[:min(len(x), 64<<10)], []byte("Go\x00\x00")) // the build ID note's name
	if i < 0 {
		b.Skip("no Go build ID note in the first 64 KiB")
	}
	y[i+8] ^= 1 // in the build ID
	return x, y
}

// BenchmarkEvalBinary8MiB times the watcher's work at the end of a debounce
// alone, evalBinary, for the 8 MiB Go binaries of
// BenchmarkRenameToChange8MiB: a new build (a change), the same bytes
// renamed over it (not a change), a binary of another size (a change).
func BenchmarkEvalBinary8MiB(b *testing.B) {
	x, y := goBinaries(b, 8<<20)
	for _, bc := range []struct {
		name   string
		next   func(i int) []byte
		change bool
	}{
		{"new-build", func(i int) []byte { return [][]byte{y, x}[i%2] }, true},
		{"same-bytes", func(int) []byte { return x }, false},
		{"other-size", func(i int) []byte { return [][]byte{append(y, 0), x}[i%2] }, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dir := tempDir(b)
			app := filepath.Join(dir, "app")
			writeFile(b, app, x, 0o755)
			fsw, err := fsnotify.NewWatcher()
			if err != nil {
				b.Fatal(err)
			}
			defer fsw.Close()
			// A Watcher without its goroutine: evalBinary called here as
			// run calls it when a debounce ends.
			w := &Watcher{fsw: fsw, log: testLoggerQuiet(), cwd: dir, done: make(chan struct{}),
				bin: &binWatch{cmd: app}}
			w.resolveBinary()
			w.initBinary()
			defer settleRef(w)
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				settleRef(w) // as run does once a Change is taken
				deploy(b, app, bc.next(i))
				b.StartTimer()
				if _, changed := w.evalBinary(); changed != bc.change {
					b.Fatalf("changed %v", changed)
				}
			}
		})
	}
}
