package health

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// DefaultHost is the host a port-only --health-addr binds: loopback, so
// that nothing is exposed unless a host is named.
const DefaultHost = "127.0.0.1"

// ParseAddr reads a --health-addr value. It returns "" for "" and "off"
// (the endpoints are disabled), HOST:PORT otherwise. ":9090" and "9090"
// mean 127.0.0.1:9090; "0.0.0.0:9090" or "[::]:9090" bind every interface.
func ParseAddr(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "off" {
		return "", nil
	}
	if _, err := strconv.Atoi(s); err == nil {
		s = ":" + s
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("--health-addr %q: want [HOST]:PORT, e.g. :9090 (loopback only) or 0.0.0.0:9090 (every interface), or off", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("--health-addr %q: port %q must be a number from 1 to 65535", s, port)
	}
	if host == "" {
		host = DefaultHost
	}
	if strings.ContainsAny(host, " /") {
		return "", fmt.Errorf("--health-addr %q: %q is not a host name or IP address", s, host)
	}
	return net.JoinHostPort(host, port), nil
}
