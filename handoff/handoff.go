package handoff

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/relaunch/relaunch/internal/wire"
)

// Env is the variable relaunch sets to the handoff socket's path.
const Env = "RELAUNCH_HANDOFF"

// MaxState is the largest state blob one connection may carry.
const MaxState = wire.MaxState

// replyTimeout bounds the wait for relaunch's reply to a hello or to END.
var replyTimeout = 10 * time.Second

var (
	// ErrUnavailable: RELAUNCH_HANDOFF is not set (not run by relaunch, or
	// by one without the handoff).
	ErrUnavailable = errors.New("handoff: " + Env + " is not set")
	// ErrRefused: relaunch refused the hello; the error says why (e.g. this
	// generation is the current one, so it has nobody to hand over to).
	ErrRefused = errors.New("refused by relaunch")
	// ErrRejected: Done's reply says relaunch rejected some connections;
	// the error says which. Their fds were closed.
	ErrRejected = errors.New("rejected by relaunch")
)

// Available reports whether RELAUNCH_HANDOFF is set.
func Available() bool { return os.Getenv(Env) != "" }

// Sender hands a draining generation's connections to relaunch. Its methods
// are safe for concurrent use.
type Sender struct {
	mu    sync.Mutex
	c     *net.UnixConn
	sent  int
	ended bool
}

// Dial connects to RELAUNCH_HANDOFF as a sender. relaunch accepts only a
// process of a draining generation; otherwise the error wraps ErrRefused
// and says why.
func Dial() (*Sender, error) {
	path := os.Getenv(Env)
	if path == "" {
		return nil, ErrUnavailable
	}
	return DialPath(path)
}

// DialPath is Dial on the handoff socket at path.
func DialPath(path string) (*Sender, error) {
	c, err := hello(path, wire.HelloSend)
	if err != nil {
		return nil, err
	}
	return &Sender{c: c}, nil
}

// Send hands conn over with state (at most MaxState bytes). conn must have
// a file descriptor: every net.Conn of package net does (*net.TCPConn,
// *net.UnixConn…); a *tls.Conn does not. When Send returns nil, relaunch
// holds its own reference: close conn (never shut it down) and the peer
// notices nothing.
func (s *Sender) Send(conn net.Conn, state []byte) error {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return fmt.Errorf("handoff: send: a %T has no file descriptor (it is not a syscall.Conn); hand over the connection under it", conn)
	}
	return s.send(sc, state)
}

// SendFile is Send for a connection held as a file, e.g. os.NewFile(fd, "").
func (s *Sender) SendFile(f *os.File, state []byte) error { return s.send(f, state) }

func (s *Sender) send(sc syscall.Conn, state []byte) error {
	if len(state) > MaxState {
		return fmt.Errorf("handoff: send: state of %d bytes, more than MaxState (%d)", len(state), MaxState)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("handoff: send: %w", err)
	}
	msg := make([]byte, 1+len(state))
	msg[0] = wire.Conn
	copy(msg[1:], state)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return errors.New("handoff: send after Done or Close")
	}
	var werr error
	cerr := rc.Control(func(fd uintptr) {
		_, _, werr = s.c.WriteMsgUnix(msg, syscall.UnixRights(int(fd)), nil)
	})
	if cerr != nil {
		return fmt.Errorf("handoff: send: %w", cerr) // conn closed already
	}
	if werr != nil {
		return fmt.Errorf("handoff: send: %w", werr)
	}
	s.sent++
	return nil
}

// Done tells relaunch that no more connections follow, waits for its reply
// and closes the sender. nil means relaunch took every connection sent;
// otherwise the error says why (it wraps ErrRejected when relaunch
// rejected some: those were closed).
func (s *Sender) Done() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return errors.New("handoff: Done after Done or Close")
	}
	s.ended = true
	defer s.c.Close()
	if _, err := s.c.Write([]byte{wire.End}); err != nil {
		return fmt.Errorf("handoff: done: %w", err)
	}
	why, err := readReply(s.c, "done")
	if err != nil {
		return err
	}
	if why != "" {
		return fmt.Errorf("handoff: done (%d sent): %w: %s", s.sent, ErrRejected, why)
	}
	return nil
}

// Close closes the sender without Done. relaunch keeps every connection
// sent so far.
func (s *Sender) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return nil
	}
	s.ended = true
	return s.c.Close()
}

// Receiver takes the connections handed over to the current generation.
type Receiver struct {
	mu  sync.Mutex // one Receive at a time: each ACK answers the message just read
	c   *net.UnixConn
	buf []byte
	oob []byte
	eof bool
}

// Listen connects to RELAUNCH_HANDOFF as this generation's receiver. A
// starting generation may connect at once: its connections come once it is
// current. relaunch refuses (ErrRefused) a draining generation, or a second
// receiver of the same generation.
func Listen() (*Receiver, error) {
	path := os.Getenv(Env)
	if path == "" {
		return nil, ErrUnavailable
	}
	return ListenPath(path)
}

// ListenPath is Listen on the handoff socket at path.
func ListenPath(path string) (*Receiver, error) {
	c, err := hello(path, wire.HelloRecv)
	if err != nil {
		return nil, err
	}
	return &Receiver{
		c:   c,
		buf: make([]byte, 1+MaxState+1),
		oob: make([]byte, syscall.CmsgSpace(4*4)),
	}, nil
}

// Receive waits for the next connection and returns it with its state. It
// returns io.EOF when this generation will receive no more (a newer one is
// current, or relaunch is gone); the receiver is closed then. A socket that
// net.FileConn does not take is closed, with an error that says so: use
// ReceiveFile when the old generation may hand over such sockets.
func (r *Receiver) Receive() (net.Conn, []byte, error) {
	f, state, err := r.ReceiveFile()
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, state, fmt.Errorf("handoff: receive: the fd is not a connection Go's net package knows (use ReceiveFile): %w", err)
	}
	return c, state, nil
}

// ReceiveFile is Receive returning the connection as a file, for sockets
// net.FileConn does not take.
func (r *Receiver) ReceiveFile() (*os.File, []byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.eof {
		return nil, nil, io.EOF
	}
	n, oobn, flags, _, err := r.c.ReadMsgUnix(r.buf, r.oob)
	fds := wire.Rights(r.oob[:oobn])
	if errors.Is(err, io.EOF) || err == nil && n == 0 {
		wire.CloseAll(fds)
		r.eof = true
		r.c.Close()
		return nil, nil, io.EOF
	}
	if err != nil {
		wire.CloseAll(fds)
		return nil, nil, fmt.Errorf("handoff: receive: %w", err)
	}
	switch {
	case r.buf[0] == wire.End:
		wire.CloseAll(fds)
		r.eof = true
		r.c.Close()
		return nil, nil, io.EOF
	case r.buf[0] != wire.Conn || len(fds) != 1 || flags&(syscall.MSG_TRUNC|syscall.MSG_CTRUNC) != 0 || n > 1+MaxState:
		wire.CloseAll(fds)
		return nil, nil, fmt.Errorf("handoff: receive: malformed message from relaunch (type %d, %d bytes, %d fds)", r.buf[0], n, len(fds))
	}
	// The fd is ours now: acknowledge before anything else can fail, so
	// relaunch closes its copy. If the ACK cannot be sent, relaunch gives
	// the connection to the next generation: drop ours.
	if _, err := r.c.Write([]byte{wire.Ack}); err != nil {
		wire.CloseAll(fds)
		return nil, nil, fmt.Errorf("handoff: receive: acknowledging: %w", err)
	}
	state := append([]byte(nil), r.buf[1:n]...)
	return os.NewFile(uintptr(fds[0]), "handoff"), state, nil
}

// Close closes the receiver. Connections relaunch sent that were not
// received yet go to the next generation that receives.
func (r *Receiver) Close() error { return r.c.Close() }

// hello connects to the socket at path and introduces this process as a
// sender or a receiver.
func hello(path string, kind byte) (*net.UnixConn, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("handoff: %w", err)
	}
	if _, err := c.Write([]byte{kind, wire.Version}); err != nil {
		c.Close()
		return nil, fmt.Errorf("handoff: hello: %w", err)
	}
	why, err := readReply(c, "hello")
	if err == nil && why != "" {
		err = fmt.Errorf("handoff: hello: %w: %s", ErrRefused, why)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// readReply reads relaunch's reply: OK (""), or ERROR and its text.
func readReply(c *net.UnixConn, what string) (why string, err error) {
	c.SetReadDeadline(time.Now().Add(replyTimeout))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	wire.CloseAll(wire.Rights(oob[:oobn]))
	switch {
	case errors.Is(err, io.EOF) || err == nil && n == 0:
		return "", fmt.Errorf("handoff: %s: relaunch closed the connection without a reply", what)
	case err != nil:
		return "", fmt.Errorf("handoff: %s: waiting for relaunch's reply: %w", what, err)
	case buf[0] == wire.OK && n == 1:
		return "", nil
	case buf[0] == wire.Error:
		if n == 1 {
			return "no reason given", nil
		}
		return string(buf[1:n]), nil
	}
	return "", fmt.Errorf("handoff: %s: unexpected reply from relaunch (type %d, %d bytes)", what, buf[0], n)
}
