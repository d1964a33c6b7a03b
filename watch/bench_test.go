package watch

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
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
		start := time.Now()
		if err := os.Rename(tmp, app); err != nil {
			b.Fatal(err)
		}
		select {
		case c := <-w.Changes():
			if !c.Binary {
				b.Fatalf("got %+v", c)
			}
		case <-time.After(changeWait):
			b.Fatal("no Change")
		}
		total += time.Since(start) - debounce
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(n), "ms-beyond-debounce/op")
}

func testLoggerQuiet() *slog.Logger { return slog.New(slog.DiscardHandler) }
