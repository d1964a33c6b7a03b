package watch

import (
	"errors"
	"fmt"
	"syscall"
)

// limitError words an error from creating the inotify instance or adding a
// watch; running out of watches or instances names the sysctl to raise.
// The cause stays wrapped (errors.Is(err, syscall.ENOSPC) holds).
func limitError(err error, what string) error {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("%s: %w: the per-user limit of inotify watches is reached; "+
			"raise fs.inotify.max_user_watches, e.g. sysctl -w fs.inotify.max_user_watches=524288", what, err)
	case errors.Is(err, syscall.EMFILE):
		return fmt.Errorf("%s: %w: the per-user limit of inotify instances (or this process's open-file limit, ulimit -n) is reached; "+
			"raise fs.inotify.max_user_instances, e.g. sysctl -w fs.inotify.max_user_instances=1024", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func isLimit(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EMFILE)
}
