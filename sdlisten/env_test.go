package sdlisten

import (
	"slices"
	"testing"
)

func TestChildEnv(t *testing.T) {
	web := &Socket{addr: Addr{"web", "tcp", ":8080"}}
	anon := &Socket{addr: Addr{"", "tcp", ":8081"}}
	inherited := []string{
		"PATH=/bin", "LISTEN_FDS=3", "LISTEN_PID=1", "LISTEN_FDNAMES=a:b:c", "LISTEN_PIDFDID=77",
		"NOTIFY_SOCKET=/run/systemd/notify", "WATCHDOG_USEC=1000", "WATCHDOG_PID=1", "FDSTORE=4",
		"LISTEN_ADDR=:9", "HOME=/root", "LISTEN_FDS", "=odd",
	}
	kept := []string{"PATH=/bin", "LISTEN_ADDR=:9", "HOME=/root", "=odd"}
	for _, tc := range []struct {
		name  string
		env   []string
		socks []*Socket
		want  []string
	}{
		{"nothing", nil, nil, []string{}},
		{"no sockets", inherited, nil, kept},
		{"unnamed", []string{"A=1"}, []*Socket{anon, anon}, []string{"A=1", "LISTEN_FDS=2"}},
		{"named", []string{"A=1"}, []*Socket{web}, []string{"A=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=web"}},
		{"mixed", inherited, []*Socket{anon, web, anon}, append(slices.Clone(kept), "LISTEN_FDS=3", "LISTEN_FDNAMES=unknown:web:unknown")},
		{"duplicates", []string{"LISTEN_FDS=1", "X=2", "LISTEN_FDS=2"}, []*Socket{anon}, []string{"X=2", "LISTEN_FDS=1"}},
	} {
		orig := slices.Clone(tc.env)
		got := ChildEnv(tc.env, tc.socks)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: ChildEnv = %q, want %q", tc.name, got, tc.want)
		}
		if !slices.Equal(tc.env, orig) {
			t.Errorf("%s: ChildEnv modified its input", tc.name)
		}
	}
}
