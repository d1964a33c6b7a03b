// Package launcher runs the generations of one app on sockets relaunch
// holds: it starts a generation, waits until it is ready, tells the previous
// one to drain, restarts a crashed one, and stops them all on a signal.
//
// Run is the one entry point. All state lives in one goroutine that reacts
// to events (signals, a generation ready or exited, timers, file triggers);
// the goroutines around it only post events to it.
package launcher
