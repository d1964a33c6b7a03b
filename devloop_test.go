//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The development loop (--build, issue "devloop"). The "build" is a shell
// script, fast and deterministic: it fails when src/main.txt says "broken",
// and otherwise writes ./app, a script that runs the demo with the version
// in src/main.txt (or exits 1 at start when it says "crash").

func devProject(t *testing.T) (dir string, write func(string)) {
	t.Helper()
	dir = shortTempDir(t)
	if err := os.Mkdir(filepath.Join(dir, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	build := fmt.Sprintf(`#!/bin/sh
v=$(cat src/main.txt)
if [ "$v" = broken ]; then echo "src/main.txt:1: syntax error near broken" >&2; exit 1; fi
if [ "$v" = crash ]; then printf '#!/bin/sh\nexit 1\n' > app.tmp; else
printf '#!/bin/sh\nexec %s -version %%s\n' "$v" > app.tmp; fi
chmod +x app.tmp && mv app.tmp app
`, demoBin)
	if err := os.WriteFile(filepath.Join(dir, "build.sh"), []byte(build), 0o755); err != nil {
		t.Fatal(err)
	}
	write = func(v string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "src", "main.txt"), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("1")
	return dir, write
}

// startDev starts relaunch in the development loop on a new devProject, at
// a free address, and waits until version 1 answers. write changes the
// project's src/main.txt.
func startDev(t *testing.T) (p *relaunchProc, addr string, write func(string)) {
	t.Helper()
	dir, write := devProject(t)
	addr = freeAddr(t)
	p = startRelaunchOpts(t, procOpts{Dir: dir}, "--listen", addr, "--watch", "src", "--debounce", "50ms",
		"--build", "./build.sh", "--", "./app")
	waitHTTP(t, addr, "version=1 ", 10*time.Second)
	return p, addr, write
}

var summaryRe = regexp.MustCompile(`rebuilt in (\S+) · gen (\d+) \(pid \d+\) ready in (\S+)`)

func TestDevLoopRebuildUnderLoad(t *testing.T) {
	t.Parallel()
	p, addr, write := startDev(t)
	load := startLoad(t, addr)
	saved := time.Now()
	write("2")
	waitHTTP(t, addr, "version=2 ", 10*time.Second)
	served := time.Since(saved)
	res := stopLoad(t, load)
	line := p.WaitLog(t, "· gen 2", 5*time.Second)
	if strings.Contains(p.Stderr(), "gen 3") {
		t.Errorf("one change made more than one new generation:\n%s", p.Stderr())
	}
	if res.Versions["2"] == 0 {
		t.Errorf("the load never saw version 2: %v", res.Versions)
	}
	// The calm terminal: one summary line a restart, nothing chatty.
	for _, l := range strings.Split(strings.TrimSpace(p.Stderr()), "\n") {
		if strings.HasPrefix(l, "relaunch: ") && !summaryRe.MatchString(l) {
			t.Errorf("a chatty line in the development loop: %q", l)
		}
	}
	if m := summaryRe.FindStringSubmatch(line); m != nil {
		build, _ := time.ParseDuration(m[1])
		start, _ := time.ParseDuration(m[3])
		t.Logf("save → served %v; minus the build (%v), the app's start (%v) and the 50ms debounce: %v (the 20ms polling of waitHTTP included)",
			served.Round(time.Millisecond), build, start, (served - build - start - 50*time.Millisecond).Round(time.Millisecond))
	}
}

func TestDevLoopBrokenBuildKeepsServing(t *testing.T) {
	t.Parallel()
	p, addr, write := startDev(t)
	write("broken")
	line := p.WaitLog(t, "build failed", 10*time.Second)
	if !containsAll(line, "gen 1", "still serves") {
		t.Errorf("the failure's line %q should say gen 1 still serves", line)
	}
	if !strings.Contains(p.Stderr(), "syntax error near broken") {
		t.Errorf("the build's output is not shown:\n%s", p.Stderr())
	}
	waitHTTP(t, addr, "gen=1", 5*time.Second)
	write("3")
	waitHTTP(t, addr, "version=3 ", 10*time.Second)
}

// Code that crashes at start waits for the next change; no restart loop.
func TestDevLoopCrashAtStartWaits(t *testing.T) {
	t.Parallel()
	p, addr, write := startDev(t)
	// Make it crash once it runs: stop the current one so only the
	// crashing build is left.
	write("crash")
	p.WaitLog(t, "upgrade failed: gen 2", 10*time.Second)
	pid := genPidOf(t, p, 1)
	if err := killPid(pid); err != nil {
		t.Fatal(err)
	}
	p.WaitLog(t, "exited by itself", 5*time.Second)
	p.WaitLog(t, "gen 3 (pid", 5*time.Second) // the restart runs the crashing build
	p.WaitLog(t, "waiting for the next change", 5*time.Second)
	time.Sleep(1500 * time.Millisecond) // proving a negative: no restart loop
	if strings.Contains(p.Stderr(), "gen 4") {
		t.Fatalf("a crashing build was restarted without a change:\n%s", p.Stderr())
	}
	write("5")
	waitHTTP(t, addr, "version=5 ", 10*time.Second)
}

func genPidOf(t *testing.T, p *relaunchProc, gen int) int {
	t.Helper()
	m := regexp.MustCompile(fmt.Sprintf(`gen %d \(pid (\d+)\)`, gen)).FindStringSubmatch(p.Stderr())
	if m == nil {
		t.Fatalf("no pid for gen %d:\n%s", gen, p.Stderr())
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

func killPid(pid int) error {
	proc, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return proc.Kill()
}
