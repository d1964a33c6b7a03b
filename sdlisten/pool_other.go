//go:build !linux

package sdlisten

import "errors"

// Steer needs Linux's SO_ATTACH_REUSEPORT_CBPF.
func (p *Pool) Steer(i int) error { return errors.New("steering needs Linux") }

// Queued needs Linux's TCP_INFO.
func (p *Pool) Queued(i int) (int, error) { return 0, errors.New("TCP_INFO needs Linux") }
