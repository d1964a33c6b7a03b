// Package listenprobe tells whether an app accepts connections on the
// sockets relaunch gave it, by looking at its processes from outside:
// readiness for apps that never send READY=1. It also lists the listeners of a TCP
// port, for the check of a steered SO_REUSEPORT group.
//
// Probe is the main type. New takes the sockets' fds; Probe.Scan walks a
// process tree in /proc and reports a process that polls one of them with
// epoll (the socket's inode in the fdinfo of an epoll fd, Linux ≥ 4.13),
// blocks in accept(2) on one (/proc/P/task/T/syscall), or has a thread
// blocked in select, pselect6, poll or ppoll whose read set holds one (the
// call's arguments from /proc/P/task/T/syscall, the fd_set or pollfd array
// read from the process's memory with process_vm_readv(2)). Otherwise it
// reports a process that listens on a TCP socket of its own on one of their
// ports, or, once no process of the tree holds any of them, on any port.
// Supported says whether this kernel shows epoll targets at all. Listeners
// lists a port's listening TCP sockets from sock_diag netlink, or from
// /proc/net/tcp where the kernel has no tcp_diag.
//
// Blind spots: a process that waits with io_uring leaves no trace in /proc
// and is never seen accepting; nor is one in accept(2) where libc reaches it
// through socketcall(2) (386, s390x). select and poll are decoded only where
// relaunch may read the app's memory (root, or the same uid where Yama's
// ptrace_scope allows it: the app is relaunch's descendant), only on amd64,
// arm64, riscv64 and loong64 (64-bit little-endian; elsewhere they stay
// unseen), only for 64-bit processes, and only for a thread blocked in the
// call when the scan looks: a server that polls with a timeout of zero and
// sleeps in between is missed. A pollfd array is read up to its first 4096
// entries; of an fd_set, only the 64-bit words that hold the app's fds of
// relaunch's sockets. Memory is read between two reads of the thread's
// syscall file, and counts only when both are the same. A scan
// is bounded: at most 1024 processes, /proc files of at most 1 MiB, and the
// lookup of own sockets reads /proc/P/net/tcp only up to its first line that
// is not a listener or is longer than the probe's buffer. Whatever it
// cannot read (a process gone, a pid reused mid-scan) it skips. Elsewhere
// than on Linux, Supported is false and a scan sees nothing.
package listenprobe
