package launcher

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/internal/listenprobe"
)

// An app that daemonizes forks, its child calls setsid (leaving the
// generation's process group, so killGroup misses it) and its main process
// exits 0. The daemon comes back to relaunch, the subreaper, and keeps the
// listening socket: relaunch would exit 0 with the port still served by a
// process nobody manages.

// daemonGrace is how long a daemon left behind gets to exit on SIGTERM.
const daemonGrace = time.Second

// leftovers lists relaunch's children that no generation or build owns,
// that started after g and hold one of relaunch's listening sockets: what g
// left running when its main process exited. Only g can have handed them
// the sockets, since other generations' orphans started before it.
func (l *launcher) leftovers(g *generation) []int {
	var slots map[uint64]int
	var pids []int
	for _, pid := range orphans() {
		if l.owns(pid) {
			continue
		}
		if t, ok := procStartTicks(pid); !ok || t < g.startTicks {
			continue
		}
		if slots == nil {
			slots = l.listenerSlots()
		}
		for _, ino := range listenprobe.SocketInodes(pid) {
			if _, ok := slots[ino]; ok {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// stopLeftovers stops pids, relaunch's children: SIGTERM, then SIGKILL
// (to their process group too: a daemon leads its own) after daemonGrace,
// and reaps them. It runs on the loop, the only place that reaps orphans,
// so no pid is reaped and reused while it signals. Then it stops what
// again() finds: a double fork's grandchild, or a worker, comes back to
// relaunch once its parent is gone.
func stopLeftovers(pids []int, again func() []int) {
	for round := 0; len(pids) > 0 && round < 5; round++ {
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGTERM)
		}
		left := reapWithin(pids, daemonGrace)
		for _, pid := range left {
			if _, pgrp, ok := procStat(pid); ok && pgrp == pid {
				syscall.Kill(-pid, syscall.SIGKILL)
			}
			syscall.Kill(pid, syscall.SIGKILL)
		}
		reapWithin(left, 5*time.Second)
		pids = again()
	}
}

// reapWithin reaps pids as they exit, for d at most, and returns those
// still running.
func reapWithin(pids []int, d time.Duration) []int {
	deadline := time.Now().Add(d)
	for {
		var left []int
		for _, pid := range pids {
			var ws syscall.WaitStatus
			if n, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); n == 0 && err == nil {
				left = append(left, pid)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		pids = left
		time.Sleep(10 * time.Millisecond)
	}
}

// daemonReason says what an app that daemonized did and what to do.
func daemonReason(pids []int) string {
	what := "pid " + strconv.Itoa(pids[0])
	if len(pids) > 1 {
		what = fmt.Sprintf("pids %s", strings.Trim(fmt.Sprint(pids), "[]"))
	}
	return fmt.Sprintf("daemonized: it forked into the background and its main process exited (status 0), leaving %s with the listening socket (relaunch stopped it). "+
		"The app must run in the foreground: turn its daemon mode off (nginx: \"daemon off;\", gunicorn: no --daemon, redis: daemonize no)", what)
}

// startTicksNow is when a generation starts, in /proc's clock ticks since
// boot (the same clock, CLOCK_BOOTTIME): read just before its process is
// started, so that all it forks starts at or after it (a warm helper,
// started earlier, may run it: another generation's orphans forked while
// it waited must not count as its own). Not read from /proc: that cost
// 0.1–0.2 ms of relaunch's CPU at every start, while the app's own start
// needs the CPU.
func startTicksNow() uint64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return 0
	}
	// USER_HZ, 100 on every architecture Go supports, as in /proc.
	return uint64(ts.Nano() / (1e9 / 100))
}

// procStartTicks reads when a process started, in clock ticks since boot
// (/proc/P/stat field 22).
func procStartTicks(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:]) // from field 3 (state) on
	if len(f) < 20 {
		return 0, false
	}
	t, err := strconv.ParseUint(f[19], 10, 64)
	return t, err == nil
}
