// Command pingpong is a long-connection TCP server that survives upgrades by
// handing its connections over (relaunch's connection handoff, package
// github.com/relaunch/relaunch/handoff). It is the demo of the handoff and the app of its
// end-to-end tests.
//
// Protocol, one line each way: the client sends "ping\n", the server answers
// "pong N\n", N counting the pings of that connection from 1, across every
// generation that served it. "who\n" is answered "gen G pid P\n", "peer\n"
// "peer ADDR\n": the client's address as the server sees it.
//
// It serves the socket on fd 3 (LISTEN_FDS=1, LISTEN_PID its own pid; or
// -listen ADDR) and sends READY=1 to NOTIFY_SOCKET once it accepts. With
// RELAUNCH_HANDOFF set, it receives connections from the start (in a
// goroutine, as they come), and on its drain signal (SIGQUIT, SIGTERM,
// SIGINT) it stops accepting, hands every live connection over with its
// counter (and any unread input) as state, and exits at once. Without it,
// or when relaunch refuses (it is the current generation: relaunch stops),
// it drains the usual way: each connection is closed after the exchange in
// progress.
//
//	relaunch -l :7000 -- pingpong     # then: nc localhost 7000, type ping
//
// The flags that misbehave apply only to generation -gen (RELAUNCH_GENERATION;
// 0: every one), so that one relaunch can run a misbehaving generation
// between good ones.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/handoff"
)

var (
	listenAddr = flag.String("listen", "", "bind this address itself instead of taking fd 3")
	onlyGen    = flag.Int("gen", 0, "the misbehaving flags below apply only to this RELAUNCH_GENERATION (0: to every one)")
	noHandoff  = flag.Bool("no-handoff", false, "misbehave: drain the usual way even with RELAUNCH_HANDOFF")
	noReceive  = flag.Bool("no-receive", false, "misbehave: take no connections over")
	dieAfter   = flag.Int("handoff-die-after", -1, "misbehave: SIGKILL myself after handing over this many connections")
	recvDie    = flag.Int("receive-die-after", -1, "misbehave: SIGKILL myself after receiving this many connections")
	garbage    = flag.Bool("send-garbage", false, "misbehave: send malformed messages to relaunch before handing over")
	report     = flag.Int("report", 0, "log a line when this many connections were received")
)

var (
	gen = os.Getenv("RELAUNCH_GENERATION")
	pid = os.Getpid()
)

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "pingpong: gen %s pid %d: %s\n", gen, pid, fmt.Sprintf(format, a...))
}

func fatalf(format string, a ...any) {
	logf(format, a...)
	os.Exit(1)
}

// server holds the live connections.
type server struct {
	mu       sync.Mutex
	live     map[*client]bool
	draining bool
	wg       sync.WaitGroup // one per live connection

	sender   *handoff.Sender // set when draining with a handoff
	sendMu   sync.Mutex
	sent     int
	received int
}

type client struct {
	c net.Conn
	r *bufio.Reader
	n int // pongs sent on this connection, by every generation
}

func main() {
	flag.Parse()
	me, _ := strconv.Atoi(gen)
	if *onlyGen != 0 && *onlyGen != me {
		*noHandoff, *noReceive, *garbage = false, false, false
		*dieAfter, *recvDie = -1, -1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGINT)

	ln := listener()
	s := &server{live: map[*client]bool{}}
	var recv *handoff.Receiver
	recvDone := make(chan struct{})
	if handoff.Available() && !*noReceive {
		var err error
		if recv, err = handoff.Listen(); err != nil {
			logf("receiving no connections: %v", err)
		}
	}
	if recv != nil {
		go s.receive(recv, recvDone)
	} else {
		close(recvDone)
	}
	accepting := make(chan struct{})
	go s.accept(ln, accepting)
	if err := sdNotify("READY=1"); err != nil {
		logf("sd_notify: %v", err)
	}

	sig := <-sigs
	logf("%s: draining %d connections", sig, s.count())
	ln.Close()
	<-accepting // no connection comes from the listener any more
	if handoff.Available() && !*noHandoff {
		if *garbage {
			sendGarbage()
		}
		snd, err := handoff.Dial()
		if err != nil {
			logf("no handoff, draining the usual way: %v", err)
		} else {
			s.sender = snd
		}
	}
	if recv != nil {
		recv.Close() // what relaunch sent and we did not take goes to the next generation
		<-recvDone   // every connection received is in s.live
	}
	start := time.Now()
	s.mu.Lock()
	s.draining = true
	for cl := range s.live {
		cl.c.SetReadDeadline(time.Now()) // each stops at its next read
	}
	s.mu.Unlock()
	s.wg.Wait()
	if s.sender != nil {
		err := s.sender.Done()
		logf("handed over %d connections in %s (relaunch: %v)", s.sent, time.Since(start).Round(time.Millisecond), errOK(err))
	}
	logf("exiting")
	os.Exit(0)
}

func errOK(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func listener() net.Listener {
	if *listenAddr != "" {
		ln, err := net.Listen("tcp", *listenAddr)
		if err != nil {
			fatalf("%v", err)
		}
		return ln
	}
	if os.Getenv("LISTEN_FDS") != "1" || os.Getenv("LISTEN_PID") != strconv.Itoa(pid) {
		fatalf("want one socket on fd 3 (LISTEN_FDS=1, LISTEN_PID=%d), got LISTEN_FDS=%q LISTEN_PID=%q; or use -listen ADDR",
			pid, os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID"))
	}
	f := os.NewFile(3, "listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		fatalf("fd 3: %v", err)
	}
	return ln
}

func (s *server) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live)
}

func (s *server) accept(ln net.Listener, done chan struct{}) {
	defer close(done)
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				logf("accept: %v", err)
			}
			return
		}
		s.serve(&client{c: c, r: bufio.NewReader(c)})
	}
}

// receive takes the connections relaunch passes on and serves them from
// where the previous generation left them.
func (s *server) receive(r *handoff.Receiver, done chan struct{}) {
	defer close(done)
	for {
		c, state, err := r.Receive()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				logf("receive: %v", err)
			}
			return
		}
		if len(state) == 0 {
			// A connection relaunch rescued from a slot nobody served:
			// new, nothing read.
			s.serve(&client{c: c, r: bufio.NewReader(c)})
			continue
		}
		counter, unread, ok := strings.Cut(string(state), "\n")
		n, err := strconv.Atoi(counter)
		if !ok || err != nil {
			logf("received a connection with a bad state %q: closed it", state)
			c.Close()
			continue
		}
		// The input the previous generation had read but not answered
		// comes first.
		s.serve(&client{c: c, r: bufio.NewReader(io.MultiReader(strings.NewReader(unread), c)), n: n})
		s.received++
		if s.received == *report {
			logf("received %d connections", s.received)
		}
		if s.received == *recvDie {
			logf("receive-die-after %d: SIGKILL", *recvDie)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func (s *server) serve(cl *client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live[cl] = true
	s.wg.Add(1)
	if s.draining {
		cl.c.SetReadDeadline(time.Now())
	}
	go s.loop(cl)
}

// loop answers the client until it leaves or the drain stops it.
func (s *server) loop(cl *client) {
	defer s.wg.Done()
	for {
		line, err := cl.r.ReadString('\n')
		if err != nil {
			s.mu.Lock()
			delete(s.live, cl)
			draining := s.draining
			s.mu.Unlock()
			if draining && errors.Is(err, os.ErrDeadlineExceeded) && s.sender != nil {
				s.handOver(cl, line) // line: what was read of a line not yet whole
				return
			}
			cl.c.Close()
			return
		}
		var answer string
		switch strings.TrimSpace(line) {
		case "ping":
			cl.n++
			answer = "pong " + strconv.Itoa(cl.n) + "\n"
		case "who":
			answer = fmt.Sprintf("gen %s pid %d\n", gen, pid)
		case "peer":
			answer = "peer " + cl.c.RemoteAddr().String() + "\n"
		default:
			answer = "error: say ping, who or peer\n"
		}
		if _, err := io.WriteString(cl.c, answer); err != nil {
			s.mu.Lock()
			delete(s.live, cl)
			s.mu.Unlock()
			cl.c.Close()
			return
		}
	}
}

// handOver passes cl to relaunch with its counter and unread input.
func (s *server) handOver(cl *client, unread string) {
	state := strconv.Itoa(cl.n) + "\n" + unread
	s.sendMu.Lock()
	if s.sent == *dieAfter {
		logf("handoff-die-after %d: SIGKILL", *dieAfter)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	err := s.sender.Send(cl.c, []byte(state))
	if err == nil {
		s.sent++
	}
	s.sendMu.Unlock()
	if err != nil {
		logf("handoff: %v: closing the connection", err)
	}
	cl.c.Close() // after a Send, relaunch holds the connection: this closes only our reference
}

// sendGarbage sends relaunch malformed messages on a connection of its own
// and checks that relaunch closed every fd they carried.
func sendGarbage() {
	path := os.Getenv(handoff.Env)
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		logf("garbage: %v", err)
		return
	}
	defer c.Close()
	reply := func() string {
		buf := make([]byte, 4096)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("type %d %q", buf[0], buf[1:n])
	}
	c.Write([]byte{1, 1}) // HELLO_SEND, version 1
	if r := reply(); r != `type 5 ""` {
		logf("garbage: hello refused: %s", r)
		return
	}
	var keep []int // the ends we keep of what we send: they see the end when relaunch closes theirs
	pair := func() int {
		sp, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			fatalf("socketpair: %v", err)
		}
		keep = append(keep, sp[0])
		return sp[1]
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		fatalf("pipe: %v", err)
	}
	keep = append(keep, p[0])
	send := func(msg []byte, fds ...int) {
		var oob []byte
		if len(fds) > 0 {
			oob = syscall.UnixRights(fds...)
		}
		if _, _, err := c.WriteMsgUnix(msg, oob, nil); err != nil {
			logf("garbage: send: %v", err)
		}
		for _, fd := range fds {
			syscall.Close(fd)
		}
	}
	send([]byte{0x7f})                   // unknown type
	send([]byte{3, 'x'})                 // CONN without an fd
	send([]byte{3, 'x'}, p[1])           // CONN with a pipe
	send([]byte{3, 'x'}, pair(), pair()) // CONN with two fds
	big := make([]byte, 1+handoff.MaxState+1)
	big[0] = 3
	send(big, pair()) // CONN with a state over 64 KiB
	send([]byte{4})   // END
	logf("garbage: relaunch replied %s", reply())
	closed := 0
	for _, fd := range keep {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		var b [1]byte
		if n, _ := unix.Poll(p, 5000); n == 1 {
			if n, err := syscall.Read(fd, b[:]); n == 0 && err == nil {
				closed++
			}
		}
		syscall.Close(fd)
	}
	logf("garbage: relaunch closed %d of the %d fds it was sent", closed, len(keep))
}

// sdNotify sends state to NOTIFY_SOCKET, if there is one.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
