package watch

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// bigBinaries returns a valid ELF file of size bytes (/bin/true padded with
// zeros, its section header table moved to the end, so that, as for a real
// binary, only the whole file is valid) and, of the same size, a copy that
// differs from it early (in its first 64 KiB) and one that differs from it
// late (in its last 64 KiB, 100 bytes before the section header table).
func bigBinaries(t testing.TB, size int) (base, early, late []byte) {
	t.Helper()
	a, _ := binaries(t)
	le := binary.LittleEndian
	if len(a) < 64 || a[4] != 2 || a[5] != 1 {
		t.Skip("/bin/true is not a little-endian ELF64 file")
	}
	shoff, shentsize, shnum := le.Uint64(a[0x28:]), int(le.Uint16(a[0x3a:])), int(le.Uint16(a[0x3c:]))
	table := a[shoff:][:shentsize*shnum]
	if shnum == 0 || len(a)+100 >= firstPrefix || len(a)+len(table)+100 >= size {
		t.Skipf("/bin/true (%d bytes, %d sections) does not fit these tests", len(a), shnum)
	}
	base = append(bytes.Clone(a), make([]byte, size-len(a)-len(table))...)
	le.PutUint64(base[0x28:], uint64(len(base)))
	base = append(base, table...)
	early = bytes.Clone(base)
	early[len(a)+100] = 1
	late = bytes.Clone(base)
	late[size-len(table)-100] = 1
	for _, b := range [][]byte{base, early, late} {
		if bad := validateBytes(t, b); bad != "" {
			t.Fatalf("made an invalid ELF file: %s", bad)
		}
		if bad := validateBytes(t, b[:len(b)-1]); bad == "" {
			t.Fatal("made an ELF file valid without its last byte")
		}
	}
	return base, early, late
}

// validateBytes is validate for data, as an executable file.
func validateBytes(t testing.TB, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "x")
	writeFile(t, p, data, 0o755)
	in, _, err := inspect(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return in.bad
}

// deployed runs deploy and returns the bytes the watcher read to decide
// about it, once its Change came (or did not, after quietWait).
func deployed(t *testing.T, w *Watcher, app string, data []byte, wantChange bool) int64 {
	t.Helper()
	before := w.readDeciding.Load()
	deploy(t, app, data)
	if wantChange {
		expectBinaryChange(t, w, app)
	} else {
		expectNoChange(t, w, "a deploy of the same content")
	}
	return w.readDeciding.Load() - before
}

// TestCompareReadsLittle: a version of another size is a change without
// reading it; one of the same size is read only up to its first different
// prefix; the same content under a new inode is read to its end and is not
// a change.
func TestCompareReadsLittle(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	base, early, late := bigBinaries(t, size)
	w, app := watchApp(t, base)

	longer := append(bytes.Clone(base), 0)
	if n := deployed(t, w, app, longer, true); n != 0 {
		t.Errorf("another size: read %d bytes to decide, want 0", n)
	}
	if n := deployed(t, w, app, base, true); n != 0 {
		t.Errorf("another size again: read %d bytes to decide, want 0", n)
	}
	if n := deployed(t, w, app, early, true); n != firstPrefix {
		t.Errorf("a difference in the first prefix: read %d bytes to decide, want %d", n, firstPrefix)
	}
	// late differs from base only near its end, from early in two places.
	if n := deployed(t, w, app, base, true); n != firstPrefix {
		t.Errorf("back to base: read %d bytes to decide, want %d", n, firstPrefix)
	}
	if n := deployed(t, w, app, late, true); n != size {
		t.Errorf("a difference near the end: read %d bytes to decide, want %d", n, size)
	}
	if n := deployed(t, w, app, late, false); n != size {
		t.Errorf("the same content: read %d bytes to decide, want %d", n, size)
	}
	if n := deployed(t, w, app, base, true); n != size {
		t.Errorf("a difference near the end again: read %d bytes to decide, want %d", n, size)
	}
}

// TestCompareWithPreviousGone: the reference is its hashes, not its file:
// the previous file renamed over, kept under another name (a hard link) and
// then modified, or removed, the comparison is the same.
func TestCompareWithPreviousGone(t *testing.T) {
	t.Parallel()
	base, early, _ := bigBinaries(t, 256<<10)
	w, app := watchApp(t, base)
	old := filepath.Join(filepath.Dir(app), "app.old")

	if err := os.Link(app, old); err != nil {
		t.Fatal(err)
	}
	deployed(t, w, app, base, false) // the reference's inode now only at app.old
	if err := os.WriteFile(old, early, 0o755); err != nil {
		t.Fatal(err) // the previous file modified in place
	}
	deployed(t, w, app, base, false)
	if err := os.Remove(old); err != nil {
		t.Fatal(err)
	}
	deployed(t, w, app, base, false)
	deployed(t, w, app, early, true)
}

// TestRewriteInPlace: the binary's own inode written with the same bytes
// (cp without --remove-destination) is not a change; with other bytes of
// the same size, it is, told after reading its first prefix.
func TestRewriteInPlace(t *testing.T) {
	t.Parallel()
	base, early, _ := bigBinaries(t, 256<<10)
	w, app := watchApp(t, base)

	rewrite := func(data []byte) {
		t.Helper()
		if err := os.WriteFile(app, data, 0o755); err != nil { // truncates, writes
			t.Fatal(err)
		}
	}
	before := w.readDeciding.Load()
	rewrite(base)
	expectNoChange(t, w, "the same bytes written in place")
	if n := w.readDeciding.Load() - before; n != int64(len(base)) {
		t.Errorf("the same bytes: read %d bytes to decide, want %d", n, len(base))
	}
	before = w.readDeciding.Load()
	rewrite(early)
	expectBinaryChange(t, w, app)
	if n := w.readDeciding.Load() - before; n != firstPrefix {
		t.Errorf("other bytes: read %d bytes to decide, want %d", n, firstPrefix)
	}
	// Once its Change is taken, the new version is hashed: writing it in
	// place again with the same bytes is not a change.
	rewrite(early)
	expectNoChange(t, w, "the new bytes written in place again")
}

// TestReferenceRenamedOverBeforeHashed: a new version is hashed to its end
// only once its Change is taken; if, before that, an identical copy is
// renamed over it, the file it kept open is compared, and that is no
// second change.
func TestReferenceRenamedOverBeforeHashed(t *testing.T) {
	t.Parallel()
	base, early, _ := bigBinaries(t, 256<<10)
	w, app := watchApp(t, base)

	before := w.readDeciding.Load()
	deploy(t, app, early)
	waitDeciding(t, w, before+firstPrefix) // compared: a change; its Change is not taken
	deploy(t, app, early)                  // the same bytes renamed over it: its inode is unlinked
	waitDeciding(t, w, before+firstPrefix+int64(len(early)))
	expectBinaryChange(t, w, app) // one Change: the second deploy was none
	// Read to decide: the first prefix of the first deploy, all of the second.
	if n, want := w.readDeciding.Load()-before, int64(firstPrefix+len(early)); n != want {
		t.Errorf("read %d bytes to decide, want %d", n, want)
	}
}

// TestCompleteRef: a reference whose file is written before it is hashed to
// its end is unknown (a later version counts as a change); one renamed over
// or removed is hashed all the same.
func TestCompleteRef(t *testing.T) {
	t.Parallel()
	base, early, _ := bigBinaries(t, 256<<10)
	dir := tempDir(t)
	w := &Watcher{log: testLogger(t)}
	take := func(path string, data []byte) *version {
		t.Helper()
		writeFile(t, path, data, 0o755)
		f, in, err := openBinary(path)
		if err != nil || in.bad != "" {
			t.Fatalf("%v %q", err, in.bad)
		}
		v := &version{path: path, fp: in.fp, sums: newPrefixHash(in.fp.size), f: f}
		// As a comparison that stopped at the first prefix leaves it.
		if _, err := v.sums.next(f, make([]byte, readChunk), nil); err != nil {
			t.Fatal(err)
		}
		return v
	}
	whole := func(data []byte) uint64 {
		p := newPrefixHash(int64(len(data)))
		if _, err := p.finish(bytes.NewReader(data), nil); err != nil {
			t.Fatal(err)
		}
		return p.whole()
	}

	p := filepath.Join(dir, "a")
	v := take(p, base)
	deploy(t, p, early) // renamed over
	if !w.completeRef(v) || v.f != nil || v.sums.whole() != whole(base) {
		t.Fatalf("renamed over: complete %v, lost %v, open %v", v.sums.complete(), v.lost, v.f != nil)
	}

	v = take(p, base)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if !w.completeRef(v) || v.sums.whole() != whole(base) {
		t.Fatal("removed: not hashed")
	}

	v = take(p, base)
	if err := os.WriteFile(p, early, 0o755); err != nil { // in place, same size
		t.Fatal(err)
	}
	future := time.Now().Add(time.Hour) // a different mtime, whatever the clock's granularity
	if err := os.Chtimes(p, future, future); err != nil {
		t.Fatal(err)
	}
	if w.completeRef(v) || !v.lost || v.f != nil {
		t.Fatalf("written in place: known %v, open %v", !v.lost, v.f != nil)
	}
	if w.completeRef(v) {
		t.Fatal("written in place: known the second time")
	}
	same, _, err := w.sameContent(v, mustOpen(t, p), int64(len(early)))
	if same || err != nil {
		t.Fatalf("compared with an unknown reference: same %v, %v", same, err)
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestPrefixHash(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		size int64
		ends []int64
	}{
		{1, []int64{1}},
		{firstPrefix, []int64{firstPrefix}},
		{firstPrefix + 1, []int64{firstPrefix, firstPrefix + 1}},
		{8<<20 + 300<<10, []int64{64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20, 8<<20 + 300<<10}},
	} {
		data := bytes.Repeat([]byte{7}, int(tc.size))
		p := newPrefixHash(tc.size)
		n, err := p.finish(bytes.NewReader(data), nil)
		if err != nil || n != tc.size || len(p.sums) != len(tc.ends) {
			t.Fatalf("size %d: read %d, %d prefixes, %v; want %d", tc.size, n, len(p.sums), err, len(tc.ends))
		}
		for k, end := range tc.ends {
			q := newPrefixHash(end)
			q.finish(bytes.NewReader(data[:end]), nil)
			if q.whole() != p.sums[k] {
				t.Errorf("size %d: prefix %d is not the hash of the first %d bytes", tc.size, k, end)
			}
		}
	}
	// A file shorter than announced.
	p := newPrefixHash(100)
	if _, err := p.finish(bytes.NewReader(make([]byte, 99)), nil); err == nil || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Fatalf("short file: %v", err)
	}
}

// fdCount is the number of the process's open file descriptors.
func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// TestBinaryFdReleased: the watcher keeps at most one descriptor of the
// binary open, only until a new version is hashed, and none once closed.
// Not parallel: it counts the process's descriptors.
func TestBinaryFdReleased(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts /proc/self/fd")
	}
	base, early, _ := bigBinaries(t, 1<<20)
	dir := tempDir(t)
	app := filepath.Join(dir, "app")
	writeFile(t, app, base, 0o755)
	// A first watcher, closed: whatever the runtime opens once (the
	// network poller) is open before counting.
	startWatcher(t, Options{Binary: app}).Close()

	n0 := fdCount(t)
	w := startWatcher(t, Options{Binary: app})
	n1 := fdCount(t)
	for i, data := range [][]byte{early, base, early} {
		deploy(t, app, data)
		if c := waitChange(t, w); !c.Binary {
			t.Fatalf("got %+v", c)
		}
		deadline := time.Now().Add(changeWait)
		for fdCount(t) > n1 {
			if time.Now().After(deadline) {
				t.Fatalf("change %d: %d descriptors open, %d after New", i, fdCount(t), n1)
			}
			time.Sleep(time.Millisecond)
		}
	}
	before := w.readDeciding.Load()
	deploy(t, app, base)
	waitDeciding(t, w, before+firstPrefix) // compared: its Change is pending, and its file open
	if n := fdCount(t); n > n1+1 {
		t.Errorf("%d descriptors open with a Change pending, %d after New", n, n1)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := fdCount(t); n != n0 {
		t.Errorf("%d descriptors open after Close, %d before New", n, n0)
	}
}
