package launcher

import (
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// becomeSubreaper makes orphaned descendants (a double-forked worker, what a
// killed generation leaves) come back to relaunch instead of init, so it can
// reap them: in a container relaunch may be init itself.
func becomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// procStat reads a process's parent and process group from /proc/P/stat.
func procStat(pid int) (ppid, pgrp int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name is in parentheses and may hold anything: read after
	// the last ')'. Then: state ppid pgrp …
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 3 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	pgrp, _ = strconv.Atoi(f[2])
	return ppid, pgrp, true
}

// inTree reports whether pid is root or one of its descendants: in its
// process group, or with root among its ancestors.
func inTree(pid, root int) bool {
	for i := 0; i < 64 && pid > 1; i++ {
		if pid == root {
			return true
		}
		ppid, pgrp, ok := procStat(pid)
		if !ok {
			return false
		}
		if pgrp == root {
			return true
		}
		pid = ppid
	}
	return false
}

// genRoots maps the live generations to their root pids, so that genOf can
// tell which generation a process belongs to: the handoff broker asks it
// who its peers are. The launcher's loop adds and removes; the broker's
// goroutines read, hence the mutex. Its zero value is ready to use.
type genRoots struct {
	mu    sync.Mutex
	roots map[int][]int // gen → root pids: one, or its workers'
}

func (g *genRoots) add(gen, pid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.roots == nil {
		g.roots = map[int][]int{}
	}
	g.roots[gen] = append(g.roots[gen], pid)
}

func (g *genRoots) remove(gen int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.roots, gen)
}

// removePid forgets one worker's process.
func (g *genRoots) removePid(gen, pid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.roots[gen] = slices.DeleteFunc(g.roots[gen], func(p int) bool { return p == pid })
}

// genOf returns the generation whose process tree holds pid.
func (g *genRoots) genOf(pid int) (int, bool) {
	g.mu.Lock()
	gens := make([]int, 0, len(g.roots))
	roots := make(map[int][]int, len(g.roots))
	for gen, rs := range g.roots {
		gens = append(gens, gen)
		roots[gen] = slices.Clone(rs)
	}
	g.mu.Unlock()
	sort.Sort(sort.Reverse(sort.IntSlice(gens))) // newest first: the likelier asker
	for _, gen := range gens {
		for _, root := range roots[gen] {
			if inTree(pid, root) {
				return gen, true
			}
		}
	}
	return 0, false
}

// orphans lists the children of relaunch's main thread: every process
// that came to relaunch as its subreaper (or as PID 1) is one, as the
// kernel gives an orphan to the reaper's first live thread, the main one
// (a Go program's never exits). Children the other threads forked have a
// goroutine waiting for them by pid. One file: reading every thread's, at
// every SIGCHLD, cost ~0.8 ms of relaunch's CPU in the midst of the new
// app's start (a traced start's stop sends one).
func orphans() []int {
	b, err := os.ReadFile("/proc/self/task/" + strconv.Itoa(os.Getpid()) + "/children")
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// reapOrphans reaps every exited child that is not one relaunch waits for
// itself. Never wait4(-1): it would steal a generation's status from the
// goroutine that waits for it by pid.
func reapOrphans(own func(pid int) bool) (reaped int) {
	for _, pid := range orphans() {
		if own(pid) {
			continue
		}
		var ws syscall.WaitStatus
		if n, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); err == nil && n == pid {
			reaped++
		}
	}
	return reaped
}

// waitPid blocks until pid exits and returns how.
func waitPid(pid int) syscall.WaitStatus {
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			return ws
		}
	}
}

// killGroup sends sig to every process of a generation's group, what is
// left of it included after its leader exited.
func killGroup(pgid int, sig syscall.Signal) {
	if pgid > 0 {
		syscall.Kill(-pgid, sig)
	}
}
