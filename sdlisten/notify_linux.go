package sdlisten

import (
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// maxRights is SCM_MAX_FD, the most fds one message can carry: with room
// for all of them none is lost to MSG_CTRUNC (the kernel closes those itself).
const maxRights = 253

// ListenNotify creates the unixgram socket at path (absolute, in a 0700
// directory the caller made) with SO_PASSCRED, so every message comes with
// its sender's pid. It is close-on-exec, as every net socket.
func ListenNotify(path string) (*NotifyListener, error) {
	return ListenNotifyAt(path, path)
}

// ListenNotifyAt is ListenNotify binding the socket at bind, another name
// of path: "/proc/self/fd/N/name" binds it in the directory open as fd N,
// whatever its path has become since. Path() is path, for the senders.
func ListenNotifyAt(bind, path string) (*NotifyListener, error) {
	if len(path) > maxUnixPath {
		return nil, fmt.Errorf("notify socket path %q is %d bytes, more than the %d a socket address holds; use a shorter directory", path, len(path), maxUnixPath)
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: bind, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	rc, err := conn.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		})
		if cerr != nil {
			err = cerr
		}
	}
	if err != nil {
		conn.Close()
		os.Remove(bind)
		return nil, fmt.Errorf("notify socket %s: setsockopt SO_PASSCRED: %w", path, err)
	}
	return &NotifyListener{path: path, bind: bind, conn: conn}, nil
}

// Recv blocks until a whole datagram arrives and returns it. Fds passed
// with it (BARRIER=1 sends one) are closed; truncated datagrams are dropped.
// After Close it returns an error wrapping net.ErrClosed.
func (l *NotifyListener) Recv() (NotifyMessage, error) {
	buf := make([]byte, notifyBufSize)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*maxRights))
	for {
		n, oobn, flags, _, err := l.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return NotifyMessage{}, err
		}
		m := parseControl(oob[:oobn])
		if flags&unix.MSG_TRUNC != 0 {
			continue
		}
		m.Fields = splitFields(buf[:n])
		return m, nil
	}
}

// parseControl takes the sender's credentials and closes any passed fds.
func parseControl(oob []byte) NotifyMessage {
	var m NotifyMessage
	cmsgs, _ := unix.ParseSocketControlMessage(oob)
	for i := range cmsgs {
		c := &cmsgs[i]
		if c.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch c.Header.Type {
		case unix.SCM_RIGHTS:
			fds, _ := unix.ParseUnixRights(c)
			for _, fd := range fds {
				unix.Close(fd)
			}
		case unix.SCM_CREDENTIALS:
			if cred, err := unix.ParseUnixCredentials(c); err == nil {
				m.Pid, m.Uid = int(cred.Pid), int(cred.Uid)
			}
		}
	}
	return m
}

// NotifyFds is Notify with fds passed along (SCM_RIGHTS), as FDSTORE=1
// wants: the service manager keeps its own copies.
func NotifyFds(state string, fds []int) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", os.NewSyscallError("socket", err))
	}
	defer unix.Close(s)
	// A manager that stops reading (a full queue) must not hang relaunch.
	tv := unix.NsecToTimeval((2 * time.Second).Nanoseconds())
	unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	// A leading @ is an abstract address: x/sys/unix maps it.
	if err := unix.Sendmsg(s, []byte(state), oob, &unix.SockaddrUnix{Name: path}, 0); err != nil {
		return fmt.Errorf("sd_notify to NOTIFY_SOCKET=%s: %w", path, os.NewSyscallError("sendmsg", err))
	}
	return nil
}
