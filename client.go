package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/relaunch/relaunch/launcher"
)

// The control socket's client: relaunch status | upgrade | rollback | reexec
// | promote | abort | scale N.

// isClientCommand says whether args name a client subcommand. The app's
// own command never does: it comes after "--" or after the options.
func isClientCommand(args []string) bool {
	if len(args) < 2 {
		return false
	}
	switch args[1] {
	case "status", "upgrade", "rollback", "reexec", "promote", "abort", "scale":
		return true
	}
	return false
}

// controlPath is the control socket of a relaunch started with --pidfile
// and no --control: next to the pidfile (/run/app.pid → /run/app.sock).
func controlPath(pidfile string) string {
	return strings.TrimSuffix(pidfile, ".pid") + ".sock"
}

// statusTimeout is how long status waits for its answer unless --timeout.
const statusTimeout = 5 * time.Second

func runClient(args []string, stdout, stderr io.Writer) int {
	cmd := args[1]
	usage := func(msg string) int {
		n := ""
		if cmd == "scale" {
			n = " N"
		}
		fmt.Fprintf(stderr, "relaunch %s: %s\nusage: relaunch %s%s [--control PATH | --pidfile PATH] [--json] [--timeout D]\n", cmd, msg, cmd, n)
		return 2
	}
	var control, pidfile string
	var asJSON, timeoutSet bool
	var timeout time.Duration
	var extra string
	var args1 []string
	app := &cli.App{
		Name:      "relaunch " + cmd,
		HideHelp:  true,
		Writer:    io.Discard,
		ErrWriter: io.Discard,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "control", EnvVars: []string{"RELAUNCH_CONTROL"}, Destination: &control,
				Usage: "the control socket of the relaunch to talk to"},
			&cli.StringFlag{Name: "pidfile", EnvVars: []string{"RELAUNCH_PIDFILE"}, Destination: &pidfile,
				Usage: "or its --pidfile: the socket is next to it"},
			&cli.BoolFlag{Name: "json", Destination: &asJSON, Usage: "status: print JSON"},
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Minute, Destination: &timeout,
				Usage: "how long to wait for the answer (upgrade, rollback, reexec: the outcome; status: 5s)"},
		},
		OnUsageError:   func(_ *cli.Context, err error, _ bool) error { return err },
		ExitErrHandler: func(*cli.Context, error) {},
		Action: func(c *cli.Context) error {
			timeoutSet = c.IsSet("timeout")
			args1 = c.Args().Slice()
			return nil
		},
	}
	rest := args[2:]
	var count []string
	if cmd == "scale" && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		count, rest = rest[:1], rest[1:] // relaunch scale N --control PATH
	}
	if err := app.Run(append([]string{app.Name}, rest...)); err != nil {
		return usage(cliError(err))
	}
	args1 = append(count, args1...)
	req := launcher.Request{Cmd: cmd}
	if cmd == "scale" {
		if len(args1) == 0 {
			return usage(fmt.Sprintf("how many workers? give N, 1 to %d", launcher.MaxWorkers))
		}
		n, err := strconv.Atoi(args1[0])
		if err != nil || n < 1 || n > launcher.MaxWorkers {
			return usage(fmt.Sprintf("bad worker count %q: use 1 to %d", args1[0], launcher.MaxWorkers))
		}
		req.Workers, args1 = n, args1[1:]
	}
	if len(args1) > 0 {
		extra = args1[0]
		return usage(fmt.Sprintf("unexpected %q", extra))
	}
	// status answers at once: a relaunch that does not is stuck, and
	// whoever asked (a script, a health check) should hear it soon.
	if cmd == "status" && !timeoutSet {
		timeout = statusTimeout
	}
	path := control
	if path == "" && pidfile != "" {
		path = controlPath(pidfile)
	}
	if path == "" {
		return usage("which relaunch? give --control PATH (or the --pidfile it was started with)")
	}
	ans, err := launcher.Ask(path, req, timeout)
	if err != nil {
		fmt.Fprintln(stderr, "relaunch "+cmd+": "+err.Error())
		return 1
	}
	if ans.Error != "" {
		fmt.Fprintln(stderr, "relaunch "+cmd+": "+ans.Error)
		return 1
	}
	switch {
	case ans.Status != nil && asJSON:
		b, _ := json.MarshalIndent(ans.Status, "", "  ")
		fmt.Fprintln(stdout, string(b))
	case ans.Status != nil:
		fmt.Fprint(stdout, ans.Status.Text())
	case ans.Outcome != nil && ans.Outcome.OK:
		fmt.Fprintf(stdout, "generation %d (pid %d) ready in %d ms\n", ans.Outcome.Generation, ans.Outcome.Pid, ans.Outcome.ReadyMS)
	case ans.Outcome != nil:
		fmt.Fprintln(stderr, "relaunch "+cmd+" failed: "+ans.Outcome.Reason)
		return 1
	case ans.Said != "":
		fmt.Fprintln(stdout, ans.Said)
	case ans.Reexec != nil:
		r := ans.Reexec
		fmt.Fprintf(stdout, "relaunch %s (pid %d, %s) took over in %d ms with %d generation(s)\n", r.Version, r.Pid, r.Binary, r.TookMS, r.Generations)
	default:
		fmt.Fprintln(stderr, "relaunch "+cmd+": an empty answer")
		return 1
	}
	return 0
}
