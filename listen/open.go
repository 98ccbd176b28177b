package listen

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// StaleProbeTimeout bounds the connect that [Open] uses to tell a stale Unix
// socket file from a live one.
const StaleProbeTimeout = time.Second

// OpenError reports a socket that could not be opened. Its message is one
// line, e.g. "cannot listen on tcp://:8080: address already in use"; Err is
// the root cause (usually a syscall.Errno, possibly with a hint), so
// errors.Is(err, syscall.EADDRINUSE) works.
type OpenError struct {
	Addr Addr
	Err  error
}

// Error returns "cannot listen on <addr>: <cause>".
func (e *OpenError) Error() string {
	return "cannot listen on " + e.Addr.String() + ": " + e.Err.Error()
}

// Unwrap returns the root cause, for errors.Is and errors.As.
func (e *OpenError) Unwrap() error { return e.Err }

// Open binds a and returns the listening socket (for UDP, the bound socket)
// as an *os.File whose name is a.String().
//
// The file is a new descriptor, numbered 3 or above, with close-on-exec set,
// so it leaks into no child by accident; exec.Cmd.ExtraFiles dups it without
// close-on-exec for the worker that should get it. The socket is in blocking
// mode, as systemd passes sockets by default. O_NONBLOCK belongs to the open
// socket, not to a descriptor, so a worker (or goinit itself, e.g. through
// net.FileListener) that makes it non-blocking does so for every holder.
//
// The accept backlog is the kernel maximum, net.core.somaxconn of the network
// namespace: Go's net.Listen reads it and passes it to listen(2). A deeper
// queue needs that sysctl raised, not a flag.
//
// With reusePort, SO_REUSEPORT is set before bind, so several sockets (one per
// worker) can bind the same TCP or UDP port and the kernel spreads new
// connections or datagrams among them; it is an error for Unix sockets.
// SO_REUSEADDR is always set on TCP listeners (Go's default), so a restart
// is not blocked by connections in TIME_WAIT.
//
// For a Unix socket the parent directory must exist (Open does not create
// it). An existing socket file is removed only when a connect to it is
// refused, i.e. nobody accepts on it any more; a live socket yields
// EADDRINUSE and a file that is not a socket is never touched. The new file's
// mode follows the umask; Open does not chmod or chown it.
//
// ctx bounds host name resolution and the stale-socket probe. Errors are
// *[OpenError].
func Open(ctx context.Context, a Addr, reusePort bool) (*os.File, error) {
	if !knownNetwork(a.Network) {
		return nil, &OpenError{Addr: a, Err: fmt.Errorf("unsupported network %q", a.Network)}
	}
	var lc net.ListenConfig
	if reusePort {
		if a.Network == "unix" {
			return nil, &OpenError{Addr: a, Err: errors.New("SO_REUSEPORT does not apply to Unix sockets; share one socket instead")}
		}
		lc.Control = setReusePort
	}

	switch {
	case a.Network == "unix":
		if err := removeStale(ctx, a.Address); err != nil {
			return nil, &OpenError{Addr: a, Err: err}
		}
		l, err := lc.Listen(ctx, "unix", a.Address)
		if err != nil {
			return nil, openError(a, err)
		}
		ul := l.(*net.UnixListener)
		// The returned descriptor keeps the socket alive after the Go
		// listener is closed, so the file must stay too.
		ul.SetUnlinkOnClose(false)
		defer ul.Close()
		f, err := detach(ul, a.String())
		if err != nil {
			if !strings.HasPrefix(a.Address, "@") {
				_ = os.Remove(a.Address)
			}
			return nil, &OpenError{Addr: a, Err: err}
		}
		return f, nil

	case isTCP(a.Network):
		l, err := lc.Listen(ctx, a.Network, a.Address)
		if err != nil {
			return nil, openError(a, err)
		}
		defer l.Close()
		f, err := detach(l.(*net.TCPListener), a.String())
		if err != nil {
			return nil, &OpenError{Addr: a, Err: err}
		}
		return f, nil

	default: // udp, udp4, udp6
		pc, err := lc.ListenPacket(ctx, a.Network, a.Address)
		if err != nil {
			return nil, openError(a, err)
		}
		defer pc.Close()
		f, err := detach(pc.(*net.UDPConn), a.String())
		if err != nil {
			return nil, &OpenError{Addr: a, Err: err}
		}
		return f, nil
	}
}

// BoundAddr returns the local address of a socket file from [Open] (or any
// socket): a *net.TCPAddr, *net.UDPAddr or *net.UnixAddr. After binding port
// 0 it carries the port the kernel chose. It does not change the socket.
func BoundAddr(f *os.File) (net.Addr, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("local address of %s: %w", f.Name(), err)
	}
	var (
		sa      unix.Sockaddr
		typ     int
		sockErr error
	)
	err = rc.Control(func(fd uintptr) {
		if sa, sockErr = unix.Getsockname(int(fd)); sockErr != nil {
			sockErr = os.NewSyscallError("getsockname", sockErr)
			return
		}
		if typ, sockErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE); sockErr != nil {
			sockErr = os.NewSyscallError("getsockopt SO_TYPE", sockErr)
		}
	})
	if err == nil {
		err = sockErr
	}
	if err != nil {
		return nil, fmt.Errorf("local address of %s: %w", f.Name(), err)
	}
	dgram := typ == unix.SOCK_DGRAM
	ipAddr := func(ip net.IP, port int, zone string) net.Addr {
		if dgram {
			return &net.UDPAddr{IP: ip, Port: port, Zone: zone}
		}
		return &net.TCPAddr{IP: ip, Port: port, Zone: zone}
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return ipAddr(net.IP(sa.Addr[:]).To16(), sa.Port, ""), nil
	case *unix.SockaddrInet6:
		zone := ""
		if sa.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				zone = ifi.Name
			}
		}
		return ipAddr(append(net.IP(nil), sa.Addr[:]...), sa.Port, zone), nil
	case *unix.SockaddrUnix:
		network := "unix"
		if dgram {
			network = "unixgram"
		}
		return &net.UnixAddr{Name: sa.Name, Net: network}, nil
	}
	return nil, fmt.Errorf("local address of %s: unsupported address family %T", f.Name(), sa)
}

// detach returns a close-on-exec, blocking duplicate of c's descriptor that
// is not registered with Go's network poller; the caller closes c.
func detach(c syscall.Conn, name string) (*os.File, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd, dupErr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		// Numbered from 3 so a closed stdin/stdout/stderr slot is not taken.
		nfd, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 3)
	}); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", dupErr)
	}
	if err := unix.SetNonblock(nfd, false); err != nil {
		unix.Close(nfd)
		return nil, os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	return os.NewFile(uintptr(nfd), name), nil
}

func setReusePort(_, _ string, c syscall.RawConn) error {
	var sockErr error
	if err := c.Control(func(fd uintptr) {
		sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	if sockErr != nil {
		return os.NewSyscallError("setsockopt SO_REUSEPORT", sockErr)
	}
	return nil
}

// removeStale prepares a Unix socket path for bind: the directory must exist
// and an existing socket file is removed only if nobody accepts on it.
func removeStale(ctx context.Context, path string) error {
	if strings.HasPrefix(path, "@") {
		return nil // abstract: no file; a live one fails bind with EADDRINUSE
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("directory %s does not exist", dir)
		}
		return err
	} else if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; not removing it", path)
	}
	d := net.Dialer{Timeout: StaleProbeTimeout}
	c, err := d.DialContext(ctx, "unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w (a process is accepting connections on %s)", syscall.EADDRINUSE, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s exists and may be in use (connect: %v); not removing it", path, rootCause(err))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// openError strips the "listen tcp :8080: bind:" layers Go adds, since
// OpenError already names the address, and adds a hint for errors whose
// usual cause is not obvious from the errno text.
func openError(a Addr, err error) *OpenError {
	err = rootCause(err)
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if hint := errnoHint(a, errno); hint != "" {
			err = fmt.Errorf("%w (%s)", errno, hint)
		}
	}
	return &OpenError{Addr: a, Err: err}
}

func rootCause(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		err = op.Err
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		err = se.Err
	}
	return err
}

func errnoHint(a Addr, errno syscall.Errno) string {
	switch errno {
	case syscall.EACCES:
		if a.Network == "unix" {
			return "cannot create the socket file in " + filepath.Dir(a.Address)
		}
		if p := a.port(); p > 0 && p < 1024 {
			return "ports below 1024 need root or CAP_NET_BIND_SERVICE"
		}
	case syscall.EADDRNOTAVAIL:
		return "no local interface has this address"
	case syscall.EAFNOSUPPORT:
		return "this address family is disabled on this host"
	}
	return ""
}
