//go:build !linux

package sdlisten

import "errors"

var errNotLinux = errors.New("sd_notify listener is only supported on Linux")

// ListenNotify needs SO_PASSCRED and SCM_CREDENTIALS: Linux only.
func ListenNotify(path string) (*NotifyListener, error) { return nil, errNotLinux }

// Recv: see ListenNotify.
func (l *NotifyListener) Recv() (NotifyMessage, error) { return NotifyMessage{}, errNotLinux }

// ListenNotifyAt: see ListenNotify.
func ListenNotifyAt(bind, path string) (*NotifyListener, error) { return nil, errNotLinux }
