package sdlisten

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Addr is one listen address, as given on the command line.
type Addr struct {
	Name    string // its LISTEN_FDNAMES entry; "" = unnamed
	Network string // "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6" or "unix"
	Address string // "host:port" (host may be empty, an IP, or a host name; IPv6 in brackets) or, for unix, the path as given (relative stays relative)
}

const (
	addrHint = "use host:port such as :8080, tcp://127.0.0.1:8080, unix:///run/app.sock or udp://:53"
	unixHint = "use unix:///abs/path.sock or unix://rel/path.sock"
	nameHint = "a name is 1 to 255 printable ASCII characters without ':', as in web=:8080"
)

// maxUnixPath is the longest path a sockaddr_un holds with its final NUL:
// 107 bytes on Linux.
var maxUnixPath = len(unix.RawSockaddrUnix{}.Path) - 1

// ParseAddr parses "[NAME=]ADDR". The text before the first "=" is a name
// only when it holds no ":": every address form has one, so
// "unix:///a=b.sock" is an address. IP literals and the port are put in
// canonical form; host names and unix paths are kept as given.
func ParseAddr(s string) (Addr, error) {
	var a Addr
	rest := s
	if i := strings.IndexByte(s, '='); i >= 0 && !strings.Contains(s[:i], ":") {
		a.Name, rest = s[:i], s[i+1:]
		if err := checkName(a.Name); err != nil {
			return Addr{}, fmt.Errorf("bad listen address %q: %v", s, err)
		}
	}
	var err error
	if a.Network, a.Address, err = parseNetAddr(rest); err != nil {
		return Addr{}, fmt.Errorf("bad listen address %q: %v", s, err)
	}
	return a, nil
}

// String returns the canonical form, which ParseAddr gives back unchanged:
// "web=tcp://127.0.0.1:8080", "tcp://:8080", "unix:///run/app.sock".
func (a Addr) String() string {
	s := a.Network + "://" + a.Address
	if a.Name != "" {
		s = a.Name + "=" + s
	}
	return s
}

// checkName applies systemd's rules for a LISTEN_FDNAMES entry.
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name before \"=\"; %s", nameHint)
	case len(name) > 255:
		return fmt.Errorf("name is %d bytes long; %s", len(name), nameHint)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c > 0x7e || c == ':' {
			return fmt.Errorf("name %q contains %q; %s", name, []byte{c}, nameHint)
		}
	}
	return nil
}

func isNetwork(s string) bool {
	switch s {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "unix":
		return true
	}
	return false
}

// parseNetAddr parses ADDR into a network and its canonical address.
func parseNetAddr(s string) (network, address string, err error) {
	if s == "" {
		return "", "", fmt.Errorf("empty address; %s", addrHint)
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		// A bare host:port is tcp; catch the near misses first.
		if pre, _, _ := strings.Cut(s, ":"); isNetwork(pre) && pre != s {
			return "", "", fmt.Errorf("missing \"//\" after %q; %s", pre+":", addrHint)
		}
		if strings.HasPrefix(s, "/") || strings.HasPrefix(s, "./") {
			return "", "", fmt.Errorf("a unix socket path needs the unix:// scheme; %s", unixHint)
		}
		scheme, rest = "tcp", s
	} else if !isNetwork(scheme) {
		return "", "", fmt.Errorf("unknown scheme %q; use tcp://, tcp4://, tcp6://, udp://, udp4://, udp6:// or unix://", scheme+"://")
	}
	if scheme == "unix" {
		return scheme, rest, checkUnixPath(rest)
	}
	address, err = parseHostPort(scheme, rest)
	return scheme, address, err
}

func checkUnixPath(p string) error {
	// NUL cannot be in a sockaddr; other control characters would garble
	// every message that names the path.
	ctl := strings.IndexFunc(p, isControl)
	switch {
	case p == "":
		return fmt.Errorf("empty unix socket path; %s", unixHint)
	case ctl >= 0:
		return fmt.Errorf("unix socket path contains the control character %q; %s", p[ctl:ctl+1], unixHint)
	case p == "@":
		return fmt.Errorf("empty abstract socket name after \"@\"; use unix://@name")
	case len(p) > maxUnixPath:
		return fmt.Errorf("unix socket path %q is %d bytes, more than the %d a socket address holds; use a shorter path (a relative one counts from the working directory)", p, len(p), maxUnixPath)
	}
	return nil
}

// parseHostPort checks "host:port" for network (tcp* or udp*) and returns it
// in canonical form: IP literals as netip prints them, the port in decimal.
func parseHostPort(network, hp string) (string, error) {
	var host, port string
	bracketed := strings.HasPrefix(hp, "[")
	if bracketed {
		end := strings.IndexByte(hp, ']')
		if end < 0 {
			return "", fmt.Errorf("missing \"]\" after the IPv6 address; %s", addrHint)
		}
		host, port = hp[1:end], hp[end+1:]
		if !strings.HasPrefix(port, ":") {
			if port == "" {
				return "", fmt.Errorf("missing \":PORT\" after %q; %s", hp, addrHint)
			}
			return "", fmt.Errorf("unexpected %q after \"]\"; %s", port, addrHint)
		}
		port = port[1:]
	} else {
		i := strings.LastIndexByte(hp, ':')
		if i < 0 {
			return "", fmt.Errorf("missing \":PORT\"; %s", addrHint)
		}
		host, port = hp[:i], hp[i+1:]
		if strings.Contains(host, ":") {
			return "", fmt.Errorf("an IPv6 address goes in brackets, as in [::1]:8080; %s", addrHint)
		}
	}
	p, err := parsePort(port)
	if err != nil {
		return "", err
	}
	v4only := strings.HasSuffix(network, "4")
	v6only := strings.HasSuffix(network, "6")
	switch ip, err := netip.ParseAddr(host); {
	case bracketed:
		if err != nil || !ip.Is6() || !validZone(ip.Zone()) {
			return "", fmt.Errorf("%q is not an IPv6 address (brackets are for IPv6 only); %s", host, addrHint)
		}
		if v4only {
			return "", fmt.Errorf("%s takes IPv4 only, not the IPv6 address %q; use %s:// for both", network, host, network[:3])
		}
		if v6only && ip.Is4In6() {
			return "", fmt.Errorf("%s takes IPv6 only, not the IPv4-mapped address %q; use %s:// for IPv4", network, host, network[:3])
		}
		host = ip.String()
	case host == "":
	case err == nil: // an IPv4 literal: no ":" in an unbracketed host
		if v6only {
			return "", fmt.Errorf("%s takes IPv6 only, not the IPv4 address %q; use %s:// for both", network, host, network[:3])
		}
		host = ip.String()
	case strings.Trim(host, "0123456789.") == "":
		return "", fmt.Errorf("%q is not a valid IPv4 address; %s", host, addrHint)
	case !validHostname(host):
		return "", fmt.Errorf("host %q is neither an IP address nor a host name; %s", host, addrHint)
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

func parsePort(port string) (int, error) {
	if port == "" {
		return 0, fmt.Errorf("missing port number after \":\"; %s", addrHint)
	}
	if strings.Trim(port, "0123456789") != "" {
		return 0, fmt.Errorf("port %q is not a number; %s", port, addrHint)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p > 65535 {
		return 0, fmt.Errorf("port %q is out of range 0-65535; %s", port, addrHint)
	}
	return p, nil
}

// validHostname accepts DNS names (and /etc/hosts names with "_"): dot
// separated labels of letters, digits, "-" and "_", with an optional final dot.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isAlnum(c) && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

// validZone accepts an interface name or index (netip accepts any bytes).
func validZone(z string) bool {
	for i := 0; i < len(z); i++ {
		if c := z[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
