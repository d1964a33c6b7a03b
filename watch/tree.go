package watch

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ignoredName says whether a name inside a watched tree is ignored: editor
// swap, backup and lock files, vim's write test file, and .git.
func ignoredName(name string) bool {
	switch {
	case name == ".git", name == "4913":
		return true
	case strings.HasSuffix(name, ".swp"), strings.HasSuffix(name, ".swx"), strings.HasSuffix(name, "~"):
		return true
	case strings.HasPrefix(name, ".#"):
		return true
	}
	return false
}

// ignored says whether a path inside a watched tree is ignored, by its name
// or by an Ignore pattern; a path under an ignored directory is too.
func (w *Watcher) ignored(path string) bool {
	for p := path; !w.isRoot(p); p = filepath.Dir(p) {
		name := filepath.Base(p)
		if ignoredName(name) {
			return true
		}
		for _, g := range w.ignore {
			if ok, _ := filepath.Match(g, name); ok {
				return true
			}
			if ok, _ := filepath.Match(g, p); ok {
				return true
			}
		}
		if filepath.Dir(p) == p {
			break
		}
	}
	return false
}

// isRoot says whether p is the top of a --watch tree: the walk up from a
// changed file stops there.
func (w *Watcher) isRoot(p string) bool {
	for _, r := range w.roots {
		if r.target == p || r.abs == p {
			return true
		}
	}
	return false
}

// resolveRoot resolves a --watch path again. When it now names another file
// or directory (or force), a directory's tree is walked again and watched.
// A missing path is not an error: its nearest existing parent is watched for
// it. The error is one from adding watches.
func (w *Watcher) resolveRoot(r *root, force bool) error {
	target, ws, err := walkChain(r.abs)
	r.chain = specsToMap(ws)
	if err != nil {
		if r.target != "" {
			w.log.Warn("a watched path is gone; waiting for it to come back", "path", r.given)
		}
		r.target, r.isDir, r.dirs = "", false, nil
		return nil
	}
	fi, err := os.Stat(target)
	isDir := err == nil && fi.IsDir()
	if !force && target == r.target && isDir == r.isDir {
		return nil
	}
	r.target, r.isDir, r.dirs = target, isDir, nil
	if !isDir {
		return nil
	}
	r.dirs = map[string]bool{}
	dirs, err := w.walkTree(target, false)
	for _, d := range dirs {
		r.dirs[d] = true
	}
	return err
}

// walkTree watches top and every directory below it (not following
// symlinks, skipping .git) and returns them. Each directory is watched
// before it is listed, so nothing created meanwhile is missed. With record,
// every file found is recorded as changed: they appeared with a new
// directory, possibly before its watch. Only an inotify limit stops the walk
// with an error.
func (w *Watcher) walkTree(top string, record bool) ([]string, error) {
	var dirs []string
	var addErr error
	err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == top {
				return err
			}
			if d != nil && d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if p != top && w.ignored(p) {
				return filepath.SkipDir
			}
			if err := w.add(p); err != nil {
				if isLimit(err) {
					return err
				}
				if addErr == nil {
					addErr = err
				}
				return filepath.SkipDir
			}
			dirs = append(dirs, p)
			if record && p != top {
				w.addFile(p)
			}
			return nil
		}
		if record && !w.ignored(p) {
			w.addFile(p)
		}
		return nil
	})
	if err != nil && !isLimit(err) {
		// top vanished or cannot be read: its parent's events will tell.
		w.log.Debug("cannot walk a watched directory", "path", top, "err", err)
		err = nil
	}
	if err == nil {
		err = addErr
	}
	return dirs, err
}

// inTree says whether dir is a watched directory of some --watch tree.
func (w *Watcher) inTree(dir string) bool {
	for _, r := range w.roots {
		if r.dirs[dir] {
			return true
		}
	}
	return false
}

// treeCreated handles the creation of name inside the tree directory dir:
// a new directory is watched, with all it already holds. It reports whether
// a directory was added.
func (w *Watcher) treeCreated(dir, name string) bool {
	fi, err := os.Lstat(name)
	if err != nil || !fi.IsDir() {
		return false
	}
	dirs, err := w.walkTree(name, true)
	w.addFailed(err)
	for _, r := range w.roots {
		if !r.dirs[dir] {
			continue
		}
		for _, d := range dirs {
			r.dirs[d] = true
		}
	}
	return len(dirs) > 0
}

// treeRemoved forgets a removed or renamed directory and everything below
// it. It reports whether name was a watched directory.
func (w *Watcher) treeRemoved(name string) bool {
	found := false
	prefix := name + string(filepath.Separator)
	for _, r := range w.roots {
		if !r.dirs[name] || name == r.target {
			continue
		}
		found = true
		for d := range r.dirs {
			if d == name || strings.HasPrefix(d, prefix) {
				delete(r.dirs, d)
			}
		}
	}
	return found
}
