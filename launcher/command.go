package launcher

import (
	"errors"
	"fmt"
	"io/fs"
	"os/exec"

	"github.com/relaunch/relaunch/watch"
)

// CheckCommand says whether the command can be found and run, with the
// message a user needs when it cannot.
func CheckCommand(arg0 string) error {
	_, err := resolve(arg0)
	return err
}

// resolve finds the command as the shell would, at every start, so a new
// file at that path (or earlier in PATH) is what runs. It is the watcher's
// lookup (the same rules decide what is watched and what runs), worded for
// a start-up error.
func resolve(arg0 string) (string, error) {
	p, err := watch.Lookup(arg0)
	switch {
	case err == nil:
		return p, nil
	case errors.Is(err, exec.ErrNotFound):
		return "", fmt.Errorf("command %q not found in PATH; give its path (./%s) or install it", arg0, arg0)
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("command %q: no such file; check the path", arg0)
	case errors.Is(err, fs.ErrPermission):
		return "", fmt.Errorf("command %q is not executable (or is a directory); chmod +x it", arg0)
	}
	return "", fmt.Errorf("command %v", err)
}
