package sdlisten

import (
	"errors"
	"fmt"
	"strings"
)

// Pool is a fixed set of listening TCP sockets on one address, all in one
// SO_REUSEPORT group, that relaunch never closes while it runs. Each
// generation gets one member (a slot) as its fd, and a classic BPF
// program (Steer, or SetRoute for a whole Route) sends every new
// connection to the current generation's slot, so a generation that is told to drain gets no new
// connections. Members are never closed: closing one would move the
// group's last member into its index and reset its queue.
//
// The group's last member is a spare that no generation gets and nothing
// is steered to. When a holder calls shutdown() on its slot, the slot
// leaves the group and the kernel moves the last member into its index:
// with the spare last, that is the spare, and every other slot keeps its
// index until Revive puts the slot back.
type Pool struct {
	addr  Addr
	slots []*Socket
	spare *Socket // nil in a pool adopted from a relaunch that had none
	route Route   // the route last set (pool_linux.go)
}

// BindPool binds n members of a new SO_REUSEPORT group on a tcp address, in
// listen() order, so slot i is index i of the group, then the spare.
func BindPool(a Addr, n int) (*Pool, error) {
	if !strings.HasPrefix(a.Network, "tcp") {
		return nil, &BindError{Addr: a, Err: errors.New("only tcp addresses can be steered")}
	}
	if n < 1 {
		return nil, &BindError{Addr: a, Err: fmt.Errorf("a pool needs at least one slot, not %d", n)}
	}
	p := &Pool{addr: a}
	for i := 0; i <= n; i++ {
		s, err := bindInet(p.addr, true)
		if err != nil {
			p.Close()
			return nil, &BindError{Addr: a, Err: err}
		}
		p.addr = s.addr // port 0 resolved: the other members join that port
		if i == n {
			p.spare = s
			break
		}
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

// Members is every socket of the group: the slots, then the spare.
func (p *Pool) Members() []*Socket {
	if p.spare == nil {
		return p.slots
	}
	return append(p.slots[:len(p.slots):len(p.slots)], p.spare)
}

// Close closes every member: only when relaunch exits.
func (p *Pool) Close() error {
	var err error
	for _, s := range p.Members() {
		err = errors.Join(err, s.Close())
	}
	return err
}

// PoolFrom makes a pool of sockets that already form a SO_REUSEPORT group
// in this order, spare last (nil for none): sockets a service manager kept
// for relaunch (FDSTORE) and passed back. They must all be bound to one
// TCP address.
func PoolFrom(slots []*Socket, spare *Socket) (*Pool, error) {
	if len(slots) == 0 {
		return nil, errors.New("a pool needs at least one slot")
	}
	p := &Pool{addr: slots[0].addr, slots: slots, spare: spare}
	for _, s := range p.Members() {
		if !strings.HasPrefix(s.addr.Network, "tcp") || s.addr.Address != p.addr.Address {
			return nil, fmt.Errorf("pool of %s: a member is bound to %s", p.addr, s.addr)
		}
	}
	return p, nil
}
