package watch

import (
	"os"
	"syscall"
)

func fingerprintOf(fi os.FileInfo) fingerprint {
	fp := fingerprint{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		fp.dev = uint64(st.Dev)
		fp.ino = uint64(st.Ino)
		fp.ctime = st.Ctim.Nano()
	}
	return fp
}
