package sdlisten

import (
	"errors"
	"fmt"
	"strings"
)

// Pool is a fixed set of listening TCP sockets on one address, all in one
// SO_REUSEPORT group, that relaunch never closes while it runs. Each
// generation gets one member (a slot) as its fd, and a one-instruction
// classic BPF program (Steer) sends every new connection to the current
// generation's slot, so a generation that is told to drain gets no new
// connections (NOTES.md §8). Members are never closed: closing one would
// move the group's last member into its index and reset its queue.
type Pool struct {
	addr  Addr
	slots []*Socket
}

// BindPool binds n members of a new SO_REUSEPORT group on a tcp address, in
// listen() order, so slot i is index i of the group.
func BindPool(a Addr, n int) (*Pool, error) {
	if !strings.HasPrefix(a.Network, "tcp") {
		return nil, &BindError{Addr: a, Err: errors.New("only tcp addresses can be steered")}
	}
	if n < 1 {
		return nil, &BindError{Addr: a, Err: fmt.Errorf("a pool needs at least one slot, not %d", n)}
	}
	p := &Pool{addr: a}
	for i := 0; i < n; i++ {
		s, err := bindInet(p.addr, true)
		if err != nil {
			p.Close()
			return nil, &BindError{Addr: a, Err: err}
		}
		p.addr = s.addr // port 0 resolved: the other members join that port
		p.slots = append(p.slots, s)
		if i == 0 {
			// Steer to slot 0 before any other member listens: a
			// connection hashed onto a slot nobody serves would wait forever.
			if err := p.Steer(0); err != nil {
				p.Close()
				return nil, &BindError{Addr: a, Err: err}
			}
		}
	}
	return p, nil
}

// Addr is the address every slot is bound to.
func (p *Pool) Addr() Addr { return p.addr }

// Len is the number of slots.
func (p *Pool) Len() int { return len(p.slots) }

// Slot returns slot i's socket.
func (p *Pool) Slot(i int) *Socket { return p.slots[i] }

// Close closes every slot: only when relaunch exits.
func (p *Pool) Close() error {
	var err error
	for _, s := range p.slots {
		err = errors.Join(err, s.Close())
	}
	return err
}
