package portshare

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// peerSocket is what goinit reads of the socket a worker is binding, from
// its own copy (pidfd_getfd) and from /proc, or, in reduced mode, from
// /proc alone.
type peerSocket struct {
	fd       int // goinit's copy of the worker's socket, -1 in reduced mode; closed by release
	domain   int
	typ      int
	proto    int
	v6only   bool // only meaningful with a copy; see reduced
	nonblock bool
	cloexec  bool   // of the worker's descriptor, not the socket
	ino      uint64 // socket inode: equal to a held socket's if it is one
	bound    bool   // already has a local port
	device   bool   // SO_BINDTODEVICE set: bound to an interface
	// reduced: there is no copy (pidfd_getfd refused), so IPV6_V6ONLY,
	// the options and whether the socket is bound or tied to a device
	// are unknown; the table decides them by the reduced-mode rule.
	reduced bool
}

func (p *peerSocket) release() {
	if p.fd >= 0 {
		unix.Close(p.fd)
		p.fd = -1
	}
}

// errGetfdRefused wraps a pidfd_getfd failure that means the call is not
// available to goinit at all (a seccomp profile's EPERM, an old kernel's
// ENOSYS), as opposed to a bad descriptor.
type errGetfdRefused struct{ err error }

func (e errGetfdRefused) Error() string { return "pidfd_getfd: " + e.err.Error() }
func (e errGetfdRefused) Unwrap() error { return e.err }

// getfdRefused reports whether err from pidfd_getfd means the call itself
// is refused here. EPERM is also what a worker goinit may not ptrace gets,
// but then /proc/TID/mem, read first, has already failed.
func getfdRefused(err error) bool { return err == unix.EPERM || err == unix.ENOSYS }

// inspectPeer takes a copy of descriptor fd of thread tid (thread group
// tgid) and reads the properties a held socket must share with it.
// pidfd_open needs the thread group id: a pidfd names a process. A refused
// pidfd_getfd is returned as errGetfdRefused: the caller then uses
// inspectProc.
func inspectPeer(tgid, tid, fd int) (*peerSocket, error) {
	dup, err := copyFD(tgid, fd)
	if err != nil {
		return nil, err
	}
	p := &peerSocket{fd: dup}
	var st unix.Stat_t
	if err := unix.Fstat(dup, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		p.release()
		return nil, fmt.Errorf("descriptor %d is not a socket", fd)
	}
	p.ino = st.Ino
	if p.domain, err = unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil {
		if p.typ, err = unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_TYPE); err == nil {
			p.proto, err = unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_PROTOCOL)
		}
	}
	if err != nil {
		p.release()
		return nil, fmt.Errorf("socket %d: %w", fd, err)
	}
	if p.domain == unix.AF_INET6 {
		v, _ := unix.GetsockoptInt(dup, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		p.v6only = v != 0
	}
	if fl, err := unix.FcntlInt(uintptr(dup), unix.F_GETFL, 0); err == nil {
		p.nonblock = fl&unix.O_NONBLOCK != 0
	}
	if sa, err := unix.Getsockname(dup); err == nil {
		p.bound = sockaddrPort(sa) != 0
	}
	if dev, err := unix.GetsockoptString(dup, unix.SOL_SOCKET, unix.SO_BINDTODEVICE); err == nil && dev != "" {
		p.device = true
	}
	// Close-on-exec is a flag of the worker's descriptor, which the copy
	// does not carry; fdinfo's flags field (octal) has it.
	if fl, ok := fdinfoFlags(tid, fd); ok {
		p.cloexec = fl&unix.O_CLOEXEC != 0
	} else {
		p.cloexec = true // a socket leaked into an exec'd program is worse than one missing there
	}
	return p, nil
}

// protoNames are the socket names sockfs gives the sockets goinit may
// share (the system.sockprotoname attribute: the protocol's struct
// proto name). SOCK_STREAM is implied: these protocols have no other type.
var protoNames = map[string][2]int{
	"TCP":     {unix.AF_INET, unix.IPPROTO_TCP},
	"TCPv6":   {unix.AF_INET6, unix.IPPROTO_TCP},
	"MPTCP":   {unix.AF_INET, unix.IPPROTO_MPTCP},
	"MPTCPv6": {unix.AF_INET6, unix.IPPROTO_MPTCP},
}

// inspectProc reads what /proc shows of descriptor fd of thread tid
// without a copy of it, for when pidfd_getfd is refused (reduced mode):
// the inode (/proc/TID/fd/FD), the family and protocol from the socket's
// sockfs name (getxattr system.sockprotoname through that link, which
// any seccomp profile allows), and O_NONBLOCK and O_CLOEXEC from
// /proc/TID/fdinfo/FD. A socket of another protocol (UDP, SCTP, unix)
// gets typ 0, so it is not shared. IPV6_V6ONLY, the options and whether
// the socket is already bound are not visible anywhere: an unbound socket
// is in no hash table, so neither sock_diag nor /proc/net lists it.
func inspectProc(tid, fd int) (*peerSocket, error) {
	ino, ok := socketInode(tid, fd)
	if !ok {
		return nil, fmt.Errorf("descriptor %d is not a socket", fd)
	}
	p := &peerSocket{fd: -1, ino: ino, reduced: true}
	link := "/proc/" + strconv.Itoa(tid) + "/fd/" + strconv.Itoa(fd)
	buf := make([]byte, 32)
	n, err := unix.Getxattr(link, "system.sockprotoname", buf)
	if err != nil {
		return nil, fmt.Errorf("getxattr %s system.sockprotoname: %w", link, err)
	}
	if dp, ok := protoNames[unix.ByteSliceToString(buf[:n])]; ok {
		p.domain, p.typ, p.proto = dp[0], unix.SOCK_STREAM, dp[1]
	}
	fl, ok := fdinfoFlags(tid, fd)
	if !ok {
		// Without the flags a blocking server could get a non-blocking
		// socket or the reverse: leave such a bind to the kernel.
		return nil, fmt.Errorf("cannot read the flags of descriptor %d in /proc/%d/fdinfo", fd, tid)
	}
	p.nonblock = fl&unix.O_NONBLOCK != 0
	p.cloexec = fl&unix.O_CLOEXEC != 0
	return p, nil
}

func sockaddrPort(sa unix.Sockaddr) int {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return 0
}

// fdinfoFlags reads the file status and descriptor flags of descriptor
// fd of thread tid from /proc/TID/fdinfo/FD, whose "flags:" line is octal
// and carries O_CLOEXEC as well as O_NONBLOCK.
func fdinfoFlags(tid, fd int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return 0, false
	}
	for line := range bytes.Lines(b) {
		v, ok := bytes.CutPrefix(line, []byte("flags:"))
		if !ok {
			continue
		}
		fl, err := strconv.ParseUint(strings.TrimSpace(string(v)), 8, 64)
		return fl, err == nil
	}
	return 0, false
}

// socketInode returns the inode of the socket at descriptor fd of thread
// tid, from the /proc/TID/fd/FD link ("socket:[12345]"), without taking a
// copy: cheap enough for every trapped listen() and shutdown().
func socketInode(tid, fd int) (uint64, bool) {
	link, err := os.Readlink("/proc/" + strconv.Itoa(tid) + "/fd/" + strconv.Itoa(fd))
	if err != nil {
		return 0, false
	}
	n, ok := strings.CutPrefix(link, "socket:[")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(strings.TrimSuffix(n, "]"), 10, 64)
	return ino, err == nil
}
