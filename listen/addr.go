package listen

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
)

// Addr is a parsed --listen address. [ParseAddr] produces it; a hand-built
// Addr must use the same conventions.
type Addr struct {
	// Network is one of "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6" or
	// "unix" (a stream socket). "tcp" and "udp" with an empty or wildcard
	// host bind both IPv4 and IPv6, as net.Listen does.
	Network string
	// Address is "host:port" for IP networks (host may be empty, an IP
	// literal or a name resolved when the socket is opened; IPv6 literals
	// are bracketed) and the socket path for "unix". A path starting with
	// '@' names a Linux abstract socket, which has no file.
	Address string
	// Name is the socket's entry in LISTEN_FDNAMES: 1 to 255 of the
	// characters A-Z a-z 0-9 . _ -
	Name string
}

// MaxNameLen is the longest accepted socket name, systemd's limit for
// FileDescriptorName=.
const MaxNameLen = 255

// maxUnixPath is the longest Unix socket path the kernel accepts: sun_path
// is 108 bytes and Go keeps one for the terminating NUL.
const maxUnixPath = 107

// acceptedForms ends every scheme error, so the user sees what to type.
const acceptedForms = "use tcp://, tcp4://, tcp6://, udp://, udp4://, udp6:// or unix:// (or host:port, or a bare port)"

// AddrError reports a --listen value that [ParseAddr] rejected. It is a
// configuration error: the caller should exit with its usage status.
type AddrError struct {
	Input  string // the value as given
	Reason string // what is wrong and what is accepted
}

// Error returns `invalid --listen "<input>": <reason>`.
func (e *AddrError) Error() string {
	return fmt.Sprintf("invalid --listen %q: %s", e.Input, e.Reason)
}

// ParseAddr parses a --listen value. Accepted forms:
//
//	8080                    TCP port 8080 on all interfaces (same as :8080)
//	:8080                   the same
//	127.0.0.1:8080          TCP on one address; a host name is resolved by Open
//	tcp://0.0.0.0:8080      explicit scheme; tcp4:// and tcp6:// restrict the family
//	tcp6://[::]:8080        IPv6 literals need brackets
//	udp://:5353             a bound UDP socket; also udp4:// and udp6://
//	unix:///run/app.sock    a Unix stream socket at an absolute path
//	unix://run/app.sock     a Unix socket at a path relative to goinit's directory
//	unix://@app             a Linux abstract Unix socket
//
// Any form may end in #name to set the socket's LISTEN_FDNAMES entry, e.g.
// tcp://:8080#http. Without it the name is the network and the port
// ("tcp-8080", "tcp6-8080", "udp-5353") or "unix-" and the socket file's base
// name ("unix-app.sock"), with characters outside A-Z a-z 0-9 . _ - replaced
// by '_'. Because '#' starts the name, it cannot appear in a socket path.
//
// The port must be a number from 0 to 65535; 0 asks the kernel for a free
// port, which [BoundAddr] reports after [Open]. Schemes are case-insensitive.
// Errors are *[AddrError].
func ParseAddr(s string) (Addr, error) {
	bad := func(format string, args ...any) (Addr, error) {
		return Addr{}, &AddrError{Input: s, Reason: fmt.Sprintf(format, args...)}
	}
	rest, name, hasName := strings.Cut(s, "#")
	if hasName {
		if reason := checkName(name); reason != "" {
			return bad("%s", reason)
		}
	}
	if strings.TrimSpace(rest) == "" {
		return bad("empty address; %s", acceptedForms)
	}
	network := "tcp"
	if scheme, after, ok := strings.Cut(rest, "://"); ok {
		network = strings.ToLower(scheme)
		rest = after
		if !knownNetwork(network) {
			return bad("unsupported scheme %q; %s", scheme, acceptedForms)
		}
		if rest == "" {
			return bad("nothing after %s://", network)
		}
	} else if strings.Contains(rest, "/") {
		return bad("not host:port; for a Unix socket write unix://%s", rest)
	}

	a := Addr{Network: network, Name: name}
	if network == "unix" {
		if reason := checkUnixPath(rest); reason != "" {
			return bad("%s", reason)
		}
		a.Address = rest
	} else {
		addr, reason := normalizeHostPort(network, rest)
		if reason != "" {
			return bad("%s", reason)
		}
		a.Address = addr
	}
	if !hasName {
		a.Name = a.defaultName()
	}
	return a, nil
}

// String returns the address in the scheme form that ParseAddr accepts, e.g.
// "tcp://:8080" or "unix:///run/app.sock", followed by "#name" when the name
// is not the default one. It is the form used in log lines and errors.
func (a Addr) String() string {
	s := a.Network + "://" + a.Address
	if a.Name != a.defaultName() {
		s += "#" + a.Name
	}
	return s
}

// port returns the port of an IP address, or -1 for Unix sockets and
// malformed addresses.
func (a Addr) port() int {
	if a.Network == "unix" {
		return -1
	}
	i := strings.LastIndexByte(a.Address, ':')
	if i < 0 {
		return -1
	}
	p, err := strconv.Atoi(a.Address[i+1:])
	if err != nil {
		return -1
	}
	return p
}

func (a Addr) defaultName() string {
	if a.Network == "unix" {
		base := strings.TrimPrefix(a.Address, "@")
		if !strings.HasPrefix(a.Address, "@") {
			base = filepath.Base(a.Address)
		}
		return sanitizeName("unix-" + base)
	}
	return sanitizeName(a.Network + "-" + strconv.Itoa(a.port()))
}

func knownNetwork(n string) bool {
	switch n {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "unix":
		return true
	}
	return false
}

func isTCP(network string) bool {
	return network == "tcp" || network == "tcp4" || network == "tcp6"
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// checkName returns why name cannot be a LISTEN_FDNAMES entry, or "".
// systemd allows more characters, but ':' separates the entries and a small
// safe set keeps names usable as file names and metric labels too.
func checkName(name string) string {
	if name == "" {
		return "empty name after '#'"
	}
	if len(name) > MaxNameLen {
		return fmt.Sprintf("name longer than %d characters", MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		if !nameByte(name[i]) {
			return fmt.Sprintf("name %q may only contain A-Z a-z 0-9 . _ -", name)
		}
	}
	return ""
}

func sanitizeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !nameByte(c) {
			b[i] = '_'
		}
	}
	if len(b) > MaxNameLen {
		b = b[:MaxNameLen]
	}
	return string(b)
}

func checkUnixPath(p string) string {
	switch {
	case p == "" || p == "@":
		return "missing socket path; write unix:///path/to/app.sock"
	case len(p) > maxUnixPath:
		return fmt.Sprintf("socket path is %d bytes; the kernel allows at most %d", len(p), maxUnixPath)
	case strings.IndexByte(p, 0) >= 0:
		return "socket path contains a NUL byte"
	}
	return ""
}

// normalizeHostPort checks "host:port" (or a bare port) for network and
// returns it with the port in canonical decimal, or the reason it is bad.
func normalizeHostPort(network, hp string) (string, string) {
	if isDigits(hp) {
		hp = ":" + hp
	}
	var host, port string
	if strings.HasPrefix(hp, "[") {
		j := strings.IndexByte(hp, ']')
		if j < 0 {
			return "", "missing ']' after the IPv6 address"
		}
		host, port = hp[1:j], hp[j+1:]
		if port == "" {
			return "", "missing port; write [host]:port, e.g. [::1]:8080"
		}
		if port[0] != ':' {
			return "", "expected ':' and a port after ']'"
		}
		port = port[1:]
		if ip, err := netip.ParseAddr(host); err != nil || !ip.Is6() {
			return "", fmt.Sprintf("%q is not an IPv6 address", host)
		}
	} else {
		switch strings.Count(hp, ":") {
		case 0:
			return "", "missing port; write host:port, e.g. 127.0.0.1:8080 or :8080"
		case 1:
			host, port, _ = strings.Cut(hp, ":")
		default:
			return "", "IPv6 addresses need brackets, e.g. [::1]:8080"
		}
		if strings.ContainsAny(host, "[]") {
			return "", fmt.Sprintf("%q is neither an IP address nor a host name", host)
		}
	}
	if port == "" {
		return "", "missing port after ':'"
	}
	if !isDigits(port) {
		return "", fmt.Sprintf("port %q is not a number", port)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p > 65535 {
		return "", fmt.Sprintf("port %s out of range 0-65535", port)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		switch {
		case strings.HasSuffix(network, "4") && !ip.Is4():
			return "", fmt.Sprintf("%s needs an IPv4 address, not %s", network, host)
		case strings.HasSuffix(network, "6") && ip.Is4():
			return "", fmt.Sprintf("%s needs an IPv6 address, not %s", network, host)
		}
		return joinHostPort(host, p), ""
	}
	if strings.ContainsAny(host, " \t%/") {
		return "", fmt.Sprintf("%q is neither an IP address nor a host name", host)
	}
	return joinHostPort(host, p), ""
}

func joinHostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(port)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
