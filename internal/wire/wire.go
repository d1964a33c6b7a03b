// Package wire is the connection handoff's wire format, shared by the side
// apps import (package handoff) and relaunch's side (package broker): the
// message types, the protocol version, the limits and the parsing of the
// fds a message carries. The format itself, with what each message means
// and who sends it, is documented for app authors in handoff/doc.go ("The
// wire format"); this package only names it.
package wire

import "syscall"

// The message types: the first byte of every packet (handoff/doc.go's table).
const (
	HelloSend byte = 1 // app → relaunch, first: then the version
	HelloRecv byte = 2 // app → relaunch, first: then the version
	Conn      byte = 3 // the state follows; exactly one fd, a socket, in SCM_RIGHTS
	End       byte = 4 // no more connections follow / this generation receives no more
	OK        byte = 5 // the hello is accepted, or every CONN before END was taken
	Error     byte = 6 // UTF-8 text follows: why
	Ack       byte = 7 // the oldest CONN not yet acknowledged is taken
)

const (
	// Version is the protocol version a hello carries.
	Version = 1
	// MaxState is the largest state one CONN carries: a CONN packet is at
	// most 1+MaxState bytes.
	MaxState = 64 << 10
	// MaxRights is the most fds one packet can carry (the kernel's
	// SCM_MAX_FD): a control buffer with room for that many never loses an
	// fd to MSG_CTRUNC, so every fd a malformed message carries can be
	// closed.
	MaxRights = 253
)

// Rights returns the fds a control message carries (SCM_RIGHTS). It never
// fails: a control message it cannot parse has no fds it could close
// anyway. Go's ReadMsgUnix receives them close-on-exec.
func Rights(oob []byte) []int {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range msgs {
		if msgs[i].Header.Level == syscall.SOL_SOCKET && msgs[i].Header.Type == syscall.SCM_RIGHTS {
			if f, err := syscall.ParseUnixRights(&msgs[i]); err == nil {
				fds = append(fds, f...)
			}
		}
	}
	return fds
}

// CloseAll closes fds, for what a message carried that nobody takes.
func CloseAll(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}
