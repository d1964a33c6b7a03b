//go:build !linux

package launcher

// Elsewhere there is no procfs to look in: the probe sees nothing, and
// readiness falls back to a delay.

// listenProbe recognises relaunch's sockets in a process tree; here it
// cannot.
type listenProbe struct{}

// probeResult is what one scan saw.
type probeResult struct {
	Accepting bool
	How       string
	OwnSocket string
}

func newListenProbe(fds []int) *listenProbe { return &listenProbe{} }

func (p *listenProbe) scan(root int) probeResult { return probeResult{} }

// probeSupported reports false: nothing here shows what a process polls.
func probeSupported() bool { return false }
