package launcher

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// withProbe makes the machine's generations scanned in /proc (the fake
// system's scan), as with a listener on a kernel that shows epoll targets.
func withProbe(m *machine) { m.l.probeOK = true }

// readyHow is what made generation id ready, as status says.
func (m *machine) readyHow(id int) string {
	for _, g := range m.l.statusReport().Generations {
		if g.Generation == id {
			return g.Ready
		}
	}
	return ""
}

// An app whose master says READY=1 before any worker accepts (gunicorn):
// auto takes gen 1 at its READY=1, keeps watching it, sees it accept, and
// from then on waits for both, in either order.
func TestMachineAutoLearnsBoth(t *testing.T) {
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyAuto}}, withProbe)
	m.ready(1)
	m.want("1:current")
	if got := m.readyHow(1); got != "READY=1" {
		t.Fatalf("gen 1 ready by %q; want READY=1", got)
	}
	m.advance(time.Second) // its workers start
	m.procs[0].accepting = true
	m.advance(200 * time.Millisecond)
	if !strings.Contains(m.log.String(), "waits for both from now on") {
		t.Fatalf("auto did not learn both:\n%s", m.log)
	}
	if got := m.l.statusReport().Readiness; got != "READY=1 and the app accepting on its socket" {
		t.Errorf("status readiness %q", got)
	}

	// READY=1 first: not ready until it accepts, however long (no 2s fallback).
	m.signal(syscall.SIGUSR2)
	m.advance(time.Second)
	if n := m.scans[m.procs[1].pid]; n != 0 {
		t.Errorf("gen 2 scanned %d times before its READY=1; want none (it is looked at from READY=1 on)", n)
	}
	m.ready(2)
	m.advance(5 * time.Second)
	m.want("1:current 2:starting")
	m.procs[1].accepting = true
	m.advance(50 * time.Millisecond)
	m.want("2:current")
	if got, want := m.readyHow(2), fmt.Sprintf("READY=1, then pid %d polls fd 3 (epoll)", m.procs[1].pid); got != want {
		t.Errorf("gen 2 ready by %q; want %q", got, want)
	}

	// Accepting first: not ready until READY=1, and then at once (the
	// tree is looked at from READY=1 on, not during its whole start).
	m.signal(syscall.SIGUSR2)
	m.procs[2].accepting = true
	m.advance(5 * time.Second)
	m.want("2:current 3:starting")
	m.ready(3)
	m.want("3:current")
	if got, want := m.readyHow(3), fmt.Sprintf("READY=1, then pid %d polls fd 3 (epoll)", m.procs[2].pid); got != want {
		t.Errorf("gen 3 ready by %q; want %q", got, want)
	}
}

// Waiting for both, a generation that sends READY=1 is first looked for
// in one place: its epoll instance of the fd number the last generation
// was seen accepting with. Found there, it is ready without a scan of its
// tree; elsewhere (another fd), or not accepting yet, the scans decide as
// before, and the fd they see is the one looked at next time.
func TestMachineAutoLooksWhereLast(t *testing.T) {
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyAuto}}, withProbe)
	m.ready(1)
	m.procs[0].accepting = true
	m.advance(time.Second)
	if !m.l.bothLearned() || m.l.epollFd != fakeEpollFd {
		t.Fatalf("both learned %v, epoll fd %d; want both, fd %d", m.l.bothLearned(), m.l.epollFd, fakeEpollFd)
	}
	upgrade := func(id int, accepting bool, epollFd int) *fakeProc {
		t.Helper()
		m.signal(syscall.SIGUSR2)
		pr := m.procs[len(m.procs)-1]
		pr.accepting, pr.epollFd = accepting, epollFd
		m.ready(id)
		return pr
	}

	pr := upgrade(2, true, 0)
	m.want("2:current")
	if m.scans[pr.pid] != 0 || m.polls[pr.pid] != 1 {
		t.Errorf("gen 2: %d scans, %d reads of an epoll instance; want 0 and 1", m.scans[pr.pid], m.polls[pr.pid])
	}
	if got, want := m.readyHow(2), fmt.Sprintf("READY=1, then pid %d polls fd 3 (epoll)", pr.pid); got != want {
		t.Errorf("gen 2 ready by %q; want %q", got, want)
	}

	pr = upgrade(3, true, 9) // another fd: the scan finds it
	m.want("3:current")
	if m.scans[pr.pid] != 1 || m.polls[pr.pid] != 1 || m.l.epollFd != 9 {
		t.Errorf("gen 3: %d scans, %d reads, epoll fd now %d; want 1, 1, 9", m.scans[pr.pid], m.polls[pr.pid], m.l.epollFd)
	}

	pr = upgrade(4, false, 9) // READY=1 before it accepts
	m.want("3:current 4:starting")
	pr.accepting = true
	m.advance(scanEvery)
	m.want("4:current")
	if m.polls[pr.pid] != 1 || m.scans[pr.pid] != 2 {
		t.Errorf("gen 4: %d reads, %d scans; want 1 read, then scans until it accepts (2)", m.polls[pr.pid], m.scans[pr.pid])
	}
}

// A generation that says READY=1 before auto has seen the serving one
// accept: the serving one is looked at again first, and when it accepts,
// the new one waits for its own accepting too.
func TestMachineAutoLooksAgainAtReady(t *testing.T) {
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyAuto}}, withProbe)
	m.ready(1)
	m.signal(syscall.SIGUSR2)
	m.procs[0].accepting = true // not scanned since
	m.ready(2)
	m.want("1:current 2:starting")
	m.procs[1].accepting = true
	m.advance(20 * time.Millisecond)
	m.want("2:current")
}

// An app that sends READY=1 and is never seen accepting (io_uring, memory
// it cannot read) stays on READY=1 alone, and is not told it was unseen.
func TestMachineAutoNotifyOnly(t *testing.T) {
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyAuto}}, withProbe)
	m.ready(1)
	m.advance(observeFor + time.Second)
	m.signal(syscall.SIGUSR2)
	m.ready(2)
	m.want("2:current")
	if strings.Contains(m.log.String(), "waits for both") || strings.Contains(m.log.String(), "not seen accepting") {
		t.Errorf("log:\n%s", m.log)
	}
}

// An app seen accepting and never sending READY=1 is ready on that alone.
func TestMachineAutoListenOnly(t *testing.T) {
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyAuto}}, withProbe)
	m.procs[0].accepting = true
	m.advance(20 * time.Millisecond)
	m.want("1:current")
	m.signal(syscall.SIGUSR2)
	m.procs[1].accepting = true
	m.advance(20 * time.Millisecond)
	m.want("2:current")
	if got, want := m.readyHow(2), fmt.Sprintf("pid %d polls fd 3 (epoll)", m.procs[1].pid); got != want {
		t.Errorf("gen 2 ready by %q; want %q", got, want)
	}
}

// The drain warning is decided by the app's handlers when the drain signal
// is sent: one that catches it, drains and re-raises it (puma) dies of it
// without a warning; one with the default action gets the warning.
func TestMachineDrainWarning(t *testing.T) {
	for _, c := range []struct {
		name   string
		catch  bool
		warned bool
	}{
		{"caught", true, false},
		{"default", false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newMachine(t, Config{Ready: Readiness{Mode: ReadyNotify}, DrainSignal: syscall.SIGTERM, MaxDraining: 1})
			m.procs[0].dieOfDrain, m.procs[0].catchesDrain = true, c.catch
			m.ready(1)
			m.signal(syscall.SIGUSR2)
			m.ready(2)
			m.want("2:current")
			log := m.log.String()
			if !strings.Contains(log, "exited: killed by SIGTERM") {
				t.Fatalf("gen 1 did not die of SIGTERM:\n%s", log)
			}
			if got := strings.Contains(log, "does not drain on SIGTERM"); got != c.warned {
				t.Errorf("warned %v, want %v:\n%s", got, c.warned, log)
			}
		})
	}
}

// signalHandled reads a real process's masks: sleep has TERM's default
// action; a shell's trap "" TERM is ignored through exec; Go catches TERM.
func TestSignalHandled(t *testing.T) {
	if h, known := signalHandled(os.Getpid(), syscall.SIGTERM); !known || !h {
		t.Errorf("this Go test: handled %v known %v; want handled", h, known)
	}
	for _, c := range []struct {
		argv    []string
		handled bool
	}{
		{[]string{"sleep", "30"}, false},
		{[]string{"sh", "-c", `trap "" TERM; exec sleep 30`}, true},
	} {
		cmd := exec.Command(c.argv[0], c.argv[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pid := cmd.Process.Pid
		// Until sleep runs (comm), the masks are the shell's or Go's.
		for end := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); string(b) == "sleep\n" {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("%v did not exec sleep", c.argv)
			}
		}
		h, known := signalHandled(pid, syscall.SIGTERM)
		cmd.Process.Kill()
		cmd.Wait()
		if !known || h != c.handled {
			t.Errorf("%v: handled %v known %v; want handled %v", c.argv, h, known, c.handled)
		}
	}
	if _, known := signalHandled(1<<30, syscall.SIGTERM); known {
		t.Error("a pid that does not exist: known")
	}
}

// Once a generation was seen accepting after a while, the next one is not
// scanned while its runtime starts (a scan competes with that start): its
// first scan waits for slowEvery, or until shortly before the time the
// previous one took. It is still seen as soon as a scan can see it.
func TestMachineAutoListenFirstScan(t *testing.T) {
	m := newMachine(t, Config{Ready: Readiness{Mode: ReadyAuto}}, withProbe)
	m.advance(300 * time.Millisecond)
	m.procs[0].accepting = true
	m.advance(40 * time.Millisecond)
	m.want("1:current")
	m.signal(syscall.SIGUSR2)
	m.advance(slowEvery - time.Millisecond)
	if n := m.scans[m.procs[1].pid]; n != 0 {
		t.Errorf("gen 2 scanned %d times in its first %v; want none", n, slowEvery-time.Millisecond)
	}
	m.procs[1].accepting = true
	m.advance(2 * time.Millisecond)
	m.want("2:current")
}
