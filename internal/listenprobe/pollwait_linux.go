package listenprobe

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// Threads blocked in select(2), pselect6(2), poll(2) or ppoll(2) leave their
// fd sets in their own memory, where /proc/P/task/T/syscall points (the
// call's arguments). Relaunch reads them with process_vm_readv(2), which
// needs the ptrace access it has to the app's /proc files anyway (root, or
// the same uid where Yama allows it: the app is relaunch's descendant).

// waitCall is which waiting call a syscall number is, on this arch.
type waitCall int

const (
	notWaiting waitCall = iota
	callSelect          // select or pselect6: (nfds, readfds, writefds, exceptfds, …)
	callPoll            // poll or ppoll: (fds, nfds, …)
)

// Syscall numbers of this arch's 64-bit ABI; -1 where the call does not
// exist. Only 64-bit little-endian arches are decoded: their fd_set is an
// array of 64-bit words and their pollfd is {int32 fd; int16 events; int16
// revents}.
var sysSelect, sysPselect6, sysPoll, sysPpoll = func() (int, int, int, int) {
	switch runtime.GOARCH {
	case "amd64":
		return 23, 270, 7, 271
	case "arm64", "riscv64", "loong64": // the generic table: no select, no poll
		return -1, 72, -1, 73
	}
	return -1, -1, -1, -1
}()

func waitCallOf(nr int) waitCall {
	switch {
	case nr < 0:
		return notWaiting
	case nr == sysSelect || nr == sysPselect6:
		return callSelect
	case nr == sysPoll || nr == sysPpoll:
		return callPoll
	}
	return notWaiting
}

// maxPollFds bounds the pollfd array read from a thread: 4096 entries,
// 32 KiB. A listener past them is not seen.
const maxPollFds = 4096

// pollTarget decodes a thread blocked in select or poll, from the fields of
// its syscall file (number, then six arguments in hex), and returns the
// first of relaunch's sockets (as held by this process) that it waits to
// read from, or -1. It reads the process's memory, so it checks the syscall
// file again after: a thread that returned meanwhile may have reused that
// memory for anything.
func (p *Probe) pollTarget(dir, pid int, path string, call waitCall, args []uint64) (sock, fd int) {
	if !p.is64(dir) {
		return -1, 0 // a 32-bit process: another syscall table and other layouts
	}
	sock, fd = -1, 0
	switch call {
	case callSelect:
		nfds, readfds := args[0], args[1]
		if readfds == 0 {
			return -1, 0
		}
		for _, h := range p.held {
			if uint64(h.fd) >= nfds {
				continue
			}
			// Only the 64-bit word that holds h.fd's bit.
			word, ok := p.readMem(pid, readfds+uint64(h.fd/64)*8, 8)
			if ok && binary.LittleEndian.Uint64(word)&(1<<(h.fd%64)) != 0 {
				sock, fd = h.sock, h.fd
				break
			}
		}
	case callPoll:
		fds, nfds := args[0], min(args[1], maxPollFds)
		if fds == 0 || nfds == 0 {
			return -1, 0
		}
		arr, ok := p.readMem(pid, fds, int(nfds)*8)
		if !ok {
			return -1, 0
		}
	entries:
		for i := 0; i+8 <= len(arr); i += 8 {
			efd := int32(binary.LittleEndian.Uint32(arr[i:]))
			events := binary.LittleEndian.Uint16(arr[i+4:])
			if efd < 0 || events&(unix.POLLIN|pollRdNorm) == 0 {
				continue
			}
			for _, h := range p.held {
				if h.fd == int(efd) {
					sock, fd = h.sock, h.fd
					break entries
				}
			}
		}
	}
	if sock < 0 {
		return -1, 0
	}
	// The same call, the same arguments, the same stack: still blocked in it.
	p.sysline = append(p.sysline[:0], p.lastSyscall...)
	if b := p.readAt(dir, path); !bytes.Equal(b, p.sysline) {
		return -1, 0
	}
	return sock, fd
}

// readMem reads n bytes at addr in pid's memory into p.mem.
func (p *Probe) readMem(pid int, addr uint64, n int) ([]byte, bool) {
	if cap(p.mem) < n {
		p.mem = make([]byte, n)
	}
	p.mem = p.mem[:n]
	local := []unix.Iovec{{Base: &p.mem[0]}}
	local[0].SetLen(n)
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: n}}
	got, err := unix.ProcessVMReadv(pid, local, remote, 0)
	return p.mem, err == nil && got == n
}

// is64 says whether the process in dir runs a 64-bit ELF binary (its exe's
// EI_CLASS): a 32-bit one on this kernel makes 32-bit system calls, whose
// numbers /proc shows from the 32-bit table. Asked once per process scanned.
func (p *Probe) is64(dir int) bool {
	if p.class == 0 {
		p.class = 1
		if fd, err := unix.Openat(dir, "exe", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			var hdr [5]byte
			if n, _ := unix.Pread(fd, hdr[:], 0); n == 5 && bytes.Equal(hdr[:4], []byte("\x7fELF")) && hdr[4] == 2 {
				p.class = 2
			}
			unix.Close(fd)
		}
	}
	return p.class == 2
}

// syscallArgs parses a syscall file's "NR 0xA0 0xA1 … 0xSP 0xPC": the
// number and the first six arguments. ok is false for "running", or a
// thread not in a system call.
func syscallArgs(b []byte, args *[6]uint64) (nr int, ok bool) {
	f, rest, _ := bytes.Cut(bytes.TrimSpace(b), []byte{' '})
	nr, ok = atoi(f)
	if !ok {
		return 0, false
	}
	for i := range args {
		f, rest, _ = bytes.Cut(rest, []byte{' '})
		v, err := strconv.ParseUint(string(bytes.TrimPrefix(f, []byte("0x"))), 16, 64)
		if err != nil {
			return 0, false
		}
		args[i] = v
	}
	return nr, true
}

// pollRdNorm is POLLRDNORM, the same for any reader of a listener as POLLIN
// on the arches decoded here.
const pollRdNorm = 0x40
