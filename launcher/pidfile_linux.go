package launcher

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// The pidfile. relaunch often runs as root and writes it in a directory
// such as /run/app, next to other users' files: it refuses a directory that
// another user could plant names in, creates its temporary file without
// following any link, and works relative to the directory it checked.

// CheckPIDFile says whether relaunch may write the pidfile path: its
// directory exists and no user other than relaunch's and root can replace
// names in it. main calls it before binding anything; the write checks again.
func CheckPIDFile(path string) error {
	d, err := openPIDDir(path)
	if err != nil {
		return err
	}
	d.Close()
	return nil
}

// openPIDDir opens the pidfile's directory and checks, on what it opened,
// who may write in it.
func openPIDDir(path string) (*os.File, error) {
	dir := filepath.Dir(path)
	fail := func(format string, a ...any) error {
		return fmt.Errorf("cannot write --pidfile %s: "+format, append([]any{path}, a...)...)
	}
	uid := uint32(os.Geteuid())
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fail("directory %s does not exist; create it or choose another path", dir)
	} else if err != nil {
		return nil, fail("%v", err)
	}
	// A link such as /var/run → /run is common and fine when root or
	// relaunch's user made it; anyone else's could point anywhere.
	if owner := fi.Sys().(*syscall.Stat_t).Uid; fi.Mode()&fs.ModeSymlink != 0 && owner != 0 && owner != uid {
		return nil, fail("%s is a symbolic link owned by uid %d, who chooses where it leads; give the real directory", dir, owner)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, fail("directory %s does not exist; create it or choose another path", dir)
	case errors.Is(err, unix.ENOTDIR):
		return nil, fail("%s is not a directory; choose a path in a directory", dir)
	case err != nil:
		return nil, fail("directory %s: %v", dir, err)
	}
	d := os.NewFile(uintptr(fd), dir)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		d.Close()
		return nil, fail("directory %s: %v", dir, err)
	}
	switch {
	case st.Uid != 0 && st.Uid != uid:
		d.Close()
		return nil, fail("directory %s is owned by uid %d, who could replace the pidfile; use a directory owned by root or by relaunch's user (uid %d)", dir, st.Uid, uid)
	case st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0:
		d.Close()
		return nil, fail("directory %s is writable by other users (mode %04o), who could replace the pidfile; chmod go-w %s (or chmod +t %s), or choose another directory",
			dir, st.Mode&0o7777, dir, dir)
	}
	return d, nil
}

// writePIDFile writes relaunch's pid atomically (a reader never sees a
// partial file): to a new file of an unpredictable name, renamed over path.
func writePIDFile(path string) error {
	d, err := openPIDDir(path)
	if err != nil {
		return err
	}
	defer d.Close()
	dirfd, base := int(d.Fd()), filepath.Base(path)
	data := []byte(strconv.Itoa(os.Getpid()) + "\n")
	for try := 0; ; try++ {
		tmp := base + ".tmp" + rand.Text()
		err = writeNewFile(dirfd, tmp, data)
		if errors.Is(err, unix.EEXIST) && try < 3 {
			continue // someone guessed a name: never write through theirs
		}
		if err != nil {
			return fmt.Errorf("cannot write --pidfile %s: %v", path, err)
		}
		if err := unix.Renameat(dirfd, tmp, dirfd, base); err != nil {
			unix.Unlinkat(dirfd, tmp, 0)
			return fmt.Errorf("cannot write --pidfile %s: %v", path, err)
		}
		return nil
	}
}

// writeNewFile creates name in dirfd, failing if anything (a link
// included) is there already, and writes data to it.
func writeNewFile(dirfd int, name string, data []byte) error {
	fd, err := unix.Openat(dirfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		unix.Unlinkat(dirfd, name, 0)
	}
	return err
}

// removePIDFile removes path at exit if it still holds relaunch's pid:
// another relaunch may have written its own since.
func removePIDFile(path string) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return
	}
	b, _ := io.ReadAll(io.LimitReader(f, 32))
	f.Close()
	if bytes.Equal(b, []byte(strconv.Itoa(os.Getpid())+"\n")) {
		os.Remove(path)
	}
}
