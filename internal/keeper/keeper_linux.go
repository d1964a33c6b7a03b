package keeper

import (
	"errors"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/internal/listenprobe"
)

const (
	nameEnv = "RELAUNCH_KEEPER"    // the abstract socket's name: how a new relaunch finds the keeper
	fdEnv   = "RELAUNCH_KEEPER_FD" // the owner's end of the socketpair, in the keeper
	comm    = "relaunch-keeper"    // what ps and top show (15 bytes: the kernel's limit)
)

// Main runs the keeper, and exits, when this process was started as one
// (Start); it returns at once otherwise. main calls it first.
func Main() {
	name, ok := os.LookupEnv(nameEnv)
	fdS, ok2 := os.LookupEnv(fdEnv)
	if !ok || !ok2 {
		return
	}
	os.Unsetenv(fdEnv)
	owner, err := strconv.Atoi(fdS)
	if err != nil || owner < 3 {
		os.Exit(2)
	}
	os.WriteFile("/proc/self/comm", []byte(comm), 0)
	debug.SetGCPercent(25) // it holds fds, not memory
	k, err := newKeeper(name, owner)
	if err != nil {
		os.Exit(1)
	}
	k.run()
	os.Exit(0)
}

// keeper is the keeper process's state; one goroutine runs it.
type keeper struct {
	ln       int // the abstract socket takers connect to
	owner    int // -1 while orphaned
	ownerPid int
	uid      int
	names    []string // in the order stored: handed over in that order
	fds      map[string]int
	holders  []int // while orphaned: pidfds of the other processes holding a kept socket
}

func newKeeper(name string, owner int) (*keeper, error) {
	ln, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(ln, &unix.SockaddrUnix{Name: "@" + name}); err != nil {
		unix.Close(ln)
		return nil, err
	}
	if err := unix.Listen(ln, 8); err != nil {
		unix.Close(ln)
		return nil, err
	}
	k := &keeper{ln: ln, owner: owner, uid: os.Geteuid(), fds: map[string]int{}}
	if c, err := peer(owner); err == nil {
		k.ownerPid = int(c.Pid)
	}
	return k, nil
}

func (k *keeper) run() {
	for {
		pfds := []unix.PollFd{{Fd: int32(k.ln), Events: unix.POLLIN}}
		if k.owner >= 0 {
			pfds = append(pfds, unix.PollFd{Fd: int32(k.owner), Events: unix.POLLIN})
		}
		for _, h := range k.holders {
			pfds = append(pfds, unix.PollFd{Fd: int32(h), Events: unix.POLLIN})
		}
		if _, err := unix.Poll(pfds, -1); err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		if pfds[0].Revents != 0 {
			k.accept()
		}
		rest := pfds[1:]
		if k.owner >= 0 && len(rest) > 0 && int(rest[0].Fd) == k.owner {
			if rest[0].Revents != 0 && !k.fromOwner() {
				return
			}
			rest = rest[1:]
		}
		for _, p := range rest {
			if p.Revents != 0 { // that holder exited
				unix.Close(int(p.Fd))
				k.holders = slices.DeleteFunc(k.holders, func(h int) bool { return h == int(p.Fd) })
			}
		}
		if k.owner < 0 && len(k.holders) == 0 && !k.watchHolders() {
			return // orphaned, and nobody serves on the sockets any more
		}
	}
}

// fromOwner handles one message of the owner; false: exit.
func (k *keeper) fromOwner() bool {
	verb, arg, fd, err := recv(k.owner)
	switch {
	case err != nil:
		// relaunch died (or sent garbage): orphaned.
		unix.Close(k.owner)
		k.owner, k.ownerPid = -1, 0
		return k.watchHolders()
	case verb == "STORE" && fd >= 0 && arg != "":
		if old, ok := k.fds[arg]; ok {
			unix.Close(old)
		} else {
			k.names = append(k.names, arg)
		}
		k.fds[arg] = fd
	case verb == "REMOVE":
		if old, ok := k.fds[arg]; ok {
			unix.Close(old)
			delete(k.fds, arg)
			k.names = slices.DeleteFunc(k.names, func(n string) bool { return n == arg })
		}
		closeFd(fd)
	case verb == "BYE":
		closeFd(fd)
		return false
	default:
		closeFd(fd)
	}
	return true
}

// accept answers one taker.
func (k *keeper) accept() {
	c, _, err := unix.Accept4(k.ln, unix.SOCK_CLOEXEC)
	if err != nil {
		return
	}
	// A taker that stalls cannot hold the keeper for long.
	timeout(c, 2*time.Second)
	cred, err := peer(c)
	if err != nil || int(cred.Uid) != k.uid && cred.Uid != 0 {
		send(c, "DENIED "+strconv.Itoa(k.uid), -1)
		unix.Close(c)
		return
	}
	verb, _, fd, err := recv(c)
	closeFd(fd)
	if err != nil || verb != "TAKE" {
		unix.Close(c)
		return
	}
	if k.owner >= 0 {
		send(c, "BUSY "+strconv.Itoa(k.ownerPid), -1)
		unix.Close(c)
		return
	}
	for _, n := range k.names {
		if err := send(c, "FD "+n, k.fds[n]); err != nil {
			unix.Close(c)
			return
		}
	}
	if err := send(c, "END", -1); err != nil {
		unix.Close(c)
		return
	}
	timeout(c, 0)
	k.owner, k.ownerPid = c, int(cred.Pid)
	for _, h := range k.holders {
		unix.Close(h)
	}
	k.holders = nil
}

// watchHolders finds the processes that hold one of the kept sockets and
// watches them through pidfds; false when there is none.
func (k *keeper) watchHolders() bool {
	kept := map[uint64]bool{}
	for _, fd := range k.fds {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			kept[st.Ino] = true
		}
	}
	self := os.Getpid()
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self {
			continue
		}
		for _, ino := range listenprobe.SocketInodes(pid) {
			if kept[ino] {
				if pfd, err := unix.PidfdOpen(pid, 0); err == nil {
					k.holders = append(k.holders, pfd)
				}
				break
			}
		}
	}
	return len(k.holders) > 0
}
