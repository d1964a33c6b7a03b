// Package handoff moves live connections from a draining generation of an
// app to the current one, through relaunch. It is opt-in: an app
// that never imports it drains as before.
//
// relaunch gives every generation RELAUNCH_HANDOFF, the path of a unix
// SOCK_SEQPACKET socket in its private (0700) runtime directory. On its
// drain signal, an old generation that opts in hands each live connection
// over — the connection's fd plus an opaque state blob of at most 64 KiB
// (a counter, a session id, the bytes read but not yet processed) — and
// exits at once instead of draining for hours. The current generation
// receives them, in order, as they arrive, and carries on.
//
// The old side:
//
//	s, err := handoff.Dial() // refused unless this generation is draining
//	if err != nil { /* drain the usual way */ }
//	for _, c := range live {
//		if err := s.Send(c.conn, c.state()); err != nil { /* close c the usual way */ }
//		c.conn.Close() // relaunch holds its own reference: the client sees nothing
//	}
//	err = s.Done() // nil: relaunch took every one
//
// The new side, from start-up:
//
//	if handoff.Available() {
//		r, err := handoff.Listen()
//		...
//		go func() {
//			for {
//				conn, state, err := r.Receive() // io.EOF: this generation receives no more
//				if err != nil { return }
//				go serve(conn, state)
//			}
//		}()
//	}
//
// relaunch itself may pass on a connection with an empty state: one the
// kernel queued on a socket no generation accepts on any more (a generation
// killed while it had connections queued, a handshake completed late).
// Serve it as a new connection.
//
// Rules that no library can enforce for you:
//
//   - Put into the state every byte you read from the connection but did not
//     process (a bufio.Reader's buffer, a half-read request): the kernel
//     cannot take it back. Stop your reader first (a read deadline in the
//     past does it in Go), then take the buffer.
//   - After Send, close your fd but never shutdown(2) the socket: that would
//     end the connection for everyone. Deregister it from your event loop
//     before closing (Go's net package does).
//   - The socket's file status flags (O_NONBLOCK) are shared by every holder
//     of the connection; net.FileConn sets what Go needs.
//   - User-space TLS state cannot move with the fd unless you serialise it
//     yourself; hand over plain TCP, kTLS, or whatever your state can rebuild.
//
// # The wire format
//
// Any language can speak it. Every message is one SOCK_SEQPACKET packet
// (never an empty one: that reads as the end of the connection) whose
// first byte is its type:
//
//	type  name        direction                     rest of the packet
//	1     HELLO_SEND  app → relaunch, first         1 byte: protocol version (1)
//	2     HELLO_RECV  app → relaunch, first         1 byte: protocol version (1)
//	3     CONN        sender → relaunch → receiver  the state, 0 to 65536 bytes; exactly one fd in SCM_RIGHTS
//	4     END         sender → relaunch             nothing: no more connections follow
//	                  relaunch → receiver           nothing: this generation receives no more; close
//	5     OK          relaunch → app                nothing: the hello is accepted, or every CONN before END was taken
//	6     ERROR       relaunch → app                UTF-8 text: why the hello is refused (relaunch closes), or
//	                                                what was rejected before END
//	7     ACK         receiver → relaunch           nothing: the oldest CONN not yet acknowledged is taken
//
// A sender connects, sends HELLO_SEND, and reads the reply: OK, or ERROR
// and relaunch closes. It then sends CONN messages, then END, reads the
// reply (OK, or ERROR naming what was rejected: those fds were closed) and
// closes. Everything sent before a close is kept, END or not: a sender that
// dies half-way loses only what it had not sent.
//
// A receiver connects, sends HELLO_RECV, reads OK, then reads CONN
// messages. It sends one ACK for each CONN once it holds the fd (right after
// recvmsg). relaunch keeps its own reference to each fd until that ACK, and
// gives every CONN not acknowledged when the receiver's connection closes to
// the next current generation: a receiver that dies loses only what it
// acknowledged. At END, the receiver closes.
//
// relaunch checks who connects (SO_PEERCRED): a sender must be a process
// of a draining generation (one older than the current generation), a
// receiver a process of the current generation or of a starting one (whose
// CONN messages come once it is current); a generation has one receiver at
// a time. CONN messages from every sender go to the current generation's
// receiver in the order relaunch reads them; while there is none (not yet
// connected, or it died) relaunch holds them. A CONN whose fd is missing,
// not a socket, or more than one, whose state is over 64 KiB, or any other
// malformed message is rejected: its fds are closed, relaunch logs it, and
// nothing else on the connection is disturbed. relaunch holds at most
// 100 000 fds (fewer when its RLIMIT_NOFILE is lower) and 256 MiB of state;
// it rejects beyond. When relaunch stops, it closes the fds it still holds
// and logs how many.
package handoff
