//go:build !linux

package sdlisten

import "strconv"

const (
	execPathEnv  = "RELAUNCH_EXEC_PATH"
	execErrFdEnv = "RELAUNCH_EXEC_ERRFD"
)

// HelperEnv: see exec.go. Outside Linux the helper is never started.
func HelperEnv(path string, errFd int) []string {
	return []string{execPathEnv + "=" + path, execErrFdEnv + "=" + strconv.Itoa(errFd)}
}

// RunExecHelper is a no-op outside Linux: relaunch runs only on Linux.
func RunExecHelper() {}
