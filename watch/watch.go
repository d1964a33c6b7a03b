package watch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Options configures a Watcher.
type Options struct {
	Binary   string        // the command as given (argv[0]); "" = do not watch a binary
	Paths    []string      // extra --watch files/directories
	Debounce time.Duration // trailing quiet period; 0 means 250ms
	MaxDelay time.Duration // cap on how long a stream of events may postpone a Change; 0 means 10*Debounce, at least 2s
	Logger   *slog.Logger  // nil = discard
	// Ignore lists glob patterns (filepath.Match) of files and directories
	// under Paths whose changes do not count, matched against a name and
	// against its absolute path: "*.log", "vendor", "/src/app/app". Editor
	// temp files and .git are always ignored.
	Ignore []string
}

// Change is one debounced real change.
type Change struct {
	Binary bool     // the command's binary now resolves to a different, valid executable
	Path   string   // what the binary resolves to now (absolute, symlinks followed) when Binary
	Files  []string // changed files under Paths (deduplicated, at most ~20 listed)
}

const (
	defaultDebounce = 250 * time.Millisecond
	minMaxDelay     = 2 * time.Second
	maxFiles        = 20
)

// Watcher watches the command's binary and the --watch paths and sends one
// Change per debounced real change. See the package documentation.
type Watcher struct {
	fsw      *fsnotify.Watcher
	log      *slog.Logger
	debounce time.Duration
	maxDelay time.Duration
	cwd      string
	pathEnv  string

	changes   chan Change
	done      chan struct{}
	exited    chan struct{}
	closeOnce sync.Once
	closeErr  error

	// Everything below is owned by the run goroutine once New has returned.

	bin    *binWatch
	roots  []*root
	ignore []string // Options.Ignore

	pending bool      // a debounce is running
	firstAt time.Time // first event of the pending burst
	capped  bool      // the debounce ends at MaxDelay, not after a quiet period: events are still arriving
	timer   *time.Timer
	timerC  <-chan time.Time // timer.C while pending, else nil

	files      []string        // changed files under Paths in this burst (at most maxFiles)
	fileSet    map[string]bool // every changed file of this burst
	pathsDirty bool            // after an overflow: report the watch paths even with no file known

	out *Change // a Change waiting for the receiver; later ones merge into it

	addFailing bool // adding watches fails (logged once until it works again)

	// Bytes of the binary's content read to decide whether it changed, and
	// read to finish hashing a new reference after its Change (for tests).
	readDeciding, readAfter atomic.Int64
}

// binWatch is the state of the command's binary.
type binWatch struct {
	cmd     string
	filter  map[string]map[string]bool // watched directory → names that matter
	path    string                     // what cmd resolves to now; "" when resErr != nil
	resErr  error
	ref     *version // the last valid version reported, or found at New; nil when none (set by setRef)
	gone    bool     // found missing (and logged) since the last valid version
	waiting bool     // a version still being written was logged since the last valid, missing or rejected one
	dirty   bool     // an event concerned it since the last evaluation

	rejected *badVersion // the last version rejected (and logged) since the last valid or missing one
}

// root is one --watch path.
type root struct {
	given  string                     // as the user gave it
	abs    string                     // made absolute
	chain  map[string]map[string]bool // parent directories of the path and its symlinks → names
	target string                     // the physical path it resolves to; "" when missing
	isDir  bool
	dirs   map[string]bool // the watched directories of the tree, when isDir
}

// New resolves and fingerprints the binary, sets up every watch and starts
// watching. A binary that cannot be found is not an error (it is logged and
// waited for); a --watch path that does not exist is, and so is reaching an
// inotify limit. PATH and the working directory are read once, here. A
// MaxDelay shorter than the debounce is raised to it.
func New(opts Options) (*Watcher, error) {
	w := &Watcher{
		log:      opts.Logger,
		debounce: opts.Debounce,
		maxDelay: opts.MaxDelay,
		pathEnv:  os.Getenv("PATH"),
		changes:  make(chan Change),
		done:     make(chan struct{}),
		exited:   make(chan struct{}),
		fileSet:  map[string]bool{},
		ignore:   opts.Ignore,
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if w.debounce <= 0 {
		w.debounce = defaultDebounce
	}
	if w.maxDelay <= 0 {
		w.maxDelay = max(10*w.debounce, minMaxDelay)
	}
	w.maxDelay = max(w.maxDelay, w.debounce)
	cwd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("watch: working directory: %w", err)
	}
	w.cwd = cwd

	for _, p := range opts.Paths {
		abs := p
		if !filepath.IsAbs(abs) {
			abs = filepath.Join(cwd, abs)
		}
		if _, err := os.Stat(abs); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("watch path %q does not exist: %w", p, err)
			}
			return nil, fmt.Errorf("watch path %q: %w", p, err)
		}
		w.roots = append(w.roots, &root{given: p, abs: filepath.Clean(abs)})
	}

	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, limitError(err, "watch: creating an inotify instance")
	}
	w.fsw = fsw
	fail := func(err error) (*Watcher, error) {
		fsw.Close()
		return nil, err
	}

	if opts.Binary != "" {
		w.bin = &binWatch{cmd: opts.Binary}
		w.resolveBinary()
	}
	for _, r := range w.roots {
		if err := w.resolveRoot(r, true); err != nil {
			return fail(fmt.Errorf("watch path %q: %w", r.given, err))
		}
	}
	if err := w.applyWatches(true); err != nil {
		return fail(err)
	}
	// The reference version is taken once the watches are in place, so that
	// a change made in between is seen.
	if w.bin != nil {
		w.initBinary()
	}
	go w.run()
	return w, nil
}

// Changes returns the channel of debounced changes. It is closed by Close.
// A Change the receiver has not taken yet absorbs later ones.
func (w *Watcher) Changes() <-chan Change { return w.changes }

// Close stops watching and closes the Changes channel.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		close(w.done)
		<-w.exited
		w.closeErr = w.fsw.Close()
		close(w.changes)
	})
	return w.closeErr
}

func (w *Watcher) run() {
	defer close(w.exited)
	defer func() {
		if w.timer != nil {
			w.timer.Stop()
		}
		if w.bin != nil {
			w.setRef(nil) // its file, if still open
		}
	}()
	events, errs := w.fsw.Events, w.fsw.Errors
	for {
		if w.out == nil && w.bin != nil && w.bin.ref != nil {
			// A new reference is hashed to its end once its Change is
			// taken: after the launcher has it, not before.
			w.completeRef(w.bin.ref)
		}
		var out chan<- Change
		var next Change
		if w.out != nil {
			out, next = w.changes, *w.out
		}
		select {
		case <-w.done:
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			w.handleEvent(ev)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			w.handleError(err)
		case <-w.timerC:
			w.fire()
		case out <- next:
			w.out = nil
		}
	}
}

func (w *Watcher) handleEvent(ev fsnotify.Event) {
	name := filepath.Clean(ev.Name)
	dir, base := filepath.Dir(name), filepath.Base(name)
	structural := ev.Has(fsnotify.Create) || ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)
	attrOnly := !structural && !ev.Has(fsnotify.Write)
	touched, rewatch := false, false
	if w.log.Enabled(context.Background(), slog.LevelDebug) {
		w.log.Debug("file event", "event", ev.Op.String(), "path", name)
	}

	// The binary: any event on a name along its resolution, the directory
	// itself going away included; attribute changes too (chmod +x can make
	// it valid; the fingerprint tells a touch from a change).
	if b := w.bin; b != nil && (b.filter[dir][base] || (structural && b.filter[name] != nil)) {
		b.dirty, touched = true, true
		if structural {
			w.resolveBinary()
			rewatch = true
		}
	}

	// A --watch path itself, or a symlink or directory on the way to it.
	for _, r := range w.roots {
		if !r.chain[dir][base] && !(structural && r.chain[name] != nil) {
			continue
		}
		if structural {
			if err := w.resolveRoot(r, false); err != nil {
				w.addFailed(err)
			}
			rewatch = true
		}
		if !attrOnly {
			w.addFile(name)
			touched = true
		}
	}

	// Inside a watched tree.
	if !attrOnly && !w.ignored(name) && w.inTree(dir) {
		w.addFile(name)
		touched = true
		if ev.Has(fsnotify.Create) && w.treeCreated(dir, name) {
			rewatch = true
		}
		if (ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)) && w.treeRemoved(name) {
			rewatch = true
		}
	}

	if rewatch {
		w.addFailed(w.applyWatches(false))
	}
	if touched {
		w.schedule()
	}
}

func (w *Watcher) handleError(err error) {
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		w.rescan()
		return
	}
	w.log.Warn("file watching error", "err", err)
}

// rescan follows an inotify queue overflow: events were lost, so every
// watch is set up again, the binary is compared with its reference, and the
// --watch paths are reported as changed.
func (w *Watcher) rescan() {
	w.log.Warn("the inotify event queue overflowed; rescanning the watched paths " +
		"(a larger fs.inotify.max_queued_events avoids this)")
	if w.bin != nil {
		w.resolveBinary()
		w.bin.dirty = true
	}
	for _, r := range w.roots {
		if err := w.resolveRoot(r, true); err != nil {
			w.addFailed(err)
		}
	}
	w.addFailed(w.applyWatches(true))
	if len(w.roots) > 0 {
		w.pathsDirty = true
	}
	w.schedule()
}

// schedule (re)starts the debounce: it ends Debounce after the last event,
// and at the latest MaxDelay after the first one.
func (w *Watcher) schedule() {
	now := time.Now()
	if !w.pending {
		w.pending, w.firstAt = true, now
	}
	d := w.debounce
	w.capped = false
	if limit := w.firstAt.Add(w.maxDelay).Sub(now); limit < d {
		d, w.capped = limit, true
	}
	if w.timer == nil {
		w.timer = time.NewTimer(d)
	} else {
		w.timer.Reset(d)
	}
	w.timerC = w.timer.C
}

// fire ends a debounce: it evaluates what changed and emits a Change if
// anything really did.
func (w *Watcher) fire() {
	w.pending, w.timerC = false, nil
	var ch Change
	if b := w.bin; b != nil && b.dirty {
		b.dirty = false
		if p, ok := w.evalBinary(); ok {
			ch.Binary, ch.Path = true, p
		}
	}
	if w.pathsDirty && len(w.files) == 0 {
		for _, r := range w.roots {
			w.addFile(r.abs)
		}
	}
	w.pathsDirty = false
	if len(w.files) > 0 {
		ch.Files = w.files
		w.log.Info("watched files changed", "files", len(w.fileSet), "first", ch.Files[0])
		w.files, w.fileSet = nil, map[string]bool{}
	}
	if ch.Binary || len(ch.Files) > 0 {
		w.emit(ch)
	}
	if w.bin != nil && w.bin.dirty {
		w.schedule() // a binary still being written: looked at again once quiet
	}
}

// emit queues ch for the receiver, merging it into a Change not yet taken:
// the newest binary path wins, files accumulate.
func (w *Watcher) emit(ch Change) {
	if w.out == nil {
		w.out = &ch
		return
	}
	if ch.Binary {
		w.out.Binary, w.out.Path = true, ch.Path
	}
	seen := map[string]bool{}
	for _, f := range w.out.Files {
		seen[f] = true
	}
	for _, f := range ch.Files {
		if !seen[f] && len(w.out.Files) < maxFiles {
			seen[f] = true
			w.out.Files = append(w.out.Files, f)
		}
	}
}

func (w *Watcher) addFile(p string) {
	if w.fileSet[p] {
		return
	}
	w.fileSet[p] = true
	if len(w.files) < maxFiles {
		w.files = append(w.files, p)
	}
}

// addFailed logs an error from adding watches: the first one at error level
// (it names the sysctl to raise when a limit is reached), the following ones
// at debug level until adding works again.
func (w *Watcher) addFailed(err error) {
	if err == nil {
		return
	}
	if !w.addFailing {
		w.addFailing = true
		w.log.Error("cannot watch every path; changes there will be missed", "err", err)
		return
	}
	w.log.Debug("cannot watch every path", "err", err)
}

// add adds an inotify watch on a directory. A directory that vanished in
// the meantime is not an error (its parent's events will say so).
func (w *Watcher) add(dir string) error {
	err := w.fsw.Add(dir)
	if err == nil || errors.Is(err, fs.ErrNotExist) || errors.Is(err, fsnotify.ErrClosed) {
		return nil
	}
	if isLimit(err) {
		return limitError(err, fmt.Sprintf("watch: watching %s", dir))
	}
	return fmt.Errorf("watch: watching %s: %w", dir, err)
}

// applyWatches makes the inotify watches match what is wanted now: the
// directories along the binary's and the --watch paths' resolutions (always
// added again: cheap, and it repairs a watch lost to a directory replaced
// under the same name) and every tree directory (added when missing, or all
// again when force); watches no longer wanted are removed.
func (w *Watcher) applyWatches(force bool) error {
	chain := map[string]bool{}
	if w.bin != nil {
		for d := range w.bin.filter {
			chain[d] = true
		}
	}
	want := map[string]bool{}
	for _, r := range w.roots {
		for d := range r.chain {
			chain[d] = true
		}
		for d := range r.dirs {
			want[d] = true
		}
	}
	have := map[string]bool{}
	for _, d := range w.fsw.WatchList() {
		have[d] = true
	}
	var first error
	note := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	for d := range chain {
		note(w.add(d))
	}
	for d := range want {
		if !chain[d] && (force || !have[d]) {
			note(w.add(d))
		}
	}
	for d := range have {
		if !chain[d] && !want[d] {
			_ = w.fsw.Remove(d) // may already be gone with its directory
		}
	}
	if first == nil {
		w.addFailing = false
	}
	return first
}

func specsToMap(ws []watchSpec) map[string]map[string]bool {
	m := map[string]map[string]bool{}
	for _, s := range ws {
		if m[s.dir] == nil {
			m[s.dir] = map[string]bool{}
		}
		m[s.dir][s.name] = true
	}
	return m
}

// resolveBinary resolves the command again and updates what to watch for it
// (applyWatches makes it so).
func (w *Watcher) resolveBinary() {
	b := w.bin
	res := resolveCmd(b.cmd, w.cwd, w.pathEnv)
	b.filter = specsToMap(res.watches)
	b.path, b.resErr = res.path, res.err
}

// initBinary takes the reference version at New.
func (w *Watcher) initBinary() {
	b := w.bin
	if b.resErr != nil {
		if errors.Is(b.resErr, fs.ErrPermission) {
			f, path, fp, reason := openNotExec(b.resErr)
			if f != nil {
				defer f.Close()
			}
			w.initBad(b, path, reason, f, fp)
			return
		}
		b.gone = true
		w.log.Warn("the command's binary was not found; waiting for it to appear", "cmd", b.cmd, "err", b.resErr)
		return
	}
	// Hashed at once, unlike a later version: a rewrite right after New
	// (a touch) must find the content known.
	f, in, err := openBinary(b.path)
	var sums *prefixHash
	if err == nil {
		defer f.Close()
		if in.bad == "" {
			sums = newPrefixHash(in.fp.size)
			var n int64
			n, err = sums.finish(f, nil)
			w.readAfter.Add(n)
		}
	}
	switch {
	case err != nil:
		b.gone = true
		w.log.Warn("cannot read the command's binary; waiting for it to change", "cmd", b.cmd, "path", b.path, "err", err)
	case in.bad != "":
		w.initBad(b, b.path, in.bad, f, in.fp)
	default:
		w.setRef(&version{path: b.path, fp: in.fp, sums: sums})
		w.log.Debug("watching the command's binary", "cmd", b.cmd, "path", b.path)
	}
}

// evalBinary decides, at the end of a debounce, whether the binary has
// really changed: it resolves to a valid executable that differs from the
// reference by path, size or content. It returns the path when it has.
func (w *Watcher) evalBinary() (string, bool) {
	b := w.bin
	w.resolveBinary()
	w.addFailed(w.applyWatches(false))
	if b.resErr != nil {
		if errors.Is(b.resErr, fs.ErrPermission) {
			f, path, fp, reason := openNotExec(b.resErr)
			if f != nil {
				defer f.Close()
			}
			w.badBinary(b, path, reason, f, fp)
			return "", false
		}
		w.binaryGone(b, b.resErr)
		return "", false
	}
	f, in, err := openBinary(b.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			w.binaryGone(b, err)
		} else {
			w.log.Warn("cannot read the command's binary", "path", b.path, "err", err)
		}
		return "", false
	}
	kept := false
	defer func() {
		if !kept {
			f.Close()
		}
	}()
	if in.bad != "" {
		w.badBinary(b, b.path, in.bad, f, in.fp)
		return "", false
	}
	b.rejected, b.waiting, b.gone = nil, false, false
	ref := b.ref
	var sums *prefixHash // the new version's, as far as the comparison went
	if ref != nil && ref.path == b.path {
		if ref.fp == in.fp {
			return "", false
		}
		if ref.fp.size == in.fp.size {
			same, partial, err := w.sameContent(ref, f, in.fp.size)
			if err != nil {
				w.log.Warn("cannot read the command's binary", "path", b.path, "err", err)
				return "", false
			}
			if same {
				ref.fp = in.fp
				w.log.Debug("the command's binary was rewritten with the same content; not a change", "path", b.path)
				return "", false
			}
			sums = partial
		}
	}
	if sums == nil {
		sums = newPrefixHash(in.fp.size)
	}
	// The new reference keeps its file open until it is hashed to its end,
	// after its Change is taken (run).
	w.setRef(&version{path: b.path, fp: in.fp, sums: sums, f: f})
	kept = true
	w.log.Debug("the command's binary changed", "cmd", b.cmd, "path", b.path)
	return b.path, true
}

// sameContent compares f, a file of size bytes (the reference's size), with
// the reference, prefix by prefix, until a prefix differs. It returns the
// new file's prefix hashes as far as they went when it differs; it also
// says it differs, without reading, when the reference's content is unknown.
func (w *Watcher) sameContent(ref *version, f *os.File, size int64) (bool, *prefixHash, error) {
	if !w.completeRef(ref) {
		return false, nil, nil
	}
	sums := newPrefixHash(size)
	buf := make([]byte, readChunk)
	for k, want := range ref.sums.sums {
		n, err := sums.next(f, buf, nil)
		w.readDeciding.Add(n)
		if err != nil {
			return false, nil, fmt.Errorf("reading %s: %w", f.Name(), err)
		}
		if sums.sums[k] != want {
			return false, sums, nil
		}
	}
	return true, nil, nil
}

// completeRef hashes the reference to its end if it is not yet, through
// the file it keeps open, and closes that. It says whether the reference's
// content is known. It is not when the file was written (its size or
// modification time changed) since its version was taken: in place, by a
// copy into it or a truncation, before its old content was hashed. A later
// version is then a change, whatever its content; only a rewrite in place
// within the few milliseconds after a Change risks that.
func (w *Watcher) completeRef(ref *version) bool {
	if ref.f == nil {
		return !ref.lost
	}
	f := ref.f
	defer func() {
		f.Close()
		ref.f = nil
	}()
	intact := func() bool {
		fi, err := f.Stat()
		return err == nil && sameBytesStamp(fingerprintOf(fi), ref.fp)
	}
	if intact() {
		n, err := ref.sums.finish(f, w.done)
		w.readAfter.Add(n)
		if err == nil && intact() {
			return true
		}
	}
	ref.lost = true
	select {
	case <-w.done:
	default:
		w.log.Debug("the command's binary was written before it was hashed; its next version counts as a change",
			"path", ref.path)
	}
	return false
}

// setRef makes v (nil: none) the reference, closing the previous one's file
// if it is still open.
func (w *Watcher) setRef(v *version) {
	b := w.bin
	if b.ref != nil && b.ref.f != nil {
		b.ref.f.Close()
		b.ref.f = nil
	}
	b.ref = v
}

func (w *Watcher) binaryGone(b *binWatch, err error) {
	w.setRef(nil)
	b.rejected, b.waiting = nil, false
	if b.gone {
		return
	}
	b.gone = true
	w.log.Warn("the command's binary is gone; the running generation keeps running, waiting for a new binary",
		"cmd", b.cmd, "err", err)
}

// initBad notes that the binary found at New is not a whole executable.
func (w *Watcher) initBad(b *binWatch, path, reason string, f *os.File, fp fingerprint) {
	v := &badVersion{path: path, reason: reason, fp: fp}
	v.hash(f, w.done)
	b.rejected = v
	w.log.Info(fmt.Sprintf("the command's binary %s is not a valid executable: %s; waiting for a valid one", path, reason),
		"cmd", b.cmd, "path", path, "reason", reason)
}

// badBinary handles a version of the binary, open as f (nil when it cannot
// be read), that is not a whole executable. When the debounce ended after a
// quiet period, the file is as its deployer left it: the deploy is
// rejected, in one line with the reason, unless it is the version already
// rejected (a touch, an identical copy). When it ended at MaxDelay, events
// were still arriving: a deploy still being written, said once, and looked
// at again once they stop. A file that grows into a valid one later is a
// Change as usual.
func (w *Watcher) badBinary(b *binWatch, path, reason string, f *os.File, fp fingerprint) {
	if w.capped {
		b.dirty = true
		if b.waiting {
			w.log.Debug("the new binary is still not a whole executable", "path", path, "reason", reason)
			return
		}
		b.waiting = true
		w.log.Info(fmt.Sprintf("the new binary %s is not a whole executable yet (%s); waiting for its deploy to finish", path, reason),
			"cmd", b.cmd, "path", path, "reason", reason)
		return
	}
	b.waiting = false
	v := &badVersion{path: path, reason: reason, fp: fp}
	if r := b.rejected; r != nil && r.path == path && r.reason == reason && r.fp != fp && r.fp.size == fp.size {
		v.hash(f, w.done) // a touch or a copy of it is the same deploy
	}
	if r := b.rejected; r != nil && r.same(v) {
		r.fp = fp
		w.log.Debug("the rejected binary is unchanged (touched or copied again); still rejected", "path", path, "reason", reason)
		return
	}
	v.hash(f, w.done) // to know it if it comes again
	b.rejected = v
	w.log.Warn(fmt.Sprintf("rejected the new binary %s: %s; the running generation keeps serving", path, reason),
		"cmd", b.cmd, "path", path, "reason", reason)
}

// openNotExec opens and describes the file that resErr, an fs.ErrPermission
// from resolving the command, found not executable. The file is nil when it
// cannot be opened, and for anything but a regular file (a FIFO would block
// the open).
func openNotExec(resErr error) (f *os.File, path string, fp fingerprint, reason string) {
	var re *resolveError
	if errors.As(resErr, &re) {
		path = re.path
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, path, fp, "not executable"
	}
	if fi.Mode().IsRegular() {
		if f, err = os.Open(path); err == nil {
			if fi, err = f.Stat(); err != nil {
				f.Close()
				return nil, path, fp, "not executable"
			}
		}
	}
	fp = fingerprintOf(fi)
	switch {
	case fi.IsDir():
		reason = "a directory, not an executable file"
	case !fi.Mode().IsRegular():
		reason = "not a regular file"
	case fi.Mode().Perm()&0o111 == 0:
		reason = fmt.Sprintf("not executable (mode %04o)", fi.Mode().Perm())
	default:
		reason = fmt.Sprintf("not executable by relaunch's user (mode %04o)", fi.Mode().Perm())
	}
	return f, path, fp, reason
}
