package launcher

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// The control socket (relaunch status | upgrade | rollback): one JSON
// request line, one JSON answer line, on a unix stream socket (0600).

// Request is what a client asks.
type Request struct {
	Cmd     string `json:"cmd"`               // "status", "upgrade", "rollback", "reexec", "promote", "abort" or "scale"
	Workers int    `json:"workers,omitempty"` // scale: the new worker count
}

// ReexecOutcome is what the re-executed relaunch says.
type ReexecOutcome struct {
	Pid         int    `json:"pid"`
	Binary      string `json:"binary"`
	Version     string `json:"version"`
	TookMS      int64  `json:"took_ms"` // from the request to the new program in charge
	Generations int    `json:"generations"`
}

// Outcome is how an upgrade or a rollback ended.
type Outcome struct {
	OK         bool   `json:"ok"`
	Generation int    `json:"generation,omitempty"`
	Pid        int    `json:"pid,omitempty"`
	ReadyMS    int64  `json:"ready_ms,omitempty"`
	Reason     string `json:"reason,omitempty"` // why it failed
}

// GenStatus is one generation in a Status.
type GenStatus struct {
	Generation int       `json:"generation"`
	Pid        int       `json:"pid"`
	State      string    `json:"state"`
	Since      time.Time `json:"since"`
	Path       string    `json:"path"`
	Slot       int       `json:"slot"`              // -1 without steered listeners
	Adopted    bool      `json:"adopted,omitempty"` // started by a relaunch that died, taken over
	Ready      string    `json:"ready,omitempty"`   // what made it ready: "READY=1", "pid 12 polls fd 3 (poll)", …
	Why        string    `json:"why,omitempty"`     // what started it: the upgrade's trigger
	// Health is its last health probe's answer (--health); Unhealthy says
	// why a fresh generation replaces it.
	Health    string `json:"health,omitempty"`
	Unhealthy string `json:"unhealthy,omitempty"`
	// Workers are its processes under --workers (its pid and slot are
	// worker 0's).
	Workers []WorkerStatus `json:"workers,omitempty"`
}

// WorkerStatus is one worker of a generation, in a GenStatus.
type WorkerStatus struct {
	Worker   int    `json:"worker"` // its RELAUNCH_WORKER
	Pid      int    `json:"pid"`
	Slot     int    `json:"slot"`     // -1 without steered listeners
	State    string `json:"state"`    // starting, serving, restarting, exited, or its generation's (draining…)
	Restarts int    `json:"restarts"` // after it exited by itself
}

// CanaryStatus is the canary running, in a Status.
type CanaryStatus struct {
	Generation int       `json:"generation"`
	Pid        int       `json:"pid"`
	Pct        int       `json:"pct"`     // its share of new connections
	EndsAt     time.Time `json:"ends_at"` // when it is promoted, unless it ends first
	LeftMS     int64     `json:"left_ms"`
}

// Status is what `relaunch status` shows.
type Status struct {
	Pid           int           `json:"pid"`
	Version       string        `json:"version"`
	Command       []string      `json:"command"`
	Readiness     string        `json:"readiness"`
	Generations   []GenStatus   `json:"generations"`
	LastFailure   string        `json:"last_failure,omitempty"`
	LastFailureAt time.Time     `json:"last_failure_at,omitzero"`
	Rescued       RescueCounts  `json:"rescued"` // connections stranded on a slot, and listeners revived
	Canary        *CanaryStatus `json:"canary,omitempty"`
}

// Answer is the control socket's one reply.
type Answer struct {
	Status  *Status        `json:"status,omitempty"`
	Outcome *Outcome       `json:"outcome,omitempty"`
	Reexec  *ReexecOutcome `json:"reexec,omitempty"`
	Said    string         `json:"said,omitempty"` // promote, abort: what was done
	Error   string         `json:"error,omitempty"`
}

// Ask sends one request to the control socket at path and returns the
// answer; timeout bounds the whole exchange (an upgrade waits for its
// outcome).
func Ask(path string, req Request, timeout time.Duration) (*Answer, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("no relaunch answers at the control socket %s (%v): is it running with --control %s (or the matching --pidfile)?",
			path, errors.Unwrap(err), path)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("control socket %s: %v", path, err)
	}
	line, err := bufio.NewReader(io.LimitReader(c, 1<<20)).ReadBytes('\n')
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() && req.Cmd == "status" {
			return nil, fmt.Errorf("control socket %s: no answer within %s: relaunch may be stuck (see its log); give --timeout to wait longer", path, timeout)
		} else if ok && ne.Timeout() {
			return nil, fmt.Errorf("no outcome within %s (the upgrade may still be running; see relaunch status)", timeout)
		}
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("control socket %s: relaunch closed the connection without an answer; see its log", path)
		}
		return nil, fmt.Errorf("control socket %s: %v", path, err)
	}
	var a Answer
	if err := json.Unmarshal(line, &a); err != nil {
		return nil, fmt.Errorf("control socket %s: bad answer %q", path, line)
	}
	return &a, nil
}

// Text renders a status for people.
func (s *Status) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "relaunch %s pid %d: %s\nreadiness: %s\n", s.Version, s.Pid, strings.Join(s.Command, " "), s.Readiness)
	for _, g := range s.Generations {
		adopted := ""
		if g.Adopted {
			adopted = "  (adopted)"
		}
		fmt.Fprintf(&b, "gen %d  pid %d  %-9s since %s (%s ago)  %s%s\n", g.Generation, g.Pid, g.State,
			g.Since.Format(time.RFC3339), time.Since(g.Since).Round(time.Second), g.Path, adopted)
		if g.Unhealthy != "" {
			fmt.Fprintf(&b, "  unhealthy: %s; a fresh generation replaces it\n", g.Unhealthy)
		}
		for _, w := range g.Workers {
			slot := ""
			if w.Slot >= 0 {
				slot = fmt.Sprintf("  slot %d", w.Slot)
			}
			fmt.Fprintf(&b, "  worker %d  pid %d  %-10s%s  restarts %d\n", w.Worker, w.Pid, w.State, slot, w.Restarts)
		}
	}
	if c := s.Canary; c != nil {
		fmt.Fprintf(&b, "canary: gen %d gets %d%% of new connections, promoted in %s\n", c.Generation, c.Pct,
			(time.Duration(c.LeftMS) * time.Millisecond).Round(100*time.Millisecond))
	}
	if len(s.Generations) == 0 {
		b.WriteString("no generation running\n")
	}
	if r := s.Rescued; r != (RescueCounts{}) {
		fmt.Fprintf(&b, "stranded connections: %d handed over, %d held for the next generation, %d relayed, %d reset; listeners made to listen again: %d\n",
			r.HandedOver, r.Held, r.Relayed, r.Reset, r.Revived)
	}
	if s.LastFailure != "" {
		fmt.Fprintf(&b, "last failure (%s): %s\n", s.LastFailureAt.Format(time.RFC3339), s.LastFailure)
	}
	return b.String()
}
