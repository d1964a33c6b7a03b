package watch

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestResolve(t *testing.T) {
	a, _ := binaries(t)
	dir := tempDir(t)
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(filepath.Join(bin, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(bin, "app"), a, 0o755)
	writeFile(t, filepath.Join(bin, "data"), a, 0o644)
	writeFile(t, filepath.Join(dir, "only-data"), a, 0o644)
	if err := os.Symlink("bin/app", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("bin", filepath.Join(dir, "bindir")); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	t.Setenv("PATH", "/nonexistent-relaunch:"+filepath.Join(dir, "empty")+":bin:"+dir)

	app := filepath.Join(bin, "app")
	for _, tc := range []struct{ cmd, want string }{
		{app, app},
		{"./bin/app", app},
		{"bin/app", app},
		{"bin/../bin/./app", app},
		{"./link", app},
		{"bindir/app", app},
		{filepath.Join(dir, "bindir", "app"), app},
		{"app", app}, // PATH, through a relative entry
	} {
		got, err := Resolve(tc.cmd)
		if err != nil || got != tc.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tc.cmd, got, err, tc.want)
		}
	}

	for _, tc := range []struct {
		cmd, msg string
		kind     error
	}{
		{"nope-relaunch", `"nope-relaunch": not found in PATH`, exec.ErrNotFound},
		{"./nope", `"./nope": no such file`, fs.ErrNotExist},
		{"bin/app/x", `"bin/app/x": no such file`, fs.ErrNotExist},
		{"./bin/data", `"./bin/data": ` + filepath.Join(bin, "data") + ` is not executable`, fs.ErrPermission},
		{"only-data", "is not executable", fs.ErrPermission},
		{"./bin/sub", "is not executable (a directory)", fs.ErrPermission},
		{"", "empty command", fs.ErrNotExist},
	} {
		got, err := Resolve(tc.cmd)
		if err == nil || !strings.Contains(err.Error(), tc.msg) || !errors.Is(err, tc.kind) {
			t.Errorf("Resolve(%q) = %q, %v; want an error with %q", tc.cmd, got, err, tc.msg)
		}
	}
}

func TestWalkChain(t *testing.T) {
	t.Parallel()
	dir := tempDir(t)
	v1 := filepath.Join(dir, "releases", "v1")
	if err := os.MkdirAll(v1, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(v1, "app"), []byte("#!/bin/sh\n"), 0o755)
	if err := os.Symlink("releases/v1", filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "current", "app"), filepath.Join(dir, "abs")); err != nil {
		t.Fatal(err)
	}

	final, ws, err := walkChain(filepath.Join(dir, "abs"))
	if err != nil || final != filepath.Join(v1, "app") {
		t.Fatalf("walkChain = %q, %v", final, err)
	}
	want := []watchSpec{{dir, "abs"}, {dir, "current"}, {v1, "app"}}
	if !slices.Equal(ws, want) {
		t.Fatalf("watches %v, want %v", ws, want)
	}

	// A missing directory on the way: its existing parent is watched for it.
	_, ws, err = walkChain(filepath.Join(dir, "build", "bin", "app"))
	if !errors.Is(err, fs.ErrNotExist) || !slices.Equal(ws, []watchSpec{{dir, "build"}}) {
		t.Fatalf("missing: %v, %v", ws, err)
	}

	// A loop.
	if err := os.Symlink("loop2", filepath.Join(dir, "loop1")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("loop1", filepath.Join(dir, "loop2")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := walkChain(filepath.Join(dir, "loop1")); !errors.Is(err, syscall.ELOOP) {
		t.Fatalf("loop: %v", err)
	}
	if _, err := Resolve(filepath.Join(dir, "loop1")); err == nil || !strings.Contains(err.Error(), "symbolic links") {
		t.Fatalf("Resolve(loop): %v", err)
	}
}

// Lookup names the file as the command does: the command itself with a
// slash, the PATH entry joined with it without; symlinks are not followed.
func TestLookup(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(dir, "real")
	if err := os.WriteFile(real, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(bin, "app")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	t.Chdir(dir)
	for cmd, want := range map[string]string{"app": filepath.Join(bin, "app"), "./bin/app": "./bin/app", real: real} {
		if got, err := Lookup(cmd); err != nil || got != want {
			t.Errorf("Lookup(%q) = %q, %v; want %q", cmd, got, err, want)
		}
	}
	if _, err := Lookup("nothere"); !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("Lookup of a missing command: %v; want exec.ErrNotFound", err)
	}
}
