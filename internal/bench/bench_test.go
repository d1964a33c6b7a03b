package main

import (
	"bytes"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/plot"

	"github.com/relaunch/relaunch/internal/loadtest"
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

func TestPlot(t *testing.T) {
	t0 := time.Now()
	mk := func(name string, errs bool) *phase {
		p := &phase{name: name, res: &loadtest.Result{Start: t0, Elapsed: 10 * time.Second, Errors: map[loadtest.Kind]int{}}}
		for i := range 10000 {
			s := loadtest.Sample{Start: t0.Add(time.Duration(i) * time.Millisecond), Latency: time.Duration(100+i%900) * time.Microsecond}
			if errs && i%100 == 0 {
				s.Err = loadtest.Refused
				s.Latency = 0 // refused at once: no point on a log scale
				p.res.Errors[loadtest.Refused]++
			}
			p.res.Samples = append(p.res.Samples, s)
			p.res.Total++
		}
		kinds := []string{"SIGUSR2", "rename"}
		if name == "naive" {
			kinds = []string{"restart"}
		}
		for i := range 4 {
			tr := t0.Add(time.Duration(2+2*i) * time.Second)
			p.upgrades = append(p.upgrades, upgrade{kind: kinds[i%len(kinds)], trigger: tr, first: tr.Add(330 * time.Millisecond)})
		}
		return p
	}
	rl, naive := mk("relaunch", false), mk("naive", true)
	rl.controls = [][2]time.Time{{t0.Add(time.Second), t0.Add(1500 * time.Millisecond)}}
	cfg := config{rate: 1000, window: 500 * time.Millisecond}

	// What the panels show, before drawing.
	pns := panels(cfg, []*phase{rl, naive})
	if len(pns) != 2 {
		t.Fatalf("%d panels", len(pns))
	}
	r, n := pns[0], pns[1]
	if r.lo != 1e-4 || r.hi != 1e-2 || n.lo != r.lo || n.hi != r.hi {
		t.Errorf("latency axes %g..%g and %g..%g, want one scale 100µs..10ms", r.lo, r.hi, n.lo, n.hi)
	}
	if len(r.ok) != 10000 || len(r.failed) != 0 || len(n.ok) != 9900 || len(n.failed) != 100 {
		t.Errorf("points: relaunch %d ok %d failed, naive %d ok %d failed", len(r.ok), len(r.failed), len(n.ok), len(n.failed))
	}
	if f := n.failed[1]; f.X != 0.1 || f.Y != n.lo {
		t.Errorf("second failed request at %+v, want x 0.1s, on the floor of the axis", f)
	}
	if len(r.triggers) != 2 || r.triggers[0].kind != "SIGUSR2" || !slices.Equal(r.triggers[1].xs, []float64{4, 8}) ||
		len(n.triggers) != 1 || n.triggers[0].kind != "restart" || len(n.triggers[0].xs) != 4 {
		t.Errorf("triggers: relaunch %+v, naive %+v", r.triggers, n.triggers)
	}
	if w := r.windows.spans; len(w) != 4 || math.Abs(w[0][0]-2) > 1e-9 || math.Abs(w[0][1]-2.83) > 1e-9 {
		t.Errorf("upgrade windows %v, want the first from 2s to 2.83s", w)
	}
	if len(r.controls.spans) != 1 || len(n.controls.spans) != 0 {
		t.Errorf("poller windows: relaunch %v, naive %v", r.controls.spans, n.controls.spans)
	}
	if !strings.HasPrefix(r.title, "relaunch: 4 upgrades (2 SIGUSR2, 2 rename), 10000 requests at 1000/s, 0 errors") ||
		!strings.HasSuffix(n.title, "100 errors (100 refused)") {
		t.Errorf("titles %q, %q", r.title, n.title)
	}
	label := func(ts []plot.Tick) string {
		var l []string
		for _, tk := range ts {
			if tk.Label != "" {
				l = append(l, tk.Label)
			}
		}
		return strings.Join(l, " ")
	}
	pl := r.plot()
	if got := label(pl.Y.Tick.Marker.Ticks(pl.Y.Min, pl.Y.Max)); got != "100µs 1ms 10ms" {
		t.Errorf("latency labels %q", got)
	}
	if got := label(pl.X.Tick.Marker.Ticks(pl.X.Min, pl.X.Max)); got != "0s 1s 2s 3s 4s 5s 6s 7s 8s 9s 10s" {
		t.Errorf("time labels %q", got)
	}
	if _, ok := pl.Y.Scale.(plot.LogScale); !ok {
		t.Errorf("latency scale %T", pl.Y.Scale)
	}

	// The picture: its size, and the failed requests in red in the naive
	// panel only.
	img := render(cfg, pns)
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
	red := func(y0, y1 int) int {
		n := 0
		for y := y0; y < y1; y++ {
			for x := 0; x < plotW; x++ {
				if r, g, b, _ := img.At(x, y).RGBA(); r>>8 > 180 && g>>8 < 80 && b>>8 < 80 {
					n++
				}
			}
		}
		return n
	}
	if n := red(0, panelH); n != 0 {
		t.Errorf("%d red pixels in the relaunch panel, which has no failed request", n)
	}
	if n := red(panelH, 2*panelH); n < 100 {
		t.Errorf("%d red pixels in the naive panel: its 100 failed requests are not drawn", n)
	}
}

// p50Beyond: the p50 difference, and a bootstrap interval around it that
// holds the true shift for two samples of one distribution shifted, and
// narrows with more samples.
func TestP50Beyond(t *testing.T) {
	sample := func(n int, shift time.Duration) dist {
		d := make(dist, n)
		for i := range d {
			// a spread like app starts: 10–20 ms, evenly
			d[i] = 10*time.Millisecond + time.Duration(i*10/n)*time.Millisecond + time.Duration(i%7)*100*time.Microsecond + shift
		}
		return d
	}
	for _, n := range []int{20, 80} {
		base, d := sample(n, 0), sample(n, 3*time.Millisecond)
		diff, lo, hi := p50Beyond(base, d)
		if diff != 3*time.Millisecond {
			t.Errorf("n=%d: diff %v; want 3ms", n, diff)
		}
		if !(lo < diff && diff < hi) || lo > 3*time.Millisecond || hi < 3*time.Millisecond {
			t.Errorf("n=%d: interval %v to %v around %v; want it to hold 3ms", n, lo, hi, diff)
		}
		t.Logf("n=%d: %v (%v to %v)", n, diff, lo, hi)
	}
	_, lo20, hi20 := p50Beyond(sample(20, 0), sample(20, 0))
	_, lo80, hi80 := p50Beyond(sample(80, 0), sample(80, 0))
	if hi80-lo80 >= hi20-lo20 {
		t.Errorf("interval of 80 samples %v wide, of 20 %v: want narrower", hi80-lo80, hi20-lo20)
	}
	if d, lo, hi := p50Beyond(nil, sample(5, 0)); d != 0 || lo != 0 || hi != 0 {
		t.Errorf("no base: %v %v %v", d, lo, hi)
	}
}
