// Package broker is relaunch's side of the connection handoff: it takes the
// live connections a draining generation hands over and passes them, in
// order, to the current generation. Apps speak to it through package
// handoff; the wire format is the one handoff/doc.go documents, named in
// package wire.
//
// Broker, its one type, listens on a unix SOCK_SEQPACKET socket in
// relaunch's private runtime directory. It tells a sender from a receiver by
// its hello, and a generation from another by the peer's pid (SO_PEERCRED),
// which the launcher maps to a generation (New's genOf). It holds each
// connection (its fd and its opaque state) while no receiver takes it, and
// keeps its own reference to each fd until the receiver acknowledges it, so
// a receiver that dies loses only what it took; what it did not
// acknowledge goes to the next receiver.
//
// The broker is a package of its own because it is concurrent: it runs
// goroutines (one accepting, one per connection reading, one per receiver
// writing) around state that a mutex guards, while the launcher's loop,
// which owns everything else, calls its methods. Like relaunch, it is for
// Linux only (SOCK_SEQPACKET, SO_PEERCRED): elsewhere the package is empty.
package broker
