package portshare

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrReduced is wrapped by the error [FullFidelity] returns when goinit
// cannot take copies of its workers' sockets (pidfd_getfd is refused, as
// under Docker's and containerd's default seccomp profiles without
// CAP_SYS_PTRACE). Ports are still shared, in reduced mode: see the
// package documentation's Reduced mode section.
var ErrReduced = errors.New("pidfd_getfd is refused: ports are shared in reduced mode")

// FullFidelityFix is the advice that turns reduced mode off.
const FullFidelityFix = "run the container with --cap-add=SYS_PTRACE, or with a seccomp profile that allows pidfd_getfd"

// reducedLoss says what reduced mode cannot copy, for the warning.
const reducedLoss = "a held socket gets the family and protocol (TCP or MPTCP) of the worker's socket and its O_NONBLOCK and close-on-exec flags, read from /proc, " +
	"but IPV6_V6ONLY is net.ipv6.bindv6only's value (%d; 1 for [::] beside a held IPv4 socket of the same port) and, of the options set before bind, only SO_REUSEADDR (always on) is kept"

// FullFidelity reports, as nil, whether goinit can take a copy of a
// worker's socket (pidfd_getfd, Linux 5.6), which is how it reads the
// worker's IPV6_V6ONLY and socket options. Otherwise the error wraps
// [ErrReduced] and names the cause. It probes pidfd_getfd on goinit's own
// process with a descriptor number that cannot be open, which has no
// effect: EBADF means the call is allowed.
func FullFidelity() error {
	pidfd, err := unix.PidfdOpen(unix.Getpid(), 0)
	if err != nil {
		return fmt.Errorf("%w (pidfd_open: %w)", ErrReduced, err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, -1, 0)
	switch {
	case err == nil:
		unix.Close(fd)
	case getfdRefused(err):
		return fmt.Errorf("%w (pidfd_getfd: %w)", ErrReduced, err)
	}
	return nil
}

// Reduced returns nil when s reads its workers' sockets in full (full
// fidelity), or the error wrapping [ErrReduced] that says why it cannot.
func (s *Sharer) Reduced() error {
	if p := s.reduced.Load(); p != nil {
		return *p
	}
	return nil
}

// goReduced switches s to reduced mode because of err (wrapping
// ErrReduced) and logs the warning, once for s's whole life.
func (s *Sharer) goReduced(err error) {
	if !s.reduced.CompareAndSwap(nil, &err) {
		return
	}
	s.log.Warn(fmt.Sprintf("%v; %s; for full fidelity %s", err, fmt.Sprintf(reducedLoss, bindV6Only()), FullFidelityFix))
}

// inspect reads the socket at descriptor fd of thread tid: from a copy
// while pidfd_getfd works, from /proc alone once it is refused.
func (s *Sharer) inspect(tgid, tid, fd int) (*peerSocket, error) {
	if s.reduced.Load() == nil {
		p, err := inspectPeer(tgid, tid, fd)
		var refused errGetfdRefused
		if !errors.As(err, &refused) {
			return p, err
		}
		s.goReduced(fmt.Errorf("%w (%w)", ErrReduced, refused))
	}
	return inspectProc(tid, fd)
}

// bindV6Only is net.ipv6.bindv6only of goinit's network namespace (which
// is the worker's: other namespaces are not shared): the IPV6_V6ONLY a
// fresh AF_INET6 socket has. 0 when IPv6 is off.
func bindV6Only() int {
	b, err := os.ReadFile("/proc/sys/net/ipv6/bindv6only")
	if err == nil && strings.TrimSpace(string(b)) == "1" {
		return 1
	}
	return 0
}

// reducedV6Only is the IPV6_V6ONLY of a new held socket for an AF_INET6
// bind of k whose own IPV6_V6ONLY cannot be read: the system default,
// which is what Node (dual-stack by default), Go (which sets 0 for ":P")
// and most servers end up with, except for the unspecified address [::]
// of a port whose IPv4 socket goinit already holds. There a dual-stack
// socket could only fail with EADDRINUSE, so the worker must have asked
// for v6only, as nginx does for "listen 80; listen [::]:80". The caller
// holds t.mu.
func (t *table) reducedV6Only(k key) bool {
	if k.addr.Addr().IsUnspecified() {
		for hk := range t.byKey {
			if hk.family == unix.AF_INET && hk.addr.Port() == k.addr.Port() {
				return true
			}
		}
	}
	return bindV6Only() == 1
}

// reducedOptions sets on a new held socket made without a copy of the
// worker's the one option that is always right: SO_REUSEADDR, which Go,
// Node, Python's socketserver and nginx set on every listener. It lets the
// bind succeed while old connections of the port linger in TIME_WAIT.
func reducedOptions(fd int) (set, failed []string) {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return nil, []string{"SO_REUSEADDR"}
	}
	return []string{"SO_REUSEADDR (reduced mode)"}, nil
}
