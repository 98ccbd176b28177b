package portshare

import (
	"slices"
	"strconv"
	"strings"
)

// Mode says which ports a [Policy] shares.
type Mode int

const (
	// Off shares nothing: no filter is installed, workers bind as without
	// goinit.
	Off Mode = iota
	// Auto shares every TCP port a worker binds, other than 0.
	Auto
	// List shares only the ports of Policy.Ports.
	List
)

// Policy is a parsed --share-ports value. The zero value is Off.
type Policy struct {
	Mode  Mode
	Ports []uint16 // sorted, without duplicates; only for List
}

// ParsePolicy parses a --share-ports value: "auto", "off", or a
// comma-separated list of TCP ports, each "3000" or "tcp:3000". Only TCP
// is shared: a datagram socket has no accept queue to share, so "udp:53"
// is refused rather than silently ignored. The error is a [*PolicyError]
// whose message is one line naming the bad part.
func ParsePolicy(s string) (Policy, error) {
	v := strings.TrimSpace(s)
	switch strings.ToLower(v) {
	case "":
		return Policy{}, &PolicyError{Value: s, Reason: "empty"}
	case "auto":
		return Policy{Mode: Auto}, nil
	case "off":
		return Policy{}, nil
	}
	var ports []uint16
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		num := item
		if proto, rest, ok := strings.Cut(item, ":"); ok {
			if !strings.EqualFold(proto, "tcp") {
				return Policy{}, &PolicyError{Value: s, Reason: "protocol " + strconv.Quote(proto) + " in " + strconv.Quote(item) + " is not shared; only tcp"}
			}
			num = rest
		}
		n, err := strconv.ParseUint(num, 10, 16)
		if err != nil || n == 0 {
			return Policy{}, &PolicyError{Value: s, Reason: strconv.Quote(item) + " is not a port number 1-65535"}
		}
		ports = append(ports, uint16(n))
	}
	slices.Sort(ports)
	return Policy{Mode: List, Ports: slices.Compact(ports)}, nil
}

// Shares reports whether a TCP bind to port is shared under p.
func (p Policy) Shares(port uint16) bool {
	switch p.Mode {
	case Auto:
		return port != 0
	case List:
		_, found := slices.BinarySearch(p.Ports, port)
		return found
	}
	return false
}

// String returns the value ParsePolicy parses back to p.
func (p Policy) String() string {
	switch p.Mode {
	case Auto:
		return "auto"
	case List:
		parts := make([]string, len(p.Ports))
		for i, port := range p.Ports {
			parts[i] = strconv.Itoa(int(port))
		}
		return strings.Join(parts, ",")
	}
	return "off"
}
