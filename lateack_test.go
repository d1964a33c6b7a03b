//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A client whose handshake completes late: its SYN reaches gen 1's slot
// before an upgrade, its ACK comes 6 s after (a SYN-ACK lost twice). The
// connection then lands in the queue of a slot no generation holds, long
// after any fixed rescue window. It must still be served, and not be taken
// for a foreign BPF program.
//
// The test delays the ACK for real: relaunch runs in a network namespace of
// its own, listening on 10.9.9.1; the client is a raw socket speaking from
// 10.9.9.2, an address routed to the loopback interface but not local, so
// the kernel drops the SYN-ACK for it (no reset) and a packet socket on lo
// sees it; the test then sends the ACK when it chooses.
func TestRescueLateACK(t *testing.T) {
	needE2E(t)
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root: a network namespace and raw sockets")
	}
	ip := needCommand(t, "ip", "iproute2")
	unshare := needCommand(t, "unshare", "util-linux")
	if err := exec.Command(unshare, "--net", "true").Run(); err != nil {
		t.Skipf("no network namespace here: %v", err)
	}
	server, client := netip.MustParseAddr("10.9.9.1"), netip.MustParseAddr("10.9.9.2")
	const port = 8080
	sock := filepath.Join(shortTempDir(t), "ctl.sock")
	setup := fmt.Sprintf(`%[1]s link set lo up && %[1]s addr add %[2]s/32 dev lo && %[1]s route add %[3]s/32 dev lo && exec "$0" "$@"`, ip, server, client)
	p := startProc(t, procOpts{}, unshare, "--net", "--", "/bin/sh", "-c", setup, relaunchBin,
		"-l", fmt.Sprintf("%s:%d", server, port), "--no-watch-binary", "--control", sock, "--", demoBin)
	p.WaitLog(t, "gen 1 (pid", 20*time.Second)
	p.WaitLog(t, "ready in", 20*time.Second)

	raw, capture := lateACKSockets(t, p.Pid())
	defer unix.Close(raw)
	defer unix.Close(capture)
	c := &rawTCP{t: t, raw: raw, capture: capture, src: client, dst: server, sport: 40001, dport: port, seq: 1000}
	c.send(tcpSYN, nil)
	c.ack = c.await(func(h tcpHeader) bool { return h.flags&(tcpSYN|tcpACK) == tcpSYN|tcpACK }).seq + 1
	c.seq++

	// The switch: gen 2 serves; gen 1 drains and exits, its slot idle.
	upgradeTo(t, p, 2)
	p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", genPids(p)[1]), 10*time.Second)
	time.Sleep(6 * time.Second) // the delay under test: the client's ACK is late
	c.send(tcpACK, nil)
	// The stranded connection is kept for the next generation (the demo
	// takes no handoffs), which serves it.
	if !waitUntil(10*time.Second, 20*time.Millisecond, func() bool { return statusOf(t, sock).Rescued.Held == 1 }) {
		t.Fatalf("the late connection was not rescued: status rescued %+v\n%s", statusOf(t, sock).Rescued, p.Stderr())
	}
	upgradeTo(t, p, 3)
	c.send(tcpACK|tcpPSH, []byte("GET / HTTP/1.0\r\nHost: x\r\n\r\n"))
	var body []byte
	c.await(func(h tcpHeader) bool {
		body = append(body, h.payload...)
		return strings.Contains(string(body), "gen=")
	})
	if !strings.Contains(string(body), "gen=3") {
		t.Errorf("the late connection was answered %q; want by gen 3", body)
	}
	if strings.Contains(p.Stderr(), "steering tcp://") {
		t.Errorf("the late handshake was taken for a foreign program:\n%s", p.Stderr())
	}
}

// lateACKSockets opens, in pid's network namespace, a raw IP socket to
// send from (the header is the test's) and a packet socket on lo that
// sees every IP packet.
func lateACKSockets(t *testing.T, pid int) (raw, capture int) {
	t.Helper()
	type result struct {
		raw, capture int
		err          error
	}
	before, _ := os.Readlink("/proc/self/ns/net")
	ch := make(chan result)
	go func() {
		// The thread goes back to the test's namespace before it is
		// unlocked: a thread left in relaunch's would, if it were the main
		// thread (Go never ends that one), move /proc/self/net for every
		// later test of this process. A socket keeps the namespace it was
		// made in.
		runtime.LockOSThread()
		var r result
		defer func() { ch <- r }()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			r.err = err
			return
		}
		defer unix.Close(home)
		ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			r.err = err
			return
		}
		defer unix.Close(ns)
		if r.err = unix.Setns(ns, unix.CLONE_NEWNET); r.err != nil {
			return
		}
		r.raw, r.capture, r.err = rawAndCapture()
		if err := unix.Setns(home, unix.CLONE_NEWNET); err != nil {
			// Stay locked: the thread ends with the goroutine.
			r.err = errors.Join(r.err, fmt.Errorf("back to the test's namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("sockets in relaunch's network namespace: %v", r.err)
	}
	if after, _ := os.Readlink("/proc/self/ns/net"); after != before {
		t.Fatalf("the test process's network namespace moved: %s, was %s", after, before)
	}
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	unix.SetsockoptTimeval(r.capture, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return r.raw, r.capture
}

// rawAndCapture makes lateACKSockets' two sockets in the calling thread's
// network namespace.
func rawAndCapture() (raw, capture int, err error) {
	if raw, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
		return -1, -1, err
	}
	capture, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
	if err == nil {
		// lo is the first interface of a new namespace: index 1.
		err = unix.Bind(capture, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: 1})
	}
	if err != nil {
		unix.Close(raw)
		if capture >= 0 {
			unix.Close(capture)
		}
		return -1, -1, err
	}
	return raw, capture, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

const (
	tcpSYN = 0x02
	tcpPSH = 0x08
	tcpACK = 0x10
)

type tcpHeader struct {
	seq     uint32
	flags   byte
	payload []byte
}

// rawTCP is one TCP connection spoken by hand.
type rawTCP struct {
	t            *testing.T
	raw, capture int
	src, dst     netip.Addr
	sport, dport uint16
	seq, ack     uint32
}

func (c *rawTCP) send(flags byte, payload []byte) {
	c.t.Helper()
	tcp := make([]byte, 20+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], c.sport)
	binary.BigEndian.PutUint16(tcp[2:], c.dport)
	binary.BigEndian.PutUint32(tcp[4:], c.seq)
	if flags&tcpACK != 0 {
		binary.BigEndian.PutUint32(tcp[8:], c.ack)
	}
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	copy(tcp[20:], payload)
	binary.BigEndian.PutUint16(tcp[16:], tcpChecksum(c.src, c.dst, tcp))
	pkt := make([]byte, 20+len(tcp))
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	pkt[8] = 64
	pkt[9] = unix.IPPROTO_TCP
	s, d := c.src.As4(), c.dst.As4()
	copy(pkt[12:], s[:])
	copy(pkt[16:], d[:])
	copy(pkt[20:], tcp) // the kernel fills the IP checksum and id
	if err := unix.Sendto(c.raw, pkt, 0, &unix.SockaddrInet4{Addr: d}); err != nil {
		c.t.Fatalf("send: %v", err)
	}
	c.seq += uint32(len(payload))
}

// await reads the server's packets to the client until one satisfies ok,
// for 10 s at most.
func (c *rawTCP) await(ok func(tcpHeader) bool) tcpHeader {
	c.t.Helper()
	buf := make([]byte, 65536)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(c.capture, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			c.t.Fatalf("capture: %v", err)
		}
		pkt := buf[:n]
		if n < 40 || pkt[9] != unix.IPPROTO_TCP || netip.AddrFrom4([4]byte(pkt[12:16])) != c.dst ||
			netip.AddrFrom4([4]byte(pkt[16:20])) != c.src {
			continue
		}
		ihl := int(pkt[0]&0xf) * 4
		tcp := pkt[ihl:]
		if binary.BigEndian.Uint16(tcp[0:]) != c.dport || binary.BigEndian.Uint16(tcp[2:]) != c.sport {
			continue
		}
		h := tcpHeader{seq: binary.BigEndian.Uint32(tcp[4:]), flags: tcp[13], payload: tcp[int(tcp[12]>>4)*4:]}
		if ok(h) {
			return h
		}
	}
	c.t.Fatalf("no such packet from %s:%d within 10s", c.dst, c.dport)
	return tcpHeader{}
}

func tcpChecksum(src, dst netip.Addr, tcp []byte) uint16 {
	s, d := src.As4(), dst.As4()
	sum := uint32(0)
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(s[:])
	add(d[:])
	sum += unix.IPPROTO_TCP + uint32(len(tcp))
	add(tcp)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
