package sdlisten

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// runBPF runs a classic BPF program on a connection's first packet as a
// reuseport program sees it: no data of its own (a SYN's payload), the IP
// header behind SKF_NET_OFF. It knows the instructions RouteProgram uses,
// and fails the test on any other, on a backward jump, or on a load out of
// the headers (the kernel would return 0).
func runBPF(t *testing.T, prog []unix.SockFilter, ip []byte) uint32 {
	t.Helper()
	var a, x uint32
	var mem [16]uint32
	load := func(off uint32, size int) uint32 {
		k := int64(int32(off)) + 0x100000 // relative to the IP header
		if int32(off) >= 0 || k < 0 || k+int64(size) > int64(len(ip)) {
			t.Fatalf("load of %d bytes at %#x: outside the headers", size, off)
		}
		switch size {
		case 1:
			return uint32(ip[k])
		case 2:
			return uint32(binary.BigEndian.Uint16(ip[k:]))
		}
		return binary.BigEndian.Uint32(ip[k:])
	}
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		k := in.K
		operand := k
		if in.Code&unix.BPF_X != 0 && in.Code&0x07 == unix.BPF_ALU {
			operand = x
		}
		switch in.Code {
		case unix.BPF_LD | unix.BPF_B | unix.BPF_ABS:
			a = load(k, 1)
		case unix.BPF_LD | unix.BPF_H | unix.BPF_ABS:
			a = load(k, 2)
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			a = load(k, 4)
		case unix.BPF_LD | unix.BPF_H | unix.BPF_IND:
			a = load(x+k, 2)
		case unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH:
			x = 4 * (load(k, 1) & 0xf)
		case unix.BPF_ST:
			mem[k] = a
		case unix.BPF_LD | unix.BPF_MEM:
			a = mem[k]
		case unix.BPF_LDX | unix.BPF_MEM:
			x = mem[k]
		case unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K:
			a >>= operand
		case unix.BPF_ALU | unix.BPF_XOR | unix.BPF_X, unix.BPF_ALU | unix.BPF_XOR | unix.BPF_K:
			a ^= operand
		case unix.BPF_ALU | unix.BPF_MUL | unix.BPF_K:
			a *= operand
		case unix.BPF_ALU | unix.BPF_DIV | unix.BPF_K:
			a /= operand
		case unix.BPF_ALU | unix.BPF_MOD | unix.BPF_K:
			a %= operand
		case unix.BPF_JMP | unix.BPF_JA:
			pc += int(k)
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			pc += int(map[bool]uint8{true: in.Jt, false: in.Jf}[a == k])
		case unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
			pc += int(map[bool]uint8{true: in.Jt, false: in.Jf}[a >= k])
		case unix.BPF_RET | unix.BPF_K:
			return k
		default:
			t.Fatalf("instruction %d: code %#x not known to the test VM", pc, in.Code)
		}
	}
	t.Fatal("the program ran off its end")
	return 0
}

// synPacket is the IP and TCP headers of a connection from src to port 80.
func synPacket(src netip.AddrPort) []byte {
	var b []byte
	if src.Addr().Is4() {
		ip := src.Addr().As4()
		b = make([]byte, 24+20) // an IPv4 header with 4 bytes of options
		b[0] = 0x46
		copy(b[12:], ip[:])
		binary.BigEndian.PutUint16(b[24:], src.Port())
		binary.BigEndian.PutUint16(b[26:], 80)
		return b
	}
	ip := src.Addr().As16()
	b = make([]byte, 40+20)
	b[0] = 0x60
	copy(b[8:], ip[:])
	binary.BigEndian.PutUint16(b[40:], src.Port())
	binary.BigEndian.PutUint16(b[42:], 80)
	return b
}

func TestRouteProgramProbes(t *testing.T) {
	probe4 := netip.MustParseAddrPort("127.0.0.1:40001")
	probe6 := netip.MustParseAddrPort("[::1]:40002")
	prog, err := RouteProgram(Route{Slots: []int{0}, Probes: map[netip.AddrPort]int{probe4: 3, probe6: 5}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		src  string
		slot uint32
	}{
		{"127.0.0.1:40001", 3},
		{"127.0.0.1:40002", 0},   // another port
		{"127.0.0.2:40001", 0},   // the probe's port from another address
		{"[::1]:40002", 5},       // IPv6
		{"[::1]:40001", 0},       // the IPv4 probe's port
		{"[::2]:40002", 0},       // another IPv6 address
		{"10.1.2.3:40002", 0},    // the IPv6 probe's port on IPv4
		{"[2001:db8::1]:443", 0}, // anything else
	} {
		if got := runBPF(t, prog, synPacket(netip.MustParseAddrPort(tc.src))); got != tc.slot {
			t.Errorf("from %s: slot %d; want %d", tc.src, got, tc.slot)
		}
	}
}

// The canary gets about its share of the connections of one client (source
// ports in sequence, as connect() hands them out) and of many, and the
// current generation's slots share the rest evenly.
func TestRouteProgramCanary(t *testing.T) {
	prog, err := RouteProgram(Route{Slots: []int{1, 2}, Canary: []int{4}, CanaryPct: 25})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		src  func(i int) netip.AddrPort
	}{
		{"one client, ports in steps of 2", func(i int) netip.AddrPort {
			return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(32768+2*i))
		}},
		{"one client, ports in steps of 1", func(i int) netip.AddrPort {
			return netip.AddrPortFrom(netip.MustParseAddr("192.0.2.7"), uint16(40000+i))
		}},
		{"many clients, one port", func(i int) netip.AddrPort {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 5000)
		}},
		{"IPv6 clients", func(i int) netip.AddrPort {
			return netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i+1)), uint16(50000+i))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 4000
			count := map[uint32]int{}
			for i := range n {
				count[runBPF(t, prog, synPacket(tc.src(i)))]++
			}
			if len(count) != 3 {
				t.Fatalf("slots %v; want 1, 2 and 4 only", count)
			}
			share := func(s uint32) float64 { return float64(count[s]) / n }
			if c := share(4); c < 0.22 || c > 0.28 {
				t.Errorf("the canary got %.1f%%; want 25%% ± 3: %v", 100*c, count)
			}
			if a, b := share(1), share(2); a < 0.33 || b < 0.33 {
				t.Errorf("slots 1 and 2 got %.1f%% and %.1f%%; want 37.5%% each ± 4.5: %v", 100*a, 100*b, count)
			}
		})
	}
}

func TestRouteProgramRefuses(t *testing.T) {
	probes := map[netip.AddrPort]int{}
	for i := range maxProbes + 1 {
		probes[netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1000+i))] = 1
	}
	for _, r := range []Route{
		{},
		{Slots: []int{0}, CanaryPct: 25},
		{Slots: []int{0}, Canary: []int{1}},
		{Slots: []int{0}, Canary: []int{1}, CanaryPct: 100},
		{Slots: []int{-1}},
		{Slots: []int{0}, Probes: probes},
	} {
		if _, err := RouteProgram(r); err == nil {
			t.Errorf("RouteProgram(%s) succeeded", r)
		}
	}
	// The most a route can hold still assembles.
	delete(probes, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 1000))
	for i := range 4 {
		probes[netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("2001:db8::%d", i+1)), 80)] = 2
	}
	for ap := range probes {
		if len(probes) > maxProbes {
			delete(probes, ap)
		}
	}
	if _, err := RouteProgram(Route{Slots: []int{0, 1, 2, 3}, Canary: []int{4, 5, 6}, CanaryPct: 99, Probes: probes}); err != nil {
		t.Error(err)
	}
}

// dialFrom connects to addr from a port it binds first, calling route with
// that source before the SYN leaves: how relaunch's probes are steered.
func dialFrom(t *testing.T, network, addr string, route func(netip.AddrPort)) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: time.Second, Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		c.Control(func(fd uintptr) {
			host, _, _ := net.SplitHostPort(addr)
			ip := netip.MustParseAddr(host)
			var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: ip.As16()}
			if ip.Is4() {
				sa = &unix.SockaddrInet4{Addr: ip.As4()}
			}
			if err = unix.Bind(int(fd), sa); err != nil {
				return
			}
			var got unix.Sockaddr
			if got, err = unix.Getsockname(int(fd)); err != nil {
				return
			}
			switch s := got.(type) {
			case *unix.SockaddrInet4:
				route(netip.AddrPortFrom(netip.AddrFrom4(s.Addr), uint16(s.Port)))
			case *unix.SockaddrInet6:
				route(netip.AddrPortFrom(netip.AddrFrom16(s.Addr), uint16(s.Port)))
			}
		})
		return err
	}}
	c, err := d.DialContext(context.Background(), network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// With the kernel: a probe's connection lands on its slot and nobody
// else's does; a canary's share of real connections is about right.
func TestPoolRoute(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", ":0"} {
		t.Run(addr, func(t *testing.T) {
			a, _ := ParseAddr(addr)
			p, err := BindPool(a, 4)
			if err != nil {
				if addr != "127.0.0.1:0" {
					t.Skipf("no IPv6 here: %v", err)
				}
				t.Fatal(err)
			}
			defer p.Close()
			_, port, _ := net.SplitHostPort(p.Addr().Address)
			target := "127.0.0.1:" + port
			if addr == "[::1]:0" {
				target = "[::1]:" + port
			}
			connect, queued := poolProbes(t, p)
			connect = func(n int) {
				for range n {
					c, err := net.DialTimeout("tcp", target, time.Second)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { c.Close() })
				}
			}
			base := Route{Slots: []int{1}}
			if err := p.SetRoute(base); err != nil {
				t.Fatal(err)
			}
			connect(3)
			dialFrom(t, "tcp", target, func(src netip.AddrPort) {
				r := base
				r.Probes = map[netip.AddrPort]int{src: 3}
				if err := p.SetRoute(r); err != nil {
					t.Fatal(err)
				}
			})
			connect(3)
			if q := queued(); q[0] != 0 || q[1] != 6 || q[2] != 0 || q[3] != 1 {
				t.Fatalf("queues %v; want [0 6 0 1]: the probe on slot 3, the rest on slot 1", q)
			}
			if err := p.SetRoute(Route{Slots: []int{0}, Canary: []int{2}, CanaryPct: 25}); err != nil {
				t.Fatal(err)
			}
			connect(200)
			q := queued()
			if q[0]+q[2] != 200 || q[2] < 20 || q[2] > 90 {
				t.Fatalf("queues %v after 200 connections with 25%% to slot 2; want 20 to 90 on slot 2, the rest on slot 0", q)
			}
			t.Logf("canary 25%%: %d of 200 connections", q[2])
		})
	}
}
