package main

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"relaunch/internal/loadtest"
)

// These test the bench's arithmetic and drawing only; the benchmark itself
// runs with `make bench`.

func TestSchedule(t *testing.T) {
	got := strings.Join(schedule(3, 1), ",")
	if want := "SIGUSR2,rename,SIGUSR2,SIGUSR2"; got != want {
		t.Errorf("schedule(3, 1) = %s, want %s", got, want)
	}
	if n := len(schedule(20, 20)); n != 40 {
		t.Errorf("schedule(20, 20) has %d entries", n)
	}
}

func TestQuick(t *testing.T) {
	c, err := parseFlags([]string{"-quick", "-idle", "7s"})
	if err != nil {
		t.Fatal(err)
	}
	if c.idle != 7*time.Second || c.signals != 5 || c.renames != 5 || c.naive != 5 || c.tput != 2*time.Second {
		t.Errorf("-quick -idle 7s: %+v", c)
	}
	if _, err := parseFlags([]string{"-signal", "0", "-rename", "0"}); err == nil {
		t.Error("no upgrade at all is accepted")
	}
}

func TestSplit(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	wins := [][2]time.Time{{t0.Add(100 * ms), t0.Add(200 * ms)}}
	samples := []loadtest.Sample{
		{Start: t0, Latency: 1 * ms},               // steady
		{Start: t0.Add(99 * ms), Latency: 2 * ms},  // overlaps the window's start: during
		{Start: t0.Add(150 * ms), Latency: 3 * ms}, // during
		{Start: t0.Add(150 * ms), Latency: ms, Err: loadtest.Refused},
		{Start: t0.Add(201 * ms), Latency: 4 * ms}, // steady
	}
	steady, during := split(samples, wins)
	if steady.requests != 2 || during.requests != 3 {
		t.Fatalf("steady %d, during %d requests; want 2, 3", steady.requests, during.requests)
	}
	if during.errors[loadtest.Refused] != 1 || during.lat.n != 2 || during.lat.max != 3*ms {
		t.Errorf("during: %+v", during)
	}
	if steady.lat.p50 != 1*ms || steady.lat.max != 4*ms {
		t.Errorf("steady: %+v", steady.lat)
	}
}

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 200; i++ {
		lat = append(lat, time.Duration(i))
	}
	if p := percentile(lat, 50); p != 100 {
		t.Errorf("p50 = %d", p)
	}
	if p := percentile(lat, 99); p != 198 {
		t.Errorf("p99 = %d", p)
	}
}

func TestParseStatTicks(t *testing.T) {
	stat := "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 4 0 0 20 0 5 0 123 456 789"
	n, err := parseStatTicks(stat)
	if err != nil || n != 21 {
		t.Errorf("parseStatTicks = %d, %v; want 21", n, err)
	}
}

func TestStatusKiB(t *testing.T) {
	s := "Name:\trelaunch\nVmHWM:\t    9876 kB\nVmRSS:\t    8192 kB\n"
	if statusKiB(s, "VmRSS") != 8192 || statusKiB(s, "VmHWM") != 9876 {
		t.Error("statusKiB misread", s)
	}
}

func TestReadRecords(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rec")
	os.WriteFile(p, []byte("listening 1000000000 gen=2 pid=77\nready 1000500000 gen=2 pid=77\ndrain 2000000000 SIGQUIT gen=2 pid=77\nlistening 3000000000 gen= pid=78\n"), 0o644)
	r, err := readRecords(p)
	if err != nil {
		t.Fatal(err)
	}
	if r.gen[77] != 2 || r.at[77]["ready"].Sub(r.at[77]["listening"]) != 500*time.Microsecond || r.at[78]["listening"].IsZero() {
		t.Errorf("records: %+v", r)
	}
}

func TestGenInfos(t *testing.T) {
	lines := []string{
		`{"time":"2026-01-01T00:00:00.000000000Z","level":"INFO","msg":"listening on tcp://127.0.0.1:4000 (fd 3, steered handover: 8 slots)"}`,
		`{"time":"2026-01-01T00:00:00.010000000Z","level":"INFO","msg":"gen 1 (pid 10) started: /x/demo","generation":1,"pid":10}`,
		`{"time":"2026-01-01T00:00:00.320000000Z","level":"INFO","msg":"gen 1 (pid 10) ready in 310ms: READY=1","generation":1,"pid":10}`,
		`{"time":"2026-01-01T00:00:01.000000000Z","level":"INFO","msg":"upgrade: SIGUSR2"}`,
		`{"time":"2026-01-01T00:00:01.000700000Z","level":"INFO","msg":"gen 2 (pid 11) started: /x/demo","generation":2,"pid":11}`,
		`{"time":"2026-01-01T00:00:01.310700000Z","level":"INFO","msg":"gen 2 (pid 11) ready in 310ms: READY=1","generation":2,"pid":11}`,
		`{"time":"2026-01-01T00:00:01.500000000Z","level":"INFO","msg":"gen 1 (pid 10) exited: status 0","generation":1,"pid":10}`,
	}
	var logs []logEntry
	for _, l := range lines {
		var e logEntry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		logs = append(logs, e)
	}
	if m := reListening.FindStringSubmatch(logs[0].Msg); m == nil || m[1] != "127.0.0.1:4000" {
		t.Errorf("listening address: %q", m)
	}
	gens, failed := genInfos(logs)
	if len(failed) != 0 || len(gens) != 2 {
		t.Fatalf("gens %v, failed %v", gens, failed)
	}
	g := gens[2]
	if g.reason != "SIGUSR2" || g.startedAt.Sub(g.upgradeAt) != 700*time.Microsecond || g.readyAt.Sub(g.startedAt) != 310*time.Millisecond || g.pid != 11 {
		t.Errorf("gen 2: %+v", g)
	}
	if !gens[1].upgradeAt.IsZero() {
		t.Error("gen 1 has an upgrade line")
	}
	if !logs[6].exited() || logs[5].exited() {
		t.Error("exited() is wrong")
	}
}

func TestFont(t *testing.T) {
	for r, g := range font {
		rows := strings.Fields(g)
		if len(rows) != glyphH && len(rows) != glyphH+2 {
			t.Errorf("glyph %q has %d rows", r, len(rows))
		}
		for _, row := range rows {
			if len(row) != glyphW || strings.Trim(row, ".#") != "" {
				t.Errorf("glyph %q: bad row %q", r, row)
			}
		}
	}
	// Every character the plot writes has a glyph.
	for _, s := range []string{
		"relaunch: 40 upgrades (20 SIGUSR2, 20 rename), 51234 requests at 1000/s, 0 errors",
		"naive: 20 restarts (SIGTERM, wait for exit, start), 3 errors (1 refused, 1 reset, 1 eof, timeout, status, other)",
		"10µs 100ms 1s 15s request failed naive restart upgrade: trigger → new answer + 500.00ms poller alone",
		"y: latency of each request (log scale); x: time since the load started, one point per request at its start",
		"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789",
	} {
		for _, r := range s {
			if _, ok := font[r]; !ok {
				t.Errorf("no glyph for %q", r)
			}
		}
	}
}

func TestPlot(t *testing.T) {
	t0 := time.Now()
	mk := func(name string, errs bool) *phase {
		p := &phase{name: name, res: &loadtest.Result{Start: t0, Elapsed: 10 * time.Second, Errors: map[loadtest.Kind]int{}}}
		for i := range 10000 {
			s := loadtest.Sample{Start: t0.Add(time.Duration(i) * time.Millisecond), Latency: time.Duration(100+i%900) * time.Microsecond}
			if errs && i%100 == 0 {
				s.Err = loadtest.Refused
				p.res.Errors[loadtest.Refused]++
			}
			p.res.Samples = append(p.res.Samples, s)
			p.res.Total++
		}
		for i := range 4 {
			tr := t0.Add(time.Duration(2+2*i) * time.Second)
			p.upgrades = append(p.upgrades, upgrade{kind: []string{"SIGUSR2", "rename"}[i%2], trigger: tr, first: tr.Add(330 * time.Millisecond)})
		}
		return p
	}
	cfg := config{rate: 1000, window: 500 * time.Millisecond}
	img := plot(cfg, []*phase{mk("relaunch", false), mk("naive", true)})
	if b := img.Bounds(); b.Dx() != plotW || b.Dy() != 2*panelH+legendH {
		t.Errorf("size %v", b)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(&buf); err != nil {
		t.Fatal(err)
	}
	// A failed request is drawn in red somewhere in the second panel.
	red := false
	for y := panelH; y < 2*panelH && !red; y++ {
		for x := 0; x < plotW; x++ {
			if c := img.RGBAAt(x, y); c.R > 180 && c.G < 80 && c.B < 80 {
				red = true
				break
			}
		}
	}
	if !red {
		t.Error("no failed request drawn in the naive panel")
	}
}
