package portshare

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// key identifies one held socket: a worker's bind gets the held socket of
// exactly its key, never a near one. In particular an AF_INET bind never
// gets a dual-stack AF_INET6 socket, whose accept() would write a
// sockaddr_in6 into the worker's sockaddr_in.
type key struct {
	family  int // AF_INET or AF_INET6
	addr    netip.AddrPort
	proto   int    // IPPROTO_TCP or IPPROTO_MPTCP
	v6only  bool   // AF_INET6 only
	scopeID uint32 // AF_INET6 link-local only
}

// String is the address as logs show it: "[::]:3000", "0.0.0.0:3000",
// "[::]:3000 (v6only)".
func (k key) String() string {
	s := k.addr.String()
	if k.v6only {
		s += " (v6only)"
	}
	if k.proto == unix.IPPROTO_MPTCP {
		s += " (MPTCP)"
	}
	return s
}

// parseSockaddr decodes the sockaddr a worker passed to bind. ok is false
// for anything but a well-formed AF_INET or AF_INET6 address, which is
// then left to the kernel. The family field is in host order, the port in
// network order, as in <netinet/in.h>.
func parseSockaddr(b []byte) (family int, ap netip.AddrPort, scope uint32, ok bool) {
	if len(b) < 2 {
		return 0, ap, 0, false
	}
	family = int(binary.NativeEndian.Uint16(b))
	switch family {
	case unix.AF_INET:
		if len(b) < unix.SizeofSockaddrInet4 {
			return 0, ap, 0, false
		}
		port := binary.BigEndian.Uint16(b[2:])
		return family, netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), 0, true
	case unix.AF_INET6:
		// The kernel accepts the 24-byte RFC 2133 form without scope id.
		if len(b) < 24 {
			return 0, ap, 0, false
		}
		port := binary.BigEndian.Uint16(b[2:])
		if len(b) >= unix.SizeofSockaddrInet6 {
			scope = binary.NativeEndian.Uint32(b[24:])
		}
		return family, netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), port), scope, true
	}
	return 0, ap, 0, false
}

// sockaddrOf returns the unix.Sockaddr to bind a held socket of key k.
func (k key) sockaddr() unix.Sockaddr {
	if k.family == unix.AF_INET {
		return &unix.SockaddrInet4{Port: int(k.addr.Port()), Addr: k.addr.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(k.addr.Port()), Addr: k.addr.Addr().As16(), ZoneId: k.scopeID}
}
