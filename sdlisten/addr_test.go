package sdlisten

import (
	"strconv"
	"strings"
	"testing"
)

var goodAddrs = []struct {
	in   string
	want Addr
	str  string // canonical String(); "" = same as in
}{
	{":8080", Addr{"", "tcp", ":8080"}, "tcp://:8080"},
	{":0", Addr{"", "tcp", ":0"}, "tcp://:0"},
	{":08080", Addr{"", "tcp", ":8080"}, "tcp://:8080"},
	{":65535", Addr{"", "tcp", ":65535"}, "tcp://:65535"},
	{"127.0.0.1:8080", Addr{"", "tcp", "127.0.0.1:8080"}, "tcp://127.0.0.1:8080"},
	{"[::1]:8080", Addr{"", "tcp", "[::1]:8080"}, "tcp://[::1]:8080"},
	{"[0:0::1]:8080", Addr{"", "tcp", "[::1]:8080"}, "tcp://[::1]:8080"},
	{"[::]:80", Addr{"", "tcp", "[::]:80"}, "tcp://[::]:80"},
	{"[::ffff:1.2.3.4]:80", Addr{"", "tcp", "[::ffff:1.2.3.4]:80"}, "tcp://[::ffff:1.2.3.4]:80"},
	{"[fe80::1%eth0]:80", Addr{"", "tcp", "[fe80::1%eth0]:80"}, "tcp://[fe80::1%eth0]:80"},
	{"localhost:8080", Addr{"", "tcp", "localhost:8080"}, "tcp://localhost:8080"},
	{"example.com.:443", Addr{"", "tcp", "example.com.:443"}, "tcp://example.com.:443"},
	{"a_b-c.example:1", Addr{"", "tcp", "a_b-c.example:1"}, "tcp://a_b-c.example:1"},
	{"tcp://:8080", Addr{"", "tcp", ":8080"}, ""},
	{"tcp://127.0.0.1:8080", Addr{"", "tcp", "127.0.0.1:8080"}, ""},
	{"tcp4://0.0.0.0:80", Addr{"", "tcp4", "0.0.0.0:80"}, ""},
	{"tcp4://localhost:80", Addr{"", "tcp4", "localhost:80"}, ""},
	{"tcp4://:80", Addr{"", "tcp4", ":80"}, ""},
	{"tcp6://[::]:443", Addr{"", "tcp6", "[::]:443"}, ""},
	{"tcp6://localhost:443", Addr{"", "tcp6", "localhost:443"}, ""},
	{"udp://:53", Addr{"", "udp", ":53"}, ""},
	{"udp4://0.0.0.0:53", Addr{"", "udp4", "0.0.0.0:53"}, ""},
	{"udp6://[::1]:53", Addr{"", "udp6", "[::1]:53"}, ""},
	{"unix:///run/app.sock", Addr{"", "unix", "/run/app.sock"}, ""},
	{"unix://rel/x.sock", Addr{"", "unix", "rel/x.sock"}, ""},
	{"unix://x.sock", Addr{"", "unix", "x.sock"}, ""},
	{"unix:///a=b.sock", Addr{"", "unix", "/a=b.sock"}, ""},
	{"unix:///a b:c.sock", Addr{"", "unix", "/a b:c.sock"}, ""},
	{"unix://@abstract", Addr{"", "unix", "@abstract"}, ""},
	{"unix:///" + strings.Repeat("x", maxUnixPath-1), Addr{"", "unix", "/" + strings.Repeat("x", maxUnixPath-1)}, ""},
	{"web=:8080", Addr{"web", "tcp", ":8080"}, "web=tcp://:8080"},
	{"name=tcp://127.0.0.1:8080", Addr{"name", "tcp", "127.0.0.1:8080"}, ""},
	{"web=unix:///x=y.sock", Addr{"web", "unix", "/x=y.sock"}, ""},
	{"my app=udp://:53", Addr{"my app", "udp", ":53"}, ""},
	{"~!@#$%^&*()=:1", Addr{"~!@#$%^&*()", "tcp", ":1"}, "~!@#$%^&*()=tcp://:1"},
	{strings.Repeat("n", 255) + "=:1", Addr{strings.Repeat("n", 255), "tcp", ":1"}, strings.Repeat("n", 255) + "=tcp://:1"},
}

var badAddrs = []struct {
	in, why string // why: a part of the message
}{
	{"", "empty address"},
	{"tcp://:http", `port "http" is not a number`},
	{":65536", "out of range"},
	{":99999999999999999999", "out of range"},
	{":-1", "not a number"},
	{":+80", "not a number"},
	{"8080", `missing ":PORT"`},
	{"localhost", `missing ":PORT"`},
	{"tcp://", `missing ":PORT"`},
	{"tcp://:", "missing port number"},
	{"::1:8080", "brackets"},
	{"[::1]", `missing ":PORT"`},
	{"[::1]x:80", `unexpected "x:80"`},
	{"[::1:80", `missing "]"`},
	{"[1.2.3.4]:80", "not an IPv6 address"},
	{"[]:80", "not an IPv6 address"},
	{"[fe80::1%a b]:80", "not an IPv6 address"},
	{"[fe80::1%]:80", "not an IPv6 address"},
	{"tcp4://[::1]:80", "IPv4 only"},
	{"udp4://[::ffff:1.2.3.4]:53", "IPv4 only"},
	{"tcp6://127.0.0.1:80", "IPv6 only"},
	{"udp6://[::ffff:1.2.3.4]:53", "IPv4-mapped"},
	{"http://:80", `unknown scheme "http://"`},
	{"TCP://:80", "unknown scheme"},
	{"unixgram:///x", "unknown scheme"},
	{"tcp:8080", `missing "//" after "tcp:"`},
	{"unix:/run/x.sock", `missing "//" after "unix:"`},
	{"/run/app.sock", "needs the unix:// scheme"},
	{"./app.sock", "needs the unix:// scheme"},
	{"unix://", "empty unix socket path"},
	{"unix://a\x00b", `control character "\x00"`},
	{"unix:///a\nb.sock", `control character "\n"`},
	{"unix:///a\x7fb.sock", "control character"},
	{"unix://@", "empty abstract"},
	{"unix:///" + strings.Repeat("x", maxUnixPath), strconv.Itoa(maxUnixPath+1) + " bytes"},
	{"tcp://:8080/x", "not a number"},
	{"tcp://:8080 ", "not a number"},
	{":8080\n", "not a number"},
	{" :8080", "neither an IP address nor a host name"},
	{"bad host:80", "neither an IP address nor a host name"},
	{"host..com:80", "neither an IP address nor a host name"},
	{"-\x7f:80", "neither"},
	{"ex\u00e4mple.com:80", "neither"},
	{strings.Repeat("a", 64) + ".com:80", "neither"},
	{"1.2.3:80", "not a valid IPv4 address"},
	{"256.1.1.1:80", "not a valid IPv4 address"},
	{"01.2.3.4:80", "not a valid IPv4 address"},
	{"=:8080", "empty name"},
	{"a\x01=:80", `name "a\x01" contains "\x01"`},
	{"caf\u00e9=:80", `contains "\xc3"`},
	{strings.Repeat("n", 256) + "=:1", "256 bytes long"},
	{"web=", "empty address"},
	{"web=8080", `missing ":PORT"`},
	{"web=tcp://:http", "not a number"},
}

func TestParseAddrGood(t *testing.T) {
	for _, tc := range goodAddrs {
		a, err := ParseAddr(tc.in)
		if err != nil {
			t.Errorf("ParseAddr(%q): %v", tc.in, err)
			continue
		}
		if a != tc.want {
			t.Errorf("ParseAddr(%q) = %#v, want %#v", tc.in, a, tc.want)
		}
		str := tc.str
		if str == "" {
			str = tc.in
		}
		if a.String() != str {
			t.Errorf("ParseAddr(%q).String() = %q, want %q", tc.in, a.String(), str)
		}
		if b, err := ParseAddr(a.String()); err != nil || b != a {
			t.Errorf("ParseAddr(%q) = %#v, %v; want %#v", a.String(), b, err, a)
		}
	}
}

func TestParseAddrBad(t *testing.T) {
	for _, tc := range badAddrs {
		a, err := ParseAddr(tc.in)
		if err == nil {
			t.Errorf("ParseAddr(%q) = %#v, want an error", tc.in, a)
			continue
		}
		msg := err.Error()
		checkAddrError(t, tc.in, msg)
		if !strings.Contains(msg, tc.why) {
			t.Errorf("ParseAddr(%q) error %q does not say %q", tc.in, msg, tc.why)
		}
	}
}

// checkAddrError: one line, names the bad value, says what is accepted.
func checkAddrError(t *testing.T, in, msg string) {
	t.Helper()
	if strings.ContainsAny(msg, "\n\r") {
		t.Errorf("ParseAddr(%q) error is not one line: %q", in, msg)
	}
	if !strings.HasPrefix(msg, "bad listen address "+strconv.Quote(in)+": ") {
		t.Errorf("ParseAddr(%q) error does not name the value: %q", in, msg)
	}
	if !strings.Contains(msg, "use ") && !strings.Contains(msg, nameHint) {
		t.Errorf("ParseAddr(%q) error does not say what is accepted: %q", in, msg)
	}
}

func TestAddrStringExamples(t *testing.T) {
	for _, tc := range []struct {
		a    Addr
		want string
	}{
		{Addr{"name", "tcp", "127.0.0.1:8080"}, "name=tcp://127.0.0.1:8080"},
		{Addr{"", "tcp", ":8080"}, "tcp://:8080"},
		{Addr{"", "unix", "/abs/x.sock"}, "unix:///abs/x.sock"},
		{Addr{"", "unix", "rel/x.sock"}, "unix://rel/x.sock"},
		{Addr{"", "udp4", "0.0.0.0:53"}, "udp4://0.0.0.0:53"},
	} {
		if got := tc.a.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.a, got, tc.want)
		}
	}
}

func FuzzParseAddr(f *testing.F) {
	for _, tc := range goodAddrs {
		f.Add(tc.in)
	}
	for _, tc := range badAddrs {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddr(s)
		if err != nil {
			checkAddrError(t, s, err.Error())
			return
		}
		b, err := ParseAddr(a.String())
		if err != nil {
			t.Fatalf("ParseAddr(%q) = %#v, but its String %q does not parse: %v", s, a, a.String(), err)
		}
		if b != a {
			t.Fatalf("ParseAddr(%q) = %#v, but ParseAddr(%q) = %#v", s, a, a.String(), b)
		}
		if !isNetwork(a.Network) || a.Address == "" {
			t.Fatalf("ParseAddr(%q) = %#v", s, a)
		}
	})
}
