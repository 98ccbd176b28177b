package cgroup

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrUnavailable matches (with errors.Is) every *UnavailableError: the
// requested limits cannot be applied in this environment. A caller that
// treats limits as optional can log the error and run without them.
var ErrUnavailable = errors.New("cgroup limits unavailable")

// UnavailableError says why a limit cannot be applied here and how to fix
// it. Its message is one line: the cause, the fix in the environment, then
// doing without the limit, e.g.
//
//	cgroup memory controller is not writable at /sys/fs/cgroup/memory/x/goinit: read-only file system; mount the cgroup filesystem read-write (containers: ...), or run without the memory limit
//
// Callers that want to name their own flags for doing without can build a
// line from Cause, Fix and Limit instead of using Error.
type UnavailableError struct {
	// Controller is the cgroup controller involved ("memory", "cpu",
	// "pids"), or "" when the problem is the cgroup filesystem itself.
	Controller string
	// Limit is the requested limit that cannot be applied, as named by
	// Limits.String ("memory", "memory-high", "cpu", "pids"), or "" when
	// no limit can be applied at all.
	Limit string
	// Slot is the named slot (Options.Named) whose limit it is, or ""
	// for the worker slots' Options.Limits. When both need the same
	// controller, the worker slots' limit is the one named.
	Slot string
	// Cause is what is wrong, one line without the fix.
	Cause string
	// Fix is what the user can change in the environment, one line,
	// without the alternative of running without the limit, which
	// Error adds.
	Fix string
	// Err is the underlying error, e.g. unix.EROFS; may be nil.
	Err error
}

// Error returns Cause, Fix and running without Limit on one line.
func (e *UnavailableError) Error() string {
	return e.Cause + "; " + e.Fix + ", or " + withoutLimit(e.Limit, e.Slot)
}

// Unwrap returns the underlying error, so errors.Is(err, unix.EROFS) works.
func (e *UnavailableError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUnavailable) true.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// withoutLimit is the tail of every message: the user can always give up
// the limit.
func withoutLimit(limit, slot string) string {
	switch {
	case limit == "":
		return "run without cgroup limits"
	case slot != "":
		return "run without the " + limit + " limit of slot " + slot
	}
	return "run without the " + limit + " limit"
}

// notWritable is notWritable for the limit n stands for.
func (n need) notWritable(path string, err error) *UnavailableError {
	ue := notWritable(n.controller, n.limit, path, err)
	ue.Slot = n.slot
	return ue
}

// notWritable builds the error for a cgroup directory we cannot create or
// write, choosing the fix from the errno.
func notWritable(controller, limit, path string, err error) *UnavailableError {
	errno := errnoOf(err)
	cause := fmt.Sprintf("cgroup %s controller is not writable at %s: %s", controller, path, errnoText(err))
	if controller == "" {
		cause = fmt.Sprintf("cgroup filesystem is not writable at %s: %s", path, errnoText(err))
	}
	var fix string
	switch errno {
	case unix.EROFS:
		fix = "mount the cgroup filesystem read-write (containers: run privileged or with a writable, delegated cgroup)"
	case unix.EACCES, unix.EPERM:
		fix = "run goinit as root or delegate the cgroup to its user"
	default:
		fix = "check that the cgroup filesystem is mounted and delegated"
	}
	return &UnavailableError{Controller: controller, Limit: limit, Cause: cause, Fix: fix, Err: err}
}

// errnoOf digs the errno out of err, or returns 0.
func errnoOf(err error) unix.Errno {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return 0
}

// errnoText is the short human text for err: the errno's text when there is
// one ("read-only file system"), without the path repeated by *PathError.
func errnoText(err error) string {
	if errno := errnoOf(err); errno != 0 {
		return errno.Error()
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// isPermissionLike reports whether err means "this environment does not let
// us write here" rather than a bug: read-only mount, no permission.
func isPermissionLike(err error) bool {
	switch errnoOf(err) {
	case unix.EROFS, unix.EACCES, unix.EPERM:
		return true
	}
	return false
}
