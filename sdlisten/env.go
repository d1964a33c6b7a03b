package sdlisten

import (
	"strconv"
	"strings"
)

// childDrop are the variables systemd gives a service that must not reach a
// child as relaunch got them: they describe relaunch, not the child.
var childDrop = map[string]bool{
	"LISTEN_FDS":     true,
	"LISTEN_PID":     true,
	"LISTEN_FDNAMES": true,
	"LISTEN_PIDFDID": true,
	"NOTIFY_SOCKET":  true,
	"WATCHDOG_USEC":  true,
	"WATCHDOG_PID":   true,
	"FDSTORE":        true,
}

// ChildEnv returns env without systemd's activation and notify variables
// (LISTEN_*, NOTIFY_SOCKET, WATCHDOG_*, FDSTORE), plus LISTEN_FDS for socks
// and, when any socket has a name, LISTEN_FDNAMES with "unknown" for the
// unnamed ones. With no sockets neither is set. LISTEN_PID is left to the
// exec helper (only the child knows its pid) and NOTIFY_SOCKET to the
// launcher (its own socket). env is not modified.
func ChildEnv(env []string, socks []*Socket) []string {
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); !childDrop[k] {
			out = append(out, kv)
		}
	}
	if len(socks) == 0 {
		return out
	}
	out = append(out, "LISTEN_FDS="+strconv.Itoa(len(socks)))
	names := make([]string, len(socks))
	named := false
	for i, s := range socks {
		if names[i] = s.Addr().Name; names[i] == "" {
			names[i] = "unknown"
		} else {
			named = true
		}
	}
	if named {
		out = append(out, "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	return out
}
