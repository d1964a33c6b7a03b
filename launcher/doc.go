// Package launcher runs the generations of one app on sockets relaunch
// holds: it starts a generation, waits until it is ready, tells the previous
// one to drain, restarts a crashed one, and stops them all on a signal.
//
// Run is the one entry point; its state is a launcher. All of that state
// lives in one goroutine, the loop, that reacts to events (signals, a
// generation ready or exited, timers, file triggers, the control socket);
// the goroutines around it only post events to it. Two things outside the
// loop keep their own lock: genRoots (the generations' root pids, read by
// the handoff broker's goroutines to tell which generation a peer belongs
// to) and the broker itself (package internal/broker).
//
// What the loop does to the world goes through a system (system_linux.go):
// starting a generation's process, signalling it, the clock and timers. The
// state machine's tests replace it with a fake and run the loop in-process
// (machine_linux_test.go).
//
// The files, by concern:
//
//	launcher_linux.go   Run, the loop, start, ready, exit, restart, stop
//	ready_linux.go      when a starting generation is ready (--ready)
//	drain_linux.go      the drain policy: hand-over, drain, its limits
//	steer_linux.go      steered pools: which slot a generation gets, steering
//	health_linux.go     --health: probes steered to one generation, liveness
//	canary_linux.go     the route (steered slot, canary share, probes), --canary
//	slots_linux.go      slots between generations: stranded connections, dead listeners
//	workers_linux.go    --workers: a generation of N processes, a worker restarted alone, relaunch scale
//	tripwire_linux.go   a steered group disturbed by an app: stop steering
//	control*.go         the control socket (status, upgrade, rollback)
//	reexec_linux.go     relaunch re-executing itself, its state carried over
//	rundir_linux.go     the private runtime directory (notify and handoff sockets)
//	daemon_linux.go     an app that daemonized
//	systemd_linux.go    speaking sd_notify to relaunch's own manager
package launcher
