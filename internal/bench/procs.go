package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// bench holds the built binaries and every process started, so that
// cleanup can kill them by pid whatever happened.
type bench struct {
	cfg  config
	root string // the module's directory
	tmp  string // removed by cleanup

	relaunchBin string
	demo        [2]string // built with defaultVersion 1 and 2
	appPath     string    // the binary relaunch runs and watches: a copy of demo[0], then renamed over
	nextPath    string    // the copy prepared for the next rename, in appPath's directory
	record      string    // the demo's -record file under relaunch
	naiveRecord string    // and in the naive baseline

	mu    sync.Mutex
	owned map[int]*exec.Cmd // started here and not yet waited for
	rl    *relaunchProc
}

// setup finds the module, builds the binaries into a new temporary
// directory and installs the first copy of the app.
func (b *bench) setup(ctx context.Context) error {
	b.owned = map[int]*exec.Cmd{}
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return errors.New("run from inside the relaunch module (go env GOMOD is empty)")
	}
	b.root = filepath.Dir(gomod)
	if b.tmp, err = os.MkdirTemp("", "relaunch-bench-"); err != nil {
		return err
	}
	b.relaunchBin = filepath.Join(b.tmp, "relaunch")
	b.demo = [2]string{filepath.Join(b.tmp, "demo-v1"), filepath.Join(b.tmp, "demo-v2")}
	appDir := filepath.Join(b.tmp, "app")
	b.appPath = filepath.Join(appDir, "demo")
	b.nextPath = filepath.Join(appDir, ".demo.next")
	b.record = filepath.Join(b.tmp, "record-relaunch")
	b.naiveRecord = filepath.Join(b.tmp, "record-naive")
	if err := os.Mkdir(appDir, 0o755); err != nil {
		return err
	}

	builds := [][]string{
		{"build", "-o", b.relaunchBin, "."},
		{"build", "-ldflags", "-X main.defaultVersion=1", "-o", b.demo[0], "./testdata/demo"},
		{"build", "-ldflags", "-X main.defaultVersion=2", "-o", b.demo[1], "./testdata/demo"},
	}
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, args := range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.CommandContext(ctx, "go", args...)
			cmd.Dir = b.root
			// Static, as the README builds relaunch: no libc or dynamic
			// loader mapped in relaunch, nor run at each start of its exec
			// helper.
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return installCopy(b.demo[0], b.appPath)
}

// installCopy copies src to dst through a temporary file renamed over dst.
func installCopy(src, dst string) error {
	if err := copyFile(src, dst+".tmp"); err != nil {
		return err
	}
	return os.Rename(dst+".tmp", dst)
}

// copyFile writes an executable copy of src at dst, synced.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// cleanup kills what is still running, by pid, and removes the temporary
// directory.
func (b *bench) cleanup() {
	if b.rl != nil && !b.rl.exited() {
		b.stopRelaunch()
	}
	b.mu.Lock()
	var left []*exec.Cmd
	for _, c := range b.owned {
		left = append(left, c)
	}
	b.mu.Unlock()
	for _, c := range left {
		c.Process.Signal(syscall.SIGKILL)
		b.wait(c)
	}
	if b.tmp != "" {
		os.RemoveAll(b.tmp)
	}
}

// start starts cmd in a process group of its own (a Ctrl-C reaches the
// bench alone, which stops everything in order) and remembers it.
func (b *bench) start(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = cleanEnv()
	if err := cmd.Start(); err != nil {
		return err
	}
	b.mu.Lock()
	b.owned[cmd.Process.Pid] = cmd
	b.mu.Unlock()
	return nil
}

// wait waits for a process started by start and forgets it.
func (b *bench) wait(cmd *exec.Cmd) error {
	err := cmd.Wait()
	b.mu.Lock()
	delete(b.owned, cmd.Process.Pid)
	b.mu.Unlock()
	return err
}

// cleanEnv is the bench's environment without what would make relaunch or
// the demo take sockets or notify someone else.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "LISTEN_") || k == "NOTIFY_SOCKET" || strings.HasPrefix(k, "WATCHDOG_") || strings.HasPrefix(k, "RELAUNCH_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// logEntry is one of relaunch's --log-format json lines.
type logEntry struct {
	Time       time.Time `json:"time"`
	Level      string    `json:"level"`
	Msg        string    `json:"msg"`
	Generation int       `json:"generation"`
	Pid        int       `json:"pid"`
	StartAt    time.Time `json:"start_at"` // a started line's: when the start began (its fork)
}

var (
	reStarted   = regexp.MustCompile(`^gen \d+ \(pid \d+\) started: `)
	reReady     = regexp.MustCompile(`^gen \d+ \(pid \d+\) ready in `)
	reExited    = regexp.MustCompile(`^gen \d+ \(pid \d+\) exited`)
	reListening = regexp.MustCompile(`listening on tcp://(\S+)`)
)

func (e logEntry) started() bool { return e.Generation > 0 && reStarted.MatchString(e.Msg) }
func (e logEntry) ready() bool   { return e.Generation > 0 && reReady.MatchString(e.Msg) }
func (e logEntry) exited() bool  { return e.Generation > 0 && reExited.MatchString(e.Msg) }

// relaunchProc is relaunch running, with its log.
type relaunchProc struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{} // closed when relaunch has exited
	err  error         // its Wait error, once done

	mu     sync.Mutex
	logs   []logEntry
	tail   []string      // the last lines of its stderr (the demo's lines too), for errors
	change chan struct{} // closed and replaced at every new line
}

func (r *relaunchProc) pid() int { return r.cmd.Process.Pid }

func (r *relaunchProc) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// entries returns a copy of the log so far.
func (r *relaunchProc) entries() []logEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]logEntry(nil), r.logs...)
}

func (r *relaunchProc) tailText() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.tail, "\n")
}

// waitLog waits for a log entry that satisfies ok.
func (r *relaunchProc) waitLog(ctx context.Context, timeout time.Duration, what string, ok func(logEntry) bool) (logEntry, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		r.mu.Lock()
		for _, e := range r.logs {
			if ok(e) {
				r.mu.Unlock()
				return e, nil
			}
		}
		ch := r.change
		r.mu.Unlock()
		select {
		case <-ch:
		case <-r.done:
			return logEntry{}, fmt.Errorf("relaunch exited (%v) while waiting for %s; its last lines:\n%s", r.err, what, r.tailText())
		case <-t.C:
			return logEntry{}, fmt.Errorf("no %s after %v; relaunch's last lines:\n%s", what, timeout, r.tailText())
		case <-ctx.Done():
			return logEntry{}, ctx.Err()
		}
	}
}

func (r *relaunchProc) read(rd io.Reader) {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var e logEntry
		isLog := strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &e) == nil
		r.mu.Lock()
		if isLog {
			r.logs = append(r.logs, e)
		}
		r.tail = append(r.tail, line)
		if len(r.tail) > 30 {
			r.tail = r.tail[len(r.tail)-30:]
		}
		close(r.change)
		r.change = make(chan struct{})
		r.mu.Unlock()
	}
}

// startRelaunch starts relaunch on 127.0.0.1 (a port the kernel picks) with
// the app, its events recorded in record, and waits until its first
// generation answers.
func (b *bench) startRelaunch(ctx context.Context, record string, appArgs ...string) (*relaunchProc, error) {
	args := []string{
		"--listen", "127.0.0.1:0", "--log-format", "json", "--debounce", b.cfg.debounce.String(),
		"--", b.appPath, "-init-delay", b.cfg.initDelay.String(), "-record", record,
	}
	args = append(args, appArgs...)
	cmd := exec.Command(b.relaunchBin, args...)
	cmd.Dir = b.tmp
	// Its stderr, which every generation inherits, is a pipe of ours: the
	// pipe ends when relaunch and every generation are gone.
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = pw
	r := &relaunchProc{cmd: cmd, done: make(chan struct{}), change: make(chan struct{})}
	if err := b.start(cmd); err != nil {
		pr.Close()
		pw.Close()
		return nil, err
	}
	pw.Close()
	b.rl = r
	go r.read(pr)
	go func() {
		r.err = b.wait(cmd)
		close(r.done)
	}()
	e, err := r.waitLog(ctx, 10*time.Second, "listening line", func(e logEntry) bool { return reListening.MatchString(e.Msg) })
	if err != nil {
		return nil, err
	}
	r.addr = reListening.FindStringSubmatch(e.Msg)[1]
	if _, err := r.waitLog(ctx, 10*time.Second, "gen 1 ready", func(e logEntry) bool { return e.ready() }); err != nil {
		return nil, err
	}
	if _, err := waitServing(ctx, r.addr, 10*time.Second); err != nil {
		return nil, err
	}
	return r, nil
}

// stopRelaunch stops relaunch with SIGTERM (SIGKILL after 15 s) and kills
// by pid any generation it left, which only a SIGKILL of relaunch would.
func (b *bench) stopRelaunch() (string, error) {
	r := b.rl
	if r == nil {
		return "", nil
	}
	var err error
	if !r.exited() {
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			r.cmd.Process.Signal(syscall.SIGKILL)
			<-r.done
			err = errors.New("relaunch did not stop within 15 s of SIGTERM: killed")
		}
	}
	for _, e := range r.entries() {
		if e.started() && e.Pid > 0 && b.ours(e.Pid) {
			syscall.Kill(e.Pid, syscall.SIGKILL)
			if err == nil {
				err = fmt.Errorf("gen %d (pid %d) survived relaunch: killed", e.Generation, e.Pid)
			}
		}
	}
	status := "exit status 0"
	if r.err != nil {
		status = r.err.Error()
	}
	return status, err
}

// ours reports whether pid runs one of the bench's binaries (a live
// process, not a reused pid).
func (b *bench) ours(pid int) bool {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	return err == nil && strings.HasPrefix(exe, b.tmp+string(filepath.Separator))
}

// startDemo starts bin on addr by itself (the naive and overlap baselines,
// the direct throughput run) and returns when it was started.
func (b *bench) startDemo(bin, addr, record string, initDelay time.Duration, extra ...string) (*exec.Cmd, time.Time, error) {
	args := []string{"-listen", addr, "-init-delay", initDelay.String()}
	if record != "" {
		args = append(args, "-record", record)
	}
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = b.tmp
	t := time.Now()
	err := b.start(cmd)
	return cmd, t, err
}

// stopDemo stops a demo started by startDemo: SIGTERM, SIGKILL after 10 s.
func (b *bench) stopDemo(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { b.wait(cmd); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

// cpuTime is a process's CPU use so far.
type cpuTime struct {
	ticks int64         // utime+stime from /proc/PID/stat, in clock ticks (USER_HZ, 100/s)
	run   time.Duration // the sum of its threads' /proc/PID/task/T/schedstat run time (ns precise)
	ctxsw int64         // voluntary+involuntary context switches of its threads: wake-ups
}

const userHZ = 100 // USER_HZ: the unit of /proc/PID/stat's times on every Linux architecture Go supports

func readCPU(pid int) (cpuTime, error) {
	var c cpuTime
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return c, err
	}
	if c.ticks, err = parseStatTicks(string(stat)); err != nil {
		return c, err
	}
	tasks, err := os.ReadDir(dir + "/task")
	if err != nil {
		return c, err
	}
	for _, t := range tasks {
		if s, err := os.ReadFile(dir + "/task/" + t.Name() + "/schedstat"); err == nil {
			if f := strings.Fields(string(s)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				c.run += time.Duration(ns)
			}
		}
		if s, err := os.ReadFile(dir + "/task/" + t.Name() + "/status"); err == nil {
			for _, l := range strings.Split(string(s), "\n") {
				if k, v, ok := strings.Cut(l, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					c.ctxsw += n
				}
			}
		}
	}
	return c, nil
}

// parseStatTicks returns utime+stime from a /proc/PID/stat line. The
// command name, in parentheses, may hold spaces and parentheses: fields are
// counted after the last ')'.
func parseStatTicks(stat string) (int64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("bad /proc/PID/stat")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("short /proc/PID/stat")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bad utime/stime in /proc/PID/stat")
	}
	return u + s, nil
}

// memory is a process's resident memory, in KiB: in all, its peak, and the
// anonymous (heap, stacks) and file-backed (its binary's pages) parts.
type memory struct{ rss, hwm, anon, file int64 }

func readMem(pid int) (memory, error) {
	var m memory
	s, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return m, err
	}
	m.rss, m.hwm = statusKiB(string(s), "VmRSS"), statusKiB(string(s), "VmHWM")
	m.anon, m.file = statusKiB(string(s), "RssAnon"), statusKiB(string(s), "RssFile")
	if m.rss == 0 {
		return m, errors.New("no VmRSS in /proc/PID/status")
	}
	return m, nil
}

func statusKiB(status, key string) int64 {
	for _, l := range strings.Split(status, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// timeWait is the number of TCP sockets in TIME_WAIT on the host, from
// /proc/net/sockstat ("TCP: inuse 5 orphan 0 tw 8812 alloc 9 mem 1"); -1
// when unknown.
func timeWait() int {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "TCP:" {
			continue
		}
		for i := 1; i+1 < len(f); i += 2 {
			if f[i] == "tw" {
				n, _ := strconv.Atoi(f[i+1])
				return n
			}
		}
	}
	return -1
}

// records are the demo's -record lines: per pid, the first time of each
// event (listening, ready, drain, exit), and each pid's generation.
type records struct {
	at  map[int]map[string]time.Time
	gen map[int]int
}

func readRecords(path string) (records, error) {
	r := records{at: map[int]map[string]time.Time{}, gen: map[int]int{}}
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		pid, gen := 0, 0
		for _, kv := range f[2:] {
			if v, ok := strings.CutPrefix(kv, "pid="); ok {
				pid, _ = strconv.Atoi(v)
			} else if v, ok := strings.CutPrefix(kv, "gen="); ok {
				gen, _ = strconv.Atoi(v)
			}
		}
		if pid == 0 {
			continue
		}
		if r.at[pid] == nil {
			r.at[pid] = map[string]time.Time{}
		}
		if _, seen := r.at[pid][f[0]]; !seen {
			r.at[pid][f[0]] = time.Unix(0, ns)
		}
		if gen > 0 {
			r.gen[pid] = gen
		}
	}
	return r, nil
}
