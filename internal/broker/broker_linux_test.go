package broker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/handoff"
	"github.com/relaunch/relaunch/internal/wire"
)

// The broker driven in-process, with real SEQPACKET and TCP sockets: the
// sender and receiver are the handoff package's, in test goroutines or in a
// child process (TestBrokerHelperProcess). Every process of the test is the
// same pid, so genOf answers with the generation the test claims before it
// dials (claim), or from a pid map for children.

// testGens is genOf for tests.
type testGens struct {
	mu    sync.Mutex
	claim int         // the generation of this process's next hello; 0: none
	pids  map[int]int // other processes
}

func (g *testGens) genOf(pid int) (int, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if pid == os.Getpid() && g.claim != 0 {
		return g.claim, true
	}
	gen, ok := g.pids[pid]
	return gen, ok
}

func (g *testGens) set(gen int) {
	g.mu.Lock()
	g.claim = gen
	g.mu.Unlock()
}

func (g *testGens) setPid(pid, gen int) {
	g.mu.Lock()
	if g.pids == nil {
		g.pids = map[int]int{}
	}
	g.pids[pid] = gen
	g.mu.Unlock()
}

// msgLogger logs each message's text, one line each, on w.
func msgLogger(w io.Writer) *slog.Logger { return slog.New(msgHandler{w}) }

type msgHandler struct{ w io.Writer }

func (h msgHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h msgHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h msgHandler) WithGroup(string) slog.Handler            { return h }
func (h msgHandler) Handle(_ context.Context, r slog.Record) error {
	_, err := io.WriteString(h.w, r.Message+"\n")
	return err
}

// logLines collects the broker's log, one line per message.
type logLines struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return l.buf.Write(p)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// wait waits until the log has substr and returns that line.
func (l *logLines) wait(t testing.TB, substr string) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		l.mu.Lock()
		s := l.buf.String()
		if l.changed == nil {
			l.changed = make(chan struct{})
		}
		ch := l.changed
		l.mu.Unlock()
		for line := range strings.Lines(s) {
			if strings.Contains(line, substr) {
				return strings.TrimSpace(line)
			}
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("log has no %q after 10s:\n%s", substr, s)
		}
	}
}

type brokerFixture struct {
	b    *Broker
	gens *testGens
	log  *logLines
	path string
}

func newTestBroker(t testing.TB) *brokerFixture {
	t.Helper()
	dir, err := os.MkdirTemp("", "rlb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &brokerFixture{gens: &testGens{}, log: &logLines{}, path: dir + "/handoff.sock"}
	f.b, err = New(f.path, f.path, msgLogger(f.log), f.gens.genOf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.b.Close()
		if t.Failed() {
			t.Logf("broker log:\n%s", f.log)
		}
	})
	return f
}

func (f *brokerFixture) sender(t testing.TB, gen int) *handoff.Sender {
	t.Helper()
	f.gens.set(gen)
	s, err := handoff.DialPath(f.path)
	if err != nil {
		t.Fatalf("gen %d: dial: %v", gen, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (f *brokerFixture) receiver(t testing.TB, gen int) *handoff.Receiver {
	t.Helper()
	f.gens.set(gen)
	r, err := handoff.ListenPath(f.path)
	if err != nil {
		t.Fatalf("gen %d: listen: %v", gen, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// heldNow is the number of fds the broker holds.
func (f *brokerFixture) heldNow() int {
	f.b.mu.Lock()
	defer f.b.mu.Unlock()
	return f.b.held
}

// waitHeld waits until the broker holds n fds.
func (f *brokerFixture) waitHeld(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.heldNow() != n {
		if time.Now().After(deadline) {
			t.Fatalf("the broker holds %d fds, want %d", f.heldNow(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// tcpPair is a real TCP connection: the client's end and the server's.
type tcpPair struct {
	client *net.TCPConn
	server *net.TCPConn
	r      *bufio.Reader // on client
}

// tcpPairs makes n TCP connections on 127.0.0.1; the cleanup closes the
// client ends (the test passes the server ends on).
func tcpPairs(t testing.TB, n int) []*tcpPair {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ps := make([]*tcpPair, n)
	for i := range ps {
		c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.AcceptTCP()
		if err != nil {
			t.Fatal(err)
		}
		ps[i] = &tcpPair{client: c, server: s, r: bufio.NewReader(c)}
	}
	t.Cleanup(func() {
		for _, p := range ps {
			p.client.Close()
			p.server.Close()
		}
	})
	return ps
}

// echo checks that conn (a received server end) still talks to p's client,
// both ways.
func echo(t testing.TB, p *tcpPair, conn net.Conn, word string) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	p.client.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(word + "\n")); err != nil {
		t.Fatalf("write to the received connection: %v", err)
	}
	if line, err := p.r.ReadString('\n'); err != nil || line != word+"\n" {
		t.Fatalf("the client read %q, %v; want %q", line, err, word)
	}
	if _, err := p.client.Write([]byte("back\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "back\n" {
		t.Fatalf("the received connection read %q, %v", buf, err)
	}
}

// clientSeesEOF checks that p's connection was closed (by every holder).
func clientSeesEOF(t testing.TB, p *tcpPair) {
	t.Helper()
	p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := p.r.ReadByte()
	if err == nil {
		t.Fatalf("the client read %q; want the end of the connection", b)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the client read error %v; want EOF (the connection closed)", err)
	}
}

// clientStillOpen checks that nothing closed p's connection.
func clientStillOpen(t testing.TB, p *tcpPair) {
	t.Helper()
	p.client.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := p.r.ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the connection is not open and idle: %v", err)
	}
	p.client.SetReadDeadline(time.Time{})
}

// sendAll hands over the server ends of ps with states "prefix<i>" and
// closes them, as a draining app does.
func sendAll(t testing.TB, s *handoff.Sender, ps []*tcpPair, prefix string) {
	t.Helper()
	for i, p := range ps {
		if err := s.Send(p.server, []byte(prefix+strconv.Itoa(i))); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		p.server.Close()
	}
}

// receiveN receives n connections; it fails on anything else.
func receiveN(t testing.TB, r *handoff.Receiver, n int) (conns []net.Conn, states []string) {
	t.Helper()
	for range n {
		c, st, err := r.Receive()
		if err != nil {
			t.Fatalf("receive %d of %d: %v", len(conns)+1, n, err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
		states = append(states, string(st))
	}
	return conns, states
}

func states(prefix string, from, to int) []string {
	var s []string
	for i := from; i < to; i++ {
		s = append(s, prefix+strconv.Itoa(i))
	}
	return s
}

func TestBrokerHandsOver(t *testing.T) {
	f := newTestBroker(t)
	f.b.SetCurrent(2)
	r := f.receiver(t, 2)
	ps := tcpPairs(t, 50)
	s := f.sender(t, 1)
	sendAll(t, s, ps, "state-")
	if err := s.Done(); err != nil {
		t.Fatalf("Done: %v", err)
	}
	conns, got := receiveN(t, r, len(ps))
	if want := states("state-", 0, 50); !equal(got, want) {
		t.Fatalf("states %q, want %q in order", got, want)
	}
	for i, c := range conns {
		if _, ok := c.(*net.TCPConn); !ok {
			t.Fatalf("received a %T, want a *net.TCPConn", c)
		}
		echo(t, ps[i], c, "hello-"+strconv.Itoa(i))
	}
	f.waitHeld(t, 0) // every ACK closed relaunch's copy
	f.log.wait(t, "handoff: gen 1 (pid")
	if line := f.log.wait(t, "handed over"); !strings.Contains(line, "handed over 50 connections") {
		t.Errorf("log line %q", line)
	}
	// Closing a received connection now ends it: nobody else holds it.
	conns[0].Close()
	clientSeesEOF(t, ps[0])
}

func equal(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00")
}

func TestBrokerQueuesUntilReceiver(t *testing.T) {
	f := newTestBroker(t)
	f.b.SetCurrent(2)
	ps := tcpPairs(t, 10)
	s := f.sender(t, 1)
	sendAll(t, s, ps, "q")
	if err := s.Done(); err != nil {
		t.Fatal(err)
	}
	f.waitHeld(t, 10)
	f.log.wait(t, "handed over 10 connections in ")
	f.log.wait(t, "; gen 2 has no receiver: relaunch holds 10 connections for the next one")
	for _, p := range ps {
		clientStillOpen(t, p) // held by relaunch: still open
	}
	r := f.receiver(t, 2)
	conns, got := receiveN(t, r, 10)
	if want := states("q", 0, 10); !equal(got, want) {
		t.Fatalf("states %q, want %q", got, want)
	}
	for i, c := range conns {
		echo(t, ps[i], c, "late")
	}
	f.waitHeld(t, 0)
}

// A starting generation connects its receiver early; it gets connections
// once it is current, and the previous current's receiver gets END.
func TestBrokerStartingReceiver(t *testing.T) {
	f := newTestBroker(t)
	f.b.SetCurrent(2)
	r2 := f.receiver(t, 2)
	r3 := f.receiver(t, 3) // gen 3 is starting
	ps := tcpPairs(t, 6)
	s := f.sender(t, 1)
	sendAll(t, s, ps[:3], "a")
	_, got := receiveN(t, r2, 3)
	if !equal(got, states("a", 0, 3)) {
		t.Fatalf("gen 2 got %q", got)
	}
	f.b.SetCurrent(3)
	if _, _, err := r2.Receive(); err != io.EOF {
		t.Fatalf("gen 2's receiver after gen 3 became current: %v, want io.EOF", err)
	}
	for i, p := range ps[3:] {
		if err := s.Send(p.server, []byte("a"+strconv.Itoa(3+i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Done(); err != nil {
		t.Fatal(err)
	}
	conns, got := receiveN(t, r3, 3)
	if !equal(got, states("a", 3, 6)) {
		t.Fatalf("gen 3 got %q", got)
	}
	echo(t, ps[5], conns[2], "x")
	f.waitHeld(t, 0)
}

func TestBrokerRefusals(t *testing.T) {
	f := newTestBroker(t)
	f.b.SetCurrent(5)
	f.receiver(t, 5)
	cases := []struct {
		name string
		gen  int // 0: a pid of no generation
		send bool
		why  string
	}{
		{"sender of the current generation", 5, true, "gen 5 is the current generation"},
		{"sender of a starting generation", 6, true, "gen 6 is still starting"},
		{"sender of no generation", 0, true, "not a process of any generation"},
		{"receiver of a draining generation", 4, false, "gen 4 is not current (gen 5 is)"},
		{"second receiver", 5, false, "gen 5 has a receiver already"},
		{"receiver of no generation", 0, false, "not a process of any generation"},
	}
	for _, c := range cases {
		f.gens.set(c.gen)
		var err error
		if c.send {
			_, err = handoff.DialPath(f.path)
		} else {
			_, err = handoff.ListenPath(f.path)
		}
		if !errors.Is(err, handoff.ErrRefused) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s: %v; want ErrRefused saying %q", c.name, err, c.why)
		}
		f.log.wait(t, c.why)
	}
	// Raw hellos: a wrong version, not a hello.
	for _, c := range []struct {
		msg []byte
		why string
	}{
		{[]byte{wire.HelloSend, 9}, "protocol version 9; relaunch speaks version 1"},
		{[]byte{wire.Conn, 'x'}, "the first message must be a hello"},
	} {
		f.gens.set(4)
		conn := rawDial(t, f.path)
		conn.Write(c.msg)
		if typ, text := rawRead(t, conn); typ != wire.Error || !strings.Contains(text, c.why) {
			t.Errorf("hello %v: reply %d %q; want an ERROR saying %q", c.msg, typ, text, c.why)
		}
		if typ, _ := rawRead(t, conn); typ != 0 {
			t.Errorf("hello %v: the connection stays open after the refusal", c.msg)
		}
	}
}

func rawDial(t testing.TB, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawRead reads one message: its type and the rest; type 0 at the end.
func rawRead(t testing.TB, c *net.UnixConn) (byte, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1+wire.MaxState)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	wire.CloseAll(wire.Rights(oob[:oobn]))
	if errors.Is(err, io.EOF) || n == 0 {
		return 0, ""
	}
	if err != nil {
		t.Fatalf("raw read: %v", err)
	}
	return buf[0], string(buf[1:n])
}

// rawHello connects as gen and says hello; it fails unless relaunch says OK.
func rawHello(t testing.TB, f *brokerFixture, gen int, kind byte) *net.UnixConn {
	t.Helper()
	f.gens.set(gen)
	c := rawDial(t, f.path)
	if _, err := c.Write([]byte{kind, wire.Version}); err != nil {
		t.Fatal(err)
	}
	if typ, text := rawRead(t, c); typ != wire.OK {
		t.Fatalf("hello: reply %d %q", typ, text)
	}
	return c
}

func rawSend(t testing.TB, c *net.UnixConn, msg []byte, fds ...int) {
	t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(msg, oob, nil); err != nil {
		t.Fatalf("raw send: %v", err)
	}
}

// heldFromGen1 makes a broker with gen 2 current that holds n connections
// handed over by gen 1 (states "c0"…), for a receiver to come.
func heldFromGen1(t testing.TB, n int) (*brokerFixture, []*tcpPair) {
	t.Helper()
	f := newTestBroker(t)
	f.b.SetCurrent(2)
	ps := tcpPairs(t, n)
	s := f.sender(t, 1)
	sendAll(t, s, ps, "c")
	if err := s.Done(); err != nil {
		t.Fatal(err)
	}
	return f, ps
}

// A receiver that goes away (dies, closes) loses only what it acknowledged:
// the rest goes to the next receiver, in order, and none twice.
func TestBrokerReceiverGoesAway(t *testing.T) {
	f, ps := heldFromGen1(t, 20)

	// A raw receiver takes 5 (ACKs them), reads 2 more without an ACK,
	// then disconnects as a process that dies does.
	raw := rawHello(t, f, 2, wire.HelloRecv)
	buf := make([]byte, 1+wire.MaxState)
	oob := make([]byte, unix.CmsgSpace(4*4))
	var took []int
	for i := range 7 {
		n, oobn, _, _, err := raw.ReadMsgUnix(buf, oob)
		if err != nil {
			t.Fatal(err)
		}
		fds := wire.Rights(oob[:oobn])
		if buf[0] != wire.Conn || len(fds) != 1 || string(buf[1:n]) != "c"+strconv.Itoa(i) {
			t.Fatalf("message %d: type %d state %q fds %v", i, buf[0], buf[1:n], fds)
		}
		if i < 5 {
			raw.Write([]byte{wire.Ack})
			took = append(took, fds[0])
		} else {
			unix.Close(fds[0]) // died before acknowledging
		}
	}
	f.waitHeld(t, 15)
	raw.Close()
	f.log.wait(t, "took 5 connections and went away before taking")
	for _, fd := range took {
		unix.Close(fd) // the dead receiver's copies
	}
	for _, p := range ps[:5] {
		clientSeesEOF(t, p) // taken by the receiver that died: gone with it
	}

	// The same generation reconnects (or the next one is current): it gets
	// the other 15, from the first not acknowledged on.
	r := f.receiver(t, 2)
	conns, got := receiveN(t, r, 15)
	if want := states("c", 5, 20); !equal(got, want) {
		t.Fatalf("states %q, want %q", got, want)
	}
	for i, c := range conns {
		echo(t, ps[5+i], c, "again")
	}
	f.waitHeld(t, 0)
}

// A Go receiver that closes with connections sent to it but not received:
// they go to the next current generation.
func TestBrokerReceiverClosesThenNextGeneration(t *testing.T) {
	f := newTestBroker(t)
	f.b.SetCurrent(2)
	r2 := f.receiver(t, 2)
	ps := tcpPairs(t, 30)
	s := f.sender(t, 1)
	sendAll(t, s, ps, "s")
	if err := s.Done(); err != nil {
		t.Fatal(err)
	}
	receiveN(t, r2, 10)
	f.waitHeld(t, 20) // 20 sent to it or queued, none acknowledged
	r2.Close()
	f.b.Exited(2)
	f.b.SetCurrent(3)
	r3 := f.receiver(t, 3)
	conns, got := receiveN(t, r3, 20)
	if want := states("s", 10, 30); !equal(got, want) {
		t.Fatalf("gen 3 got %q, want %q", got, want)
	}
	echo(t, ps[29], conns[19], "last")
	f.waitHeld(t, 0)
}

// exited: the current generation's receiver gets END; what comes after
// waits for the next current generation.
func TestBrokerCurrentExits(t *testing.T) {
	f := newTestBroker(t)
	f.b.SetCurrent(2)
	r2 := f.receiver(t, 2)
	f.b.Exited(2)
	if _, _, err := r2.Receive(); err != io.EOF {
		t.Fatalf("receiver of an exited generation: %v, want io.EOF", err)
	}
	ps := tcpPairs(t, 4)
	s := f.sender(t, 1)
	sendAll(t, s, ps, "e")
	s.Done()
	f.waitHeld(t, 4)
	f.b.SetCurrent(3)
	r3 := f.receiver(t, 3)
	_, got := receiveN(t, r3, 4)
	if !equal(got, states("e", 0, 4)) {
		t.Fatalf("gen 3 got %q", got)
	}
}

// The window: a receiver that does not acknowledge gets defaultWindow
// connections and no more until it does.
func TestBrokerWindow(t *testing.T) {
	f := newTestBroker(t)
	f.b.mu.Lock()
	f.b.window = 3
	f.b.mu.Unlock()
	f.b.SetCurrent(2)
	raw := rawHello(t, f, 2, wire.HelloRecv)
	ps := tcpPairs(t, 5)
	s := f.sender(t, 1)
	sendAll(t, s, ps, "w")
	s.Done()
	buf := make([]byte, 1+wire.MaxState)
	oob := make([]byte, unix.CmsgSpace(4*4))
	read := func() string {
		raw.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, oobn, _, _, err := raw.ReadMsgUnix(buf, oob)
		wire.CloseAll(wire.Rights(oob[:oobn]))
		if err != nil {
			return ""
		}
		return string(buf[1:n])
	}
	for i := range 3 {
		if got := read(); got != "w"+strconv.Itoa(i) {
			t.Fatalf("message %d: %q", i, got)
		}
	}
	if got := read(); got != "" {
		t.Fatalf("a 4th message %q beyond the window of 3", got)
	}
	raw.Write([]byte{wire.Ack})
	if got := read(); got != "w3" {
		t.Fatalf("after an ACK: %q, want w3", got)
	}
}

// Malformed messages are rejected one by one, their fds closed, and the
// good ones around them still delivered.
func TestBrokerMalformed(t *testing.T) {
	f := newTestBroker(t)
	f.b.mu.Lock()
	f.b.logCap = 20
	f.b.mu.Unlock()
	f.b.SetCurrent(2)
	r := f.receiver(t, 2)
	ps := tcpPairs(t, 2)
	c := rawHello(t, f, 1, wire.HelloSend)

	conn := func(p *tcpPair) int {
		file, err := p.server.File()
		if err != nil {
			t.Fatal(err)
		}
		fd, _ := unix.Dup(int(file.Fd()))
		file.Close()
		p.server.Close()
		return fd
	}
	// The first good one.
	rawSend(t, c, []byte{wire.Conn, 'g', '0'}, conn(ps[0]))

	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pipe[0])
	pair := func() (keep, send int) {
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(sp[0]) })
		return sp[0], sp[1]
	}
	keepA, sendA := pair()
	keepB, sendB := pair()
	keepC, sendC := pair()
	keepD, sendD := pair()
	rawSend(t, c, []byte{0x7f, 1, 2})                                                 // unknown type
	rawSend(t, c, []byte{wire.Conn, 'n', 'o', 'f', 'd'})                              // no fd
	rawSend(t, c, []byte{wire.Conn, 'p'}, pipe[1])                                    // not a socket
	rawSend(t, c, []byte{wire.Conn, 't', 'w', 'o'}, sendA, sendB)                     // two fds
	rawSend(t, c, append([]byte{wire.Conn}, make([]byte, wire.MaxState+1)...), sendC) // state too big
	rawSend(t, c, []byte{})                                                           // empty
	rawSend(t, c, []byte{wire.Ack}, sendD)                                            // an ACK, from a sender
	for _, fd := range []int{pipe[1], sendA, sendB, sendC, sendD} {
		unix.Close(fd) // relaunch holds the only copies now
	}
	// The second good one, after all that.
	rawSend(t, c, []byte{wire.Conn, 'g', '1'}, conn(ps[1]))
	rawSend(t, c, []byte{wire.End})
	typ, text := rawRead(t, c)
	if typ != wire.Error || !strings.Contains(text, "7 of 9 messages rejected") || !strings.Contains(text, "unknown message type 127") {
		t.Errorf("reply to END: %d %q; want an ERROR: 7 of 9 rejected, the first an unknown type", typ, text)
	}

	// Delivered: exactly the two good ones, in order.
	conns, got := receiveN(t, r, 2)
	if !equal(got, []string{"g0", "g1"}) {
		t.Fatalf("delivered %q, want g0 g1", got)
	}
	echo(t, ps[0], conns[0], "ok0")
	echo(t, ps[1], conns[1], "ok1")
	f.waitHeld(t, 0)

	// Closed: every fd of a rejected message (their peers see the end).
	eof := func(what string, fd int) {
		unix.SetNonblock(fd, false)
		tv := unix.Timeval{Sec: 5}
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		var b [1]byte
		if n, err := unix.Read(fd, b[:]); n != 0 || err != nil {
			t.Errorf("%s: read %d, %v; want the end (relaunch closed the other end)", what, n, err)
		}
	}
	var b [1]byte
	if n, err := unix.Read(pipe[0], b[:]); n != 0 || err != nil {
		t.Errorf("the pipe sent as a connection: read %d, %v; want EOF (relaunch closed it)", n, err)
	}
	eof("two fds, first", keepA)
	eof("two fds, second", keepB)
	eof("state too big", keepC)
	eof("an ACK with an fd", keepD)

	for _, why := range []string{
		"unknown message type 127",
		"a connection message with 0 fds instead of 1",
		"the fd is not a socket but a pipe",
		"a connection message with 2 fds instead of 1",
		"a state over 65536 bytes",
		"an empty message",
		"unknown message type 7",
	} {
		if line := f.log.wait(t, why); !strings.Contains(line, "handoff: gen 1 (pid") || !strings.Contains(line, "rejected message") {
			t.Errorf("log line %q", line)
		}
	}
	f.log.wait(t, "handed over 2 connections")
}

// Beyond the limit, connections are rejected (closed) and counted; Done says so.
func TestBrokerLimit(t *testing.T) {
	f := newTestBroker(t)
	f.b.mu.Lock()
	f.b.maxHeld = 5
	f.b.mu.Unlock()
	f.b.SetCurrent(2)
	ps := tcpPairs(t, 8)
	s := f.sender(t, 1)
	sendAll(t, s, ps, "l")
	err := s.Done()
	if !errors.Is(err, handoff.ErrRejected) || !strings.Contains(err.Error(), "3 of 8 messages rejected") {
		t.Fatalf("Done: %v; want ErrRejected, 3 of 8", err)
	}
	f.log.wait(t, "relaunch holds 5 handed-over connections already, its limit")
	for _, p := range ps[5:] {
		clientSeesEOF(t, p)
	}
	r := f.receiver(t, 2)
	_, got := receiveN(t, r, 5)
	if !equal(got, states("l", 0, 5)) {
		t.Fatalf("got %q", got)
	}
}

// When relaunch stops, what no generation took is closed and counted.
func TestBrokerClose(t *testing.T) {
	f := newTestBroker(t)
	f.b.SetCurrent(2)
	ps := tcpPairs(t, 7)
	s := f.sender(t, 1)
	sendAll(t, s, ps, "z")
	s.Close() // no END: kept anyway
	f.log.wait(t, "went away without END after handing over 7 connections")
	f.waitHeld(t, 7)
	if n := f.b.Close(); n != 7 {
		t.Fatalf("close() = %d, want 7", n)
	}
	f.log.wait(t, "relaunch stops holding 7 connections that no generation took: closed")
	for _, p := range ps {
		clientSeesEOF(t, p)
	}
	if _, err := os.Stat(f.path); !os.IsNotExist(err) {
		t.Errorf("the socket file is still there after close: %v", err)
	}
	if n := f.b.Close(); n != 0 {
		t.Errorf("a second close() = %d", n)
	}
}

// Connections sent to a receiver but not acknowledged when relaunch stops
// are closed and counted too.
func TestBrokerCloseCountsUnacknowledged(t *testing.T) {
	f := newTestBroker(t)
	f.b.SetCurrent(2)
	raw := rawHello(t, f, 2, wire.HelloRecv)
	ps := tcpPairs(t, 3)
	s := f.sender(t, 1)
	sendAll(t, s, ps, "u")
	s.Done()
	f.waitHeld(t, 3)
	_ = raw // never reads nor acknowledges
	if n := f.b.Close(); n != 3 {
		t.Fatalf("close() = %d, want 3", n)
	}
}

// Two senders at once (two draining generations): each one's order is kept.
func TestBrokerTwoSenders(t *testing.T) {
	f := newTestBroker(t)
	f.b.SetCurrent(3)
	r := f.receiver(t, 3)
	a, b := tcpPairs(t, 40), tcpPairs(t, 40)
	sa, sb := f.sender(t, 1), f.sender(t, 2)
	var wg sync.WaitGroup
	for _, x := range []struct {
		s  *handoff.Sender
		ps []*tcpPair
		p  string
	}{{sa, a, "a"}, {sb, b, "b"}} {
		wg.Go(func() {
			for i, p := range x.ps {
				if err := x.s.Send(p.server, []byte(x.p+strconv.Itoa(i))); err != nil {
					t.Error(err)
				}
				p.server.Close()
			}
			if err := x.s.Done(); err != nil {
				t.Error(err)
			}
		})
	}
	_, got := receiveN(t, r, 80)
	wg.Wait()
	next := map[byte]int{}
	for _, st := range got {
		if st != string(st[0])+strconv.Itoa(next[st[0]]) {
			t.Fatalf("out of order: %q after %d of %c; all: %q", st, next[st[0]], st[0], got)
		}
		next[st[0]]++
	}
}

// A sender in another process that dies half-way: what it sent is
// delivered, what it had not sent dies with it.
func TestBrokerSenderDies(t *testing.T) {
	f := newTestBroker(t)
	f.b.SetCurrent(2)
	r := f.receiver(t, 2)
	ps := tcpPairs(t, 10)
	cmd := exec.Command(os.Args[0], "-test.run=^TestBrokerHelperProcess$")
	cmd.Env = append(os.Environ(), "BROKER_HELPER=send-then-die", "BROKER_PATH="+f.path, "BROKER_SEND=4")
	for _, p := range ps {
		file, err := p.server.File()
		if err != nil {
			t.Fatal(err)
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, file)
		defer file.Close()
	}
	cmd.Stderr = os.Stderr
	// The child's pid is known only once it runs: it waits for a byte on
	// stdin before it says hello.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.gens.setPid(cmd.Process.Pid, 1)
	for _, file := range cmd.ExtraFiles {
		file.Close()
	}
	for _, p := range ps {
		p.server.Close() // only the child holds them now
	}
	stdin.Write([]byte{1})
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the helper: %v; want it killed by SIGKILL", err)
	}
	f.log.wait(t, fmt.Sprintf("gen 1 (pid %d) went away without END after handing over 4 connections", cmd.Process.Pid))
	conns, got := receiveN(t, r, 4)
	if !equal(got, states("d", 0, 4)) {
		t.Fatalf("got %q", got)
	}
	for i, c := range conns {
		echo(t, ps[i], c, "survived")
	}
	for _, p := range ps[4:] {
		clientSeesEOF(t, p)
	}
	f.waitHeld(t, 0)
}

// TestBrokerHelperProcess is the child of the tests above, not a test.
func TestBrokerHelperProcess(t *testing.T) {
	if os.Getenv("BROKER_HELPER") != "send-then-die" {
		t.Skip("a helper process")
	}
	io.ReadFull(os.Stdin, make([]byte, 1))
	s, err := handoff.DialPath(os.Getenv("BROKER_PATH"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
	n, _ := strconv.Atoi(os.Getenv("BROKER_SEND"))
	for i := range n {
		f := os.NewFile(uintptr(3+i), "conn")
		if err := s.SendFile(f, []byte("d"+strconv.Itoa(i))); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(3)
		}
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// BenchmarkBroker: one op hands N TCP connections from a sender to a
// receiver through the broker, in-process. The test process holds both ends
// of every connection: N = 10 000 needs RLIMIT_NOFILE above 20 000.
func BenchmarkBroker(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			needNofile(b, uint64(2*n+1000))
			f := newTestBroker(b)
			f.b.SetCurrent(2)
			r := f.receiver(b, 2)
			var total time.Duration
			for b.Loop() {
				b.StopTimer()
				ps := tcpPairs(b, n)
				b.StartTimer()
				t0 := time.Now()
				s := f.sender(b, 1)
				done := make(chan error, 1)
				go func() {
					for _, p := range ps {
						if err := s.Send(p.server, []byte("state")); err != nil {
							done <- err
							return
						}
						p.server.Close()
					}
					done <- s.Done()
				}()
				for range n {
					c, _, err := r.Receive()
					if err != nil {
						b.Fatal(err)
					}
					c.Close()
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				total += time.Since(t0)
				b.StopTimer()
				for _, p := range ps {
					p.client.Close()
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Microseconds())/float64(b.N)/float64(n), "µs/conn")
		})
	}
}

// needNofile lifts RLIMIT_NOFILE to at least n (the hard limit too, with
// CAP_SYS_RESOURCE), or skips.
func needNofile(t testing.TB, n uint64) {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur >= n {
		return
	}
	want := rl
	want.Cur = max(n, rl.Cur)
	want.Max = max(n, rl.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		t.Skipf("needs RLIMIT_NOFILE >= %d; it is %d (hard %d) and cannot be raised: %v", n, rl.Cur, rl.Max, err)
	}
}

// A receiver that acknowledges and dies at once, with connections sent to
// it still unread: the kernel then reports ECONNRESET on relaunch's end
// before the ACKs, which must count all the same. Repeated, as the order of
// the ACKs read and the death is a race that the broker must win every time.
func TestBrokerReceiverAcksThenDies(t *testing.T) {
	for round := range 20 {
		f, _ := heldFromGen1(t, 20)
		raw := rawHello(t, f, 2, wire.HelloRecv)
		buf := make([]byte, 1+wire.MaxState)
		oob := make([]byte, unix.CmsgSpace(4*4))
		for range 5 {
			_, oobn, _, _, err := raw.ReadMsgUnix(buf, oob)
			if err != nil {
				t.Fatal(err)
			}
			wire.CloseAll(wire.Rights(oob[:oobn]))
			raw.Write([]byte{wire.Ack})
		}
		raw.Close() // at once: relaunch may not have read the ACKs yet, and more CONNs wait unread
		line := f.log.wait(t, fmt.Sprintf("handoff: gen 2 (pid %d) took", os.Getpid()))
		if !strings.Contains(line, "took 5 connections") {
			t.Fatalf("round %d: %s; want 5 taken", round, line)
		}
		f.waitHeld(t, 15) // the rest, for the next receiver
	}
}
