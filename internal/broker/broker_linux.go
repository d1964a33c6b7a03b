package broker

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/internal/wire"
)

// Tunables; variables so that tests can lower them.
var (
	defaultMaxHeld = 100_000          // fds held at once; fewer when RLIMIT_NOFILE is lower
	maxBytes       = 256 << 20        // state bytes held at once
	defaultWindow  = 256              // fds sent to a receiver and not yet acknowledged
	helloWait      = 10 * time.Second // a connection silent that long before its hello is dropped
	pidRetry       = 100 * time.Millisecond
	stopWait       = time.Second // close: time for senders' last messages
	defaultLogCap  = 5           // rejections logged per connection; the rest are counted
)

// Broker is the handoff broker of one relaunch. Its goroutines serve the
// generations; the launcher's loop calls its methods, one at a time, and
// none of them blocks (Close excepted, at exit, briefly).
type Broker struct {
	path    string
	log     *slog.Logger
	genOf   func(pid int) (gen int, ok bool)
	ln      *net.UnixListener
	maxHeld int // defaultMaxHeld, or less (RLIMIT_NOFILE)
	window  int // defaultWindow
	logCap  int // defaultLogCap

	mu        sync.Mutex
	cond      sync.Cond // on mu: the queue, a window, a receiver, current or closed changed
	current   int
	queue     []heldConn // not yet sent to a receiver, in order
	held      int        // fds held: queued and sent but not acknowledged
	heldBytes int
	recvs     map[*recvConn]bool // connected receivers
	conns     map[*net.UnixConn]bool
	closed    bool
	lost      int // fds closed because relaunch stops
	wg        sync.WaitGroup
}

// heldConn is one connection in flight.
type heldConn struct {
	fd  int
	msg []byte // the CONN message as it came: its type byte, then the state
}

// recvConn is a generation's receiving connection.
type recvConn struct {
	gen, pid int
	c        *net.UnixConn
	retired  bool // not (or no longer) the current generation's: gets END, nothing more
	broken   bool // a send failed: nothing more is sent
	gone     bool // disconnected: what it had not acknowledged went back to the queue
	unacked  []heldConn
	taken    int
}

// New listens on path (in relaunch's 0700 runtime directory), bound
// at bind: path itself, or path reached through the directory's fd. genOf
// tells which generation a pid belongs to; it is called from the broker's
// goroutines.
func New(bind, path string, log *slog.Logger, genOf func(pid int) (gen int, ok bool)) (*Broker, error) {
	ln, err := listenHandoff(bind, path)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Broker{path: path, log: log, genOf: genOf, ln: ln, maxHeld: defaultMaxHeld, window: defaultWindow, logCap: defaultLogCap,
		recvs: map[*recvConn]bool{}, conns: map[*net.UnixConn]bool{}}
	b.cond.L = &b.mu
	// Every fd held is one of relaunch's: stay clear of EMFILE, where the
	// kernel would close what it cannot install.
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Cur < uint64(b.maxHeld)+1024 {
		b.maxHeld = max(int(rl.Cur)/2, int(rl.Cur)-1024)
	}
	b.wg.Add(1)
	go b.accept(ln)
	return b, nil
}

func listenHandoff(bind, path string) (*net.UnixListener, error) {
	if len(path) > 107 {
		return nil, fmt.Errorf("the handoff socket path %s is %d bytes, more than the 107 a socket address holds; set TMPDIR to a shorter directory", path, len(path))
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: bind, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("cannot create the handoff socket %s: %v", path, errorText(err))
	}
	return ln, nil
}

// Relisten moves the listening socket to path (relaunch's runtime
// directory was removed and made again): the old socket's file went with
// the old directory. The connections the broker holds stay.
func (b *Broker) Relisten(bind, path string) error {
	ln, err := listenHandoff(bind, path)
	if err != nil {
		return err
	}
	b.ln.SetUnlinkOnClose(false) // its name may reach the new directory now
	b.ln.Close()
	b.ln, b.path = ln, path
	b.wg.Add(1)
	go b.accept(ln)
	return nil
}

// Path is the listening socket's path, what generations get in
// RELAUNCH_HANDOFF.
func (b *Broker) Path() string { return b.path }

// SetCurrent makes gen the generation that receives from now on. The
// receivers of older generations get END.
func (b *Broker) SetCurrent(gen int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.current = gen
	for r := range b.recvs {
		if r.gen < gen {
			r.retired = true
		}
	}
	b.cond.Broadcast()
}

// Exited says generation gen is gone. Its senders' connections are read to
// their end (what is queued there is not lost); its receiver gets nothing
// more, and what it had not acknowledged goes back to the queue when its
// connection closes.
func (b *Broker) Exited(gen int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for r := range b.recvs {
		if r.gen == gen {
			r.retired = true
		}
	}
	b.cond.Broadcast()
}

// Close stops the broker when relaunch stops: it closes every fd it still
// holds, logs how many, and returns that. It waits for the senders' last
// messages (their processes are gone by then) for stopWait at most.
func (b *Broker) Close() (closedInFlight int) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0
	}
	b.closed = true
	b.cond.Broadcast()
	deadline := time.Now().Add(stopWait)
	for c := range b.conns {
		c.SetDeadline(deadline)
	}
	for r := range b.recvs {
		r.c.Close() // whatever it did not acknowledge comes back to the queue
	}
	b.mu.Unlock()
	b.ln.Close() // removes the socket file
	b.wg.Wait()

	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.lost + len(b.queue)
	for _, h := range b.queue {
		unix.Close(h.fd)
	}
	b.queue, b.held, b.heldBytes, b.lost = nil, 0, 0, 0
	if n > 0 {
		b.log.Warn(fmt.Sprintf("handoff: relaunch stops holding %s that no generation took: closed", connections(n)), "connections", n)
	}
	return n
}

func (b *Broker) accept(ln *net.UnixListener) {
	defer b.wg.Done()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			b.log.Warn("handoff: accept: " + errorText(err))
			time.Sleep(100 * time.Millisecond) // EMFILE and the like: do not spin
			continue
		}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			c.Close()
			return
		}
		b.conns[c] = true
		b.wg.Add(1)
		b.mu.Unlock()
		go b.session(c)
	}
}

// session serves one connection: its hello, then its role.
func (b *Broker) session(c *net.UnixConn) {
	defer b.wg.Done()
	defer func() {
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		c.Close()
	}()
	pid := peerPid(c)
	buf := make([]byte, 1+wire.MaxState+1)
	oob := make([]byte, unix.CmsgSpace(4*wire.MaxRights))
	c.SetReadDeadline(time.Now().Add(helloWait))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	wire.CloseAll(wire.Rights(oob[:oobn])) // a hello carries none
	if err != nil || n == 0 {
		return // gone, or silent
	}
	b.mu.Lock()
	if !b.closed {
		c.SetReadDeadline(time.Time{})
	}
	b.mu.Unlock()
	who := fmt.Sprintf("pid %d", pid)
	role := buf[0]
	switch {
	case n != 2 || role != wire.HelloSend && role != wire.HelloRecv:
		b.refuse(c, who, fmt.Sprintf("the first message must be a hello (type %d or %d, then the version), not type %d of %d bytes", wire.HelloSend, wire.HelloRecv, role, n))
		return
	case buf[1] != wire.Version:
		b.refuse(c, who, fmt.Sprintf("protocol version %d; relaunch speaks version %d", buf[1], wire.Version))
		return
	case pid <= 0:
		b.refuse(c, "a process", "its pid is unknown (SO_PEERCRED; another pid namespace?)")
		return
	}
	gen, ok := b.genOf(pid)
	// The launcher records a generation right after forking it; a process
	// could in theory connect before that: ask again, briefly.
	for t := time.Now(); !ok && time.Since(t) < pidRetry; {
		time.Sleep(10 * time.Millisecond)
		gen, ok = b.genOf(pid)
	}
	if !ok {
		b.refuse(c, who, "not a process of any generation of this relaunch")
		return
	}
	who = fmt.Sprintf("gen %d (pid %d)", gen, pid)
	if role == wire.HelloSend {
		b.sender(c, gen, pid, who, buf, oob)
	} else {
		b.receiver(c, gen, pid, who, buf, oob)
	}
}

// Kept is a receiver carried across relaunch's exec of itself. It goes in
// the JSON state the old program hands the new one: its field names are
// part of that format.
type Kept struct {
	Fd  int `json:"fd"`
	Gen int `json:"gen"`
	Pid int `json:"pid"`
}

// Keep describes the broker for relaunch reexec: its listening socket and
// its receivers, whose fds the caller keeps open through the exec. It
// refuses (why != "") while it holds a connection or a sender is connected:
// what is in flight would be lost.
func (b *Broker) Keep() (ln int, recvs []Kept, why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held > 0 || len(b.queue) > 0 {
		return -1, nil, fmt.Sprintf("the handoff holds %s for the next generation", connections(max(b.held, len(b.queue))))
	}
	byConn := map[*net.UnixConn]*recvConn{}
	for r := range b.recvs {
		byConn[r.c] = r
	}
	for c := range b.conns {
		r := byConn[c]
		if r == nil || r.gone || r.broken {
			return -1, nil, "a handoff is in progress"
		}
		recvs = append(recvs, Kept{Fd: rawFd(c), Gen: r.gen, Pid: r.pid})
	}
	return rawFd(b.ln), recvs, ""
}

// Adopt is New for a kept broker, in the new program after relaunch's exec
// of itself: lnFd and recvs are what Keep returned in the old one.
func Adopt(path string, lnFd int, recvs []Kept, log *slog.Logger, genOf func(pid int) (int, bool)) (*Broker, error) {
	f := os.NewFile(uintptr(lnFd), path)
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("adopt the handoff socket: %w", err)
	}
	ln, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("adopt the handoff socket: not a unix socket")
	}
	ln.SetUnlinkOnClose(true)
	b := &Broker{path: path, log: log, genOf: genOf, ln: ln, maxHeld: defaultMaxHeld, window: defaultWindow, logCap: defaultLogCap,
		recvs: map[*recvConn]bool{}, conns: map[*net.UnixConn]bool{}}
	b.cond.L = &b.mu
	for _, k := range recvs {
		f := os.NewFile(uintptr(k.Fd), "handoff receiver")
		c, err := net.FileConn(f)
		f.Close()
		uc, ok := c.(*net.UnixConn)
		if err != nil || !ok {
			continue // the receiver sees its connection end
		}
		r := &recvConn{gen: k.Gen, pid: k.Pid, c: uc}
		b.recvs[r], b.conns[uc] = true, true
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer func() {
				b.mu.Lock()
				delete(b.conns, uc)
				b.mu.Unlock()
				uc.Close()
			}()
			b.serveRecv(r, fmt.Sprintf("gen %d (pid %d)", k.Gen, k.Pid),
				make([]byte, 1+wire.MaxState+1), make([]byte, unix.CmsgSpace(4*wire.MaxRights)))
		}()
	}
	b.wg.Add(1)
	go b.accept(ln)
	return b, nil
}

// rawFd is a socket's fd, or -1.
func rawFd(c syscall.Conn) int {
	fd := -1
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(f uintptr) { fd = int(f) })
	}
	return fd
}

// refuse answers a hello with ERROR, logs it, and leaves the caller to close.
func (b *Broker) refuse(c *net.UnixConn, who, why string) {
	b.log.Warn(fmt.Sprintf("handoff: refused %s: %s", who, why), "reason", why)
	c.Write(append([]byte{wire.Error}, why...))
}

// refuseQuietly is refuse for what an app that opts in does at every stop
// of relaunch: its current generation, told to drain, asks to hand over.
func (b *Broker) refuseQuietly(c *net.UnixConn, who, why string) {
	b.log.Info(fmt.Sprintf("handoff: refused %s: %s", who, why), "reason", why)
	c.Write(append([]byte{wire.Error}, why...))
}

// sender reads a draining generation's CONN messages into the queue until
// END and the connection's end.
func (b *Broker) sender(c *net.UnixConn, gen, pid int, who string, buf, oob []byte) {
	b.mu.Lock()
	cur, closed, logCap := b.current, b.closed, b.logCap
	b.mu.Unlock()
	switch {
	case closed:
		b.refuse(c, who, errStopping)
		return
	case gen == cur:
		b.refuseQuietly(c, who, fmt.Sprintf("gen %d is the current generation: only a draining generation hands connections over", gen))
		return
	case gen > cur:
		b.refuse(c, who, fmt.Sprintf("gen %d is still starting: only a draining generation hands connections over", gen))
		return
	}
	if _, err := c.Write([]byte{wire.OK}); err != nil {
		return
	}
	start := time.Now()
	var (
		msgs, taken, rejected int
		firstWhy              string
		ended                 bool
	)
	reject := func(fds []int, why string) {
		wire.CloseAll(fds)
		rejected++
		if firstWhy == "" {
			firstWhy = why
		}
		if why != errStopping && rejected <= logCap {
			more := ""
			if rejected == logCap {
				more = " (further rejections from it are only counted)"
			}
			b.log.Warn(fmt.Sprintf("handoff: %s: rejected message %d: %s; closed its %d fd(s)%s", who, msgs, why, len(fds), more),
				"generation", gen, "pid", pid, "reason", why)
		}
	}
	for {
		n, oobn, flags, err := readPacket(c, buf, oob)
		fds := wire.Rights(oob[:oobn])
		if errors.Is(err, io.EOF) && !peerGone(c) {
			err, n = nil, 0 // an empty packet, not the end
		}
		if err != nil {
			wire.CloseAll(fds)
			break
		}
		msgs++
		switch {
		case ended:
			reject(fds, "a message after END")
		case flags&unix.MSG_CTRUNC != 0:
			reject(fds, fmt.Sprintf("more than %d fds", wire.MaxRights))
		case n == 0:
			reject(fds, "an empty message")
		case buf[0] == wire.Conn && (flags&unix.MSG_TRUNC != 0 || n > 1+wire.MaxState):
			reject(fds, fmt.Sprintf("a state over %d bytes", wire.MaxState))
		case buf[0] == wire.Conn && len(fds) != 1:
			reject(fds, fmt.Sprintf("a connection message with %d fds instead of 1", len(fds)))
		case buf[0] == wire.Conn:
			if what := notSocket(fds[0]); what != "" {
				reject(fds, "the fd is not a socket but "+what)
			} else if why := b.push(heldConn{fd: fds[0], msg: append([]byte(nil), buf[:n]...)}); why != "" {
				reject(fds, why)
			} else {
				taken++
			}
		case buf[0] == wire.End && n == 1 && len(fds) == 0:
			ended = true
			d := time.Since(start)
			attrs := []any{"generation", gen, "pid", pid, "connections", taken, "rejected", rejected, "ms", d.Milliseconds()}
			line := fmt.Sprintf("handoff: %s handed over %s in %s", who, connections(taken), ms(d))
			if cur, held, ok := b.Receiving(); !ok && held > 0 {
				line += fmt.Sprintf("; gen %d has no receiver: relaunch holds %s for the next one", cur, connections(held))
			}
			if rejected == 0 {
				b.log.Info(line, attrs...)
				c.Write([]byte{wire.OK})
				break
			}
			b.log.Warn(fmt.Sprintf("%s; rejected %d message(s)", line, rejected), attrs...)
			c.Write(fmt.Appendf([]byte{wire.Error}, "%d of %d messages rejected (their fds closed; relaunch's log has each), the first: %s", rejected, msgs-1, firstWhy))
		default:
			reject(fds, fmt.Sprintf("unknown message type %d from a sender", buf[0]))
		}
	}
	b.mu.Lock()
	closed = b.closed
	b.mu.Unlock()
	if !ended && !closed {
		b.log.Warn(fmt.Sprintf("handoff: %s went away without END after handing over %s; relaunch keeps what it sent", who, connections(taken)),
			"generation", gen, "pid", pid, "connections", taken)
	}
}

// errStopping is why a connection that comes while relaunch stops is not
// taken; it is counted with those close closes.
const errStopping = "relaunch is stopping"

// Receiving tells whether the current generation has a receiver that takes
// connections, and how many fds are held.
func (b *Broker) Receiving() (current, held int, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for r := range b.recvs {
		if r.gen == b.current && !r.retired && !r.broken && !r.gone {
			ok = true
		}
	}
	return b.current, b.held, ok
}

// Push queues a connection relaunch itself took from a socket no generation
// accepts on any more: the receiver gets it with an empty state, as a new
// connection. "" means the broker holds fd now; otherwise Push says why it
// does not, and the caller still owns fd.
func (b *Broker) Push(fd int) (why string) {
	return b.push(heldConn{fd: fd, msg: []byte{wire.Conn}})
}

// push queues a connection, or says why it does not; the caller closes it.
func (b *Broker) push(h heldConn) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		b.lost++
		return errStopping
	case b.held >= b.maxHeld:
		return fmt.Sprintf("relaunch holds %d handed-over connections already, its limit", b.held)
	case b.heldBytes+len(h.msg) > maxBytes:
		return fmt.Sprintf("relaunch holds %d MiB of handed-over state already, its limit", b.heldBytes>>20)
	}
	b.queue = append(b.queue, h)
	b.held++
	b.heldBytes += len(h.msg)
	b.cond.Broadcast()
	return ""
}

// receiver registers a generation's receiver, starts its writer and reads
// its ACKs until its connection ends.
func (b *Broker) receiver(c *net.UnixConn, gen, pid int, who string, buf, oob []byte) {
	r := &recvConn{gen: gen, pid: pid, c: c}
	var why string
	b.mu.Lock()
	switch {
	case b.closed:
		why = errStopping
	case gen < b.current:
		why = fmt.Sprintf("gen %d is not current (gen %d is): only the current or a starting generation receives", gen, b.current)
	default:
		for o := range b.recvs {
			if o.gen == gen && !o.gone {
				why = fmt.Sprintf("gen %d has a receiver already (pid %d)", gen, o.pid)
			}
		}
	}
	if why == "" {
		b.recvs[r] = true
	}
	b.mu.Unlock()
	if why != "" {
		b.refuse(c, who, why)
		return
	}
	// OK goes out before the writer may send anything.
	if _, err := c.Write([]byte{wire.OK}); err == nil {
		b.serveRecv(r, who, buf, oob)
		return
	}
	b.mu.Lock()
	r.gone = true
	delete(b.recvs, r)
	b.mu.Unlock()
}

// serveRecv runs a registered receiver: its writer, and its ACKs until its
// connection ends; then it gives back what it had not taken.
func (b *Broker) serveRecv(r *recvConn, who string, buf, oob []byte) {
	c, gen, pid := r.c, r.gen, r.pid
	b.wg.Add(1)
	go b.deliver(r)
	for {
		n, oobn, _, err := readPacket(c, buf, oob)
		fds := wire.Rights(oob[:oobn])
		wire.CloseAll(fds)
		if errors.Is(err, io.EOF) && !peerGone(c) {
			err, n = nil, 0
		}
		if err != nil {
			break
		}
		if n == 1 && buf[0] == wire.Ack && len(fds) == 0 && b.ack(r) {
			continue
		}
		b.log.Warn(fmt.Sprintf("handoff: %s: ignored an unexpected message from a receiver (type %d, %d bytes, %d fds)", who, buf[0], n, len(fds)),
			"generation", gen, "pid", pid)
	}
	b.mu.Lock()
	r.gone = true
	back := len(r.unacked)
	b.queue = append(r.unacked, b.queue...) // first in line again, in order
	r.unacked = nil
	delete(b.recvs, r)
	b.cond.Broadcast()
	closed := b.closed
	b.mu.Unlock()
	if closed || r.taken == 0 && back == 0 {
		return
	}
	msg := fmt.Sprintf("handoff: %s took %s", who, connections(r.taken))
	if back > 0 {
		msg += fmt.Sprintf(" and went away before taking %d more: relaunch holds them for the next receiver", back)
	}
	b.log.Info(msg, "generation", gen, "pid", pid, "connections", r.taken, "returned", back)
}

// ack: the receiver holds the oldest connection sent to it; drop ours.
func (b *Broker) ack(r *recvConn) bool {
	b.mu.Lock()
	if len(r.unacked) == 0 {
		b.mu.Unlock()
		return false
	}
	h := r.unacked[0]
	r.unacked[0] = heldConn{}
	r.unacked = r.unacked[1:]
	r.taken++
	b.held--
	b.heldBytes -= len(h.msg)
	b.cond.Broadcast()
	b.mu.Unlock()
	unix.Close(h.fd)
	return true
}

// deliver sends queued connections to r while its generation is current,
// then END once it is retired.
func (b *Broker) deliver(r *recvConn) {
	defer b.wg.Done()
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		for !r.gone && !r.broken && !b.closed && !r.retired &&
			!(r.gen == b.current && len(b.queue) > 0 && len(r.unacked) < b.window) {
			b.cond.Wait()
		}
		if r.gone || r.broken || b.closed {
			return
		}
		if r.retired {
			b.mu.Unlock()
			r.c.Write([]byte{wire.End}) // it closes; the reader then gives back what it did not take
			b.mu.Lock()
			return
		}
		h := b.queue[0]
		b.queue[0] = heldConn{}
		b.queue = b.queue[1:]
		r.unacked = append(r.unacked, h)
		b.mu.Unlock()
		_, _, err := r.c.WriteMsgUnix(h.msg, unix.UnixRights(h.fd), nil)
		b.mu.Lock()
		if err != nil {
			// Not sent: h goes back first in line, unless the reader has
			// given back everything already (the connection ended).
			if !r.gone && len(r.unacked) > 0 && r.unacked[len(r.unacked)-1].fd == h.fd {
				r.unacked = r.unacked[:len(r.unacked)-1]
				b.queue = append([]heldConn{h}, b.queue...)
			}
			r.broken = true
			b.cond.Broadcast()
			if !r.gone && !b.closed {
				b.log.Warn(fmt.Sprintf("handoff: gen %d (pid %d): cannot pass a connection to it: %s; it gets no more", r.gen, r.pid, errorText(err)),
					"generation", r.gen, "pid", r.pid)
			}
			r.c.CloseWrite() // its reads end: it closes, and the reader gives back the rest
			return
		}
	}
}

// readPacket reads one packet from a generation. A peer that exits with
// packets of relaunch's still unread (a receiver killed with CONNs in its
// queue, a sender that never read the OK) leaves ECONNRESET pending on
// relaunch's end, and the kernel reports it before the packets the peer sent
// before it went: the ACKs and CONNs that must still count. The error is
// cleared once reported, so read on; the end then comes as EOF after them.
func readPacket(c *net.UnixConn, buf, oob []byte) (n, oobn, flags int, err error) {
	n, oobn, flags, _, err = c.ReadMsgUnix(buf, oob)
	if errors.Is(err, syscall.ECONNRESET) {
		n, oobn, flags, _, err = c.ReadMsgUnix(buf, oob)
	}
	return n, oobn, flags, err
}

// connections is "1 connection" or "N connections".
func connections(n int) string {
	if n == 1 {
		return "1 connection"
	}
	return fmt.Sprintf("%d connections", n)
}

// peerPid is the pid of the process that connected c (SO_PEERCRED), 0 if
// unknown.
func peerPid(c *net.UnixConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	rc.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

// peerGone tells a real end of the connection from an empty packet: Go
// reports both as io.EOF on a SOCK_SEQPACKET socket.
func peerGone(c *net.UnixConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return true
	}
	gone := true
	rc.Control(func(fd uintptr) {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		if n, err := unix.Poll(p, 0); err == nil {
			gone = n > 0 && p[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
		}
	})
	return gone
}

// notSocket says what fd is when it is not a socket, "" when it is one.
func notSocket(fd int) string {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "unreadable: " + err.Error()
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFSOCK:
		return ""
	case unix.S_IFIFO:
		return "a pipe"
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFCHR:
		return "a character device"
	}
	return fmt.Sprintf("a file of mode %#o", st.Mode&unix.S_IFMT)
}

// errorText is err's message without the "op path:" prefix Go's net errors
// carry, for log lines.
func errorText(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	var pe *os.SyscallError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return strings.TrimSpace(err.Error())
}

// ms is d for a log line: "12ms", or "1.5s" from a second on.
func ms(d time.Duration) string {
	if d < time.Second {
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	}
	return d.Round(10 * time.Millisecond).String()
}
