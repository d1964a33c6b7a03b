//go:build linux

package main

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// BenchmarkSoak: back-to-back SIGUSR2 upgrades under load (1000, or
// RELAUNCH_SOAK_UPGRADES), each waited for until the old generation has
// exited. It shows, rather than asserts with timing: errors (want 0), and
// relaunch's fd count, RSS and zombie children sampled every tenth of the
// run (want flat, and none). It fails on an error, a zombie left, or fds
// that grow.
//
//	go test -run '^$' -bench BenchmarkSoak -benchtime 1x .
func BenchmarkSoak(b *testing.B) {
	needE2E(b)
	n := 1000
	if s := os.Getenv("RELAUNCH_SOAK_UPGRADES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	p, addr := startServing(b, "--ready", "notify", "--", demoBin)
	load := startLoad(b, addr)
	type sample struct {
		upgrades, fds, rssKB, zombies int
	}
	var samples []sample
	take := func(i int) {
		fds, _ := fdCount(p.Pid())
		samples = append(samples, sample{i, fds, procStatusKB(b, p.Pid(), "VmRSS"), len(zombieChildren(p.Pid()))})
	}
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		for i := 1; i <= n; i++ {
			if i == 1 || i%max(n/10, 1) == 0 {
				take(i - 1)
			}
			upgradeAndWait(b, p, i+1, 20*time.Second)
		}
		take(n)
		b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(n), "ms/upgrade")
	}
	b.StopTimer()
	res := stopLoad(b, load)
	b.Logf("%d upgrades: %d requests in %s under load, %d failed, %d retried (keep-alive closed by a draining app); p99 %s",
		n, res.Total, res.Elapsed.Round(time.Second), res.Failed(), res.Retried, res.Percentile(99))
	b.Logf("%10s %6s %10s %8s", "upgrades", "fds", "RSS", "zombies")
	for _, s := range samples {
		b.Logf("%10d %6d %7.1f MiB %8d", s.upgrades, s.fds, float64(s.rssKB)/1024, s.zombies)
	}
	first, last := samples[1], samples[len(samples)-1] // after the first upgrade: the rollback binary is held from then on
	b.ReportMetric(float64(res.Failed()), "errors")
	b.ReportMetric(float64(last.fds-first.fds), "fds-grown")
	b.ReportMetric(float64(last.rssKB-first.rssKB)/1024, "MiB-RSS-grown")
	if res.Failed() != 0 {
		b.Errorf("%d requests failed over %d upgrades: %v", res.Failed(), n, res.ErrorMessages)
	}
	// One fd more or less is what an upgrade in flight holds (the exec
	// helper's pipe); a leak of one per upgrade would show hundreds.
	if last.fds > first.fds+2 {
		b.Errorf("relaunch's fds grew from %d to %d", first.fds, last.fds)
	}
	if z := zombieChildren(p.Pid()); len(z) > 0 {
		b.Errorf("zombies after the soak: %v", z)
	}
}
