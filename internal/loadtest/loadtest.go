// Package loadtest is the load generator the end-to-end tests and benchmarks
// use: concurrent HTTP/1.1 clients against one address that classify every
// failure exactly, so that a test can assert "no request failed during ten
// upgrades" and say which ones did when it does.
//
// Requests are written by hand on a net.Conn and answers read with
// http.ReadResponse; nothing is hidden by a client library's retries. The one
// failure forgiven is the one every HTTP client forgives: a keep-alive
// connection the server closed between two requests (EOF or reset on a reused
// connection before any byte of the answer). That request is retried once on a
// fresh connection and counted in Result.Retried, not as an error.
//
// Typical use:
//
//	r, err := loadtest.Start(ctx, loadtest.Config{Addr: "127.0.0.1:8080", Clients: 8, KeepAliveFraction: 0.5})
//	... // upgrade the server a few times
//	res := r.Stop()
//	if err := res.Err(); err != nil { t.Fatal(err) }
package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Kind classifies a failed request.
type Kind string

// The kinds of failure. Every failed request has exactly one.
const (
	Refused Kind = "refused" // connect: ECONNREFUSED
	Reset   Kind = "reset"   // ECONNRESET or EPIPE, while writing or reading
	EOF     Kind = "eof"     // the connection ended before any byte of the answer
	Timeout Kind = "timeout" // Config.Timeout passed (connect, write or read)
	Status  Kind = "status"  // an answer whose status is not 200
	Other   Kind = "other"   // anything else (truncated answer, bad HTTP, EAGAIN from a full unix backlog, ...)
)

// Kinds lists every Kind, in a stable order.
var Kinds = []Kind{Refused, Reset, EOF, Timeout, Status, Other}

// Config says what load to generate. Only Addr is required.
type Config struct {
	// Addr is "host:port" (tcp), or a unix stream socket: an absolute or
	// ./relative path, or "unix:PATH". A leading "http://" is ignored.
	Addr string
	// Path is the request target, "/" by default.
	Path string
	// Host is the Host header: Addr's host:port for tcp, "localhost" for unix.
	Host string
	// Clients is the number of concurrent clients, 1 by default.
	Clients int
	// KeepAliveFraction is the fraction of the clients (rounded to the
	// nearest whole client) that keep their connection open between
	// requests; the others open a new connection for every request and send
	// "Connection: close". 0: every request on a new connection.
	KeepAliveFraction float64
	// Rate, when > 0, is an open-loop schedule: request k (counted over all
	// clients) is sent at start + k/Rate, or as soon as a client is free when
	// the clients fall behind. 0: closed loop, every client sends its next
	// request as soon as the previous one is answered.
	Rate float64
	// Requests bounds the number of requests sent (0: no bound).
	Requests int
	// Duration bounds the time during which requests are started (0: no
	// bound). Requests in flight when it ends are finished.
	Duration time.Duration
	// Timeout bounds each request: connect, write and read of the whole
	// answer. 10s by default.
	Timeout time.Duration
	// ConnectToRequestDelay is waited between establishing a new connection
	// and writing the request on it (slow clients). It is not counted in the
	// latency.
	ConnectToRequestDelay time.Duration
	// MaxErrorMessages is how many error messages Result keeps, 10 by default.
	MaxErrorMessages int
}

// Sample is one request.
type Sample struct {
	Start   time.Time     // when the request began (before connecting, if it did)
	Latency time.Duration // until the answer was read in full or the request failed
	Err     Kind          // "" when the request succeeded (status 200)
	Retried bool          // the first attempt, on a reused keep-alive connection, was closed by the server
	NewConn bool          // the (final) attempt used a new connection
	Version string        // the body's "version=" value, if any
	Gen     string        // the body's "gen=" value, if any
}

// Result is what a run measured.
type Result struct {
	Total   int // requests completed: OK + every error
	OK      int
	Errors  map[Kind]int
	Retried int // requests retried once after a keep-alive close; not errors
	// Aborted counts requests cut short by the context's cancellation; they
	// are not in Total and not errors.
	Aborted int
	// ErrorMessages holds the first Config.MaxErrorMessages errors, each
	// with its kind, client, time since the start and the error text.
	ErrorMessages []string
	// Versions and Gens count the answers by their body's "version=" and
	// "gen=" values (the demo app's "version=V pid=P gen=G"), so a test can
	// see which generations answered.
	Versions map[string]int
	Gens     map[string]int
	// Samples holds every completed request in completion order.
	Samples []Sample
	Start   time.Time
	Elapsed time.Duration
}

// Failed is the number of failed requests.
func (r *Result) Failed() int {
	n := 0
	for _, c := range r.Errors {
		n += c
	}
	return n
}

// Err returns nil when no request failed, else an error that summarises the
// result and quotes the first error messages.
func (r *Result) Err() error {
	if r.Failed() == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d requests failed: %s\nfirst errors:\n  %s",
		r.Failed(), r.Total, r.String(), strings.Join(r.ErrorMessages, "\n  "))
}

// Percentile returns the latency at percentile p (0-100) of the successful
// requests (nearest rank), 0 if there are none.
func (r *Result) Percentile(p float64) time.Duration {
	lat := r.okLatencies()
	if len(lat) == 0 {
		return 0
	}
	return percentile(lat, p)
}

// Latency returns the p50, p99 and maximum latency of the successful requests.
func (r *Result) Latency() (p50, p99, max time.Duration) {
	lat := r.okLatencies()
	if len(lat) == 0 {
		return 0, 0, 0
	}
	return percentile(lat, 50), percentile(lat, 99), lat[len(lat)-1]
}

func (r *Result) okLatencies() []time.Duration {
	lat := make([]time.Duration, 0, r.OK)
	for _, s := range r.Samples {
		if s.Err == "" {
			lat = append(lat, s.Latency)
		}
	}
	slices.Sort(lat)
	return lat
}

// percentile of sorted, non-empty lat by nearest rank.
func percentile(lat []time.Duration, p float64) time.Duration {
	if p <= 0 {
		return lat[0]
	}
	rank := int(math.Ceil(p / 100 * float64(len(lat))))
	rank = min(max(rank, 1), len(lat))
	return lat[rank-1]
}

// String is a one-line summary.
func (r *Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d requests in %v (%.0f/s): %d ok", r.Total, r.Elapsed.Round(time.Millisecond),
		float64(r.Total)/max(r.Elapsed.Seconds(), 1e-9), r.OK)
	for _, k := range Kinds {
		if n := r.Errors[k]; n > 0 {
			fmt.Fprintf(&b, ", %d %s", n, k)
		}
	}
	fmt.Fprintf(&b, ", %d retried", r.Retried)
	if r.Aborted > 0 {
		fmt.Fprintf(&b, ", %d aborted", r.Aborted)
	}
	p50, p99, mx := r.Latency()
	fmt.Fprintf(&b, "; latency p50 %v p99 %v max %v", p50, p99, mx)
	if len(r.Versions) > 0 {
		fmt.Fprintf(&b, "; versions %s", countString(r.Versions))
	}
	if len(r.Gens) > 0 {
		fmt.Fprintf(&b, "; gens %s", countString(r.Gens))
	}
	return b.String()
}

func countString(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

// Runner is a load run in progress.
type Runner struct {
	cfg     Config
	network string
	addr    string
	ctx     context.Context
	start   time.Time
	stop    chan struct{} // closed: start no more requests
	stopOne sync.Once
	done    chan struct{} // closed when every client has returned
	next    atomic.Int64  // requests handed out
	ok      atomic.Int64
	failed  atomic.Int64

	mu     sync.Mutex
	result Result
}

// Run generates load until Config.Requests or Config.Duration is reached or
// ctx is cancelled, and returns the result. With neither bound, only ctx ends
// it.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	r, err := Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return r.Wait(), nil
}

// Start starts generating load in the background. The run ends when
// Config.Requests or Config.Duration is reached, when Stop is called, or when
// ctx is cancelled (which also aborts the requests in flight). The error is
// for a bad Config only.
func Start(ctx context.Context, cfg Config) (*Runner, error) {
	if cfg.Addr == "" {
		return nil, errors.New("loadtest: Config.Addr is empty")
	}
	if cfg.KeepAliveFraction < 0 || cfg.KeepAliveFraction > 1 {
		return nil, fmt.Errorf("loadtest: KeepAliveFraction %v is not within [0, 1]", cfg.KeepAliveFraction)
	}
	if cfg.Rate < 0 || cfg.Requests < 0 || cfg.Duration < 0 || cfg.Clients < 0 {
		return nil, errors.New("loadtest: negative Rate, Requests, Duration or Clients")
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if cfg.Clients == 0 {
		cfg.Clients = 1
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxErrorMessages == 0 {
		cfg.MaxErrorMessages = 10
	}
	network, addr := splitAddr(cfg.Addr)
	if cfg.Host == "" {
		cfg.Host = "localhost"
		if network == "tcp" {
			cfg.Host = addr
		}
	}
	r := &Runner{
		cfg:     cfg,
		network: network,
		addr:    addr,
		ctx:     ctx,
		start:   time.Now(),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		result: Result{
			Errors:   map[Kind]int{},
			Versions: map[string]int{},
			Gens:     map[string]int{},
		},
	}
	r.result.Start = r.start
	if cfg.Duration > 0 {
		t := time.AfterFunc(cfg.Duration, r.stopIssuing)
		go func() { <-r.done; t.Stop() }()
	}
	stopCtx := context.AfterFunc(ctx, r.stopIssuing)
	keepAlive := int(math.Round(cfg.KeepAliveFraction * float64(cfg.Clients)))
	var wg sync.WaitGroup
	for i := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.client(i, i < keepAlive)
		}()
	}
	go func() {
		wg.Wait()
		stopCtx()
		r.mu.Lock()
		r.result.Elapsed = time.Since(r.start)
		r.mu.Unlock()
		close(r.done)
	}()
	return r, nil
}

func splitAddr(a string) (network, addr string) {
	a = strings.TrimPrefix(a, "http://")
	switch {
	case strings.HasPrefix(a, "unix://"):
		return "unix", strings.TrimPrefix(a, "unix://")
	case strings.HasPrefix(a, "unix:"):
		return "unix", strings.TrimPrefix(a, "unix:")
	case strings.HasPrefix(a, "/"), strings.HasPrefix(a, "./"), strings.HasPrefix(a, "../"):
		return "unix", a
	}
	return "tcp", a
}

func (r *Runner) stopIssuing() { r.stopOne.Do(func() { close(r.stop) }) }

// Stop starts no more requests, waits for the ones in flight (each bounded by
// Config.Timeout) and returns the result.
func (r *Runner) Stop() *Result {
	r.stopIssuing()
	return r.Wait()
}

// Wait waits for the run to end and returns the result.
func (r *Runner) Wait() *Result {
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	res := r.result
	return &res
}

// Done is closed when the run has ended.
func (r *Runner) Done() <-chan struct{} { return r.done }

// Progress returns the number of requests that succeeded and failed so far.
func (r *Runner) Progress() (ok, failed int) {
	return int(r.ok.Load()), int(r.failed.Load())
}

// take waits for the turn of the next request and reports whether to send it.
func (r *Runner) take() bool {
	if r.ctx.Err() != nil {
		return false
	}
	select {
	case <-r.stop:
		return false
	default:
	}
	k := r.next.Add(1) - 1
	if r.cfg.Requests > 0 && k >= int64(r.cfg.Requests) {
		return false
	}
	if r.cfg.Rate > 0 {
		at := r.start.Add(time.Duration(float64(k) / r.cfg.Rate * float64(time.Second)))
		if d := time.Until(at); d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
			case <-r.stop:
				return false
			}
		}
	}
	return true
}

// conn is one client connection with its reader.
type conn struct {
	c    net.Conn
	br   *bufio.Reader
	read *countingReader
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (r *Runner) client(id int, keepAlive bool) {
	var cur *conn
	defer func() {
		if cur != nil {
			cur.c.Close()
		}
	}()
	for r.take() {
		s, msg, aborted := r.request(&cur, keepAlive)
		r.record(id, s, msg, aborted)
	}
}

// attempt is the outcome of one try of a request on one connection.
type attempt struct {
	kind     Kind
	err      error
	body     []byte
	anyByte  bool // some byte of the answer arrived
	canReuse bool // the connection may carry another request
}

// request sends one request, on *cur when keepAlive and a connection is open,
// and leaves *cur open for the next request when it can be reused.
func (r *Runner) request(cur **conn, keepAlive bool) (s Sample, msg string, aborted bool) {
	s.Start = time.Now()
	var delayed time.Duration
	deadline := s.Start.Add(r.cfg.Timeout)

	dial := func() (*conn, attempt, bool) {
		d := net.Dialer{Deadline: deadline}
		c, err := d.DialContext(r.ctx, r.network, r.addr)
		if err != nil {
			return nil, attempt{kind: classify(err, false), err: fmt.Errorf("connect: %w", err)}, false
		}
		if r.cfg.ConnectToRequestDelay > 0 {
			t0 := time.Now()
			t := time.NewTimer(r.cfg.ConnectToRequestDelay)
			select {
			case <-t.C:
			case <-r.ctx.Done():
				t.Stop()
			}
			delayed += time.Since(t0)
			deadline = deadline.Add(r.cfg.ConnectToRequestDelay)
		}
		cr := &countingReader{r: c}
		return &conn{c: c, br: bufio.NewReader(cr), read: cr}, attempt{}, true
	}

	var a attempt
	c := *cur
	*cur = nil
	if c != nil && keepAlive {
		a = r.try(c, keepAlive, deadline)
		if a.err != nil && !a.anyByte && (a.kind == EOF || a.kind == Reset) && r.ctx.Err() == nil {
			// The server closed this idle keep-alive connection: what every
			// HTTP client retries.
			c.c.Close()
			c = nil
			s.Retried = true
		}
	} else if c != nil {
		c.c.Close()
		c = nil
	}
	if c == nil {
		var ok bool
		c, a, ok = dial()
		s.NewConn = true
		if ok {
			a = r.try(c, keepAlive, deadline)
		}
	}
	if c != nil {
		if a.err == nil && a.canReuse && keepAlive {
			*cur = c
		} else {
			c.c.Close()
		}
	}
	s.Latency = time.Since(s.Start) - delayed
	if r.ctx.Err() != nil && a.err != nil {
		return s, "", true
	}
	if a.err != nil {
		s.Err = a.kind
		return s, a.err.Error(), false
	}
	s.Version, s.Gen = parseBody(a.body)
	return s, "", false
}

// try writes the request on c and reads the answer.
func (r *Runner) try(c *conn, keepAlive bool, deadline time.Time) attempt {
	stop := context.AfterFunc(r.ctx, func() { c.c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c.c.SetDeadline(deadline)
	connHdr := ""
	if !keepAlive {
		connHdr = "Connection: close\r\n"
	}
	req := "GET " + r.cfg.Path + " HTTP/1.1\r\nHost: " + r.cfg.Host + "\r\nUser-Agent: relaunch-loadtest\r\n" + connHdr + "\r\n"
	// An answer byte counts whether it is still buffered or already parsed.
	leftover, before := c.br.Buffered(), c.read.n
	if _, err := io.WriteString(c.c, req); err != nil {
		return attempt{kind: classify(err, false), err: fmt.Errorf("write: %w", err)}
	}
	resp, err := http.ReadResponse(c.br, nil)
	anyByte := leftover > 0 || c.read.n > before
	if err != nil {
		return attempt{kind: classify(err, anyByte), err: fmt.Errorf("read: %w", err), anyByte: anyByte}
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return attempt{kind: classify(err, true), err: fmt.Errorf("read body: %w", err), anyByte: true}
	}
	a := attempt{body: body, anyByte: true, canReuse: !resp.Close}
	if resp.StatusCode != http.StatusOK {
		a.kind = Status
		a.err = fmt.Errorf("status %s: %.200q", resp.Status, body)
	}
	return a
}

func classify(err error, anyByte bool) Kind {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return Reset
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return Timeout
	case (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) && !anyByte:
		// http.ReadResponse reports an EOF before the status line as
		// io.ErrUnexpectedEOF; whether any byte came is what tells.
		return EOF
	}
	return Other
}

// parseBody finds the "version=" and "gen=" fields of a body.
func parseBody(b []byte) (version, gen string) {
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, "version="); ok {
			version = v
		} else if v, ok := strings.CutPrefix(f, "gen="); ok {
			gen = v
		}
	}
	return version, gen
}

func (r *Runner) record(client int, s Sample, msg string, aborted bool) {
	if s.Err == "" && !aborted {
		r.ok.Add(1)
	} else if !aborted {
		r.failed.Add(1)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &r.result
	if aborted {
		res.Aborted++
		return
	}
	res.Total++
	res.Samples = append(res.Samples, s)
	if s.Retried {
		res.Retried++
	}
	if s.Err != "" {
		res.Errors[s.Err]++
		if len(res.ErrorMessages) < r.cfg.MaxErrorMessages {
			res.ErrorMessages = append(res.ErrorMessages, fmt.Sprintf("%s: client %d at +%v: %s",
				s.Err, client, s.Start.Sub(r.start).Round(time.Microsecond), msg))
		}
		return
	}
	res.OK++
	if s.Version != "" {
		res.Versions[s.Version]++
	}
	if s.Gen != "" {
		res.Gens[s.Gen]++
	}
}
