package loadtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func demoHandler(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "version=2 pid=1 gen=3\n")
}

func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	return res
}

func TestRunOK(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(demoHandler))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	res := run(t, Config{Addr: srv.Listener.Addr().String(), Requests: 200, Clients: 4, KeepAliveFraction: 0.5})
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	if res.Total != 200 || res.OK != 200 || len(res.Samples) != 200 {
		t.Errorf("total %d ok %d samples %d, want 200", res.Total, res.OK, len(res.Samples))
	}
	if res.Retried != 0 || res.Aborted != 0 {
		t.Errorf("retried %d aborted %d, want 0", res.Retried, res.Aborted)
	}
	if res.Versions["2"] != 200 || len(res.Versions) != 1 || res.Gens["3"] != 200 || len(res.Gens) != 1 {
		t.Errorf("versions %v gens %v", res.Versions, res.Gens)
	}
	// 2 keep-alive clients use one connection each, the 2 others one per
	// request.
	newConns := 0
	for _, s := range res.Samples {
		if s.NewConn {
			newConns++
		}
	}
	if n := conns.Load(); n != int64(newConns) || n < 3 || n >= 200 {
		t.Errorf("%d connections, %d samples on a new connection", n, newConns)
	}
	p50, p99, mx := res.Latency()
	if p50 <= 0 || p50 > p99 || p99 > mx {
		t.Errorf("latencies p50 %v p99 %v max %v", p50, p99, mx)
	}
}

func TestKeepAliveClosedByServerIsRetried(t *testing.T) {
	// Every answer says keep-alive, then the server closes the connection:
	// each reuse finds it closed and must be retried, not counted as failed.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := "version=1 pid=1 gen=1\n"
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write([]byte(body))
		rc := http.NewResponseController(w)
		rc.Flush()
		c, _, err := rc.Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		c.Close()
	}))
	defer srv.Close()

	res := run(t, Config{Addr: srv.Listener.Addr().String(), Requests: 50, Clients: 2, KeepAliveFraction: 1})
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	if res.OK != 50 {
		t.Errorf("ok %d, want 50", res.OK)
	}
	if res.Retried < 40 {
		t.Errorf("retried %d, want nearly every request", res.Retried)
	}
}

func TestRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	res := run(t, Config{Addr: addr, Requests: 5, KeepAliveFraction: 1})
	if res.Errors[Refused] != 5 || res.Failed() != 5 || res.OK != 0 {
		t.Errorf("errors %v, want 5 refused", res.Errors)
	}
	if res.Err() == nil || len(res.ErrorMessages) != 5 {
		t.Errorf("Err() %v, messages %q", res.Err(), res.ErrorMessages)
	}
}

func TestEOFOnNewConnectionIsAnError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		c.Close() // request read, nothing answered: the client sees EOF
	}))
	defer srv.Close()

	for _, ka := range []float64{0, 1} {
		res := run(t, Config{Addr: srv.Listener.Addr().String(), Requests: 10, KeepAliveFraction: ka})
		if res.Errors[EOF] != 10 || res.Failed() != 10 || res.Retried != 0 {
			t.Errorf("keep-alive %v: errors %v retried %d, want 10 eof, 0 retried", ka, res.Errors, res.Retried)
		}
	}
}

func TestStatusAndOther(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/short" {
			// A body shorter than its Content-Length: a truncated answer.
			w.Header().Set("Content-Length", "100")
			w.Write([]byte("version=1"))
			rc := http.NewResponseController(w)
			rc.Flush()
			c, _, err := rc.Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		http.Error(w, "nope", http.StatusServiceUnavailable)
	}))
	defer srv.Close()

	res := run(t, Config{Addr: srv.Listener.Addr().String(), Requests: 4, KeepAliveFraction: 1})
	if res.Errors[Status] != 4 || res.Failed() != 4 {
		t.Errorf("errors %v, want 4 status", res.Errors)
	}
	res = run(t, Config{Addr: srv.Listener.Addr().String(), Path: "/short", Requests: 3})
	if res.Errors[Other] != 3 || res.Failed() != 3 {
		t.Errorf("errors %v, want 3 other", res.Errors)
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	res := run(t, Config{Addr: srv.Listener.Addr().String(), Requests: 2, Clients: 2, Timeout: 100 * time.Millisecond})
	if res.Errors[Timeout] != 2 || res.Failed() != 2 {
		t.Errorf("errors %v, want 2 timeout", res.Errors)
	}
}

func TestUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(demoHandler))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	defer srv.Close()

	for _, addr := range []string{path, "unix:" + path} {
		res := run(t, Config{Addr: addr, Requests: 20, Clients: 2, KeepAliveFraction: 0.5})
		if err := res.Err(); err != nil {
			t.Fatal(err)
		}
		if res.OK != 20 || res.Gens["3"] != 20 {
			t.Errorf("%s: ok %d gens %v", addr, res.OK, res.Gens)
		}
	}
}

func TestRateAndDuration(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(demoHandler))
	defer srv.Close()

	start := time.Now()
	res := run(t, Config{Addr: srv.Listener.Addr().String(), Rate: 100, Duration: 500 * time.Millisecond, Clients: 4})
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	// About 50 requests, scheduled at 10ms intervals from the start.
	if res.OK < 25 || res.OK > 55 {
		t.Errorf("%d requests at 100/s in 500ms, want about 50", res.OK)
	}
	if el := time.Since(start); el < 400*time.Millisecond || el > 5*time.Second {
		t.Errorf("run took %v, want about 500ms", el)
	}
	for i, s := range res.Samples {
		if s.Start.Before(res.Start) || s.Start.Sub(res.Start) > time.Second {
			t.Fatalf("sample %d starts at %v", i, s.Start.Sub(res.Start))
		}
	}
}

func TestStopWaitsForInFlight(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(5 * time.Millisecond) // requests are in flight when Stop is called
		demoHandler(w, r)
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := Start(ctx, Config{Addr: srv.Listener.Addr().String(), Clients: 4, KeepAliveFraction: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if ok, _ := r.Progress(); ok >= 40 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no progress")
		}
	}
	res := r.Stop()
	t.Log(res)
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	if res.OK < 40 || res.Aborted != 0 {
		t.Errorf("ok %d aborted %d", res.OK, res.Aborted)
	}
	select {
	case <-r.Done():
	default:
		t.Error("Done not closed after Stop")
	}
}

func TestCancelAbortsInFlight(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := Start(ctx, Config{Addr: srv.Listener.Addr().String(), Clients: 2})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("requests did not arrive")
		}
	}
	cancel()
	res := r.Wait()
	t.Log(res)
	if res.Aborted != 2 || res.Total != 0 || res.Failed() != 0 {
		t.Errorf("aborted %d total %d failed %d, want 2 0 0", res.Aborted, res.Total, res.Failed())
	}
}

func TestConnectToRequestDelay(t *testing.T) {
	var gap atomic.Int64 // the largest connect-to-request gap the server saw, ns
	accepted := map[string]time.Time{}
	mu := make(chan struct{}, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu <- struct{}{}
		g := time.Since(accepted[r.RemoteAddr])
		<-mu
		if int64(g) > gap.Load() {
			gap.Store(int64(g))
		}
		demoHandler(w, r)
	}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu <- struct{}{}
			accepted[c.RemoteAddr().String()] = time.Now()
			<-mu
		}
	}
	srv.Start()
	defer srv.Close()

	const delay = 200 * time.Millisecond
	res := run(t, Config{Addr: srv.Listener.Addr().String(), Requests: 4, Clients: 4, ConnectToRequestDelay: delay})
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	if g := time.Duration(gap.Load()); g < delay {
		t.Errorf("largest connect-to-request gap %v, want >= %v", g, delay)
	}
	// The deliberate delay is not latency.
	if p50 := res.Percentile(50); p50 >= delay {
		t.Errorf("p50 latency %v includes the connect-to-request delay", p50)
	}
}

func TestPercentile(t *testing.T) {
	r := &Result{}
	for i := 1; i <= 100; i++ {
		r.Samples = append(r.Samples, Sample{Latency: time.Duration(i) * time.Millisecond})
	}
	r.Samples = append(r.Samples, Sample{Latency: time.Hour, Err: Reset}) // failures are not counted
	r.OK = 100
	if got := r.Percentile(50); got != 50*time.Millisecond {
		t.Errorf("p50 %v", got)
	}
	if got := r.Percentile(99); got != 99*time.Millisecond {
		t.Errorf("p99 %v", got)
	}
	if got := r.Percentile(100); got != 100*time.Millisecond {
		t.Errorf("p100 %v", got)
	}
	if got := r.Percentile(0); got != time.Millisecond {
		t.Errorf("p0 %v", got)
	}
	if _, _, mx := r.Latency(); mx != 100*time.Millisecond {
		t.Errorf("max %v", mx)
	}
	if (&Result{}).Percentile(50) != 0 {
		t.Error("empty result percentile not 0")
	}
}

func TestBadConfig(t *testing.T) {
	for _, cfg := range []Config{{}, {Addr: "x:1", KeepAliveFraction: 2}, {Addr: "x:1", Rate: -1}} {
		if _, err := Start(context.Background(), cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}
