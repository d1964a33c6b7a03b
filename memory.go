package main

import (
	"os"
	"runtime/debug"
)

// relaunch's own memory. It sits next to the app for as long as the app
// runs, and its live heap stays small (a few hundred KiB), yet with the Go
// runtime's defaults its resident memory grew from 8.2 MiB to 11.8 MiB over
// the 40 upgrades of the benchmark (bench/results.md): garbage (reading
// /proc, starting processes, validating the new binary) piles up to the
// default minimum heap goal of 4 MiB before the first collection, and the
// runtime keeps the freed pages around that goal instead of giving them
// back. Nothing of it is a leak: the cost is the size of the heap goal.

// gcPercent is relaunch's GOGC: the heap may grow by a quarter of the live
// heap between collections, and the minimum heap goal is a quarter of the
// default, 1 MiB. A collection of a heap this small takes well under a
// millisecond of CPU, and relaunch allocates only when something happens
// (an upgrade, a signal, a file event), so idle it still uses no CPU. A
// proportional setting, unlike a fixed memory limit, cannot make the
// collector run continuously should the live heap ever grow (a large
// --watch tree, many connections relayed at once).
const gcPercent = 25

// tuneMemory applies gcPercent to relaunch's own process, unless the user
// set GOGC, or GOMEMLIMIT (who sets a memory limit chooses the trade-off).
// The app is not affected: this is a runtime call, not an environment
// variable, and the environment passed to the app is unchanged. main calls
// it once the exec helper is out of the way (the helper execs the app at
// once and allocates nothing to speak of).
func tuneMemory() {
	_, gogc := os.LookupEnv("GOGC")
	_, limit := os.LookupEnv("GOMEMLIMIT")
	if !gogc && !limit {
		debug.SetGCPercent(gcPercent)
	}
}
