//go:build linux

// The command line's synchronous behaviour as testscript scripts, in
// testdata/script: each command exits by itself at once, with a status and
// a message. This test binary is their relaunch (TestMain in
// harness_test.go), so they need no build and run with -short too. Run one
// with go test -run TestScript/NAME.
package main

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		// testscript removes its own root only after every script ran: a
		// -run that picks some would leave it.
		WorkdirRoot:         t.TempDir(),
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Setup: func(env *testscript.Env) error {
			// Every process a script starts carries the marker, as in the
			// harness: nothingleft looks for survivors by it, and the end
			// of the script kills them.
			marker := fmt.Sprintf("%d-%d", os.Getpid(), markerSeq.Add(1))
			env.Setenv(harnessMarkerEnv, marker)
			env.Defer(func() { killTree(markedProcs(marker)) })
			env.Setenv("tab", "\t") // for arguments with a tab in them
			return nil
		},
		Condition: func(cond string) (bool, error) {
			if cond == "root" {
				return os.Geteuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits":       scriptExits,
			"message":     scriptMessage,
			"nothingleft": scriptNothingLeft,
			"emptydir":    scriptEmptyDir,
			"freeport":    scriptFreePort,
			"listen":      scriptListen,
			"socketfile":  scriptSocketFile,
			"dial":        scriptDial,
			"chown":       scriptChown,
		},
	})
}

func noNeg(ts *testscript.TestScript, neg bool, name string) {
	if neg {
		ts.Fatalf("unsupported: ! %s", name)
	}
}

// exits N PROG [ARG...] runs PROG, as exec does, and checks that its exit
// status is N.
func scriptExits(ts *testscript.TestScript, neg bool, args []string) {
	noNeg(ts, neg, "exits")
	if len(args) < 2 {
		ts.Fatalf("usage: exits STATUS PROG [ARG...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	code := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		ee, ok := err.(interface{ ExitCode() int })
		if !ok {
			ts.Fatalf("%s: %v", args[1], err)
		}
		code = ee.ExitCode()
	}
	if code != want {
		ts.Fatalf("exit status %d, want %d", code, want)
	}
}

// message [-last] REGEXP... checks that stderr is one relaunch message
// ("relaunch: ..." or "relaunch CMD: ..."), followed at most by the pointer
// to --help or the client's usage line, and that this line matches every
// REGEXP. With -last, lines may come before it (what relaunch logged until
// it failed): the message is the last.
func scriptMessage(ts *testscript.TestScript, neg bool, args []string) {
	noNeg(ts, neg, "message")
	last := len(args) > 0 && args[0] == "-last"
	if last {
		args = args[1:]
	}
	lines := outputLines(ts.ReadFile("stderr"))
	if n := len(lines); n > 0 && (lines[n-1] == seeHelp || strings.HasPrefix(lines[n-1], "usage: relaunch ")) {
		lines = lines[:n-1]
	}
	if len(lines) == 0 || !last && len(lines) != 1 {
		ts.Fatalf("want one message line on stderr (plus at most a pointer to --help or usage), got %d", len(lines))
	}
	msg := lines[len(lines)-1]
	if !regexp.MustCompile(`^relaunch( [a-z]+)?: `).MatchString(msg) {
		ts.Fatalf("message %q does not start with \"relaunch: \" or \"relaunch CMD: \"", msg)
	}
	for _, a := range args {
		re, err := regexp.Compile(a)
		ts.Check(err)
		if !re.MatchString(msg) {
			ts.Fatalf("message %q does not match %q", msg, a)
		}
	}
}

// nothingleft [ADDR | PATH...] checks, after relaunch exited, that no
// process it started is alive (one carrying the script's marker; zombies
// have no environment and are the reaper's business), that $TMPDIR, where
// it makes its runtime directory, is empty, that every tcp ADDR
// (host:port) is free to bind again and that no PATH exists.
func scriptNothingLeft(ts *testscript.TestScript, neg bool, args []string) {
	noNeg(ts, neg, "nothingleft")
	marker := ts.Getenv(harnessMarkerEnv)
	var left []int
	if !waitUntil(5*time.Second, 10*time.Millisecond, func() bool { left = markedProcs(marker); return len(left) == 0 }) {
		ts.Fatalf("processes left behind:\n  %s", strings.Join(describeProcs(left), "\n  "))
	}
	scriptEmptyDir(ts, false, []string{ts.Getenv("TMPDIR")})
	for _, a := range args {
		if strings.HasPrefix(a, "/") {
			if _, err := os.Lstat(a); err == nil {
				ts.Fatalf("%s still exists", a)
			}
			continue
		}
		l, err := net.Listen("tcp", a)
		if err != nil {
			ts.Fatalf("%s still bound: %v", a, err)
		}
		l.Close()
	}
}

// emptydir DIR checks that DIR has no entries.
func scriptEmptyDir(ts *testscript.TestScript, neg bool, args []string) {
	noNeg(ts, neg, "emptydir")
	if len(args) != 1 {
		ts.Fatalf("usage: emptydir DIR")
	}
	ents, err := os.ReadDir(ts.MkAbs(args[0]))
	ts.Check(err)
	if len(ents) > 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		ts.Fatalf("left in %s: %s", args[0], strings.Join(names, " "))
	}
}

// freeport VAR sets VAR to a tcp port of 127.0.0.1 that was free a moment
// ago (the kernel's choice, not a fixed one).
func scriptFreePort(ts *testscript.TestScript, neg bool, args []string) {
	noNeg(ts, neg, "freeport")
	if len(args) != 1 {
		ts.Fatalf("usage: freeport VAR")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ts.Setenv(args[0], strconv.Itoa(port))
}

// listen NETWORK ADDR [VAR] listens on ADDR (tcp or unix; udp: is bound
// to it) until the script ends, accepting nothing; VAR gets the address
// bound (for port 0), VAR_PORT its port.
func scriptListen(ts *testscript.TestScript, neg bool, args []string) {
	noNeg(ts, neg, "listen")
	if len(args) != 2 && len(args) != 3 {
		ts.Fatalf("usage: listen NETWORK ADDR [VAR]")
	}
	var addr net.Addr
	if strings.HasPrefix(args[0], "udp") {
		c, err := net.ListenPacket(args[0], args[1])
		ts.Check(err)
		ts.Defer(func() { c.Close() })
		addr = c.LocalAddr()
	} else {
		l, err := net.Listen(args[0], args[1])
		ts.Check(err)
		ts.Defer(func() { l.Close() })
		addr = l.Addr()
	}
	if len(args) == 3 {
		ts.Setenv(args[2], addr.String())
		if _, port, err := net.SplitHostPort(addr.String()); err == nil {
			ts.Setenv(args[2]+"_PORT", port)
		}
	}
}

// socketfile PATH leaves a unix socket file at PATH that nobody listens on,
// as a process that died leaves it.
func scriptSocketFile(ts *testscript.TestScript, neg bool, args []string) {
	noNeg(ts, neg, "socketfile")
	if len(args) != 1 {
		ts.Fatalf("usage: socketfile PATH")
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: ts.MkAbs(args[0]), Net: "unix"})
	ts.Check(err)
	l.SetUnlinkOnClose(false)
	l.Close()
}

// [!] dial NETWORK ADDR checks that ADDR accepts a connection (or not).
func scriptDial(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: dial NETWORK ADDR")
	}
	c, err := net.DialTimeout(args[0], args[1], 5*time.Second)
	if err == nil {
		c.Close()
	}
	switch {
	case err != nil && !neg:
		ts.Fatalf("%v", err)
	case err == nil && neg:
		ts.Fatalf("%s accepts a connection", args[1])
	}
}

// chown UID PATH gives PATH to UID (and the group of the same number).
func scriptChown(ts *testscript.TestScript, neg bool, args []string) {
	noNeg(ts, neg, "chown")
	if len(args) != 2 {
		ts.Fatalf("usage: chown UID PATH")
	}
	uid, err := strconv.Atoi(args[0])
	ts.Check(err)
	ts.Check(os.Chown(ts.MkAbs(args[1]), uid, uid))
}
