// Package sdlisten holds the socket half of relaunch: it parses listen
// addresses ([NAME=]ADDR, see ParseAddr), binds them as raw blocking
// close-on-exec sockets that relaunch owns for its whole life (Bind, Socket),
// picks up the sockets systemd passed to relaunch itself (Inherited), builds
// the systemd socket-activation environment of a child (ChildEnv), and speaks
// sd_notify in both directions (ListenNotify to hear a child's READY=1,
// Notify to tell systemd about relaunch).
//
// The sockets are deliberately not net.Listeners or os.Files: O_NONBLOCK
// belongs to the open file description that every generation of the child
// shares, and Go's os and net code flips it. A Socket is a bare fd that
// nothing in the parent ever reads, accepts on, or reconfigures.
package sdlisten
