package keeper

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const maxMsg = 4096

// send writes one message, with fd when fd >= 0.
func send(conn int, msg string, fd int) error {
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	for {
		err := unix.Sendmsg(conn, []byte(msg), oob, nil, unix.MSG_NOSIGNAL)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// recv reads one message: its verb, its argument, and the fd it carried
// (-1 for none; a message never carries more than one, extra ones are
// closed). A closed connection is io.EOF's stand-in: errClosed.
func recv(conn int) (verb, arg string, fd int, err error) {
	buf := make([]byte, maxMsg)
	oob := make([]byte, unix.CmsgSpace(4*4))
	var n, oobn, flags int
	for {
		n, oobn, flags, _, err = unix.Recvmsg(conn, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return "", "", -1, err
	}
	fd = -1
	if oobn > 0 {
		cmsgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, c := range cmsgs {
			fds, _ := unix.ParseUnixRights(&c)
			for _, f := range fds {
				if fd < 0 {
					fd = f
				} else {
					unix.Close(f)
				}
			}
		}
	}
	if n == 0 && oobn == 0 {
		return "", "", -1, errClosed
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		closeFd(fd)
		return "", "", -1, fmt.Errorf("a message longer than %d bytes", maxMsg)
	}
	verb, arg, _ = strings.Cut(string(buf[:n]), " ")
	return verb, arg, fd, nil
}

var errClosed = errors.New("connection closed")

func closeFd(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// peer is who is at the other end of conn.
func peer(conn int) (*unix.Ucred, error) {
	return unix.GetsockoptUcred(conn, unix.SOL_SOCKET, unix.SO_PEERCRED)
}

// timeout bounds every blocking read and write on conn.
func timeout(conn int, d time.Duration) {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	unix.SetsockoptTimeval(conn, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	unix.SetsockoptTimeval(conn, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
}
