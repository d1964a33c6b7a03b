package main

import (
	"os"
	"runtime"
	"testing"
)

// relaunch runs on one P unless GOMAXPROCS is set, which then wins.
func TestTuneScheduler(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	if v, set := os.LookupEnv("GOMAXPROCS"); set {
		defer os.Setenv("GOMAXPROCS", v)
	} else {
		defer os.Unsetenv("GOMAXPROCS")
	}
	runtime.GOMAXPROCS(4)
	os.Unsetenv("GOMAXPROCS")
	tuneScheduler()
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("GOMAXPROCS unset: %d Ps; want 1", n)
	}
	runtime.GOMAXPROCS(4)
	os.Setenv("GOMAXPROCS", "4")
	tuneScheduler()
	if n := runtime.GOMAXPROCS(0); n != 4 {
		t.Errorf("GOMAXPROCS=4 in the environment: %d Ps; want 4", n)
	}
}
