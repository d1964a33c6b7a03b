package sdlisten

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"
)

// maxProbes bounds the probes of one program: each costs a few
// instructions, and a conditional jump reaches at most 255 ahead.
const maxProbes = 8

// skfNetOff is the kernel's SKF_NET_OFF: a load at it plus k reads byte k
// of the network (IP) header. A reuseport program's packet data starts
// past the TCP header (for a SYN: nothing), so the headers are read there.
const skfNetOff = 0xfff00000 // -0x100000

// Scratch memory of the program.
const (
	memAddr = 0 // IPv4 source, or the 4 words of the IPv6 source in 0..3
	memPort = 4 // TCP source port
	memHash = 5 // the connection's hash
)

// RouteProgram is the classic BPF program for r.
//
// It reads the TCP source port and the IP source address from the headers
// (IPv4 or IPv6 without extension headers; a dual-stack socket sees both),
// answers a probe's slot for a probe's exact source, and otherwise hashes
// (source address, source port) with a multiplicative hash: the top 16 bits
// of (addr ^ port) * 2654435761. h mod 100 below CanaryPct picks the
// canary; (h / 100) mod n picks among n slots. The kernel's own group hash
// is not visible to a classic program, and skb->hash may be 0 where no NIC
// or RPS computed one.
func RouteProgram(r Route) ([]unix.SockFilter, error) {
	if len(r.Slots) == 0 {
		return nil, errors.New("a route needs at least one slot")
	}
	if r.CanaryPct < 0 || r.CanaryPct > 99 || (r.CanaryPct > 0) != (len(r.Canary) > 0) {
		return nil, fmt.Errorf("bad canary: %d%% to slots %v", r.CanaryPct, r.Canary)
	}
	if len(r.Probes) > maxProbes {
		return nil, fmt.Errorf("%d probes at once; at most %d", len(r.Probes), maxProbes)
	}
	for _, s := range slices.Concat(r.Slots, r.Canary) {
		if s < 0 {
			return nil, fmt.Errorf("bad slot %d", s)
		}
	}
	var probes []netip.AddrPort // a stable order: the same route, the same program
	for ap := range r.Probes {
		probes = append(probes, ap)
	}
	slices.SortFunc(probes, func(a, b netip.AddrPort) int { return a.Compare(b) })

	a := &asm{}
	a.op(unix.BPF_LD|unix.BPF_B|unix.BPF_ABS, skfNetOff)
	a.op(unix.BPF_ALU|unix.BPF_RSH|unix.BPF_K, 4)
	a.jeq(6, "v6", "")
	// IPv4: X = the header's length.
	a.op(unix.BPF_LDX|unix.BPF_B|unix.BPF_MSH, skfNetOff)
	a.op(unix.BPF_LD|unix.BPF_H|unix.BPF_IND, skfNetOff)
	a.op(unix.BPF_ST, memPort)
	a.op(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, skfNetOff+12)
	a.op(unix.BPF_ST, memAddr)
	for i, ap := range probes {
		if !ap.Addr().Unmap().Is4() {
			continue
		}
		next := fmt.Sprintf("p4.%d", i)
		b := ap.Addr().Unmap().As4()
		a.op(unix.BPF_LD|unix.BPF_MEM, memAddr)
		a.jeq(be32(b[:]), "", next)
		a.op(unix.BPF_LD|unix.BPF_MEM, memPort)
		a.jeq(uint32(ap.Port()), "", next)
		a.ret(r.Probes[ap])
		a.label(next)
	}
	a.op(unix.BPF_LD|unix.BPF_MEM, memAddr)
	a.ja("hash")
	// IPv6: the TCP header follows the fixed 40-byte header.
	a.label("v6")
	a.op(unix.BPF_LD|unix.BPF_H|unix.BPF_ABS, skfNetOff+40)
	a.op(unix.BPF_ST, memPort)
	for w := range 4 {
		a.op(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, skfNetOff+8+4*uint32(w))
		a.op(unix.BPF_ST, memAddr+uint32(w))
	}
	for i, ap := range probes {
		if ap.Addr().Unmap().Is4() {
			continue
		}
		next := fmt.Sprintf("p6.%d", i)
		b := ap.Addr().As16()
		for w := range 4 {
			a.op(unix.BPF_LD|unix.BPF_MEM, memAddr+uint32(w))
			a.jeq(be32(b[4*w:]), "", next)
		}
		a.op(unix.BPF_LD|unix.BPF_MEM, memPort)
		a.jeq(uint32(ap.Port()), "", next)
		a.ret(r.Probes[ap])
		a.label(next)
	}
	a.op(unix.BPF_LD|unix.BPF_MEM, memAddr+3)
	// A = the address's (last) word.
	a.label("hash")
	a.op(unix.BPF_LDX|unix.BPF_MEM, memPort)
	a.op(unix.BPF_ALU|unix.BPF_XOR|unix.BPF_X, 0)
	a.op(unix.BPF_ALU|unix.BPF_MUL|unix.BPF_K, 2654435761)
	a.op(unix.BPF_ALU|unix.BPF_RSH|unix.BPF_K, 16)
	a.op(unix.BPF_ST, memHash)
	if r.CanaryPct > 0 {
		a.op(unix.BPF_ALU|unix.BPF_MOD|unix.BPF_K, 100)
		a.jge(uint32(r.CanaryPct), "main", "")
		a.pick(r.Canary)
	}
	a.label("main")
	a.pick(r.Slots)
	return a.assemble()
}

// SetRoute attaches r's program to the pool's group.
func (p *Pool) SetRoute(r Route) error {
	for _, s := range slices.Concat(r.Slots, r.Canary) {
		if s >= len(p.slots) {
			return fmt.Errorf("route %s: no slot %d", p.addr, s)
		}
	}
	for _, s := range r.Probes {
		if s < 0 || s >= len(p.slots) {
			return fmt.Errorf("route %s: no slot %d", p.addr, s)
		}
	}
	prog, err := RouteProgram(r)
	if err != nil {
		return fmt.Errorf("route %s: %w", p.addr, err)
	}
	if err := p.attachProg(prog); err != nil {
		return fmt.Errorf("route %s (%s): %w", p.addr, r, err)
	}
	p.route = r
	return nil
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// asm assembles a classic BPF program with forward labels.
type asm struct {
	prog   []unix.SockFilter
	labels map[string]int
	fix    []fixup
}

type fixup struct {
	at     int
	label  string
	field  byte // 't', 'f' or 'k' (ja)
	target string
}

func (a *asm) op(code uint16, k uint32) {
	a.prog = append(a.prog, unix.SockFilter{Code: code, K: k})
}

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.prog)
}

func (a *asm) ret(slot int) { a.op(unix.BPF_RET|unix.BPF_K, uint32(slot)) }

func (a *asm) ja(label string) {
	a.fix = append(a.fix, fixup{at: len(a.prog), field: 'k', target: label})
	a.op(unix.BPF_JMP|unix.BPF_JA, 0)
}

// jeq and jge jump to t when true and f when false; "" is the next
// instruction.
func (a *asm) jeq(k uint32, t, f string) { a.jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, k, t, f) }
func (a *asm) jge(k uint32, t, f string) { a.jump(unix.BPF_JMP|unix.BPF_JGE|unix.BPF_K, k, t, f) }

func (a *asm) jump(code uint16, k uint32, t, f string) {
	if t != "" {
		a.fix = append(a.fix, fixup{at: len(a.prog), field: 't', target: t})
	}
	if f != "" {
		a.fix = append(a.fix, fixup{at: len(a.prog), field: 'f', target: f})
	}
	a.op(code, k)
}

// pick returns one of slots, by (hash / 100) mod len(slots).
func (a *asm) pick(slots []int) {
	if len(slots) == 1 {
		a.ret(slots[0])
		return
	}
	a.op(unix.BPF_LD|unix.BPF_MEM, memHash)
	a.op(unix.BPF_ALU|unix.BPF_DIV|unix.BPF_K, 100)
	a.op(unix.BPF_ALU|unix.BPF_MOD|unix.BPF_K, uint32(len(slots)))
	for i, s := range slots[:len(slots)-1] {
		// jeq #i: the next instruction returns s; else skip it.
		a.prog = append(a.prog, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: uint32(i), Jt: 0, Jf: 1})
		a.ret(s)
	}
	a.ret(slots[len(slots)-1])
}

func (a *asm) assemble() ([]unix.SockFilter, error) {
	for _, f := range a.fix {
		to, ok := a.labels[f.target]
		if !ok {
			return nil, fmt.Errorf("bpf: no label %q", f.target)
		}
		off := to - f.at - 1
		if off < 0 {
			return nil, fmt.Errorf("bpf: backward jump to %q", f.target)
		}
		switch f.field {
		case 'k':
			a.prog[f.at].K = uint32(off)
		case 't', 'f':
			if off > 255 {
				return nil, fmt.Errorf("bpf: jump to %q too far (%d)", f.target, off)
			}
			if f.field == 't' {
				a.prog[f.at].Jt = uint8(off)
			} else {
				a.prog[f.at].Jf = uint8(off)
			}
		}
	}
	if len(a.prog) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("bpf: %d instructions", len(a.prog))
	}
	return a.prog, nil
}
