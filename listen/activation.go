package listen

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Files returns the sockets passed to this process by socket activation, in
// order: descriptor [FirstFD]+i is the i-th file, named by the i-th entry of
// LISTEN_FDNAMES (or "LISTEN_FD_<fd>" when that entry is missing or empty).
//
// Like sd_listen_fds(1), it returns no files and no error when LISTEN_PID is
// unset or names another process (the variables were inherited, not meant
// for us); it marks the descriptors close-on-exec and it unsets LISTEN_PID,
// LISTEN_FDS and LISTEN_FDNAMES in every case, so a second call returns
// nothing and the program's own children do not see the sockets.
func Files() ([]*os.File, error) {
	defer func() {
		os.Unsetenv(EnvPID)
		os.Unsetenv(EnvFDs)
		os.Unsetenv(EnvFDNames)
	}()
	pidText, ok := os.LookupEnv(EnvPID)
	if !ok {
		return nil, nil
	}
	pid, err := strconv.Atoi(pidText)
	if err != nil {
		return nil, fmt.Errorf("socket activation: invalid %s=%q", EnvPID, pidText)
	}
	if pid != os.Getpid() {
		return nil, nil
	}
	n, err := strconv.Atoi(os.Getenv(EnvFDs))
	if err != nil || n < 0 {
		return nil, fmt.Errorf("socket activation: invalid %s=%q", EnvFDs, os.Getenv(EnvFDs))
	}
	var names []string
	if v := os.Getenv(EnvFDNames); v != "" {
		names = strings.Split(v, ":")
	}
	// Check every descriptor before wrapping any: an *os.File closes its
	// descriptor when garbage-collected, and on a bad LISTEN_FDS the
	// descriptors may belong to something else.
	for fd := FirstFD; fd < FirstFD+n; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return nil, fmt.Errorf("socket activation: %s=%d but descriptor %d is not open: %w", EnvFDs, n, fd, err)
		}
	}
	files := make([]*os.File, 0, n)
	for i := range n {
		fd := FirstFD + i
		unix.CloseOnExec(fd)
		name := "LISTEN_FD_" + strconv.Itoa(fd)
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		files = append(files, os.NewFile(uintptr(fd), name))
	}
	return files, nil
}

// Listeners returns a net.Listener for each listening stream socket (TCP or
// Unix) passed by socket activation, in order, calling [Files]. Datagram
// sockets are closed and left out; a program that also receives UDP sockets
// should call Files and net.FilePacketConn instead. It returns no listeners
// and no error when the process was not socket-activated.
func Listeners() ([]net.Listener, error) {
	files, err := Files()
	if err != nil {
		return nil, err
	}
	var ls []net.Listener
	fail := func(err error) ([]net.Listener, error) {
		for _, l := range ls {
			l.Close()
		}
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
		return nil, err
	}
	for i, f := range files {
		fd := FirstFD + i
		typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
		if err != nil {
			return fail(fmt.Errorf("socket activation: descriptor %d (%s) is not a socket: %w", fd, f.Name(), err))
		}
		if typ != unix.SOCK_STREAM {
			f.Close()
			files[i] = nil
			continue
		}
		if on, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || on == 0 {
			return fail(fmt.Errorf("socket activation: descriptor %d (%s) is a stream socket but not listening", fd, f.Name()))
		}
		// FileListener dups the descriptor; the original is closed below.
		l, err := net.FileListener(f)
		if err != nil {
			return fail(fmt.Errorf("socket activation: descriptor %d (%s): %w", fd, f.Name(), err))
		}
		ls = append(ls, l)
	}
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
	return ls, nil
}
