package handoff

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relaunch/relaunch/internal/wire"
)

// The client against a fake relaunch written from the wire format in
// doc.go, byte by byte, with real SEQPACKET sockets and real TCP
// connections. (internal/broker/broker_test.go runs this client against
// the real relaunch side.)

// fake is relaunch's end of one handoff connection.
type fake struct {
	t *testing.T
	c *net.UnixConn
}

// listenFake listens on a new handoff socket and returns its path and the
// connections made to it.
func listenFake(t *testing.T) (string, <-chan *fake) {
	t.Helper()
	dir, err := os.MkdirTemp("", "hof")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := dir + "/handoff.sock"
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan *fake, 16)
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			ch <- &fake{t: t, c: c}
		}
	}()
	return path, ch
}

// next returns the next connection made to the fake.
func next(t *testing.T, ch <-chan *fake) *fake {
	t.Helper()
	select {
	case f := <-ch:
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("nobody connected")
		return nil
	}
}

// read reads one packet: its bytes and the fds it carries; nil at the end.
func (f *fake) read() ([]byte, []int) {
	f.t.Helper()
	f.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2+MaxState)
	oob := make([]byte, syscall.CmsgSpace(4*8))
	n, oobn, _, _, err := f.c.ReadMsgUnix(buf, oob)
	fds := wire.Rights(oob[:oobn])
	if errors.Is(err, io.EOF) {
		return nil, fds
	}
	if err != nil {
		f.t.Fatalf("fake relaunch: read: %v", err)
	}
	return buf[:n], fds
}

func (f *fake) write(msg []byte, fds ...int) {
	f.t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	if _, _, err := f.c.WriteMsgUnix(msg, oob, nil); err != nil {
		f.t.Fatalf("fake relaunch: write: %v", err)
	}
}

// expect reads a packet and fails unless it is want, with no fd.
func (f *fake) expect(want ...byte) {
	f.t.Helper()
	got, fds := f.read()
	if string(got) != string(want) || len(fds) != 0 {
		f.t.Fatalf("fake relaunch read %v with fds %v, want %v", got, fds, want)
	}
}

// tcpPair returns both ends of a real TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// sameFile reports whether fd refers to the same socket as c.
func sameFile(t *testing.T, fd int, c syscall.Conn) bool {
	t.Helper()
	var a, b syscall.Stat_t
	if err := syscall.Fstat(fd, &a); err != nil {
		t.Fatal(err)
	}
	rc, _ := c.SyscallConn()
	rc.Control(func(cfd uintptr) { syscall.Fstat(int(cfd), &b) })
	return a.Ino == b.Ino && a.Dev == b.Dev
}

func TestAvailable(t *testing.T) {
	t.Setenv(Env, "")
	if Available() {
		t.Error("Available with RELAUNCH_HANDOFF empty")
	}
	if _, err := Dial(); err != ErrUnavailable {
		t.Errorf("Dial: %v, want ErrUnavailable", err)
	}
	if _, err := Listen(); err != ErrUnavailable {
		t.Errorf("Listen: %v, want ErrUnavailable", err)
	}
	path, ch := listenFake(t)
	t.Setenv(Env, path)
	if !Available() {
		t.Error("not Available with RELAUNCH_HANDOFF set")
	}
	go func() {
		f := <-ch
		f.read()
		f.write([]byte{wire.OK})
	}()
	s, err := Dial()
	if err != nil {
		t.Fatalf("Dial with RELAUNCH_HANDOFF set: %v", err)
	}
	s.Close()
}

// The sender's bytes: HELLO_SEND 1; CONN state + one fd; END; then the
// reply decides Done's result.
func TestSenderWire(t *testing.T) {
	path, ch := listenFake(t)
	client, server := tcpPair(t)
	done := make(chan error, 1)
	go func() {
		s, err := DialPath(path)
		if err == nil {
			err = s.Send(server, []byte("counter=41"))
		}
		if err == nil {
			server.Close() // ours only: relaunch holds it
			err = s.SendFile(os.Stdin, nil)
		}
		if err == nil {
			err = s.Done()
		}
		done <- err
	}()
	f := next(t, ch)
	f.expect(wire.HelloSend, 1)
	f.write([]byte{wire.OK})

	msg, fds := f.read()
	if string(msg) != "\x03counter=41" || len(fds) != 1 {
		t.Fatalf("CONN: %q with %d fds; want \"\\x03counter=41\" with 1", msg, len(fds))
	}
	// The fd is the connection itself: it talks to the client.
	conn := os.NewFile(uintptr(fds[0]), "passed")
	defer conn.Close()
	if _, err := conn.Write([]byte("hi\n")); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := bufio.NewReader(client).ReadString('\n'); line != "hi\n" || err != nil {
		t.Fatalf("client read %q, %v", line, err)
	}

	msg, fds = f.read() // the empty state, an fd that is not a socket: the client does not judge
	if string(msg) != "\x03" || len(fds) != 1 || !sameFile(t, fds[0], os.Stdin) {
		t.Fatalf("CONN with an empty state: %q, fds %v", msg, fds)
	}
	syscall.Close(fds[0])
	f.expect(wire.End)
	f.write([]byte{wire.OK})
	if err := <-done; err != nil {
		t.Fatalf("sender: %v", err)
	}
	if msg, _ := f.read(); msg != nil {
		t.Errorf("after Done: %q, want the end of the connection", msg)
	}
}

func TestDialRefused(t *testing.T) {
	path, ch := listenFake(t)
	go func() {
		f := <-ch
		f.read()
		f.write(append([]byte{wire.Error}, "gen 3 is the current generation"...))
		f.c.Close()
	}()
	_, err := DialPath(path)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "gen 3 is the current generation") {
		t.Fatalf("DialPath: %v; want ErrRefused with relaunch's reason", err)
	}
	if _, err := DialPath(path + ".missing"); err == nil || !errors.Is(err, syscall.ENOENT) {
		t.Errorf("DialPath to no socket: %v; want ENOENT", err)
	}
}

func TestDoneRejected(t *testing.T) {
	path, ch := listenFake(t)
	_, server := tcpPair(t)
	go func() {
		f := <-ch
		f.read()
		f.write([]byte{wire.OK})
		_, fds := f.read()
		for _, fd := range fds {
			syscall.Close(fd)
		}
		f.read()
		f.write(append([]byte{wire.Error}, "1 of 1 messages rejected, the first: over the limit"...))
	}()
	s, err := DialPath(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(server, nil); err != nil {
		t.Fatal(err)
	}
	err = s.Done()
	if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "over the limit") || !strings.Contains(err.Error(), "1 sent") {
		t.Fatalf("Done: %v; want ErrRejected with relaunch's text", err)
	}
	if err := s.Send(server, nil); err == nil {
		t.Error("Send after Done succeeded")
	}
	if err := s.Done(); err == nil {
		t.Error("a second Done succeeded")
	}
}

func TestSendErrors(t *testing.T) {
	path, ch := listenFake(t)
	go func() {
		f := <-ch
		f.read()
		f.write([]byte{wire.OK})
	}()
	s, err := DialPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, server := tcpPair(t)
	if err := s.Send(server, make([]byte, MaxState+1)); err == nil || !strings.Contains(err.Error(), "more than MaxState") {
		t.Errorf("a state over MaxState: %v", err)
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if err := s.Send(p1, nil); err == nil || !strings.Contains(err.Error(), "no file descriptor") {
		t.Errorf("a net.Pipe: %v", err)
	}
	server.Close()
	if err := s.Send(server, nil); err == nil {
		t.Error("Send of a closed connection succeeded")
	}
}

// A fake that never answers: Dial gives up after replyTimeout.
func TestReplyTimeout(t *testing.T) {
	defer func(d time.Duration) { replyTimeout = d }(replyTimeout)
	replyTimeout = 100 * time.Millisecond
	path, _ := listenFake(t)
	_, err := DialPath(path)
	if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "waiting for relaunch's reply") {
		t.Fatalf("DialPath to a silent relaunch: %v", err)
	}
}

// The receiver's bytes: HELLO_RECV 1; for each CONN one ACK, sent before
// Receive returns; END makes it close.
func TestReceiverWire(t *testing.T) {
	path, ch := listenFake(t)
	type got struct {
		c     net.Conn
		state []byte
		err   error
	}
	gots := make(chan got, 4)
	go func() {
		r, err := ListenPath(path)
		if err != nil {
			gots <- got{err: err}
			return
		}
		for {
			c, st, err := r.Receive()
			gots <- got{c, st, err}
			if err != nil {
				return
			}
		}
	}()
	f := next(t, ch)
	f.expect(wire.HelloRecv, 1)
	f.write([]byte{wire.OK})

	client, server := tcpPair(t)
	sf, _ := server.File()
	f.write([]byte("\x03state-1"), int(sf.Fd()))
	sf.Close()
	server.Close() // the receiver holds the only server end now
	f.expect(wire.Ack)
	g := <-gots
	if g.err != nil || string(g.state) != "state-1" {
		t.Fatalf("Receive: %q, %v", g.state, g.err)
	}
	if _, ok := g.c.(*net.TCPConn); !ok {
		t.Fatalf("Receive returned a %T, want *net.TCPConn", g.c)
	}
	g.c.Write([]byte("from the new generation\n"))
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, _ := bufio.NewReader(client).ReadString('\n'); line != "from the new generation\n" {
		t.Fatalf("client read %q", line)
	}
	g.c.Close()

	// A message without an fd is an error, and not acknowledged.
	f.write([]byte("\x03no fd"))
	if g := <-gots; g.err == nil || !strings.Contains(g.err.Error(), "malformed message") {
		t.Fatalf("CONN without an fd: %v", g.err)
	}
}

func TestReceiverEnd(t *testing.T) {
	path, ch := listenFake(t)
	go func() {
		f := <-ch
		f.read()
		f.write([]byte{wire.OK})
		f.write([]byte{wire.End})
	}()
	r, err := ListenPath(path)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, _, err := r.Receive(); err != io.EOF {
			t.Fatalf("after END: %v, want io.EOF", err)
		}
	}
}

// relaunch gone (the connection closed without END): io.EOF too.
func TestReceiverRelaunchGone(t *testing.T) {
	path, ch := listenFake(t)
	go func() {
		f := <-ch
		f.read()
		f.write([]byte{wire.OK})
		f.c.Close()
	}()
	r, err := ListenPath(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.ReceiveFile(); err != io.EOF {
		t.Fatalf("relaunch gone: %v, want io.EOF", err)
	}
}

// Close during a Receive makes it return; the ACK never goes out.
func TestReceiverClose(t *testing.T) {
	path, ch := listenFake(t)
	go func() {
		f := <-ch
		f.read()
		f.write([]byte{wire.OK})
	}()
	r, err := ListenPath(path)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error)
	go func() {
		_, _, err := r.Receive()
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	r.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Receive after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Receive still blocked after Close")
	}
}

// Sends from many goroutines: every message whole, one fd each.
func TestSenderConcurrent(t *testing.T) {
	path, ch := listenFake(t)
	const n = 50
	go func() {
		s, err := DialPath(path)
		if err != nil {
			t.Error(err)
			return
		}
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				f, err := os.Open(os.DevNull)
				if err != nil {
					t.Error(err)
					return
				}
				defer f.Close()
				if err := s.SendFile(f, []byte(fmt.Sprintf("%03d", i))); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if err := s.Done(); err != nil {
			t.Error(err)
		}
	}()
	f := next(t, ch)
	f.expect(wire.HelloSend, 1)
	f.write([]byte{wire.OK})
	seen := map[string]bool{}
	for range n {
		msg, fds := f.read()
		if len(msg) != 4 || msg[0] != wire.Conn || len(fds) != 1 || seen[string(msg)] {
			t.Fatalf("message %q with %d fds", msg, len(fds))
		}
		seen[string(msg)] = true
		syscall.Close(fds[0])
	}
	f.expect(wire.End)
	f.write([]byte{wire.OK})
}
