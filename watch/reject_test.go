package watch

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// logRecorder is a slog.Handler that keeps every record's level and message
// (and shows them with t.Log).
type logRecorder struct {
	t    testing.TB
	mu   sync.Mutex
	recs []slog.Record
	done bool
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r)
	if !h.done {
		h.t.Logf("%s %s", r.Level, r.Message)
	}
	return nil
}

// lines returns the messages logged at level that contain substr.
func (h *logRecorder) lines(level slog.Level, substr string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		if r.Level == level && strings.Contains(r.Message, substr) {
			out = append(out, r.Message)
		}
	}
	return out
}

// wait waits until n messages at level contain substr and returns them.
func (h *logRecorder) wait(level slog.Level, substr string, n int) []string {
	h.t.Helper()
	deadline := time.Now().Add(changeWait)
	for {
		got := h.lines(level, substr)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%d %s lines with %q within %v, want %d: %q", len(got), level, substr, changeWait, n, got)
		}
		time.Sleep(time.Millisecond)
	}
}

// watchRecorded writes /bin/true as dir/app and watches it, logging to a
// recorder; v2 is another valid executable.
func watchRecorded(t *testing.T, opts Options) (dir, app string, w *Watcher, rec *logRecorder, v2 []byte) {
	t.Helper()
	a, v2 := binaries(t)
	dir = tempDir(t)
	app = filepath.Join(dir, "app")
	writeFile(t, app, a, 0o755)
	rec = &logRecorder{t: t}
	t.Cleanup(func() {
		rec.mu.Lock()
		rec.done = true
		rec.mu.Unlock()
	})
	opts.Binary, opts.Logger = app, slog.New(rec)
	return dir, app, startWatcher(t, opts), rec, v2
}

const rejected = "rejected the new binary "

// TestEveryRejectedDeployIsSaid: two different garbage files in a row, a
// truncated ELF, a file without an x bit: one warning each, with its reason,
// the same reason twice included; then a good binary is a Change.
func TestEveryRejectedDeployIsSaid(t *testing.T) {
	t.Parallel()
	dir, app, w, rec, v2 := watchRecorded(t, Options{})

	steps := []struct {
		what   string
		deploy func()
		reason string
	}{
		{"garbage", func() { deploy(t, app, []byte("garbage one\n")) }, "no ELF or #! header"},
		{"other garbage", func() { deploy(t, app, []byte("garbage two, longer\n")) }, "no ELF or #! header"},
		{"a truncated ELF", func() { deploy(t, app, v2[:len(v2)/2]) }, "segment"},
		{"a file without an x bit", func() {
			tmp := filepath.Join(dir, "app.tmp")
			writeFile(t, tmp, v2, 0o644)
			run(t, dir, "mv", tmp, app)
		}, "not executable (mode 0644)"},
	}
	for i, s := range steps {
		s.deploy()
		got := rec.wait(slog.LevelWarn, rejected, i+1)
		line := got[i]
		if !strings.Contains(line, app) || !strings.Contains(line, s.reason) {
			t.Errorf("%s: got %q, want it to name %s and say %q", s.what, line, app, s.reason)
		}
		t.Logf("%s: %s", s.what, line)
	}
	select {
	case c := <-w.Changes():
		t.Fatalf("a Change for a rejected deploy: %+v", c)
	default:
	}
	deploy(t, app, v2)
	expectBinaryChange(t, w, app)
	if got := rec.lines(slog.LevelWarn, rejected); len(got) != len(steps) {
		t.Errorf("%d rejected lines, want %d: %q", len(got), len(steps), got)
	}
}

// TestRejectedDeployTouchedIsNotSaidAgain: the same bad file touched, or
// copied and renamed over itself, is the same deploy: no second line.
func TestRejectedDeployTouchedIsNotSaidAgain(t *testing.T) {
	t.Parallel()
	dir, app, w, rec, v2 := watchRecorded(t, Options{})
	bad := v2[:len(v2)/2]
	deploy(t, app, bad)
	rec.wait(slog.LevelWarn, rejected, 1)

	const same = "the rejected binary is unchanged"
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(app, future, future); err != nil {
		t.Fatal(err)
	}
	rec.wait(slog.LevelDebug, same, 1)
	deploy(t, app, bad) // a new inode, the same bytes
	rec.wait(slog.LevelDebug, same, 2)
	run(t, dir, "chmod", "0700", app)
	rec.wait(slog.LevelDebug, same, 3)
	if got := rec.lines(slog.LevelWarn, rejected); len(got) != 1 {
		t.Errorf("%d rejected lines for one deploy, want 1: %q", len(got), got)
	}
	// Then other bytes with the same size and reason: a new deploy.
	other := append([]byte(nil), bad...)
	other[len(other)-1] ^= 0xff
	deploy(t, app, other)
	rec.wait(slog.LevelWarn, rejected, 2)
	expectNoChange(t, w, "a bad deploy")
}

// TestDeployInProgressWaits: a file still being written when MaxDelay cuts
// the debounce short is waited for, said once, not rejected; once whole it
// is a Change.
func TestDeployInProgressWaits(t *testing.T) {
	t.Parallel()
	// A debounce far longer than the pauses between writes: none of them
	// is a quiet period, even on a loaded machine.
	_, app, w, rec, v2 := watchRecorded(t, Options{Debounce: 300 * time.Millisecond, MaxDelay: 300 * time.Millisecond})
	f, err := os.OpenFile(app, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for chunk := range splitN(v2, 100) {
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
		if len(rec.lines(slog.LevelInfo, "waiting for its deploy to finish")) > 0 {
			// Waited on at least once: write the rest at once.
			continue
		}
		time.Sleep(10 * time.Millisecond) // a slow copy, not synchronisation
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	c := waitChange(t, w)
	if !c.Binary || c.Path != app {
		t.Fatalf("got %+v, want a binary Change to %s", c, app)
	}
	if got := rec.lines(slog.LevelInfo, "waiting for its deploy to finish"); len(got) != 1 {
		t.Errorf("%d waiting lines, want 1: %q", len(got), got)
	}
	if got := rec.lines(slog.LevelWarn, rejected); len(got) != 0 {
		t.Errorf("a deploy in progress was rejected: %q", got)
	}
}

// TestValidateNamesTheSegment: a loadable segment past the end of the file
// is named by its index, with its end and the file's size.
func TestValidateNamesTheSegment(t *testing.T) {
	t.Parallel()
	dir := tempDir(t)
	for _, class := range []byte{1, 2} {
		data := synthELF(class, binary.LittleEndian, 3, 5)
		phoff, phent, offAt, szAt := 64, 56, 8, 32
		if class == 1 {
			phoff, phent, offAt, szAt = 52, 32, 4, 16
		}
		e := data[phoff+2*phent:]           // segment 2
		binary.LittleEndian.PutUint32(e, 1) // PT_LOAD
		if class == 1 {
			binary.LittleEndian.PutUint32(e[offAt:], 100)
			binary.LittleEndian.PutUint32(e[szAt:], 5000)
		} else {
			binary.LittleEndian.PutUint64(e[offAt:], 100)
			binary.LittleEndian.PutUint64(e[szAt:], 5000)
		}
		p := filepath.Join(dir, fmt.Sprintf("elf%d", class))
		writeFile(t, p, data, 0o755)
		in, _, err := inspect(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("truncated: segment 2 (LOAD) ends at 5100, past the end of the file (%d bytes)", len(data))
		if in.bad != want {
			t.Errorf("ELF class %d: validate = %q, want %q", class, in.bad, want)
		}
	}
}
