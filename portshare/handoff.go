package portshare

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultHandoffTimeout is how long [Sharer.AttachHandoff] waits for a
// worker's shim to send its notification descriptor. The shim sends it
// right before exec, after at most the cgroup placement and a Go runtime
// start, so seconds mean the shim is stuck.
const DefaultHandoffTimeout = 10 * time.Second

// Handoff is the socketpair over which a worker's shim sends its
// notification descriptor to the supervisor. The supervisor creates one
// per worker start, passes [Handoff.Child] to the shim (in
// exec.Cmd.ExtraFiles, naming its descriptor number to the shim), calls
// [Handoff.Started] once the process exists, and then receives the
// descriptor with [Handoff.Receive] or lets [Sharer.AttachHandoff] do it.
type Handoff struct {
	parent *os.File
	child  *os.File
}

// NewHandoff creates the socketpair, both ends close-on-exec in goinit
// (ExtraFiles clears the flag on the child's copy).
func NewHandoff() (*Handoff, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("portshare: socketpair: %w", err)
	}
	parent, err := pollable(fds[0], "portshare-handoff")
	if err != nil {
		unix.Close(fds[1])
		return nil, err
	}
	return &Handoff{parent: parent, child: os.NewFile(uintptr(fds[1]), "portshare-handoff-child")}, nil
}

// Child is the end the shim gets; it passes its descriptor number to
// [InstallFilter].
func (h *Handoff) Child() *os.File { return h.child }

// Started closes goinit's copy of the child end, so that Receive sees end
// of file if the shim exits without sending. Call it right after the start
// (successful or not).
func (h *Handoff) Started() {
	if h.child != nil {
		h.child.Close()
		h.child = nil
	}
}

// Receive waits until ctx is done for the notification descriptor and
// returns it; it closes the handoff in every case. End of file means the
// shim exited, or failed to install the filter, without sending.
func (h *Handoff) Receive(ctx context.Context) (*os.File, error) {
	defer h.Close()
	if d, ok := ctx.Deadline(); ok {
		h.parent.SetReadDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { h.parent.SetReadDeadline(time.Now()) })
	defer stop()
	rc, err := h.parent.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("portshare: handoff: %w", err)
	}
	var fd, n int
	var rerr error
	oob := make([]byte, unix.CmsgSpace(4))
	err = rc.Read(func(s uintptr) bool {
		var oobn int
		n, oobn, _, _, rerr = unix.Recvmsg(int(s), make([]byte, 1), oob, unix.MSG_CMSG_CLOEXEC)
		if rerr == unix.EAGAIN {
			return false
		}
		fd = -1
		if rerr == nil {
			fd, rerr = parseRights(oob[:oobn])
		}
		return true
	})
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, fmt.Errorf("portshare: no notification descriptor from the worker's shim: %w", context.Cause(ctx))
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, fmt.Errorf("portshare: no notification descriptor from the worker's shim: %w", err)
	case err != nil:
		return nil, fmt.Errorf("portshare: handoff: %w", err)
	case rerr != nil:
		return nil, fmt.Errorf("portshare: receive the notification descriptor: %w", rerr)
	case n == 0 || fd < 0:
		return nil, errors.New("portshare: the worker's shim closed the handoff without sending its notification descriptor (it could not install the filter)")
	}
	return pollable(fd, "seccomp-notify")
}

// Close closes whatever ends are still open. It is safe to call twice.
func (h *Handoff) Close() error {
	h.Started()
	return h.parent.Close()
}

// parseRights returns the one descriptor an SCM_RIGHTS message carries.
func parseRights(oob []byte) (int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return -1, err
	}
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, extra := range fds[1:] {
			unix.Close(extra)
		}
		if len(fds) > 0 {
			return fds[0], nil
		}
	}
	return -1, nil
}

// pollable wraps fd as an *os.File that Go's poller waits on, which needs
// O_NONBLOCK before os.NewFile. The notification descriptor's RECV ignores
// the flag; goinit only receives after poll(2) said a notification is
// there, so no goroutine ever blocks a thread on it.
func pollable(fd int, name string) (*os.File, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("portshare: %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}
