// Package listenprobe tells whether an app accepts connections on the
// sockets relaunch gave it, by looking at its processes from outside:
// readiness for apps that never send READY=1. It also lists the listeners of a TCP
// port, for the check of a steered SO_REUSEPORT group.
//
// Probe is the main type. New takes the sockets' fds; Probe.Scan walks a
// process tree in /proc and reports a process that polls one of them with
// epoll (the socket's inode in the fdinfo of an epoll fd, Linux ≥ 4.13) or
// blocks in accept(2) on one (/proc/P/task/T/syscall), and otherwise a
// process that listens on a TCP socket of its own on one of their ports.
// Supported says whether this kernel shows epoll targets at all. Listeners
// lists a port's listening TCP sockets from sock_diag netlink, or from
// /proc/net/tcp where the kernel has no tcp_diag.
//
// Blind spots: a process that waits with select(2), poll(2) or io_uring
// leaves no trace in /proc and is never seen accepting; nor is one in
// accept(2) where libc reaches it through socketcall(2) (386, s390x). A scan
// is bounded: at most 1024 processes, /proc files of at most 1 MiB, and the
// lookup of own sockets reads /proc/P/net/tcp only up to its first line that
// is not a listener or is longer than the probe's buffer. Whatever it
// cannot read (a process gone, a pid reused mid-scan) it skips. Elsewhere
// than on Linux, Supported is false and a scan sees nothing.
package listenprobe
