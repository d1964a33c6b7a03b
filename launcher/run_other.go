//go:build !linux

package launcher

import (
	"errors"
	"io"
	"log/slog"

	"github.com/relaunch/relaunch/internal/keeper"
	"github.com/relaunch/relaunch/sdlisten"
)

// Run needs Linux: the exec helper, child subreaping, SCM_CREDENTIALS and
// procfs have no portable equivalent. Elsewhere relaunch builds, and says so.
func Run(cfg Config) (int, error) {
	return 1, startupError(errors.New("relaunch runs only on Linux"))
}

// Resume is a relaunch carried across its exec of itself: Linux only.
type Resume struct{ Listeners []Listener }

// Resumed returns nil: there is no re-exec elsewhere.
func Resumed() (*Resume, error) { return nil, nil }

// CatchSignals does nothing where Run does not run.
func CatchSignals() {}

// ReexecCheckEnv is set for the new binary's check of the options.
const ReexecCheckEnv = "RELAUNCH_REEXEC_CHECK"

// CheckState accepts anything: there is no re-exec elsewhere.
func CheckState(io.Reader) error { return nil }

// exclusive cannot tell who listens: binding decides.
func exclusive(sdlisten.Addr) error { return nil }

// storedListeners: there is no fd store to take sockets back from.
func storedListeners(inherited []*sdlisten.Socket, _ []sdlisten.Addr, _ string, _ *slog.Logger) (map[int]*storedListener, []*sdlisten.Socket) {
	return nil, inherited
}

// takeFromKeeper: there is no keeper.
func takeFromKeeper([]sdlisten.Addr, *slog.Logger) (*keeper.Client, []*sdlisten.Socket, error) {
	return nil, nil, nil
}

func takeState(socks []*sdlisten.Socket) (*savedState, int, []*sdlisten.Socket) {
	return nil, -1, socks
}

func (tk *Taken) release() {}
