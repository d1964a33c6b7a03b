//go:build !linux

package launcher

import "fmt"

// Run needs Linux: the exec helper, child subreaping, SCM_CREDENTIALS and
// procfs have no portable equivalent. Elsewhere relaunch builds, and says so.
func Run(cfg Config) (int, error) {
	return 1, fmt.Errorf("%w: relaunch runs only on Linux", ErrStartup)
}
