package sdlisten

import (
	"fmt"
	"net/netip"
)

// Route says which slots of a pool new connections go to. It becomes one
// classic BPF program that the kernel runs for each new connection
// (SO_ATTACH_REUSEPORT_CBPF); the program's answer is the index of the
// group member that gets it.
type Route struct {
	// Slots are the current generation's slots; a connection goes to one
	// of them, chosen by its hash. At least one.
	Slots []int
	// Canary slots get CanaryPct percent (1 to 99) of new connections,
	// chosen by the same hash; the rest go to Slots.
	Canary    []int
	CanaryPct int
	// Probes send a connection from exactly this source address and port
	// to a slot: relaunch's health probes, bound to a port of their own
	// before they connect, reach the generation under test and no other.
	Probes map[netip.AddrPort]int
}

func (r Route) String() string {
	s := fmt.Sprintf("slots %v", r.Slots)
	if r.CanaryPct > 0 {
		s += fmt.Sprintf(", %d%% to %v", r.CanaryPct, r.Canary)
	}
	if len(r.Probes) > 0 {
		s += fmt.Sprintf(", %d probe(s)", len(r.Probes))
	}
	return s
}
