//go:build !linux && !darwin && !freebsd && !netbsd

package watch

import "os"

// Elsewhere only what os.FileInfo offers portably; the content hash still
// tells a real change from a rewrite.
func fingerprintOf(fi os.FileInfo) fingerprint {
	return fingerprint{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
}
