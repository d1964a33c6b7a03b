//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// deployFile deploys data with mode at dst the way deploys must: a
// temporary file in dst's directory renamed over it.
func deployFile(t testing.TB, dst string, data []byte, mode os.FileMode) {
	t.Helper()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	if err != nil {
		t.Fatal(err)
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), mode)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		t.Fatal(err)
	}
}

// Every bad deploy of a watched binary is said, one line each with its
// reason, the same reason twice in a row included, while gen 1 serves with
// no error; then a good deploy upgrades.
func TestBadDeploysEachSaid(t *testing.T) {
	needE2E(t, "relaunch", "demo", "demo-v2")
	t.Parallel()
	_, app, sock := appCopy(t)
	addr := freeAddr(t)
	p := startRelaunch(t, "--listen", addr, "--control", sock, "--ready-timeout", "3s", "--", app)
	waitHTTP(t, addr, "gen=1", 10*time.Second)
	load := startLoad(t, addr)
	v2, err := os.ReadFile(demoV2Bin)
	if err != nil {
		t.Fatal(err)
	}
	lastFailure := func() string { return statusOf(t, sock).LastFailure }

	// Rejected by the watcher: nothing is started.
	const rejected = "warning: rejected the new binary " // + app + ": reason; ...
	for i, d := range []struct {
		what   string
		data   []byte
		mode   os.FileMode
		reason string
	}{
		{"garbage", []byte("garbage\n"), 0o755, "no ELF or #! header"},
		{"other garbage", []byte("other garbage\n"), 0o755, "no ELF or #! header"},
		{"a truncated ELF", v2[:len(v2)/2], 0o755, "truncated: segment "},
		{"a file without an x bit", v2, 0o644, "not executable (mode 0644)"},
	} {
		deployFile(t, app, d.data, d.mode)
		line := p.WaitLogN(t, rejected, i+1, 10*time.Second)
		if !containsAll(line, app+": "+d.reason, "the running generation keeps serving") {
			t.Errorf("%s: %q; want it to name %s and say %q", d.what, line, app, d.reason)
		}
	}
	if pids := genPids(p); len(pids) != 1 {
		t.Errorf("generations started for rejected deploys: %v", pids)
	}

	// Failed by the launcher: one "upgrade failed" line each, and
	// status's last failure.
	for i, d := range []struct {
		what, script, reason string
	}{
		{"a script that exits 3", "#!/bin/sh\nexit 3\n", "exited before it was ready (status 3)"},
		{"a script never ready", "#!/bin/sh\nexec sleep 60\n", "not ready after 3s"},
	} {
		deployFile(t, app, []byte(d.script), 0o755)
		line := p.WaitLogN(t, "upgrade failed", i+1, 15*time.Second)
		if !containsAll(line, fmt.Sprintf("gen %d (pid", i+2), d.reason, "gen 1 (pid") {
			t.Errorf("%s: %q; want gen %d %s, gen 1 still serving", d.what, line, i+2, d.reason)
		}
		if f := lastFailure(); !strings.Contains(f, d.reason) {
			t.Errorf("%s: status's last failure %q; want %q", d.what, f, d.reason)
		}
	}

	deployFile(t, app, v2, 0o755)
	waitHTTP(t, addr, "gen=4", 10*time.Second)
	res := stopLoad(t, load)
	if res.Gens["1"] == 0 {
		t.Errorf("gen 1 answered nothing during the bad deploys: %v", res.Gens)
	}
	out := p.Stderr()
	if n := strings.Count(out, rejected); n != 4 {
		t.Errorf("%d rejected lines for 4 rejected deploys:\n%s", n, out)
	}
	if n := strings.Count(out, "upgrade failed"); n != 2 {
		t.Errorf("%d upgrade failed lines for 2 failed upgrades:\n%s", n, out)
	}
}
