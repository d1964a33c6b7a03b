//go:build !linux

package launcher

import (
	"errors"
	"log/slog"
)

// The connection handoff needs SOCK_SEQPACKET and SO_PEERCRED, as relaunch
// needs Linux (run_other.go). Elsewhere the broker only builds.

type broker struct{ path string }

func newBroker(bind, path string, log *slog.Logger, genOf func(pid int) (gen int, ok bool)) (*broker, error) {
	return nil, errors.New("the connection handoff runs only on Linux")
}

func (b *broker) setCurrent(gen int)          {}
func (b *broker) exited(gen int)              {}
func (b *broker) close() (closedInFlight int) { return 0 }

type genRoots struct{}

func (g *genRoots) add(gen, pid int)          {}
func (g *genRoots) remove(gen int)            {}
func (g *genRoots) genOf(pid int) (int, bool) { return 0, false }
