package wire

import (
	"syscall"
	"testing"
)

// Rights finds every fd of every SCM_RIGHTS message, and none in a control
// buffer that does not parse.
func TestRights(t *testing.T) {
	oob := append(syscall.UnixRights(0, 1), syscall.UnixRights(2)...)
	if got := Rights(oob); len(got) != 3 || got[0] != 0 || got[1] != 1 || got[2] != 2 {
		t.Errorf("Rights(3 fds in 2 messages) = %v", got)
	}
	for _, bad := range [][]byte{nil, {1, 2, 3}, oob[:len(oob)-5]} {
		if got := Rights(bad); got != nil {
			t.Errorf("Rights(%d bytes) = %v", len(bad), got)
		}
	}
}
