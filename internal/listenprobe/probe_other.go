//go:build !linux

package listenprobe

import "net/netip"

// Elsewhere there is no procfs to look in: the probe sees nothing, and
// readiness falls back to a delay.

// Probe recognises relaunch's sockets in a process tree; here it
// cannot.
type Probe struct{}

// Result is what one scan saw.
type Result struct {
	Accepting bool
	How       string
	OwnSocket string
	Closed    bool
	Epoll     EpollRef
}

// New returns a probe that sees nothing.
func New(fds []int) *Probe { return &Probe{} }

// Given names no socket.
func (p *Probe) Given() []string { return nil }

// Scan sees nothing.
func (p *Probe) Scan(root int) Result { return Result{} }

// Supported reports false: nothing here shows what a process polls.
func Supported() bool { return false }

// InUse sees nothing: binding tells.
func InUse(udp bool, ap netip.AddrPort, dual bool) ([]Holder, error) { return nil, nil }

// Whose sees nothing.
func Whose(inode uint64) Holder { return Holder{Inode: inode} }

// SocketInodes sees nothing.
func SocketInodes(pid int) []uint64 { return nil }

// EpollRef is an epoll instance of a process.
type EpollRef struct{ Pid, Fd int }

// Polls sees nothing.
func (p *Probe) Polls(EpollRef) Result { return Result{} }

// Epolls sees none.
func (p *Probe) Epolls() []EpollRef { return nil }

// Watch watches nothing here.
type Watch struct{}

// NewWatch returns a Watch that sees nothing.
func (p *Probe) NewWatch() *Watch { return &Watch{} }

// Add does nothing.
func (w *Watch) Add([]EpollRef) {}

// Len is 0.
func (w *Watch) Len() int { return 0 }

// Polled is false.
func (w *Watch) Polled() bool { return false }

// Close does nothing.
func (w *Watch) Close() {}
