package listenprobe

import (
	"bytes"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// EpollRef is an epoll instance of a process: its fd there.
type EpollRef struct{ Pid, Fd int }

// Epolls returns the epoll instances the last Scan saw in the tree (the
// slice is reused by the next Scan).
func (p *Probe) Epolls() []EpollRef { return p.epolls }

// Polls looks for one of the sockets in the set of the epoll instance ref
// alone, as a Scan does for each epoll instance it finds: an app started
// again usually creates its epoll instance as the same fd, and one read of
// its fdinfo costs a few µs where a Scan walks the whole tree (0.3–1.5 ms
// under load). Any other fd, or none, is not Accepting.
func (p *Probe) Polls(ref EpollRef) Result {
	dir, err := unix.Open("/proc/"+strconv.Itoa(ref.Pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Result{}
	}
	defer unix.Close(dir)
	// Only an epoll instance's fdinfo has "tfd:" lines, and only for its
	// targets: no readlink needed.
	if s, tfd := p.epollTarget(dir, ref.Fd); s >= 0 {
		return Result{Accepting: true, How: "pid " + strconv.Itoa(ref.Pid) + " polls " + p.fdName(s, tfd, "epoll"), Epoll: ref}
	}
	return Result{}
}

// maxWatched bounds the fdinfo files a Watch keeps open.
const maxWatched = 16

// Watch re-reads only the fdinfo of epoll instances a Scan found, to see
// the moment one of them gets one of relaunch's sockets: most servers
// create their epoll instance well before they add the listener to it
// (Go's runtime, libuv and nginx's workers at their start), and one read
// of an open fdinfo file costs a few µs where a Scan walks the whole tree.
// It sees nothing a Scan would not: blocking accepts and processes started
// since are the Scan's. Safe for use by one goroutine while another adds.
type Watch struct {
	mu    sync.Mutex
	p     Probe // the sockets, and a buffer of its own
	files map[EpollRef]int
}

// NewWatch returns a Watch of p's sockets, watching nothing yet.
func (p *Probe) NewWatch() *Watch {
	return &Watch{p: Probe{socks: p.socks, buf: make([]byte, 4<<10)}, files: map[EpollRef]int{}}
}

// Add opens the fdinfo of each epoll instance not watched yet, up to
// maxWatched in all. Opened by path: a process that exits leaves a file
// that no longer reads, and its pid, reused, would need one of relaunch's
// sockets in an epoll set to be taken for it.
func (w *Watch) Add(refs []EpollRef) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range refs {
		if _, ok := w.files[r]; ok || len(w.files) >= maxWatched || w.files == nil {
			continue
		}
		fd, err := unix.Open("/proc/"+strconv.Itoa(r.Pid)+"/fdinfo/"+strconv.Itoa(r.Fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		w.files[r] = fd
	}
}

// Len is the number of epoll instances watched.
func (w *Watch) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.files)
}

// Polled reads each watched fdinfo again (pread at 0 makes procfs print
// it anew) and says whether one of relaunch's sockets is in its set.
func (w *Watch) Polled() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, fd := range w.files {
		n, err := unix.Pread(fd, w.p.buf, 0)
		if err != nil || n <= 0 {
			continue
		}
		b := w.p.buf[:n]
		if n == len(w.p.buf) {
			// A set too large for the buffer: its whole lines only; the
			// Scan reads them all.
			b = b[:bytes.LastIndexByte(b, '\n')+1]
		}
		if s, _ := w.p.epollTargetIn(b); s >= 0 {
			return true
		}
	}
	return false
}

// Close closes the files; the Watch then watches nothing, and Add adds none.
func (w *Watch) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, fd := range w.files {
		unix.Close(fd)
	}
	w.files = nil
}
