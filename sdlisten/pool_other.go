//go:build !linux

package sdlisten

import "errors"

// Steer needs Linux's SO_ATTACH_REUSEPORT_CBPF.
func (p *Pool) Steer(i int) error { return errors.New("steering needs Linux") }

// Queued needs Linux's TCP_INFO.
func (p *Pool) Queued(i int) (int, error) { return 0, errors.New("TCP_INFO needs Linux") }

// Listening needs Linux's SO_ACCEPTCONN.
func (s *Socket) Listening() bool { return true }

// Relisten needs Linux.
func (s *Socket) Relisten() error { return errors.New("relisten needs Linux") }

// Dead needs Linux.
func (p *Pool) Dead() []int { return nil }

// ErrOrderLost: see pool_linux.go.
var ErrOrderLost = errors.New("the order of the SO_REUSEPORT group is no longer known")

// Revive needs Linux.
func (p *Pool) Revive(dead []int, steered int) ([]int, error) {
	return nil, errors.New("revive needs Linux")
}

// SetRoute needs Linux's SO_ATTACH_REUSEPORT_CBPF.
func (p *Pool) SetRoute(r Route) error { return errors.New("steering needs Linux") }

// Route is the route last set.
func (p *Pool) Route() Route { return p.route }
