//go:build linux

package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Exclusive addresses: a relaunch never starts on an address someone else
// listens on. A second relaunch next to a running one would otherwise join
// its SO_REUSEPORT group (same user), start its app, and never get a
// connection.

// checkRefused runs a second relaunch with args, which must exit 1 at
// once with one line naming holder (a pid) and leave nothing running or
// bound.
func checkRefused(t *testing.T, holder int, args ...string) string {
	t.Helper()
	start := time.Now()
	q, out := cliRun(t, procOpts{}, 1, args...)
	took := time.Since(start)
	t.Logf("the second relaunch exited in %s: %s", took.Round(time.Millisecond), strings.TrimSpace(out))
	checkMessageLine(t, lastLine(out), "is in use by pid "+strconv.Itoa(holder)+" (", "stop it")
	if strings.Contains(out, "started:") {
		t.Errorf("the second relaunch started its app:\n%s", out)
	}
	cliCheckNothingLeft(t, q, "", nil, nil)
	return out
}

func lastLine(out string) string {
	lines := outputLines(out)
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1]
}

func TestSecondRelaunchRefused(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"steered", "shared"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			p, addr := startServing(t, "--handover", mode, "--", demoBin)
			before := tcpListeners(addrPort(t, addr))
			load := startLoad(t, addr)
			out := checkRefused(t, p.Pid(), "-l", addr, "--handover", mode, "--", demoBin)
			if !strings.Contains(out, "another relaunch") {
				t.Errorf("the message does not say another relaunch holds the address: %s", out)
			}
			// The same port on the wildcard overlaps too.
			checkRefused(t, p.Pid(), "-l", ":"+strconv.Itoa(addrPort(t, addr)), "--", demoBin)
			waitLoadOK(t, load, 200, 10*time.Second)
			if res := stopLoad(t, load); res.Failed() != 0 {
				t.Errorf("the first relaunch lost requests while the second tried: %s", res)
			}
			if after := tcpListeners(addrPort(t, addr)); len(after) != len(before) {
				t.Errorf("%d sockets listen on %s after the second relaunch; %d before", len(after), addr, len(before))
			}
			upgradeAndWait(t, p, 2, 20*time.Second)
			waitHTTP(t, addr, "gen=2", 10*time.Second)
		})
	}
	t.Run("udp", func(t *testing.T) {
		t.Parallel()
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
		p := startRelaunchOpts(t, procOpts{Env: []string{steerHelperEnv + "=udp-echo"}},
			"--listen", "udp://"+addr, "--no-watch-binary", "--",
			exe, "-test.run=^TestSteerHelperUDPEcho$", "-test.short")
		p.WaitLog(t, "gen 1 (pid", 20*time.Second)
		checkRefused(t, p.Pid(), "-l", "udp://"+addr, "--", "/bin/true")
	})
}

// relaunch killed with SIGKILL, and no keeper to take its sockets back
// from: its app serves on, and a relaunch started again says which
// generation of a dead relaunch holds the address, rather than start an
// app nobody reaches. (With the keeper it adopts it: adopt_test.go.)
func TestOrphanHoldsAddress(t *testing.T) {
	t.Parallel()
	p, addr := startServing(t, "--no-keeper", "--", demoBin)
	app := waitPid(t, p, 1)
	p.Signal(syscall.SIGKILL)
	p.MustWait(10 * time.Second)
	waitHTTP(t, addr, "gen=1", 5*time.Second) // the orphan serves
	_, out := cliRun(t, procOpts{}, 1, "-l", addr, "--", demoBin)
	checkMessageLine(t, lastLine(out), "is in use by pid "+strconv.Itoa(app)+" (", "generation 1 of a relaunch that is gone")
	syscall.Kill(app, syscall.SIGKILL)
}
