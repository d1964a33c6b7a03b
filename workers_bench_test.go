package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relaunch/relaunch/internal/loadtest"
	"github.com/relaunch/relaunch/launcher"
)

// relaunch's own CPU per steered upgrade, from its threads' schedstat run
// time, by number of listeners and workers:
//
//	go test -run '^$' -bench UpgradeCPU -benchtime 20x .
//
// Each upgrade is `relaunch upgrade` (READY=1, so no procfs scans) and the
// wait until the old generation's processes are gone: the checks before the
// upgrade, the switch, the settle and queue wait, the drain and the exits.
func BenchmarkUpgradeCPU(b *testing.B) {
	for _, c := range []struct{ listeners, workers int }{{1, 0}, {8, 0}, {32, 0}, {1, 8}, {8, 8}} {
		b.Run(fmt.Sprintf("listeners=%d/workers=%d", c.listeners, c.workers), func(b *testing.B) {
			needE2E(b, "relaunch", "demo")
			dir := shortTempDir(b)
			sock := filepath.Join(dir, "ctl.sock")
			args := []string{"--ready", "notify", "--control", sock, "--no-watch-binary", "--max-draining", "1"}
			if c.workers > 0 {
				args = append(args, "--workers", strconv.Itoa(c.workers))
			}
			var first string
			seen := map[string]bool{}
			for len(seen) < c.listeners {
				a := freeAddr(b) // a port freed and picked again can come twice
				if seen[a] {
					continue
				}
				seen[a] = true
				if first == "" {
					first = a
				}
				args = append(args, "--listen", a)
			}
			p := startRelaunch(b, append(args, "--", demoBin)...)
			waitHTTP(b, first, "gen=1", 20*time.Second)
			upgrade := func(gen int) {
				// The old generation's pids, asked before: polling status
				// would cost relaunch more than the upgrade.
				out, err := exec.Command(relaunchBin, "status", "--json", "--control", sock).Output()
				var st launcher.Status
				if err != nil || json.Unmarshal(out, &st) != nil || len(st.Generations) != 1 {
					b.Fatalf("status before gen %d: %v %s", gen, err, out)
				}
				old := []int{st.Generations[0].Pid}
				for _, w := range st.Generations[0].Workers {
					old = append(old, w.Pid)
				}
				if out, err := clientB(sock, "upgrade"); err != nil {
					b.Fatalf("relaunch upgrade: %v %s", err, out)
				}
				if left := waitProcsGone(old, 20*time.Second); len(left) > 0 {
					b.Fatalf("gen %d still there after the upgrade to gen %d:\n%s", gen-1, gen, p.Stderr())
				}
			}
			upgrade(2) // warm up
			before := runTime(b, p.Pid())
			b.ResetTimer()
			for i := range b.N {
				upgrade(3 + i)
			}
			b.StopTimer()
			per := (runTime(b, p.Pid()) - before) / time.Duration(b.N)
			b.ReportMetric(float64(per.Microseconds())/1000, "relaunch-cpu-ms/upgrade")
		})
	}
}

// clientB runs a relaunch client command against sock.
func clientB(sock, cmd string) (string, error) {
	out, err := exec.Command(relaunchBin, cmd, "--control", sock).CombinedOutput()
	return string(out), err
}

// runTime is the sum of pid's threads' run time (schedstat's first field).
func runTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	var sum time.Duration
	for _, t := range tasks {
		s, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(s)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			sum += time.Duration(ns)
		}
	}
	return sum
}

// Throughput of a CPU-bound handler (the demo's /spin, about 2 ms of CPU
// per request) of a single-threaded server (the demo with GOMAXPROCS=1)
// with --workers 1 and --workers auto, 8 closed-loop clients
// for 5 s each, alternated over 3 rounds; `make bench` runs it:
//
//	go test -run '^$' -bench WorkersThroughput -benchtime 1x .
func BenchmarkWorkersThroughput(b *testing.B) {
	needE2E(b, "relaunch", "demo")
	rate := map[string]float64{}
	for range 3 {
		for _, w := range []string{"1", "auto"} {
			addr := freeAddr(b)
			// GOMAXPROCS=1: a single-threaded server, as node or a Python
			// one is; a Go server uses every CPU in one process already.
			p := startRelaunchOpts(b, procOpts{Env: []string{"GOMAXPROCS=1"}}, "--listen", addr, "--no-watch-binary", "--workers", w, "--", demoBin)
			waitHTTP(b, addr, "gen=1", 20*time.Second)
			res, err := loadtest.Run(b.Context(), loadtest.Config{Addr: addr, Path: "/spin?n=2000000", Clients: 8, Duration: 5 * time.Second, Timeout: 30 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			if res.Failed() > 0 {
				b.Fatalf("--workers %s: %d requests failed: %v", w, res.Failed(), res.ErrorMessages)
			}
			rate[w] += float64(res.OK) / res.Elapsed.Seconds() / 3
			p.Signal(syscall.SIGTERM)
			p.MustWait(30 * time.Second)
		}
	}
	b.ReportMetric(rate["1"], "req/s-workers-1")
	b.ReportMetric(rate["auto"], "req/s-workers-auto")
	b.ReportMetric(rate["auto"]/rate["1"], "ratio")
	b.Logf("CPU-bound /spin, single-threaded demo: --workers 1 %.0f req/s, --workers auto (%d CPUs) %.0f req/s: ×%.2f", rate["1"], runtime.NumCPU(), rate["auto"], rate["auto"]/rate["1"])
}
