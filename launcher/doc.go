// Package launcher runs the generations of one app on sockets relaunch
// holds: it starts a generation, waits until it is ready, tells the previous
// one to drain, restarts a crashed one, and stops them all on a signal.
//
// Run is the one entry point; its state is a launcher. All of that state
// lives in one goroutine, the loop, that reacts to events (signals, a
// generation ready or exited, timers, file triggers, the control socket);
// the goroutines around it only post events to it. Three things outside
// the loop keep their own lock: genRoots (the generations' root pids, read
// by the handoff broker's goroutines to tell which generation a peer
// belongs to), the broker itself (package internal/broker) and the
// keeper's client (package internal/keeper).
//
// What the loop does to the world goes through a system (system_linux.go):
// starting a generation's process, signalling it, the clock and timers. The
// state machine's tests replace it with a fake and run the loop in-process
// (machine_linux_test.go).
//
// The files, by concern:
//
//	launcher_linux.go   Run, the loop, start, ready, exit, restart, stop
//	listeners.go        binding the addresses, or taking sockets back (OpenListeners)
//	exclusive_linux.go  nobody else may listen where relaunch binds
//	generation_linux.go a generation and its states
//	ready_linux.go      when a starting generation is ready (--ready)
//	fastscan_linux.go   1 ms epoll checks near the time a generation is expected ready
//	start_linux.go      how a process starts: traced (LISTEN_PID written at its exec), or the exec helper
//	gchold_linux.go     Go's collector held off from a start until the switch is over
//	warm_linux.go       what the next start gets ahead: its notify socket, its exec helper (when starts use one)
//	drain_linux.go      the drain policy: hand-over, drain, its limits
//	steer_linux.go      steered pools: which slot a generation gets, steering
//	health_linux.go     --health: probes steered to one generation, liveness
//	canary_linux.go     the route (steered slot, canary share, probes), --canary
//	slots_linux.go      slots between generations: stranded connections, dead listeners
//	workers_linux.go    --workers: a generation of N processes, a worker restarted alone, relaunch scale
//	tripwire_linux.go   a steered group disturbed by an app: stop steering
//	control*.go         the control socket (status, upgrade, rollback)
//	reexec_linux.go     relaunch re-executing itself, its state carried over
//	fdstore_linux.go    systemd's fd store: the sockets stored, and taken back
//	keeper_linux.go     the keeper (internal/keeper) and the saved state (relaunch.state)
//	adopt_linux.go      adopting the generations of a relaunch that died
//	rundir_linux.go     the private runtime directory (notify and handoff sockets)
//	daemon_linux.go     an app that daemonized
//	systemd_linux.go    speaking sd_notify to relaunch's own manager
package launcher
