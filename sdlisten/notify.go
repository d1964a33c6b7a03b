package sdlisten

import (
	"errors"
	"net"
	"os"
	"strings"
)

// NotifyListener receives the sd_notify datagrams of one generation on a
// unixgram socket of its own, so the path itself says who speaks.
type NotifyListener struct {
	path string // what senders are told
	bind string // the name it was bound at, which Close removes (path, or path reached through a directory fd)
	conn *net.UnixConn
}

// NotifyMessage is one sd_notify datagram.
type NotifyMessage struct {
	Pid, Uid int      // from SCM_CREDENTIALS (0 if the kernel attached none)
	Fields   []string // the KEY=VALUE lines, in order, empty lines dropped
}

// notifyBufSize is what systemd reads of one message (PIPE_BUF); longer
// datagrams are truncated and dropped.
const notifyBufSize = 4096

// Path returns the socket's path, the child's NOTIFY_SOCKET.
func (l *NotifyListener) Path() string { return l.path }

// Close closes the socket, which makes a pending Recv return, and removes
// the socket file.
func (l *NotifyListener) Close() error {
	err := l.conn.Close()
	if err == nil && !strings.HasPrefix(l.bind, "@") {
		if rerr := os.Remove(l.bind); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = rerr
		}
	}
	return err
}

// Has tells whether the message holds the line kv, e.g. "READY=1".
func (m NotifyMessage) Has(kv string) bool {
	for _, f := range m.Fields {
		if f == kv {
			return true
		}
	}
	return false
}

// Get returns the value of the first KEY=VALUE line for key.
func (m NotifyMessage) Get(key string) (string, bool) {
	for _, f := range m.Fields {
		if k, v, ok := strings.Cut(f, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// splitFields splits a datagram into its non-empty lines.
func splitFields(b []byte) []string {
	var fields []string
	for _, f := range strings.Split(string(b), "\n") {
		if f != "" {
			fields = append(fields, f)
		}
	}
	return fields
}

// Notify sends state (e.g. "READY=1" or "STATUS=gen 3 pid 42") as one
// datagram to this process's own $NOTIFY_SOCKET, the one systemd gave
// relaunch; "@name" is an abstract socket. Without NOTIFY_SOCKET it does
// nothing and returns nil.
func Notify(state string) error { return NotifyFds(state, nil) }
