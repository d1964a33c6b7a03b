package watch

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Resolve finds the file the shell would run for cmd: a name without a slash
// is looked up in PATH (exec.LookPath semantics: the first PATH entry holding
// an executable regular file of that name; an empty or "." entry is the
// working directory, as for the shell), anything else is a path, relative to
// the working directory. The result is absolute with every symlink followed.
//
// The error names cmd and says "not found in PATH" (it wraps
// exec.ErrNotFound), "no such file" (fs.ErrNotExist) or "not executable"
// (fs.ErrPermission).
func Resolve(cmd string) (string, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("%q: cannot resolve: %w", cmd, err)
	}
	res := resolveCmd(cmd, cwd, os.Getenv("PATH"))
	return res.path, res.err
}

// Lookup finds cmd as Resolve does, with the same errors, but returns the
// path as the command names it, symlinks not followed: cmd itself when it
// holds a slash, else the PATH entry joined with it. It is what exec runs,
// and what a user recognises in a log line.
func Lookup(cmd string) (string, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("%q: cannot resolve: %w", cmd, err)
	}
	res := resolveCmd(cmd, cwd, os.Getenv("PATH"))
	return res.named, res.err
}

// watchSpec is one name in one directory to watch: the directory is watched,
// events for other names in it are ignored.
type watchSpec struct {
	dir, name string
}

// resolution is what a command resolves to and what to watch to see that
// change.
type resolution struct {
	path    string      // the executable, absolute and physical; "" when err != nil
	named   string      // the same as the command names it (Lookup); "" when err != nil
	watches []watchSpec // directories (physical paths) and names whose change may change path
	err     error
}

// resolveError is a resolution failure, worded for a user and unwrapping to a
// standard sentinel.
type resolveError struct {
	msg  string
	kind error  // exec.ErrNotFound, fs.ErrNotExist, fs.ErrPermission or the cause
	path string // the file found but not executable, with fs.ErrPermission
}

func (e *resolveError) Error() string { return e.msg }
func (e *resolveError) Unwrap() error { return e.kind }

// resolveCmd resolves cmd against cwd and pathEnv, as Resolve does, and also
// returns what to watch.
func resolveCmd(cmd, cwd, pathEnv string) resolution {
	var res resolution
	if cmd == "" {
		res.err = &resolveError{msg: `"": empty command`, kind: fs.ErrNotExist}
		return res
	}
	if strings.Contains(cmd, "/") {
		p := cmd
		if !filepath.IsAbs(p) {
			p = filepath.Join(cwd, p)
		}
		target, ws, err := walkChain(p)
		res.watches = ws
		if err != nil {
			res.err = chainError(cmd, err)
			return res
		}
		if err := checkExec(target); err != nil {
			res.err = execError(cmd, target, err)
			return res
		}
		res.path, res.named = target, cmd
		return res
	}

	var notExec string
	var notExecErr error
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(cwd, dir)
		}
		// PATH entries that are not directories are skipped and not watched:
		// watching for them would mean watching busy ancestors such as $HOME.
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		target, ws, err := walkChain(filepath.Join(dir, cmd))
		res.watches = append(res.watches, ws...)
		if err != nil {
			continue
		}
		if err := checkExec(target); err != nil {
			if notExec == "" {
				notExec, notExecErr = target, err
			}
			continue
		}
		res.path, res.named = target, filepath.Join(dir, cmd)
		return res
	}
	if notExec != "" {
		res.err = execError(cmd, notExec, notExecErr)
		return res
	}
	res.err = &resolveError{msg: fmt.Sprintf("%q: not found in PATH", cmd), kind: exec.ErrNotFound}
	return res
}

// checkExec applies exec.LookPath's test (not a directory, executable by us)
// to an absolute path.
func checkExec(path string) error {
	_, err := exec.LookPath(path)
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}

func chainError(cmd string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return &resolveError{msg: fmt.Sprintf("%q: no such file", cmd), kind: fs.ErrNotExist}
	case errors.Is(err, syscall.ELOOP):
		return &resolveError{msg: fmt.Sprintf("%q: no such file: too many levels of symbolic links", cmd), kind: fs.ErrNotExist}
	}
	return &resolveError{msg: fmt.Sprintf("%q: %v", cmd, err), kind: err}
}

func execError(cmd, target string, err error) error {
	why := ""
	if errors.Is(err, syscall.EISDIR) {
		why = " (a directory)"
	}
	if target != cmd {
		return &resolveError{msg: fmt.Sprintf("%q: %s is not executable%s", cmd, target, why), kind: fs.ErrPermission, path: target}
	}
	return &resolveError{msg: fmt.Sprintf("%q: not executable%s", cmd, why), kind: fs.ErrPermission, path: target}
}

// maxLinks bounds symlink resolution, as the kernel's ELOOP does (40 there;
// filepath.EvalSymlinks allows 255).
const maxLinks = 255

// walkChain resolves the absolute path p component by component, following
// symlinks, and returns the physical path it names together with what to
// watch: the parent directory of every symlink met and of the final name.
// When a component is missing, the (existing) directory that should hold it
// is watched for it and the error is returned.
func walkChain(p string) (string, []watchSpec, error) {
	if !filepath.IsAbs(p) {
		return "", nil, fmt.Errorf("walkChain: %q is not absolute", p)
	}
	var ws []watchSpec
	resolved := string(filepath.Separator)
	rest := p
	links := 0
	for {
		rest = strings.TrimLeft(rest, "/")
		if rest == "" {
			// Only reached when the path ends in "." or ".." (or is "/").
			if resolved != string(filepath.Separator) {
				ws = append(ws, watchSpec{filepath.Dir(resolved), filepath.Base(resolved)})
			}
			return resolved, ws, nil
		}
		c := rest
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			c, rest = rest[:i], rest[i+1:]
		} else {
			rest = ""
		}
		switch c {
		case ".":
			continue
		case "..":
			resolved = filepath.Dir(resolved)
			continue
		}
		next := filepath.Join(resolved, c)
		fi, err := os.Lstat(next)
		if err != nil {
			ws = append(ws, watchSpec{resolved, c})
			return "", ws, err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			ws = append(ws, watchSpec{resolved, c})
			links++
			if links > maxLinks {
				return "", ws, &fs.PathError{Op: "resolve", Path: p, Err: syscall.ELOOP}
			}
			target, err := os.Readlink(next)
			if err != nil {
				return "", ws, err
			}
			if filepath.IsAbs(target) {
				resolved = string(filepath.Separator)
			}
			if rest == "" {
				rest = target
			} else {
				rest = target + "/" + rest
			}
			continue
		}
		if strings.Trim(rest, "/") == "" {
			ws = append(ws, watchSpec{resolved, c})
			return next, ws, nil
		}
		if !fi.IsDir() {
			return "", ws, &fs.PathError{Op: "resolve", Path: next, Err: syscall.ENOTDIR}
		}
		resolved = next
	}
}
