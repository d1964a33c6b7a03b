//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaunch/relaunch/internal/loadtest"
)

// relaunch's own death outside systemd: its keeper holds every socket, so
// the orphaned generations serve on with the group (and steering) intact;
// a relaunch started again takes the sockets back from the keeper, adopts
// the orphan (status says so), and its next upgrade drains it; the new
// generation gets one of the very same sockets. No request fails.
func TestAdoptAfterKill(t *testing.T) {
	needE2E(t)
	t.Parallel()
	for _, handover := range []string{"steered", "shared"} {
		t.Run(handover, func(t *testing.T) {
			t.Parallel()
			addr := freeAddr(t)
			args := func(sock string) []string {
				return []string{"-l", addr, "--handover", handover, "--no-watch-binary", "--control", sock, "--", demoBin}
			}
			a := startRelaunch(t, args(filepath.Join(shortTempDir(t), "a.sock"))...)
			gen1 := waitPid(t, a, 1)
			a.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) ready", gen1), 10*time.Second)
			socks := socketInodes(t, a.Pid())
			keeper := keeperOf(t, a)

			load := startLoad(t, addr)
			waitLoadOK(t, load, 100, 10*time.Second)
			a.Signal(syscall.SIGKILL)
			a.MustWait(10 * time.Second)
			ok, _ := load.Progress()
			waitLoadOK(t, load, ok+200, 10*time.Second) // relaunch dead: the orphan alone serves

			sock := filepath.Join(shortTempDir(t), "b.sock")
			b := startRelaunch(t, args(sock)...)
			want := 10 // 8 slots, the spare, the state
			if handover == "shared" {
				want = 2
			}
			b.WaitLog(t, fmt.Sprintf("took %d socket(s) back from the keeper (pid %d)", want, keeper), 10*time.Second)
			b.WaitLog(t, fmt.Sprintf("adopted gen 1 (pid %d), current", gen1), 10*time.Second)
			checkAdoptedAlone(t, b, sock, gen1)
			upgradeTo(t, b, 2)
			b.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", gen1), 20*time.Second)
			_, fds := fdsAtStart(t, addr)
			if ino := socketInode(fds[3]); !socks[ino] {
				t.Errorf("gen 2's fd 3 is %q, none of the sockets the first relaunch bound", fds[3])
			}
			stopLoad(t, load)
			st := statusOf(t, sock)
			if len(st.Generations) != 1 || st.Generations[0].Generation != 2 || st.Generations[0].Adopted {
				t.Errorf("status after the upgrade: %+v; want gen 2 alone", st.Generations)
			}
			// The keeper is the new relaunch's now: it ends with it.
			b.Signal(syscall.SIGTERM)
			b.MustWait(20 * time.Second)
			if left := waitProcsGone([]int{keeper}, 5*time.Second); len(left) > 0 {
				t.Errorf("the keeper (pid %d) outlived the relaunch that stopped", keeper)
			}
		})
	}
}

// relaunch dies during an upgrade, gen 1 draining (it never exits: USR1
// is its drain signal, which the demo only records) and gen 2 current: the
// next relaunch adopts both, and gen 1's --drain-timeout counts from its
// drain signal, not from the adoption.
func TestAdoptMidUpgrade(t *testing.T) {
	needE2E(t)
	t.Parallel()
	addr := freeAddr(t)
	args := func(sock string) []string {
		return []string{"-l", addr, "--no-watch-binary", "--drain-signal", "USR1", "--drain-timeout", "8s", "--control", sock, "--", demoBin}
	}
	sockA := filepath.Join(shortTempDir(t), "a.sock")
	a := startRelaunch(t, args(sockA)...)
	gen1 := waitPid(t, a, 1)
	a.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) ready", gen1), 10*time.Second)
	load := startLoad(t, addr)
	waitLoadOK(t, load, 100, 10*time.Second)
	upgradeTo(t, a, 2)
	gen2 := waitPid(t, a, 2)
	a.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) draining", gen1), 10*time.Second)
	var drainAt time.Time
	for _, g := range statusOf(t, sockA).Generations {
		if g.Pid == gen1 {
			drainAt = g.Since
		}
	}
	a.Signal(syscall.SIGKILL)
	a.MustWait(10 * time.Second)

	sock := filepath.Join(shortTempDir(t), "b.sock")
	b := startRelaunch(t, args(sock)...)
	b.WaitLog(t, fmt.Sprintf("adopted gen 2 (pid %d), current", gen2), 10*time.Second)
	b.WaitLog(t, fmt.Sprintf("adopted gen 1 (pid %d), draining", gen1), 10*time.Second)
	st := statusOf(t, sock)
	if len(st.Generations) != 2 {
		t.Fatalf("status after adoption: %+v; want gens 1 and 2", st.Generations)
	}
	for _, g := range st.Generations {
		switch {
		case !g.Adopted:
			t.Errorf("gen %d not adopted: %+v", g.Generation, g)
		case g.Pid == gen1 && (g.State != "draining" || !g.Since.Equal(drainAt)):
			t.Errorf("gen 1: %s since %v; want draining since its drain signal, %v", g.State, g.Since, drainAt)
		case g.Pid == gen2 && g.State != "current":
			t.Errorf("gen 2: %s; want current", g.State)
		}
	}
	b.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) exited", gen1), 20*time.Second)
	if !strings.Contains(b.Stderr(), "still draining after 8s") {
		t.Errorf("gen 1 was not killed at its drain timeout:\n%s", b.Stderr())
	}
	// The next generation numbers on from the adopted ones.
	upgradeTo(t, b, 3)
	stopLoad(t, load)
}

// The sequence that lost connections when relaunch died mid-drain: gen 1
// left its accept loop but keeps its listener open (as many apps do),
// gen 2 drained and exited, gen 3 serves; relaunch is killed. Without a
// keeper the idle slots close with relaunch, the group is re-indexed and
// steering falls back to the hash: half the new connections wait on gen
// 1's socket forever. With it, none fails, while relaunch is dead or
// after it is started again.
func TestRelaunchDeathMidDrain(t *testing.T) {
	needE2E(t)
	t.Parallel()
	addr := freeAddr(t)
	args := []string{"-l", addr, "--no-watch-binary", "--", demoBin, "-leave-open", "1"}
	a := startRelaunch(t, args...)
	a.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) ready", waitPid(t, a, 1)), 10*time.Second)
	upgradeTo(t, a, 2)
	upgradeTo(t, a, 3)
	a.WaitLog(t, fmt.Sprintf("gen 2 (pid %d) exited", waitPid(t, a, 2)), 20*time.Second)
	gen1 := waitPid(t, a, 1)
	if !processAlive(gen1) {
		t.Fatalf("gen 1 (pid %d) is gone: it should linger with its listener open", gen1)
	}
	// A request waiting on gen 1's socket would wait forever: 5 s is a
	// failure.
	load := startLoadConfig(t, loadtest.Config{Addr: addr, Clients: loadClients, KeepAliveFraction: 0.5, Timeout: 5 * time.Second})
	waitLoadOK(t, load, 100, 10*time.Second)
	a.Signal(syscall.SIGKILL)
	a.MustWait(10 * time.Second)
	ok, _ := load.Progress()
	waitLoadOK(t, load, ok+300, 15*time.Second)

	b := startRelaunch(t, args...)
	b.WaitLog(t, "adopted gen 3", 10*time.Second)
	ok, _ = load.Progress()
	waitLoadOK(t, load, ok+300, 15*time.Second)
	stopLoad(t, load)
}

// A non-root relaunch facing another user's orphans cannot take their
// sockets back: it exits 1 naming them and what to do, and they keep
// serving.
func TestAdoptRefused(t *testing.T) {
	needE2E(t)
	t.Parallel()
	if syscall.Geteuid() != 0 {
		t.Skip("needs root: the orphans run as another user")
	}
	setpriv := needCommand(t, "setpriv", "util-linux")
	// A directory every user can use: the binaries (the e2e directory is
	// root's alone) and a TMPDIR for the runtime directory.
	dir := shortTempDir(t)
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(os.Chmod(dir, 0o755), os.Chmod(tmp, os.ModeSticky|0o777)); err != nil {
		t.Fatal(err)
	}
	rl, demo := filepath.Join(dir, "relaunch"), filepath.Join(dir, "demo")
	copyBinary(t, relaunchBin, rl)
	copyBinary(t, demoBin, demo)
	env := []string{"TMPDIR=" + tmp, "XDG_RUNTIME_DIR=", "HOME=" + tmp}
	as := func(uid int) []string {
		return []string{setpriv, "--reuid", strconv.Itoa(uid), "--regid", strconv.Itoa(uid), "--clear-groups", "--"}
	}
	addr := freeAddr(t)
	a := startProc(t, procOpts{Env: env, Dir: tmp}, append(as(65534), rl, "-l", addr, "--no-watch-binary", "--", demo)...)
	gen1 := waitPid(t, a, 1)
	a.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) ready", gen1), 10*time.Second)
	a.Signal(syscall.SIGKILL)
	a.MustWait(10 * time.Second)

	b := startProc(t, procOpts{Env: env, Dir: tmp}, append(as(65533), rl, "-l", addr, "--no-watch-binary", "--", demo)...)
	code := b.MustWait(10 * time.Second)
	waitOutput(t, b)
	out := b.Stderr()
	if code != 1 || !strings.Contains(out, "in use by") || !strings.Contains(out, "uid 65534") || strings.Count(strings.TrimSpace(out), "\n") > 0 {
		t.Errorf("relaunch as uid 65533 exited %d: %q; want 1, one line naming uid 65534", code, out)
	}
	waitHTTP(t, addr, "gen=1", 5*time.Second)
}

// socketInodes is the set of socket inodes pid holds.
func socketInodes(t *testing.T, pid int) map[uint64]bool {
	t.Helper()
	m, err := fdTargets(pid)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]bool{}
	for _, target := range m {
		if ino := socketInode(target); ino != 0 {
			out[ino] = true
		}
	}
	return out
}

// keeperOf is the pid of relaunch p's keeper, its child named
// relaunch-keeper.
func keeperOf(t *testing.T, p *relaunchProc) int {
	t.Helper()
	var pid int
	waitUntil(5*time.Second, 10*time.Millisecond, func() bool {
		for _, c := range procChildren(p.Pid()) {
			if isKeeper(c) {
				pid = c
				return true
			}
		}
		return false
	})
	if pid == 0 {
		t.Fatalf("relaunch (pid %d) has no keeper among its children %v", p.Pid(), p.Children())
	}
	return pid
}

// relaunch reexec keeps its keeper: the same process, no second one, and
// a relaunch killed after the re-exec is adopted from it. A keeper killed
// meanwhile is replaced at the next re-exec.
func TestKeeperAcrossReexec(t *testing.T) {
	needE2E(t)
	t.Parallel()
	addr := freeAddr(t)
	sock := filepath.Join(shortTempDir(t), "a.sock")
	args := []string{"-l", addr, "--no-watch-binary", "--control", sock, "--", demoBin}
	a := startRelaunch(t, args...)
	gen1 := waitPid(t, a, 1)
	a.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) ready", gen1), 10*time.Second)
	k := keeperOf(t, a)
	if code, out := client(t, sock, "reexec"); code != 0 {
		t.Fatalf("relaunch reexec: exit %d, %q", code, out)
	}
	var keepers []int
	for _, c := range procChildren(a.Pid()) {
		if isKeeper(c) {
			keepers = append(keepers, c)
		}
	}
	if len(keepers) != 1 || keepers[0] != k {
		t.Fatalf("keepers after the reexec: %v; want the same one, pid %d", keepers, k)
	}

	// The keeper killed: the next re-exec starts another.
	syscall.Kill(k, syscall.SIGKILL)
	a.WaitLog(t, fmt.Sprintf("relaunch's keeper (pid %d) is gone", k), 10*time.Second)
	if code, out := client(t, sock, "reexec"); code != 0 {
		t.Fatalf("relaunch reexec: exit %d, %q", code, out)
	}
	k2 := keeperOf(t, a)
	if k2 == k {
		t.Fatalf("no new keeper after the reexec")
	}

	load := startLoad(t, addr)
	waitLoadOK(t, load, 100, 10*time.Second)
	a.Signal(syscall.SIGKILL)
	a.MustWait(10 * time.Second)
	b := startRelaunch(t, args...)
	b.WaitLog(t, fmt.Sprintf("took 10 socket(s) back from the keeper (pid %d)", k2), 10*time.Second)
	b.WaitLog(t, fmt.Sprintf("adopted gen 1 (pid %d), current", gen1), 10*time.Second)
	upgradeTo(t, b, 2)
	stopLoad(t, load)
}

// No keeper where it has nothing to keep (a unix socket: relaunch removes
// its file at exit), nor with --no-keeper.
func TestNoKeeper(t *testing.T) {
	needE2E(t)
	t.Parallel()
	for name, args := range map[string][]string{
		"unix":      {"-l", "unix://" + filepath.Join(shortTempDir(t), "s.sock")},
		"no-keeper": {"-l", freeAddr(t), "--no-keeper"},
	} {
		t.Run(name, func(t *testing.T) {
			p := startRelaunch(t, append(args, "--no-watch-binary", "--", demoBin)...)
			p.WaitLog(t, fmt.Sprintf("gen 1 (pid %d) ready", waitPid(t, p, 1)), 10*time.Second)
			for _, c := range procChildren(p.Pid()) {
				if isKeeper(c) {
					t.Errorf("relaunch %v started a keeper (pid %d)", args, c)
				}
			}
			if strings.Contains(p.Stderr(), "keeper") {
				t.Errorf("relaunch %v speaks of a keeper:\n%s", args, p.Stderr())
			}
		})
	}
}

// checkAdoptedAlone checks that relaunch b (control socket sock) adopted
// the orphan gen1 as its one generation, current, and started none.
func checkAdoptedAlone(t *testing.T, b *relaunchProc, sock string, gen1 int) {
	t.Helper()
	st := statusOf(t, sock)
	if len(st.Generations) != 1 || st.Generations[0].Pid != gen1 || st.Generations[0].State != "current" || !st.Generations[0].Adopted {
		t.Fatalf("status after adoption: %+v; want gen 1 (pid %d), current, adopted", st.Generations, gen1)
	}
	if strings.Contains(b.Stderr(), "started:") {
		t.Errorf("adoption started a generation:\n%s", b.Stderr())
	}
}
