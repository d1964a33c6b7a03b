package launcher

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/relaunch/relaunch/watch"
)

// The development loop (--build): a change under --watch runs the build;
// a build that succeeds upgrades once; one that fails shows its output and
// keeps the current generation serving. Builds never overlap: changes
// during a build make one more build after it, and the stale one is not
// deployed.

func (l *launcher) onChange(c watch.Change) {
	if l.cfg.Build == "" || len(c.Files) == 0 {
		l.upgrade(describeChange(c))
		return
	}
	l.build()
}

func (l *launcher) build() {
	if l.stopping {
		return
	}
	if l.buildPid != 0 {
		l.buildAgain = true
		return
	}
	cmd, out, err := startBuild(l.cfg.Build, l.env)
	if err != nil {
		l.log.Error("cannot run --build: "+err.Error(), "reason", err.Error())
		return
	}
	l.buildPid = cmd.Process.Pid
	start := time.Now()
	go func() {
		err := cmd.Wait()
		l.post(func() { l.onBuilt(err, out.Bytes(), time.Since(start)) })
	}()
}

func (l *launcher) onBuilt(err error, out []byte, took time.Duration) {
	l.buildPid = 0
	if l.buildAgain {
		l.buildAgain = false
		l.build() // the sources changed meanwhile: this build is stale
		return
	}
	if err != nil {
		os.Stderr.Write(out)
		l.log.Error(fmt.Sprintf("build failed in %s (%v); %s", ms(took), err, l.stillServes()), "reason", err.Error())
		return
	}
	l.built = took
	l.upgrade(fmt.Sprintf("rebuilt in %s", ms(took)))
}

// startBuild runs the build command through the shell, in its own process
// group (so that a stop kills the compiler it started too), its output
// kept to show when it fails.
func startBuild(command string, env []string) (*exec.Cmd, *bytes.Buffer, error) {
	var out bytes.Buffer
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd, &out, cmd.Start()
}

// initialBuild runs the build once before the first start: the command it
// produces may not exist yet.
func (l *launcher) initialBuild() error {
	cmd, out, err := startBuild(l.cfg.Build, l.env)
	if err != nil {
		return fmt.Errorf("cannot run --build %q: %v", l.cfg.Build, err)
	}
	start := time.Now()
	if err := cmd.Wait(); err != nil {
		os.Stderr.Write(out.Bytes())
		return fmt.Errorf("the first build failed (%v): fix it and start relaunch again", err)
	}
	l.built = time.Since(start)
	return nil
}
