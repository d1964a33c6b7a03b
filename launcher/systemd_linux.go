package launcher

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relaunch/relaunch/sdlisten"
)

// outerNotify speaks sd_notify to the service manager that started relaunch
// (systemd with Type=notify), when there is one. relaunch stays the main
// pid: it never sends MAINPID.
type outerNotify struct {
	on  bool
	log func(string)
}

func newOuterNotify(logf func(string)) *outerNotify {
	return &outerNotify{on: os.Getenv("NOTIFY_SOCKET") != "", log: logf}
}

func (o *outerNotify) send(state string) {
	if !o.on {
		return
	}
	if err := sdlisten.Notify(state); err != nil {
		o.log("cannot notify the service manager (NOTIFY_SOCKET): " + err.Error())
	}
}

// ready: the first generation, or an upgrade's outcome (success or not:
// systemd must never be left "reloading").
func (o *outerNotify) ready(status string) { o.send("READY=1\nSTATUS=" + status) }

func (o *outerNotify) reloading(status string) {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	o.send(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d\nSTATUS=%s", ts.Nano()/1000, status))
}

func (o *outerNotify) stopping() { o.send("STOPPING=1\nSTATUS=stopping") }

// watchdogEvery is how often to send WATCHDOG=1: every WATCHDOG_USEC/2
// when systemd asked relaunch for it (WATCHDOG_PID unset or relaunch's own
// pid), else 0. The loop sends it, so a stuck loop stops pinging.
func (o *outerNotify) watchdogEvery() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if !o.on || err != nil || usec <= 0 {
		return 0
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" && p != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}
