package handoff_test

import (
	"bufio"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/relaunch/relaunch/handoff"
)

// A line-protocol server whose connections carry a counter. On the drain
// signal it hands every connection over and exits; at start it takes over
// what the previous generation handed over. testdata/pingpong is the whole
// program.
func Example() {
	type conn struct {
		c net.Conn
		r *bufio.Reader
		n int
	}
	var live []*conn // a real server guards this with a mutex
	serve := func(c *conn) { live = append(live, c) /* …and a goroutine answering it */ }

	if handoff.Available() {
		if r, err := handoff.Listen(); err == nil {
			go func() {
				for {
					c, state, err := r.Receive()
					if err != nil {
						return // io.EOF: a newer generation is current
					}
					n, _ := strconv.Atoi(string(state))
					serve(&conn{c: c, r: bufio.NewReader(c), n: n})
				}
			}()
		}
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGQUIT, syscall.SIGTERM)
	<-sig
	s, err := handoff.Dial()
	if err != nil {
		log.Printf("draining the usual way: %v", err)
		return
	}
	for _, c := range live {
		c.c.SetReadDeadline(time.Now()) // stop its reader first; unread input belongs in the state
		if err := s.Send(c.c, []byte(strconv.Itoa(c.n))); err != nil {
			log.Printf("connection lost: %v", err)
		}
		c.c.Close() // relaunch holds it: the client notices nothing
	}
	if err := s.Done(); err != nil {
		log.Print(err)
	}
}
