//go:build !linux

package sdlisten

import (
	"errors"
	"fmt"
	"net"
	"os"
)

var errNotLinux = errors.New("sd_notify listener is only supported on Linux")

// ListenNotify needs SO_PASSCRED and SCM_CREDENTIALS: Linux only.
func ListenNotify(path string) (*NotifyListener, error) { return nil, errNotLinux }

// Recv: see ListenNotify.
func (l *NotifyListener) Recv() (NotifyMessage, error) { return NotifyMessage{}, errNotLinux }

// ListenNotifyAt: see ListenNotify.
func ListenNotifyAt(bind, path string) (*NotifyListener, error) { return nil, errNotLinux }

// NotifyFds sends state; passing fds needs Linux.
func NotifyFds(state string, fds []int) error {
	if len(fds) > 0 {
		return errors.New("sd_notify with fds needs Linux")
	}
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify to NOTIFY_SOCKET=%s: %w", path, err)
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}
