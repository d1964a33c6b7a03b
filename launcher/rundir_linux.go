package launcher

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/internal/broker"
	"github.com/relaunch/relaunch/sdlisten"
)

// relaunch's runtime directory holds the generations' notify sockets and
// the handoff socket, and every generation is told their paths. Whoever
// can replace the directory can pose as relaunch to the generations, and
// be handed their live connections. So:
//   - it is made only in a base whose every directory from / is owned by
//     relaunch's user or root and writable by no one else (sticky aside);
//   - relaunch holds it open and binds its sockets through that fd
//     (/proc/self/fd/N/name): a path changed since cannot redirect them;
//   - the fd holds a flock for relaunch's life, by which a later relaunch
//     tells the directories of dead ones, to remove them.
// A tmp cleaner may remove it under a running relaunch: the next
// generation's start makes it again (notifySocket).

const (
	runDirPrefix = "relaunch-"
	handoffName  = "handoff.sock"
)

type runDir struct {
	path     string // what the generations are told
	base     string // the safe directory it is in
	fd       int    // open and flock'ed; the same number for relaunch's life, across its re-exec too
	via      string // the prefix sockets are bound at: /proc/self/fd/N/, or path/ without /proc
	relisten bool   // made again: the handoff socket must follow
}

// baseCandidate is a directory relaunch may make its runtime directory in.
type baseCandidate struct {
	from string // "XDG_RUNTIME_DIR=/run/user/1000" when a variable names it; "" for a default
	path string
	make bool // create it (0700) when missing
}

// baseCandidates lists, in the order of preference, where the runtime
// directory may go: systemd's RuntimeDirectory=, the login session's
// runtime directory, /run/relaunch for root, then TMPDIR or /tmp.
func baseCandidates(getenv func(string) string, euid int) []baseCandidate {
	var cs []baseCandidate
	if v, _, _ := strings.Cut(getenv("RUNTIME_DIRECTORY"), ":"); v != "" {
		cs = append(cs, baseCandidate{from: "RUNTIME_DIRECTORY=" + v, path: v})
	}
	if v := getenv("XDG_RUNTIME_DIR"); v != "" {
		cs = append(cs, baseCandidate{from: "XDG_RUNTIME_DIR=" + v, path: v})
	}
	if euid == 0 {
		cs = append(cs, baseCandidate{path: "/run/relaunch", make: true})
	}
	if v := getenv("TMPDIR"); v != "" {
		cs = append(cs, baseCandidate{from: "TMPDIR=" + v, path: v})
	} else {
		cs = append(cs, baseCandidate{path: "/tmp"})
	}
	return cs
}

// safeDir resolves dir and checks every directory from / down to it: owned
// by euid or root, and not writable by group or others unless sticky (as
// /tmp). Anyone else who could change one could swap relaunch's directory.
func safeDir(dir string, euid int) (string, error) {
	abs, err := filepath.Abs(dir)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return "", fmt.Errorf("%s: %v", pe.Path, pe.Err)
		}
		return "", err
	}
	p := "/"
	for _, part := range strings.Split(abs, "/") {
		p = filepath.Join(p, part)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return "", fmt.Errorf("%s: %v", p, err)
		}
		switch {
		case st.Mode&unix.S_IFMT != unix.S_IFDIR:
			return "", fmt.Errorf("%s is not a directory", p)
		case int(st.Uid) != euid && st.Uid != 0:
			return "", fmt.Errorf("%s is owned by uid %d, not by root or relaunch's uid %d", p, st.Uid, euid)
		case st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0:
			return "", fmt.Errorf("%s is writable by others than its owner (mode %04o)", p, st.Mode&0o7777)
		}
	}
	return abs, nil
}

// newRunDir makes relaunch's runtime directory in the first safe base
// where it can.
func newRunDir(log *slog.Logger) (*runDir, error) {
	euid := os.Geteuid()
	return makeRunDir(baseCandidates(os.Getenv, euid), euid, func(s string) { log.Warn(s) })
}

// makeRunDir makes the runtime directory in the first candidate that is
// safe and where it can. It warns about each candidate a variable names
// that it passed over; with none left, the error alone names them all and
// the fix.
func makeRunDir(cs []baseCandidate, euid int, warn func(string)) (*runDir, error) {
	var why, warns []string
	for _, c := range cs {
		name := c.from
		if name == "" {
			name = c.path
		}
		if c.make {
			os.Mkdir(c.path, 0o700) // checked below, as any other
		}
		base, err := safeDir(c.path, euid)
		if err == nil {
			var d *runDir
			if d, err = makeRunDirIn(base, euid); err == nil {
				for _, w := range warns {
					warn(w)
				}
				return d, nil
			}
			err = fmt.Errorf("cannot make a directory in it: %v", err)
		}
		why = append(why, fmt.Sprintf("%s (%v)", name, err))
		if c.from != "" {
			warns = append(warns, fmt.Sprintf("not using %s for relaunch's runtime directory: %v", c.from, err))
		}
	}
	return nil, fmt.Errorf("no safe directory to make relaunch's runtime directory in: %s; set TMPDIR to a directory only you (or root) can write",
		strings.Join(why, ", "))
}

func makeRunDirIn(base string, euid int) (*runDir, error) {
	for range 3 {
		path, err := os.MkdirTemp(base, runDirPrefix) // 0700
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return nil, err
		}
		fd, err := openRunDir(path, euid)
		if err != nil {
			os.Remove(path)
			return nil, err
		}
		if linked(fd, path) {
			return newRunDirFd(path, base, fd), nil
		}
		// Another relaunch's cleanup took it for a dead one's before our
		// flock: make another.
		unix.Close(fd)
	}
	return nil, errors.New("it was removed as soon as made, 3 times")
}

func newRunDirFd(path, base string, fd int) *runDir {
	d := &runDir{path: path, base: base, fd: fd, via: path + "/"}
	if proc := "/proc/self/fd/" + strconv.Itoa(fd); unix.Access(proc, unix.X_OK) == nil {
		d.via = proc + "/"
	}
	return d
}

// openRunDir opens and locks relaunch's own directory at path: not a
// symbolic link, a directory of euid's, 0700.
func openRunDir(path string, euid int) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %v", path, err)
	}
	if fd < 3 { // fds 0-2 are the children's stdio
		nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("dup %s: %v", path, err)
		}
		fd = nfd
	}
	var st unix.Stat_t
	err = unix.Fchmod(fd, 0o700) // whatever the umask made of it
	if err == nil {
		err = unix.Fstat(fd, &st)
	}
	switch {
	case err != nil:
	case st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != euid || st.Mode&0o7777 != 0o700:
		err = fmt.Errorf("%s is not relaunch's: mode %o, uid %d", path, st.Mode, st.Uid)
	default:
		if err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			err = fmt.Errorf("lock %s: %v", path, err)
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// linked tells whether path still names the directory open as fd.
func linked(fd int, path string) bool {
	var a, b unix.Stat_t
	return unix.Fstat(fd, &a) == nil && a.Nlink > 0 &&
		unix.Lstat(path, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino
}

// at is the name to bind the socket name at.
func (d *runDir) at(name string) string { return d.via + name }

// file is the socket name's path, for the generations.
func (d *runDir) file(name string) string { return filepath.Join(d.path, name) }

// gone tells whether the directory was removed (a tmp cleaner, a logout).
func (d *runDir) gone() bool { return !linked(d.fd, d.path) }

// remake makes the directory again: at the same path when its base is
// still safe, else where newRunDir would. The fd keeps its number, so the
// bind names of at stay valid.
func (d *runDir) remake(log *slog.Logger) error {
	euid := os.Geteuid()
	nd := &runDir{path: d.path, base: d.base, fd: -1}
	if _, err := safeDir(d.base, euid); err == nil && os.Mkdir(d.path, 0o700) == nil {
		if nd.fd, err = openRunDir(d.path, euid); err != nil {
			os.Remove(d.path)
		}
	}
	if nd.fd < 0 {
		var err error
		if nd, err = newRunDir(log); err != nil {
			return err
		}
	}
	// The flock comes along with the open file; the old one's goes with
	// the old directory.
	err := unix.Dup3(nd.fd, d.fd, unix.O_CLOEXEC)
	unix.Close(nd.fd)
	if err != nil {
		return fmt.Errorf("dup3: %v", err)
	}
	*d = *newRunDirFd(nd.path, nd.base, d.fd)
	d.relisten = true
	return nil
}

// remove removes the directory at relaunch's exit, unless it is not
// relaunch's any more.
func (d *runDir) remove() {
	if !d.gone() {
		os.RemoveAll(d.path)
	}
	unix.Close(d.fd)
}

// resumeRunDir takes the directory the previous program kept as fd. A
// state from a build that kept no fd (0) names only its path.
func resumeRunDir(path string, fd int, log *slog.Logger) (*runDir, error) {
	euid := os.Geteuid()
	if fd > 0 {
		unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		return newRunDirFd(path, filepath.Dir(path), fd), nil // its flock came along
	}
	if fd, err := openRunDir(path, euid); err == nil {
		return newRunDirFd(path, filepath.Dir(path), fd), nil
	}
	return newRunDir(log)
}

// cleanLeftovers removes the runtime directories dead relaunches left in
// base and returns how many. One is dead when nobody holds its flock (a
// live relaunch does) and nothing accepts on its handoff socket (a live
// relaunch of a build that took no flock does).
func cleanLeftovers(base string, euid int) int {
	ents, err := os.ReadDir(base)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), runDirPrefix) || !e.IsDir() { // IsDir: lstat's, not a symbolic link's target
			continue
		}
		path := filepath.Join(base, e.Name())
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if deadRunDir(fd, euid) && os.RemoveAll(path) == nil { // under our flock; RemoveAll does not follow links
			n++
		}
		unix.Close(fd)
	}
	return n
}

func deadRunDir(fd, euid int) bool {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || int(st.Uid) != euid || unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) != nil {
		return false
	}
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(s)
	err = unix.Connect(s, &unix.SockaddrUnix{Name: "/proc/self/fd/" + strconv.Itoa(fd) + "/" + handoffName})
	return err == unix.ECONNREFUSED || err == unix.ENOENT
}

// openRunDir makes l.runDir and l.handoff, or takes those the previous
// program kept (rs), and removes the runtime directories of dead
// relaunches.
func (l *launcher) openRunDir(rs *Resume) error {
	var err error
	if rs != nil {
		if l.runDir, err = resumeRunDir(rs.st.RunDir, rs.st.RunDirFd, l.log); err != nil {
			return err
		}
		l.runDir.relisten = l.runDir.path != rs.st.RunDir
		l.handoff, err = broker.Adopt(filepath.Join(rs.st.RunDir, handoffName), rs.st.Handoff, rs.st.Receivers, l.log, l.roots.genOf)
		return err
	}
	if l.runDir, err = newRunDir(l.log); err != nil {
		return err
	}
	if n := cleanLeftovers(l.runDir.base, os.Geteuid()); n > 0 {
		l.log.Info(fmt.Sprintf("removed %d runtime director%s that relaunches which are gone left in %s", n, plural(n, "y", "ies"), l.runDir.base))
	}
	l.handoff, err = broker.New(l.runDir.at(handoffName), l.runDir.file(handoffName), l.log, l.roots.genOf)
	return err
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// notifySocket makes generation id's notify socket. A runtime directory
// that was removed is made again first, and the handoff socket follows it.
func (l *launcher) notifySocket(id int) (*sdlisten.NotifyListener, error) {
	return l.notifySocketNamed("gen" + strconv.Itoa(id))
}

// notifySocketNamed makes the notify socket name.sock.
func (l *launcher) notifySocketNamed(name string) (*sdlisten.NotifyListener, error) {
	name += ".sock"
	for try := 0; ; try++ {
		if l.runDir.gone() {
			old := l.runDir.path
			if err := l.runDir.remake(l.log); err != nil {
				return nil, fmt.Errorf("relaunch's runtime directory %s was removed and cannot be made again: %v", old, err)
			}
			msg := fmt.Sprintf("relaunch's runtime directory %s was removed (by a tmp cleaner?): made it again", old)
			if l.runDir.path != old {
				msg += " as " + l.runDir.path
			}
			l.log.Warn(msg, "path", l.runDir.path)
		}
		if l.runDir.relisten {
			if err := l.handoff.Relisten(l.runDir.at(handoffName), l.runDir.file(handoffName)); err != nil {
				return nil, err
			}
			l.runDir.relisten = false
		}
		n, err := sdlisten.ListenNotifyAt(l.runDir.at(name), l.runDir.file(name))
		if err != nil && try == 0 && l.runDir.gone() {
			continue // removed just now
		}
		if err != nil {
			return nil, fmt.Errorf("cannot create the notify socket in %s: %v", l.runDir.path, err)
		}
		return n, nil
	}
}
