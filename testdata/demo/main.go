// Command demo is the HTTP app relaunch's end-to-end tests run under
// relaunch. It takes its listening sockets the systemd way (fds 3.. with
// LISTEN_FDS, refused unless LISTEN_PID is its own pid), tells its readiness
// with sd_notify READY=1, drains gracefully on SIGQUIT/SIGTERM/SIGINT, and can
// misbehave on purpose (see the flags) so that tests can check how relaunch
// copes. It uses the standard library only.
//
// Endpoints:
//
//	GET /            200 "version=V pid=P gen=G\n" (" worker=W" before the newline under relaunch --workers)
//	GET /spin?n=N    N rounds of a CPU-bound hash, then answers like / (a CPU-bound handler)
//	GET /sleep?d=3s  sleeps d, then answers like /
//	GET /fds         open fds, one "N -> target" per line (?at=start: as at the top of main)
//	GET /env         LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, NOTIFY_SOCKET, RELAUNCH_GENERATION, RELAUNCH_HANDOFF, PID as K=V lines
//	GET /names       LISTEN_FDNAMES split on ':', one per line
//	GET /helpers     pids of the helper processes started by -fork-helpers, one per line
//	GET /healthz     200 "ok", or what -healthy-after, -health-status and -unhealthy-after say
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// defaultVersion is -version's default; build a binary that answers another
// version without a flag with -ldflags "-X main.defaultVersion=2" (tests that
// replace the binary on disk do).
var defaultVersion = "1"

var (
	version        = flag.String("version", defaultVersion, "version string reported by every response")
	listenAddr     = flag.String("listen", "", "bind this address itself (host:port, or unix:/path) and ignore LISTEN_FDS")
	initDelay      = flag.Duration("init-delay", 0, "sleep this long before creating the listeners (start-up work)")
	exitAtStart    = flag.Int("exit-at-start", -1, "exit with this status at once (a bad build); negative: off")
	exitWorker     = flag.Int("exit-at-start-worker", -1, "with RELAUNCH_WORKER equal to this, exit with status 1 at once (one bad worker); negative: off")
	noNotify       = flag.Bool("no-notify", false, "never send READY=1")
	notifyDelay    = flag.Duration("notify-delay", 0, "send READY=1 this long after the listeners exist")
	drainMode      = flag.String("drain", "graceful", "graceful: close listeners, wait 100ms, Shutdown; naive: Shutdown at once; shutdown: shutdown(2) the listeners (as C and Java servers do to wake their accept threads), then as graceful")
	recordFile     = flag.String("record", "", "append one line per event (init, listening, ready, drain, usr1, exit) with a unix-nano timestamp")
	forkHelpers    = flag.Bool("fork-helpers", false, "every request starts /bin/true and never waits for it (leaves zombies for a subreaper)")
	ignoreQuit     = flag.Bool("ignore-quit", false, "do not handle SIGQUIT (Go's default: dump goroutines, exit 2)")
	healthyAfter   = flag.Duration("healthy-after", 0, "/healthz answers 503 until this long after the listeners exist")
	healthStatus   = flag.Int("health-status", 200, "what /healthz answers (once -healthy-after has passed)")
	unhealthyAfter = flag.Duration("unhealthy-after", 0, "/healthz answers 503 from this long after the listeners exist; 0: never")
	crashAfter     = flag.Duration("crash-after", 0, "SIGKILL myself this long after the listeners exist (a crash); 0: never")
	leaveOpen      = flag.String("leave-open", "", "when the generation of this number drains, it keeps its listening sockets open without accepting for a minute, then exits (an app that just leaves its accept loop)")
	reusePort      = flag.Bool("reuseport", false, "with -listen: bind with SO_REUSEPORT, so that a new process can bind the same port while this one serves (the overlap restart relaunch's benchmark compares with)")
	joinReuse      = flag.Bool("join-reuseport", false, "after taking the listeners, open an extra SO_REUSEADDR+SO_REUSEPORT listening socket on fd 3's address and never accept on it (it joins the launcher's SO_REUSEPORT group)")
	joinOnUsr1     = flag.Bool("join-reuseport-on-usr1", false, "as -join-reuseport, at the first SIGUSR1 rather than at start")
)

var (
	initAt      = time.Now() // the Go runtime is up: "init" in the -record file
	listeningAt time.Time    // set before any request is served
	healthyOnce sync.Once    // "healthy" is recorded at the first 2xx of /healthz
	servedOnce  sync.Once    // "served" at the first answer to a client (any other path)
	gen         = os.Getenv("RELAUNCH_GENERATION")
	worker      = os.Getenv("RELAUNCH_WORKER")
	pid         = os.Getpid()
	startFds    string // the fd table at the top of main
	recordMu    sync.Mutex
	helpersMu   sync.Mutex
	helpers     []int
)

func main() {
	startFds = listFds()
	flag.Parse()
	recordAt(initAt, "init")
	if flag.NArg() > 0 {
		fatalf("unexpected arguments %q", flag.Args())
	}
	if *exitAtStart >= 0 {
		logf("demo: gen %s pid %d version %s exiting at start with status %d", gen, pid, *version, *exitAtStart)
		os.Exit(*exitAtStart)
	}
	if *exitWorker >= 0 && worker == strconv.Itoa(*exitWorker) {
		logf("demo: gen %s pid %d worker %s exiting at start with status 1", gen, pid, worker)
		os.Exit(1)
	}
	if *drainMode != "graceful" && *drainMode != "naive" && *drainMode != "shutdown" {
		fatalf("-drain must be graceful, naive or shutdown, not %q", *drainMode)
	}

	// Check what we were given before any start-up work: a wrong LISTEN_PID
	// is a launcher bug and must fail fast and loudly.
	var inherited []int
	if *listenAddr == "" {
		var err error
		if inherited, err = inheritedFds(); err != nil {
			fatalf("%v", err)
		}
	}

	// Signals are caught from the start so that a drain signal during the
	// start-up work is not fatal.
	sigs := make(chan os.Signal, 4)
	drainSigs := []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	if !*ignoreQuit {
		drainSigs = append(drainSigs, syscall.SIGQUIT)
	}
	signal.Notify(sigs, append(drainSigs, syscall.SIGUSR1)...)

	if *initDelay > 0 {
		time.Sleep(*initDelay)
	}

	var listeners []net.Listener
	if *listenAddr != "" {
		network, addr := "tcp", *listenAddr
		if strings.HasPrefix(addr, "unix:") {
			network, addr = "unix", strings.TrimPrefix(addr, "unix:")
		}
		var lc net.ListenConfig
		if *reusePort {
			lc.Control = func(_, _ string, c syscall.RawConn) error {
				var serr error
				err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soReusePort, 1) })
				return cmp.Or(err, serr)
			}
		}
		l, err := lc.Listen(context.Background(), network, addr)
		if err != nil {
			fatalf("listen %s: %v", *listenAddr, err)
		}
		listeners = append(listeners, l)
	} else {
		for _, fd := range inherited {
			f := os.NewFile(uintptr(fd), "LISTEN_FD_"+strconv.Itoa(fd))
			l, err := net.FileListener(f)
			f.Close() // FileListener holds its own dup
			if err != nil {
				logf("demo: gen %s pid %d: fd %d is not a stream listener, skipped: %v", gen, pid, fd, err)
				continue
			}
			listeners = append(listeners, l)
		}
		if len(listeners) == 0 {
			fatalf("none of the %d inherited fds is a stream listener", len(inherited))
		}
	}
	if *joinReuse {
		joinReuseport(listeners[0])
	}
	record("listening")
	listeningAt = time.Now()
	if *crashAfter > 0 {
		time.AfterFunc(*crashAfter, func() {
			record("crash")
			logf("demo: gen %s pid %d crashing (-crash-after %s)", gen, pid, *crashAfter)
			syscall.Kill(pid, syscall.SIGKILL)
		})
	}
	logf("demo: gen %s pid %d version %s listening on %d sockets", gen, pid, *version, len(listeners))

	srv := &http.Server{Handler: handler(), ConnState: trackNew}
	var draining sync.Once
	drainingNow := make(chan struct{})
	serveErr := make(chan error, len(listeners))
	for _, l := range listeners {
		go func(l net.Listener) {
			err := srv.Serve(l)
			select {
			case <-drainingNow:
			default:
				serveErr <- fmt.Errorf("serve %s: %w", l.Addr(), err)
			}
		}(l)
	}

	if !*noNotify {
		go func() {
			if *notifyDelay > 0 {
				time.Sleep(*notifyDelay)
			}
			sent, err := sdNotify("READY=1")
			switch {
			case err != nil:
				logf("demo: gen %s pid %d: sd_notify: %v", gen, pid, err)
			case sent:
				record("ready")
			}
		}()
	}

	done := make(chan struct{})
	joined := false
	for {
		select {
		case err := <-serveErr:
			fatalf("%v", err)
		case <-done:
			if *leaveOpen != "" && *leaveOpen == gen {
				time.Sleep(time.Minute)
			}
			record("exit")
			logf("demo: gen %s pid %d exiting", gen, pid)
			os.Exit(0)
		case s := <-sigs:
			if s == syscall.SIGUSR1 {
				record("usr1")
				if *joinOnUsr1 && !joined {
					joinReuseport(listeners[0])
					joined = true
				}
				continue
			}
			record("drain", sigName(s))
			draining.Do(func() {
				close(drainingNow)
				go func() {
					drain(srv, listeners)
					close(done)
				}()
			})
		}
	}
}

// drain is the app's half of zero downtime: stop accepting, give
// the connections accepted just before a moment to send their request, then
// let Shutdown finish every request in flight.
func drain(srv *http.Server, listeners []net.Listener) {
	if *leaveOpen != "" && *leaveOpen == gen {
		for _, l := range listeners {
			if sc, ok := l.(syscall.Conn); ok {
				if rc, err := sc.SyscallConn(); err == nil {
					rc.Control(func(fd uintptr) { syscall.Dup(int(fd)) }) // kept open, never accepted on
				}
			}
		}
	}
	if *drainMode == "shutdown" {
		for _, l := range listeners {
			if sc, ok := l.(syscall.Conn); ok {
				if rc, err := sc.SyscallConn(); err == nil {
					rc.Control(func(fd uintptr) { syscall.Shutdown(int(fd), syscall.SHUT_RD) })
				}
			}
		}
	}
	if *drainMode != "naive" {
		for _, l := range listeners {
			l.Close()
		}
		// Shutdown closes a connection whose request it reads only after
		// it began (golang/go#65802): wait until every accepted connection
		// has been read (a busy machine may take longer than 100ms), 5s at most.
		time.Sleep(100 * time.Millisecond)
		for deadline := time.Now().Add(5 * time.Second); newConns() > 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		logf("demo: gen %s pid %d: shutdown: %v", gen, pid, err)
	}
}

// The connections accepted whose first request has not been read yet.
var (
	connMu  sync.Mutex
	connNew = map[net.Conn]bool{}
)

func trackNew(c net.Conn, st http.ConnState) {
	connMu.Lock()
	defer connMu.Unlock()
	if st == http.StateNew {
		connNew[c] = true
	} else {
		delete(connNew, c)
	}
}

func newConns() int {
	connMu.Lock()
	defer connMu.Unlock()
	return len(connNew)
}

func handler() http.Handler {
	mux := http.NewServeMux()
	hello := func(w http.ResponseWriter) {
		if worker != "" {
			fmt.Fprintf(w, "version=%s pid=%d gen=%s worker=%s\n", *version, pid, gen, worker)
			return
		}
		fmt.Fprintf(w, "version=%s pid=%d gen=%s\n", *version, pid, gen)
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		servedOnce.Do(func() { record("served") })
		hello(w)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		up := time.Since(listeningAt)
		st := *healthStatus
		if up < *healthyAfter || (*unhealthyAfter > 0 && up >= *unhealthyAfter) {
			st = http.StatusServiceUnavailable
		}
		if st >= 200 && st < 300 {
			healthyOnce.Do(func() { record("healthy") })
		}
		w.WriteHeader(st)
		fmt.Fprintf(w, "%d %s\n", st, http.StatusText(st))
	})
	mux.HandleFunc("GET /sleep", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil {
			http.Error(w, "bad d: "+err.Error(), http.StatusBadRequest)
			return
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
		hello(w)
	})
	mux.HandleFunc("GET /spin", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 || n > 1e9 {
			http.Error(w, "bad n", http.StatusBadRequest)
			return
		}
		h := uint64(14695981039346656037)
		for i := range n {
			h = (h ^ uint64(i)) * 1099511628211
		}
		if h == 0 { // never: keeps the loop from being optimised away
			fmt.Fprint(w, "zero ")
		}
		hello(w)
	})
	mux.HandleFunc("GET /fds", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("at") == "start" {
			fmt.Fprint(w, startFds)
			return
		}
		fmt.Fprint(w, listFds())
	})
	mux.HandleFunc("GET /env", func(w http.ResponseWriter, r *http.Request) {
		for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "RELAUNCH_GENERATION", "RELAUNCH_HANDOFF"} {
			fmt.Fprintf(w, "%s=%s\n", k, os.Getenv(k))
		}
		if worker != "" {
			fmt.Fprintf(w, "RELAUNCH_WORKER=%s\n", worker)
		}
		fmt.Fprintf(w, "PID=%d\n", pid)
	})
	mux.HandleFunc("GET /names", func(w http.ResponseWriter, r *http.Request) {
		names, ok := os.LookupEnv("LISTEN_FDNAMES")
		if !ok {
			return
		}
		for _, n := range strings.Split(names, ":") {
			fmt.Fprintln(w, n)
		}
	})
	mux.HandleFunc("GET /helpers", func(w http.ResponseWriter, r *http.Request) {
		helpersMu.Lock()
		defer helpersMu.Unlock()
		for _, p := range helpers {
			fmt.Fprintln(w, p)
		}
	})
	if !*forkHelpers {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Started and never waited for: the zombie it leaves is reparented
		// to a subreaper (or init) when this process exits.
		cmd := exec.Command("/bin/true")
		if err := cmd.Start(); err != nil {
			logf("demo: gen %s pid %d: helper: %v", gen, pid, err)
		} else {
			helpersMu.Lock()
			helpers = append(helpers, cmd.Process.Pid)
			helpersMu.Unlock()
			w.Header().Set("X-Demo-Helper-Pid", strconv.Itoa(cmd.Process.Pid))
		}
		mux.ServeHTTP(w, r)
	})
}

// inheritedFds checks LISTEN_FDS/LISTEN_PID the way sd_listen_fds(3) does,
// except that it fails instead of ignoring them.
func inheritedFds() ([]int, error) {
	nStr := os.Getenv("LISTEN_FDS")
	if nStr == "" || nStr == "0" {
		return nil, errors.New("no sockets passed: LISTEN_FDS is unset or 0 (use -listen ADDR to bind a port myself)")
	}
	n, err := strconv.Atoi(nStr)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("bad LISTEN_FDS=%q", nStr)
	}
	lp, ok := os.LookupEnv("LISTEN_PID")
	if !ok {
		return nil, fmt.Errorf("LISTEN_FDS=%d but LISTEN_PID is unset; refusing the sockets (they may be meant for another process)", n)
	}
	if lp != strconv.Itoa(pid) {
		return nil, fmt.Errorf("LISTEN_PID=%s is not my pid %d; refusing the %d sockets (they are meant for another process)", lp, pid, n)
	}
	fds := make([]int, n)
	for i := range fds {
		fds[i] = 3 + i
	}
	return fds, nil
}

// sdNotify sends one datagram to NOTIFY_SOCKET; a leading '@' means the
// abstract namespace (Go's sockaddr conversion does that itself). It returns
// false, nil when NOTIFY_SOCKET is unset.
func sdNotify(state string) (bool, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return false, nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return false, err
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return false, err
	}
	return true, nil
}

// listFds returns "N -> target" lines for every open fd, in numeric order,
// leaving out the fd used to read /proc/self/fd. The directory is opened
// with a raw open(2) so that os does not register it with the runtime poller:
// at the top of main that would create the epoll and eventfd fds this
// listing is meant to show absent.
func listFds() string {
	self, err := syscall.Open("/proc/self/fd", syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return "error: " + err.Error() + "\n"
	}
	d := os.NewFile(uintptr(self), "/proc/self/fd")
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return "error: " + err.Error() + "\n"
	}
	var fds []int
	for _, n := range names {
		if fd, err := strconv.Atoi(n); err == nil && fd != self {
			fds = append(fds, fd)
		}
	}
	sort.Ints(fds)
	var b strings.Builder
	for _, fd := range fds {
		target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
		if err != nil {
			continue // closed meanwhile
		}
		fmt.Fprintf(&b, "%d -> %s\n", fd, target)
	}
	return b.String()
}

// record appends "event <unix-ns> [args...] gen=G pid=P" to the -record file.
// Positional fields come first; the gen= and pid= fields let several
// generations share one file.
func record(event string, args ...string) { recordAt(time.Now(), event, args...) }

// recordAt records an event that happened at t.
func recordAt(t time.Time, event string, args ...string) {
	if *recordFile == "" {
		return
	}
	line := event + " " + strconv.FormatInt(t.UnixNano(), 10)
	for _, a := range args {
		line += " " + a
	}
	line += " gen=" + gen + " pid=" + strconv.Itoa(pid) + "\n"
	recordMu.Lock()
	defer recordMu.Unlock()
	f, err := os.OpenFile(*recordFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		logf("demo: gen %s pid %d: record: %v", gen, pid, err)
		return
	}
	defer f.Close()
	if _, err := f.WriteString(line); err != nil {
		logf("demo: gen %s pid %d: record: %v", gen, pid, err)
	}
}

func sigName(s os.Signal) string {
	switch s {
	case syscall.SIGQUIT:
		return "SIGQUIT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGUSR1:
		return "SIGUSR1"
	}
	return s.String()
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func fatalf(format string, args ...any) {
	logf("demo: gen %s pid %d: "+format, append([]any{gen, pid}, args...)...)
	os.Exit(1)
}

// joinReuseport (-join-reuseport) opens a listening socket of its own, with
// SO_REUSEADDR and SO_REUSEPORT, on the address of l (fd 3's, as
// getsockname gives it) and never accepts on it: it joins the SO_REUSEPORT
// group of the launcher's sockets, which a launcher's tripwire must notice.
// The socket stays open until the process exits.
const soReusePort = 0xf // SO_REUSEPORT on Linux; the syscall package does not name it

func joinReuseport(l net.Listener) {
	ta, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		fatalf("-join-reuseport: fd 3 is %s %s, not tcp", l.Addr().Network(), l.Addr())
	}
	family := syscall.AF_INET
	var sa syscall.Sockaddr
	if ip4 := ta.IP.To4(); ip4 != nil {
		s4 := &syscall.SockaddrInet4{Port: ta.Port}
		copy(s4.Addr[:], ip4)
		sa = s4
	} else {
		family = syscall.AF_INET6
		s6 := &syscall.SockaddrInet6{Port: ta.Port}
		copy(s6.Addr[:], ta.IP.To16())
		sa = s6
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err == nil {
		err = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	}
	if err == nil {
		err = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, soReusePort, 1)
	}
	if err == nil {
		err = syscall.Bind(fd, sa)
	}
	if err == nil {
		err = syscall.Listen(fd, 128)
	}
	if err != nil {
		fatalf("-join-reuseport: %s: %v", ta, err)
	}
	logf("demo: gen %s pid %d joined the SO_REUSEPORT group of %s with a socket of its own (fd %d, never accepted on)", gen, pid, ta, fd)
}
