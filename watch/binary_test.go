package watch

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// synthELF builds a small ELF file: header, program header table right
// after it, section header table at the end (as linkers lay it out).
func synthELF(class byte, bo binary.ByteOrder, phnum, shnum int) []byte {
	hdr, phent, shent := 64, 56, 64
	if class == 1 {
		hdr, phent, shent = 52, 32, 40
	}
	phoff := hdr
	shoff := phoff + phent*phnum + 100 // some "sections" in between
	b := make([]byte, shoff+shent*shnum)
	if shnum == 0 {
		shoff = 0
	}
	copy(b, "\x7fELF")
	b[4], b[6] = class, 1
	b[5] = 1
	if bo == binary.BigEndian {
		b[5] = 2
	}
	bo.PutUint32(b[0x14:], 1) // e_version: EV_CURRENT
	if class == 1 {
		bo.PutUint32(b[0x1c:], uint32(phoff))
		bo.PutUint32(b[0x20:], uint32(shoff))
		bo.PutUint16(b[0x2a:], uint16(phent))
		bo.PutUint16(b[0x2c:], uint16(phnum))
		bo.PutUint16(b[0x2e:], uint16(shent))
		bo.PutUint16(b[0x30:], uint16(shnum))
	} else {
		bo.PutUint64(b[0x20:], uint64(phoff))
		bo.PutUint64(b[0x28:], uint64(shoff))
		bo.PutUint16(b[0x36:], uint16(phent))
		bo.PutUint16(b[0x38:], uint16(phnum))
		bo.PutUint16(b[0x3a:], uint16(shent))
		bo.PutUint16(b[0x3c:], uint16(shnum))
	}
	return b
}

func TestValidate(t *testing.T) {
	t.Parallel()
	a, _ := binaries(t)
	dir := tempDir(t)
	// Extended section numbering: e_shnum 0, the count in section 0's sh_size.
	ext := synthELF(2, binary.LittleEndian, 2, 3)
	binary.LittleEndian.PutUint16(ext[0x3c:], 0)
	shoff := binary.LittleEndian.Uint64(ext[0x28:])
	binary.LittleEndian.PutUint64(ext[shoff+0x20:], 3)

	for _, tc := range []struct {
		name string
		data []byte
		mode os.FileMode
		bad  string // "" = valid; else a word of the reason
	}{
		{"real ELF", a, 0o755, ""},
		{"real ELF, owner-only x", a, 0o700, ""},
		{"not executable", a, 0o644, "not executable (mode 0644)"},
		{"truncated ELF", a[:len(a)-1], 0o755, "section header table"},
		{"half an ELF", a[:len(a)/2], 0o755, "segment"},
		{"ELF header only", a[:64], 0o755, "the program header table ends at"},
		{"partial ELF header", a[:40], 0o755, "ELF header is incomplete (40 of 64 bytes)"},
		{"ELF magic only", a[:4], 0o755, "ELF header is incomplete"},
		{"two bytes", a[:2], 0o755, "truncated: 2 bytes"},
		{"ELF32", synthELF(1, binary.LittleEndian, 3, 5), 0o755, ""},
		{"ELF32 truncated", synthELF(1, binary.LittleEndian, 3, 5)[:200], 0o755, "section header table"},
		{"ELF64 big-endian", synthELF(2, binary.BigEndian, 3, 5), 0o755, ""},
		{"ELF64 big-endian truncated", synthELF(2, binary.BigEndian, 3, 5)[:300], 0o755, "section header table"},
		{"ELF program headers cut", synthELF(2, binary.LittleEndian, 40, 0)[:64+56*10], 0o755, "program header table"},
		{"ELF extended numbering", ext, 0o755, ""},
		{"ELF extended numbering truncated", ext[:len(ext)-1], 0o755, "section header table"},
		{"script", []byte("#!/bin/sh\necho hi\n"), 0o755, ""},
		{"script line only", []byte("#!/usr/bin/env python3\n"), 0o755, ""},
		{"script without newline", []byte("#!/bin/s"), 0o755, "#! line"},
		{"empty", nil, 0o755, "empty"},
		{"text", []byte("hello\n"), 0o755, "no ELF or #! header"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
		writeFile(t, p, tc.data, tc.mode)
		in, _, err := inspect(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.bad == "" && in.bad != "" || tc.bad != "" && !strings.Contains(in.bad, tc.bad) {
			t.Errorf("%s: validate = %q, want %q", tc.name, in.bad, tc.bad)
		}
	}

	// A directory is not a regular file.
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if bad := validate(f, fi); bad == "" {
		t.Error("a directory is valid")
	}
}

func TestInspectHashesOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	a, b := binaries(t)
	dir := tempDir(t)
	pa, pb := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeFile(t, pa, a, 0o755)
	writeFile(t, pb, b, 0o755)
	_, sum, err := inspect(pa, func(fingerprint) bool { return false })
	if err != nil || sum != nil {
		t.Fatalf("hashed without being asked: %v", err)
	}
	ina, suma, _ := inspect(pa, func(fingerprint) bool { return true })
	inb, sumb, _ := inspect(pb, func(fingerprint) bool { return true })
	if suma == nil || sumb == nil || *suma == *sumb || ina.fp == inb.fp || ina.fp.size != inb.fp.size {
		t.Fatalf("a %+v %x, b %+v %x", ina, suma, inb, sumb)
	}
}
