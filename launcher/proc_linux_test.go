package launcher

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// genOf, what the handoff broker asks, against real process trees.
func TestGenRoots(t *testing.T) {
	var g genRoots
	start := func(script string) *exec.Cmd {
		cmd := exec.Command("/bin/sh", "-c", script)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
		})
		bufio.NewReader(out).ReadString('\n') // started
		return cmd
	}
	// Each prints its child's pid: a descendant of the generation.
	a := start("sleep 60 & echo $!; wait")
	b := start("sleep 60 & echo $!; wait")
	g.add(1, a.Process.Pid)
	g.add(2, b.Process.Pid)
	for _, c := range []struct {
		pid  int
		gen  int
		want bool
	}{
		{a.Process.Pid, 1, true},
		{b.Process.Pid, 2, true},
		{os.Getpid(), 0, false},
		{1, 0, false},
	} {
		if gen, ok := g.genOf(c.pid); ok != c.want || gen != c.gen {
			t.Errorf("genOf(%d) = %d, %v; want %d, %v", c.pid, gen, ok, c.gen, c.want)
		}
	}
	kids := procKids(a.Process.Pid)
	if len(kids) != 1 {
		t.Fatalf("children of %d: %v", a.Process.Pid, kids)
	}
	if gen, ok := g.genOf(kids[0]); !ok || gen != 1 {
		t.Errorf("genOf(a descendant of gen 1) = %d, %v", gen, ok)
	}
	g.remove(1)
	if _, ok := g.genOf(a.Process.Pid); ok {
		t.Errorf("genOf finds a removed generation")
	}
}

func procKids(pid int) []int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var kids []int
	for _, f := range strings.Fields(string(b)) {
		k, _ := strconv.Atoi(f)
		kids = append(kids, k)
	}
	return kids
}
