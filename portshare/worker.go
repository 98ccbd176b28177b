package portshare

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// InstallFilter is the worker's half of the protocol, run by goinit's shim
// between fork and exec. On the calling goroutine's OS thread, which it
// locks for good, it sets no_new_privs, installs the port-sharing seccomp
// filter with a notification listener, sends the listener to the
// supervisor over the unix socket handoffFD (the child end of a
// [Handoff]) and closes both descriptors.
//
// The caller must then execve the command on the same goroutine without
// unlocking it: the filter and no_new_privs belong to this thread only, and
// the exec'd program inherits them from the thread that calls execve. It
// needs no privilege (no_new_privs is what lets an unprivileged process
// install a filter), so it works after the shim has dropped to the
// worker's user.
//
// On failure nothing is installed (the filter is the last step that can
// fail before the send), the handoff socket is closed, and the supervisor's
// Receive reports end of file; the shim should then exit without running
// the command when sharing was asked for explicitly, or run it unshared.
func InstallFilter(handoffFD int) error {
	defer unix.Close(handoffFD)
	runtime.LockOSThread() // never unlocked: see above
	prog, err := assembleFilter()
	if err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("%w: prctl(PR_SET_NO_NEW_PRIVS): %w", ErrUnavailable, err)
	}
	notif, err := seccompInstall(prog)
	if err != nil {
		return err
	}
	defer unix.Close(notif)
	// One byte of data: a stream socket does not carry ancillary data alone.
	if err := unix.Sendmsg(handoffFD, []byte{'F'}, unix.UnixRights(notif), nil, 0); err != nil {
		// The filter is installed and nobody will answer it: binds in the
		// command would fail with ENOSYS once notif is closed. Say so.
		return fmt.Errorf("portshare: send the notification descriptor to goinit: %w (binds would fail; not running the command)", err)
	}
	return nil
}

// filterFlags are the flags every worker's filter asks for, strongest
// first; seccompInstall drops the ones this kernel does not know.
//
//   - NEW_LISTENER returns the notification descriptor.
//   - WAIT_KILLABLE_RECV (5.19): once goinit has received a notification,
//     only a fatal signal interrupts the wait. Without it, a signal (Node's
//     and Go's runtimes send themselves many) restarts bind() after goinit
//     may already have installed the held socket at that descriptor.
//   - SPEC_ALLOW: do not turn on the speculative store bypass mitigation
//     for the worker just because it has a filter (hosts booted with
//     spec_store_bypass_disable=seccomp); goinit's filter confines nothing,
//     so it must not cost the worker a slowdown either.
var filterFlags = []uintptr{
	unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV | unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW,
	unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW,
	unix.SECCOMP_FILTER_FLAG_NEW_LISTENER,
}

// seccompInstall installs prog on the calling thread and returns the
// notification descriptor (close-on-exec, as the kernel creates it).
// A refused flag is EINVAL with nothing installed, so retrying with fewer
// flags is safe.
func seccompInstall(prog []unix.SockFilter) (int, error) {
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	var err error
	for _, flags := range filterFlags {
		fd, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&fprog)))
		runtime.KeepAlive(prog)
		if e == 0 {
			return int(fd), nil
		}
		err = e
		if !errors.Is(e, unix.EINVAL) {
			break
		}
	}
	return -1, fmt.Errorf("%w: seccomp(SECCOMP_SET_MODE_FILTER): %w", ErrUnavailable, err)
}
