package launcher

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/sdlisten"
)

func mkdirMode(t *testing.T, path string, mode os.FileMode) string {
	t.Helper()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return path
}

// A base is safe when nobody but relaunch's user and root can change any
// directory from / down to it.
func TestSafeDir(t *testing.T) {
	euid := os.Geteuid()
	top := t.TempDir()
	own := mkdirMode(t, filepath.Join(top, "own"), 0o755)
	sticky := mkdirMode(t, filepath.Join(top, "sticky"), 0o777|os.ModeSticky)
	inSticky := mkdirMode(t, filepath.Join(sticky, "mine"), 0o700)
	group := mkdirMode(t, filepath.Join(top, "group"), 0o770)
	inGroup := mkdirMode(t, filepath.Join(group, "mine"), 0o700)
	others := mkdirMode(t, filepath.Join(top, "others"), 0o757)
	foreign := mkdirMode(t, filepath.Join(top, "foreign"), 0o755)
	foreignEuid := euid
	if euid == 0 {
		if err := os.Chown(foreign, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	} else {
		foreignEuid = euid + 1 // the same check: the owner is neither relaunch's uid nor root
	}
	linkSafe := filepath.Join(top, "link-safe")
	linkGroup := filepath.Join(own, "link-group")
	if err := os.Symlink(own, linkSafe); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(inGroup, linkGroup); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(own, "file")
	os.WriteFile(file, nil, 0o600)

	for _, c := range []struct {
		dir  string
		euid int
		want string // the resolved path, or a part of the error
	}{
		{own, euid, own},
		{sticky, euid, sticky},
		{inSticky, euid, inSticky},
		{linkSafe, euid, own},
		{group, euid, group + " is writable by others than its owner (mode 0770)"},
		{inGroup, euid, group + " is writable by others than its owner (mode 0770)"},
		{others, euid, others + " is writable by others than its owner (mode 0757)"},
		{linkGroup + "/", euid, group + " is writable by others than its owner"},
		{foreign, foreignEuid, foreign + " is owned by uid "},
		{file, euid, file + " is not a directory"},
		{filepath.Join(top, "none"), euid, "no such file or directory"},
	} {
		got, err := safeDir(c.dir, c.euid)
		switch {
		case err == nil && got != c.want:
			t.Errorf("safeDir(%s) = %s, nil; want %q", c.dir, got, c.want)
		case err != nil && !strings.Contains(err.Error(), c.want):
			t.Errorf("safeDir(%s): %v; want %q", c.dir, err, c.want)
		}
	}
}

func TestBaseCandidates(t *testing.T) {
	env := map[string]string{"RUNTIME_DIRECTORY": "/run/app:/run/app2", "XDG_RUNTIME_DIR": "/run/user/1000", "TMPDIR": "/var/tmp"}
	paths := func(cs []baseCandidate) (ps []string) {
		for _, c := range cs {
			ps = append(ps, c.path)
		}
		return ps
	}
	if got, want := paths(baseCandidates(func(k string) string { return env[k] }, 0)),
		[]string{"/run/app", "/run/user/1000", "/run/relaunch", "/var/tmp"}; !slices.Equal(got, want) {
		t.Errorf("root's candidates: %v; want %v", got, want)
	}
	if got, want := paths(baseCandidates(func(string) string { return "" }, 1000)), []string{"/tmp"}; !slices.Equal(got, want) {
		t.Errorf("a user's candidates without variables: %v; want %v", got, want)
	}
}

// Unsafe bases named by variables are skipped with a warning each; with
// nothing safe, the error names every candidate and the fix.
func TestMakeRunDir(t *testing.T) {
	top := t.TempDir()
	group := mkdirMode(t, filepath.Join(top, "group"), 0o775)
	others := mkdirMode(t, filepath.Join(top, "others"), 0o777)
	good := mkdirMode(t, filepath.Join(top, "good"), 0o700)
	euid := os.Geteuid()

	var warns []string
	warn := func(s string) { warns = append(warns, s) }
	cs := []baseCandidate{{from: "XDG_RUNTIME_DIR=" + group, path: group}, {from: "TMPDIR=" + others, path: others}, {path: filepath.Join(top, "none")}}
	_, err := makeRunDir(cs, euid, warn)
	if err == nil {
		t.Fatal("makeRunDir found a safe one among unsafe candidates")
	}
	checkMessageLine(t, err.Error(), "no safe directory to make relaunch's runtime directory in", "XDG_RUNTIME_DIR="+group, "TMPDIR="+others, filepath.Join(top, "none"),
		"set TMPDIR to a directory only you (or root) can write")
	if len(warns) != 0 {
		t.Errorf("warnings %q besides the error", warns)
	}

	d, err := makeRunDir(append(cs, baseCandidate{from: "TMPDIR=" + good, path: good}), euid, warn)
	if err != nil {
		t.Fatal(err)
	}
	defer d.remove()
	if d.base != good || filepath.Dir(d.path) != good {
		t.Errorf("with a safe TMPDIR: %s in %s; want a directory in %s", d.path, d.base, good)
	}
	if len(warns) != 2 || !strings.Contains(warns[0], "not using XDG_RUNTIME_DIR="+group+" for relaunch's runtime directory: "+group+" is writable") ||
		!strings.Contains(warns[1], "not using TMPDIR="+others) {
		t.Errorf("warnings %q; want one for XDG_RUNTIME_DIR, one for TMPDIR", warns)
	}
	for _, e := range []string{group, others} {
		if ents, _ := os.ReadDir(e); len(ents) > 0 {
			t.Errorf("made %v in the unsafe %s", ents, e)
		}
	}
}

func checkMessageLine(t *testing.T, line string, wants ...string) {
	t.Helper()
	if strings.Contains(line, "\n") {
		t.Errorf("message of several lines: %q", line)
	}
	for _, w := range wants {
		if !strings.Contains(line, w) {
			t.Errorf("message %q does not say %q", line, w)
		}
	}
}

// A runtime directory removed under relaunch is made again at the same
// path, under the same fd number, so bind names through it stay valid.
func TestRunDirRemake(t *testing.T) {
	base := t.TempDir()
	d, err := makeRunDirIn(base, os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}
	defer d.remove()
	path, fd := d.path, d.fd
	if !strings.HasPrefix(filepath.Base(path), runDirPrefix) || d.gone() || d.relisten {
		t.Fatalf("new runtime directory %s: gone %v, relisten %v", path, d.gone(), d.relisten)
	}
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
	if !d.gone() {
		t.Fatal("gone() is false after rm -rf")
	}
	if err := d.remake(discardLogger()); err != nil {
		t.Fatal(err)
	}
	if d.path != path || d.fd != fd || d.gone() || !d.relisten {
		t.Errorf("remade: %s fd %d gone %v relisten %v; want %s fd %d, there, relisten", d.path, d.fd, d.gone(), d.relisten, path, fd)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: d.at(handoffName), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := os.Lstat(d.file(handoffName)); err != nil {
		t.Errorf("bound at %s, not found at %s: %v", d.at(handoffName), d.file(handoffName), err)
	}
	var st unix.Stat_t
	if unix.Fstat(d.fd, &st) != nil || st.Mode&0o7777 != 0o700 || unix.Flock(fdOf(t, path), unix.LOCK_EX|unix.LOCK_NB) == nil {
		t.Errorf("remade directory: mode %o, or not locked", st.Mode)
	}
}

func fdOf(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// At start, relaunch removes the runtime directories of dead relaunches,
// and only those: its own user's real directories, with no flock held and
// nothing accepting on their handoff socket.
func TestCleanLeftovers(t *testing.T) {
	base := t.TempDir()
	euid := os.Geteuid()
	dir := func(name string) string { return mkdirMode(t, filepath.Join(base, name), 0o700) }

	dead := dir("relaunch-dead")
	os.WriteFile(filepath.Join(dead, "x"), nil, 0o600)
	staleSock := dir("relaunch-stale") // its relaunch was killed: the socket file stays, nobody listens
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: filepath.Join(staleSock, handoffName), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	listening := dir("relaunch-listening") // a live relaunch of a build that took no flock
	ln, err = net.ListenUnix("unixpacket", &net.UnixAddr{Name: filepath.Join(listening, handoffName), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	locked, err := makeRunDirIn(base, euid) // a live relaunch
	if err != nil {
		t.Fatal(err)
	}
	defer locked.remove()
	other := dir("other") // not relaunch's
	target := dir("target")
	if err := os.Symlink(target, filepath.Join(base, "relaunch-link")); err != nil {
		t.Fatal(err)
	}
	keep := []string{listening, locked.path, other, target, filepath.Join(base, "relaunch-link")}
	if euid == 0 {
		foreign := dir("relaunch-foreign")
		os.Chown(foreign, 65534, 65534)
		keep = append(keep, foreign)
	}

	if n := cleanLeftovers(base, euid); n != 2 {
		t.Errorf("cleanLeftovers removed %d; want 2", n)
	}
	for _, p := range []string{dead, staleSock} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s (dead) was left", p)
		}
	}
	for _, p := range keep {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
}

// A directory swapped in at relaunch's path does not get its sockets:
// they are bound through the fd of relaunch's own.
func TestRunDirBindsThroughFd(t *testing.T) {
	base := t.TempDir()
	d, err := makeRunDirIn(base, os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}
	defer d.remove()
	moved := d.path + "-moved"
	if err := os.Rename(d.path, moved); err != nil {
		t.Fatal(err)
	}
	mkdirMode(t, d.path, 0o700)
	if !d.gone() {
		t.Error("gone() is false with another directory at the path")
	}
	n, err := sdlisten.ListenNotifyAt(d.at("gen1.sock"), d.file("gen1.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, err := os.Lstat(filepath.Join(moved, "gen1.sock")); err != nil {
		t.Errorf("not bound in relaunch's directory: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(d.path, "gen1.sock")); err == nil {
		t.Errorf("bound in the directory swapped in at %s", d.path)
	}
}
