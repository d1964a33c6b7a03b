package watch

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
)

// fingerprint identifies one version of a file without reading it.
type fingerprint struct {
	dev, ino           uint64
	size, mtime, ctime int64
}

// sameBytesStamp says whether two fingerprints of one open file show that
// its content has not been written in between: same size and modification
// time. The change time is left out: renaming a file over it, or removing
// it, changes that (its link count) and not its content.
func sameBytesStamp(a, b fingerprint) bool {
	return a.size == b.size && a.mtime == b.mtime
}

// version is one valid version of the binary: the reference a later version
// is compared with, by its prefix hashes.
type version struct {
	path string
	fp   fingerprint
	sums *prefixHash // complete once hashed to the end (see Watcher.completeRef)
	// Until then: the file, open, so that a rename over it or its removal
	// does not matter (its inode stays), and whether its content changed
	// before it could be hashed to the end, in which case it is unknown.
	f    *os.File
	lost bool
}

// badVersion is a version of the binary that was rejected (and said so):
// the same file found again (a touch, an identical copy renamed over it) is
// the same deploy, not a new one to log.
type badVersion struct {
	path, reason string
	fp           fingerprint
	sum          uint64 // the hash of its first badHashLimit bytes, when hashed
	hashed       bool
}

// badHashLimit bounds how much of a rejected file is hashed to recognise it.
const badHashLimit = 256 << 20

// hash hashes v's content through f, its file open (nil when it could not
// be opened: it is then known by its fingerprint alone).
func (v *badVersion) hash(f *os.File, cancel <-chan struct{}) {
	if f == nil || v.hashed {
		return
	}
	h := newPrefixHash(min(v.fp.size, badHashLimit))
	if _, err := h.finish(f, cancel); err == nil {
		v.sum, v.hashed = h.whole(), true
	}
}

// same says whether v is the same bad version as r: the same path, reason
// and fingerprint, or the same size and content.
func (r *badVersion) same(v *badVersion) bool {
	if r.path != v.path || r.reason != v.reason {
		return false
	}
	return r.fp == v.fp || r.fp.size == v.fp.size && r.hashed && v.hashed && r.sum == v.sum
}

// inspected is what openBinary found at a path.
type inspected struct {
	fp  fingerprint
	bad string // why it is not a whole executable; "" when it is
}

// openBinary opens path and returns the open file, its fingerprint and
// whether it is a whole executable, all through one descriptor, so that
// they describe one inode. The caller closes the file.
func openBinary(path string) (*os.File, inspected, error) {
	var in inspected
	f, err := os.Open(path)
	if err != nil {
		return nil, in, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, in, err
	}
	in.fp = fingerprintOf(fi)
	in.bad = validate(f, fi)
	return f, in, nil
}

// A version's content is known by the 64-bit hashes (hash/maphash) of its
// prefixes: its first 64 KiB, 128 KiB, 256 KiB and so on, doubling, and the
// whole of it (the last one: the hash of the file). Two files of the same
// size have the same content when their last hashes are equal; when their
// k-th hashes differ, so do their first prefixEnd(k) bytes. Comparing a new
// file with the reference prefix by prefix therefore stops at the first
// prefix that differs, having read at most twice the bytes before the first
// difference (and at least 64 KiB): two builds of a Go program differ in
// their build ID, in the first page, so a new build is told apart after
// reading 64 KiB, not the whole binary. Only a file with the same content is
// read to its end.
//
// maphash, not SHA-256: it hashes an 8 MiB binary in 0.7 ms instead of
// 4.9 ms (on the benchmark's machine, with SHA instructions), CPU that an
// upgrade competes for with the app; collisions need no defence here, as
// who can write the binary decides what runs anyway. One seed per process:
// the hashes are only ever compared within it.
const (
	firstPrefix = 64 << 10 // bytes
	readChunk   = 32 << 10 // bytes read at a time (a small heap object)
)

// prefixEnd is where the k-th prefix of a content of size bytes ends.
func prefixEnd(k int, size int64) int64 {
	if k >= 40 { // past any file size
		return size
	}
	return min(int64(firstPrefix)<<k, size)
}

// prefixHash hashes a content of a known size from its start, one prefix
// at a time, and keeps the hash of each prefix done.
type prefixHash struct {
	size int64
	off  int64         // bytes hashed so far
	h    *maphash.Hash // the running hash; nil once complete
	sums []uint64
}

var hashSeed = maphash.MakeSeed()

func newPrefixHash(size int64) *prefixHash {
	h := new(maphash.Hash)
	h.SetSeed(hashSeed)
	return &prefixHash{size: size, h: h}
}

func (p *prefixHash) complete() bool { return p.h == nil }

// whole returns the hash of the whole content, once complete.
func (p *prefixHash) whole() uint64 { return p.sums[len(p.sums)-1] }

// errCanceled is next's error when cancel is closed.
var errCanceled = errors.New("canceled")

// next hashes the next prefix of f's content, reading f from where the
// previous one ended, and returns the number of bytes read. A file shorter
// than size is io.ErrUnexpectedEOF. It stops with errCanceled once cancel
// (which may be nil) is closed.
func (p *prefixHash) next(f io.ReaderAt, buf []byte, cancel <-chan struct{}) (int64, error) {
	end := prefixEnd(len(p.sums), p.size)
	var read int64
	for p.off < end {
		select {
		case <-cancel:
			return read, errCanceled
		default:
		}
		n := int(min(int64(len(buf)), end-p.off))
		m, err := f.ReadAt(buf[:n], p.off)
		read += int64(m)
		if m < n {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return read, err
		}
		p.h.Write(buf[:n])
		p.off += int64(n)
	}
	p.sums = append(p.sums, p.h.Sum64()) // the state goes on
	if end == p.size {
		p.h = nil
	}
	return read, nil
}

// finish hashes f's content to its end.
func (p *prefixHash) finish(f io.ReaderAt, cancel <-chan struct{}) (int64, error) {
	if p.complete() {
		return 0, nil
	}
	buf := make([]byte, readChunk)
	var read int64
	for !p.complete() {
		n, err := p.next(f, buf, cancel)
		read += n
		if err != nil {
			return read, err
		}
	}
	return read, nil
}

// headerLen is how much of the file validate reads: the ELF or Mach-O header
// and, for a script, the "#!" line (Linux reads at most 256 bytes of it).
const headerLen = 4096

// validate says why f is not a whole executable, or "" when it is: a regular
// file with an execute bit whose header is complete (see the package doc).
func validate(f io.ReaderAt, fi os.FileInfo) string {
	if !fi.Mode().IsRegular() {
		return "not a regular file"
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Sprintf("not executable (mode %04o)", fi.Mode().Perm())
	}
	size := fi.Size()
	if size == 0 {
		return "empty file"
	}
	buf := make([]byte, min(size, headerLen))
	n, err := f.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return "unreadable: " + err.Error()
	}
	buf = buf[:n]
	switch {
	case bytes.HasPrefix(buf, []byte("\x7fELF")):
		return elfWhole(f, size, buf)
	case bytes.HasPrefix(buf, []byte("#!")):
		if bytes.IndexByte(buf, '\n') < 0 {
			return "truncated: the #! line has no newline"
		}
		return ""
	case isMachO(buf):
		return machOWhole(size, buf)
	case len(buf) < 4 && (bytes.HasPrefix([]byte("\x7fELF"), buf) || bytes.HasPrefix([]byte("#!"), buf)):
		return fmt.Sprintf("truncated: %d bytes, not a whole ELF or #! header", len(buf))
	}
	return "no ELF or #! header"
}

// tableEnd returns off+entsize*num, or false if that overflows.
func tableEnd(off, entsize, num uint64) (uint64, bool) {
	n := entsize * num // entsize < 2^16, num < 2^32: no overflow
	if off > ^uint64(0)-n {
		return 0, false
	}
	return off + n, true
}

// pastEnd says that what (a table, a segment, a section) ends at end, past
// the end of a file of size bytes (ok false: end overflowed).
func pastEnd(what string, end uint64, ok bool, size uint64) string {
	if !ok {
		return fmt.Sprintf("truncated: %s ends past the end of the file (%d bytes)", what, size)
	}
	return fmt.Sprintf("truncated: %s ends at %d, past the end of the file (%d bytes)", what, end, size)
}

// elfWhole checks that the ELF header is complete, that the program header
// table and every loadable segment end within size, and then the section
// header table and the sections. Segments come first: they are what exec
// loads, so they name what is missing best.
func elfWhole(f io.ReaderAt, size int64, h []byte) string {
	if len(h) < 16 {
		return fmt.Sprintf("truncated: the ELF header is incomplete (%d bytes)", len(h))
	}
	var bo binary.ByteOrder
	switch h[5] {
	case 1:
		bo = binary.LittleEndian
	case 2:
		bo = binary.BigEndian
	default:
		return "bad ELF data encoding"
	}
	var (
		phoff, shoff                         uint64
		phentsize, phnum, shentsize, shnum   uint64
		hdrLen, shSizeOff, shInfoOff, sh0Len int
	)
	switch h[4] {
	case 1: // ELFCLASS32
		hdrLen, shSizeOff, shInfoOff, sh0Len = 52, 0x14, 0x1c, 40
		if len(h) < hdrLen {
			return fmt.Sprintf("truncated: the ELF header is incomplete (%d of %d bytes)", len(h), hdrLen)
		}
		phoff = uint64(bo.Uint32(h[0x1c:]))
		shoff = uint64(bo.Uint32(h[0x20:]))
		phentsize = uint64(bo.Uint16(h[0x2a:]))
		phnum = uint64(bo.Uint16(h[0x2c:]))
		shentsize = uint64(bo.Uint16(h[0x2e:]))
		shnum = uint64(bo.Uint16(h[0x30:]))
	case 2: // ELFCLASS64
		hdrLen, shSizeOff, shInfoOff, sh0Len = 64, 0x20, 0x2c, 64
		if len(h) < hdrLen {
			return fmt.Sprintf("truncated: the ELF header is incomplete (%d of %d bytes)", len(h), hdrLen)
		}
		phoff = bo.Uint64(h[0x20:])
		shoff = bo.Uint64(h[0x28:])
		phentsize = uint64(bo.Uint16(h[0x36:]))
		phnum = uint64(bo.Uint16(h[0x38:]))
		shentsize = uint64(bo.Uint16(h[0x3a:]))
		shnum = uint64(bo.Uint16(h[0x3c:]))
	default:
		return "bad ELF class"
	}
	usize := uint64(size)
	// Extended numbering: more than 0xfeff sections (e_shnum 0) or 0xffff
	// program headers (PN_XNUM) keep the real count in section header 0.
	if (shnum == 0 && shoff != 0) || phnum == 0xffff {
		if end, ok := tableEnd(shoff, uint64(sh0Len), 1); !ok || end > usize {
			return pastEnd("the section header table", end, ok, usize)
		}
		sh0 := make([]byte, sh0Len)
		if _, err := f.ReadAt(sh0, int64(shoff)); err != nil {
			return "truncated: " + err.Error()
		}
		if shnum == 0 {
			if h[4] == 1 {
				shnum = uint64(bo.Uint32(sh0[shSizeOff:]))
			} else {
				shnum = bo.Uint64(sh0[shSizeOff:])
			}
			if shnum > 1<<32 {
				return "bad ELF section count"
			}
		}
		if phnum == 0xffff {
			phnum = uint64(bo.Uint32(sh0[shInfoOff:]))
		}
	}
	if end, ok := tableEnd(phoff, phentsize, phnum); !ok || end > usize {
		return pastEnd("the program header table", end, ok, usize)
	}
	if bad := elfSegmentsWhole(f, bo, h[4] == 2, phoff, phentsize, phnum, usize); bad != "" {
		return bad
	}
	if end, ok := tableEnd(shoff, shentsize, shnum); !ok || end > usize {
		return pastEnd("the section header table", end, ok, usize)
	}
	return elfSectionsWhole(f, usize)
}

// elfSegmentsWhole checks that every loadable segment ends within size,
// reading the program header table (which ends within it) a chunk at a
// time. Segments are numbered from 0, as readelf does. Entries of an
// unexpected size are not checked (the kernel refuses those anyway).
func elfSegmentsWhole(f io.ReaderAt, bo binary.ByteOrder, is64 bool, phoff, phentsize, phnum, size uint64) string {
	offAt, fileszAt, minEnt := uint64(4), uint64(16), uint64(32) // Elf32_Phdr
	if is64 {
		offAt, fileszAt, minEnt = 8, 32, 56 // Elf64_Phdr
	}
	if phentsize < minEnt || phnum == 0 {
		return ""
	}
	word := func(b []byte) uint64 {
		if is64 {
			return bo.Uint64(b)
		}
		return uint64(bo.Uint32(b))
	}
	perChunk := max(1, uint64(readChunk)/phentsize)
	buf := make([]byte, min(perChunk, phnum)*phentsize)
	for first := uint64(0); first < phnum; first += perChunk {
		n := min(perChunk, phnum-first)
		chunk := buf[:n*phentsize]
		if _, err := f.ReadAt(chunk, int64(phoff+first*phentsize)); err != nil {
			return "truncated: reading the program header table: " + err.Error()
		}
		for i := range n {
			e := chunk[i*phentsize:]
			if elf.ProgType(bo.Uint32(e)) != elf.PT_LOAD {
				continue
			}
			off, filesz := word(e[offAt:]), word(e[fileszAt:])
			if end, ok := tableEnd(off, filesz, 1); !ok || end > size {
				return pastEnd(fmt.Sprintf("segment %d (LOAD)", first+i), end, ok, size)
			}
		}
	}
	return ""
}

// elfSectionsWhole checks that every section with bytes in the file ends
// within it. The header tables alone prove little: Go's linker puts the
// section headers right after the program headers, near the start, so a
// half-copied Go binary passes that check.
func elfSectionsWhole(f io.ReaderAt, size uint64) string {
	ef, err := elf.NewFile(f)
	var fe *elf.FormatError
	if errors.As(err, &fe) {
		return "" // a layout debug/elf does not know; the header checks passed
	}
	if err != nil {
		return "truncated: " + err.Error()
	}
	for _, sec := range ef.Sections {
		if sec.Type != elf.SHT_NOBITS {
			if end, ok := tableEnd(sec.Offset, sec.FileSize, 1); !ok || end > size {
				return pastEnd("section "+sec.Name, end, ok, size)
			}
		}
	}
	return ""
}

// Mach-O magics as they appear in the file's first four bytes.
var (
	machO32LE = []byte{0xce, 0xfa, 0xed, 0xfe}
	machO64LE = []byte{0xcf, 0xfa, 0xed, 0xfe}
	machO32BE = []byte{0xfe, 0xed, 0xfa, 0xce}
	machO64BE = []byte{0xfe, 0xed, 0xfa, 0xcf}
	machOFat  = []byte{0xca, 0xfe, 0xba, 0xbe}
)

func isMachO(h []byte) bool {
	for _, m := range [][]byte{machO32LE, machO64LE, machO32BE, machO64BE, machOFat} {
		if bytes.HasPrefix(h, m) {
			return true
		}
	}
	return false
}

// machOWhole checks a Mach-O header and its load commands (thin), or that
// every architecture of a universal binary lies within the file.
func machOWhole(size int64, h []byte) string {
	usize := uint64(size)
	if bytes.HasPrefix(h, machOFat) {
		if len(h) < 8 {
			return "incomplete Mach-O header"
		}
		n := uint64(binary.BigEndian.Uint32(h[4:]))
		if 8+20*n > uint64(len(h)) {
			return "incomplete Mach-O universal header"
		}
		for i := range n {
			a := h[8+20*i:]
			off, sz := uint64(binary.BigEndian.Uint32(a[8:])), uint64(binary.BigEndian.Uint32(a[12:]))
			if off+sz > usize {
				return "incomplete Mach-O universal binary"
			}
		}
		return ""
	}
	var bo binary.ByteOrder = binary.LittleEndian
	if h[0] == 0xfe {
		bo = binary.BigEndian
	}
	hdr := uint64(28)
	if h[3] == 0xcf || h[0] == 0xcf {
		hdr = 32
	}
	if uint64(len(h)) < hdr {
		return "incomplete Mach-O header"
	}
	if hdr+uint64(bo.Uint32(h[20:])) > usize {
		return "incomplete Mach-O file: load commands beyond the end of the file"
	}
	return ""
}
