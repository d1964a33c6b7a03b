//go:build !linux

package launcher

// CheckPIDFile accepts anything: Run says relaunch needs Linux.
func CheckPIDFile(string) error { return nil }
