package launcher

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A link planted at the temporary file's name is never written through:
// the create fails and the file it points to keeps its content.
func TestPIDFileTempNoFollow(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	victim := filepath.Join(other, "shadow")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	name := "app.pid.tmpGUESSED"
	if err := os.Symlink(victim, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	d, err := openPIDDir(filepath.Join(dir, "app.pid"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	err = writeNewFile(int(d.Fd()), name, []byte("4242\n"))
	if !errors.Is(err, unix.EEXIST) {
		t.Errorf("creating the temporary file over a planted link: %v; want EEXIST", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("the link's target now holds %q: the pidfile was written through the link", b)
	}
}

// The pidfile holds the pid, nothing is left next to it, and it is removed
// at exit only while it still holds relaunch's pid.
func TestPIDFileWriteRemove(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.pid")
	if err := writePIDFile(path); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != strconv.Itoa(os.Getpid())+"\n" {
		t.Errorf("pidfile holds %q, want our pid", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the directory holds %v, want only app.pid", ents)
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil { // another relaunch's
		t.Fatal(err)
	}
	removePIDFile(path)
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the pidfile of another process was removed: %v", err)
	}
	if err := writePIDFile(path); err != nil {
		t.Fatal(err)
	}
	removePIDFile(path)
	if _, err := os.Lstat(path); err == nil {
		t.Errorf("our pidfile is still there after removePIDFile")
	}
}

// Who may write in the pidfile's directory: relaunch's user or root, and
// others only with the sticky bit.
func TestPIDFileDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the directories belong to another uid")
	}
	const nobody = 65534
	cases := []struct {
		name  string
		mode  os.FileMode // with os.ModeSticky where set
		owner int
		link  int // >= 0: the pidfile's directory is a link, owned by this uid, to the directory
		wants []string
	}{
		{name: "own 0755", mode: 0o755, owner: 0, link: -1},
		{name: "own 1777", mode: 0o777 | os.ModeSticky, owner: 0, link: -1},
		{name: "own 0777", mode: 0o777, owner: 0, link: -1, wants: []string{"writable by other users", "0777", "chmod go-w"}},
		{name: "own 0775", mode: 0o775, owner: 0, link: -1, wants: []string{"writable by other users", "0775"}},
		{name: "other's 0755", mode: 0o755, owner: nobody, link: -1, wants: []string{"owned by uid 65534"}},
		{name: "other's 1777", mode: 0o777 | os.ModeSticky, owner: nobody, link: -1, wants: []string{"owned by uid 65534"}},
		{name: "root's link", mode: 0o755, owner: 0, link: 0},
		{name: "other's link", mode: 0o755, owner: 0, link: nobody, wants: []string{"symbolic link owned by uid 65534"}},
		{name: "link to other's", mode: 0o777, owner: nobody, link: 0, wants: []string{"owned by uid 65534"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			top := t.TempDir()
			dir := filepath.Join(top, "d")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, c.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(dir, c.owner, c.owner); err != nil {
				t.Fatal(err)
			}
			pidDir := dir
			if c.link >= 0 {
				pidDir = filepath.Join(top, "link")
				if err := os.Symlink(dir, pidDir); err != nil {
					t.Fatal(err)
				}
				if err := os.Lchown(pidDir, c.link, c.link); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(pidDir, "app.pid")
			err := writePIDFile(path)
			if c.wants == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				removePIDFile(path)
				return
			}
			if err == nil {
				t.Fatalf("written; want refused with %q", c.wants)
			}
			msg := err.Error()
			for _, w := range append(c.wants, path, pidDir) {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("message %q is more than one line", msg)
			}
			if ents, _ := os.ReadDir(dir); len(ents) > 0 {
				t.Errorf("written in the refused directory: %v", ents)
			}
		})
	}
}
