package portshare

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// loop answers one worker's notifications. Every worker (and its
// descendants, which inherit its filter) has its own notification
// descriptor, served by its own loop in its own goroutine.
type loop struct {
	s      *Sharer
	worker int
	pid    int
	fd     int // the notification descriptor, valid inside run's callback
}

// run serves notif until no process uses the filter any more (POLLHUP) or
// the Sharer is closed, and closes notif.
func (l *loop) run(notif *os.File) error {
	defer notif.Close()
	stop := context.AfterFunc(l.s.ctx, func() { notif.Close() })
	defer stop()
	rc, err := notif.SyscallConn()
	if err != nil {
		return fmt.Errorf("portshare: worker %d: %w", l.worker, err)
	}
	var hup bool
	var lerr error
	err = rc.Read(func(fd uintptr) bool {
		l.fd = int(fd)
		hup, lerr = l.drain()
		return hup || lerr != nil
	})
	switch {
	case hup:
		return nil
	case lerr != nil:
		return lerr
	case errors.Is(err, os.ErrClosed) || l.s.ctx.Err() != nil:
		return nil // Close
	}
	return fmt.Errorf("portshare: worker %d: wait for notifications: %w", l.worker, err)
}

// drain answers every pending notification. It reports hup once no
// process is left that could make a call: a RECV then would block
// forever, so RECV only ever follows a poll(2) that saw POLLIN.
func (l *loop) drain() (hup bool, err error) {
	for {
		pfd := []unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, 0); err != nil {
			if err == unix.EINTR {
				continue
			}
			return false, fmt.Errorf("portshare: worker %d: poll: %w", l.worker, err)
		}
		switch ev := pfd[0].Revents; {
		case ev&unix.POLLIN != 0:
		case ev&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0:
			return true, nil
		default:
			return false, nil // nothing pending: wait for the poller
		}
		var n seccompNotif
		if err := notifRecv(l.fd, &n); err != nil {
			// ENOENT: the caller was killed between poll and RECV.
			if err == unix.ENOENT || err == unix.EINTR {
				continue
			}
			return false, fmt.Errorf("portshare: worker %d: SECCOMP_IOCTL_NOTIF_RECV: %w", l.worker, err)
		}
		l.handle(&n)
	}
}

// call is one intercepted system call being answered.
type call struct {
	*loop
	n   *seccompNotif
	tid int
}

func (l *loop) handle(n *seccompNotif) {
	c := call{loop: l, n: n, tid: int(n.Pid)}
	switch n.Data.Nr {
	case unix.SYS_BIND:
		c.bind()
	case unix.SYS_LISTEN:
		c.listen()
	case unix.SYS_SHUTDOWN:
		c.shutdown()
	default:
		c.cont()
	}
}

// cont lets the kernel run the call as if goinit were not there. Every
// call goinit does not share ends here, errors included.
func (c call) cont() {
	if err := notifContinue(c.fd, c.n.ID); err != nil && err != unix.ENOENT {
		c.s.log.Warn(fmt.Sprintf("worker %d: cannot let a system call through: %v", c.worker, err), "worker", c.worker)
	}
}

// answer makes the call return 0, or fail with errno.
func (c call) answer(errno unix.Errno) {
	if err := notifReturn(c.fd, c.n.ID, 0, errno); err != nil && err != unix.ENOENT {
		c.s.log.Warn(fmt.Sprintf("worker %d: cannot answer a system call: %v", c.worker, err), "worker", c.worker)
	}
}

// valid reports whether the caller still waits in this call; anything
// read from its memory or /proc is only trusted after it says yes.
func (c call) valid() bool { return notifIDValid(c.fd, c.n.ID) == nil }

func (c call) arg(i int) int { return int(int32(c.n.Data.Args[i])) }

func (c call) debug(msg string, args ...any) {
	c.s.log.Debug(fmt.Sprintf("worker %d (pid %d): ", c.worker, c.tid)+msg, append([]any{"worker", c.worker}, args...)...)
}

// maxSockaddr is sizeof(struct sockaddr_storage), the most the kernel
// takes as a bind address: servers that pass sizeof(ss) for an IPv4 or
// IPv6 address are shared too.
const maxSockaddr = 128

// bind is bind(fd, addr, len): shared when it is a TCP bind to a shared
// port that the worker itself would be allowed to make.
func (c call) bind() {
	fd, length := c.arg(0), c.arg(2)
	if length < 2 || length > maxSockaddr {
		c.cont()
		return
	}
	raw, err := readMemory(c.tid, c.n.Data.Args[1], length)
	if err != nil {
		c.debugOnce(err)
		c.cont()
		return
	}
	family, ap, scope, ok := parseSockaddr(raw)
	if !ok || !c.s.policy.Shares(ap.Port()) {
		c.cont()
		return
	}
	st, err := readStatus(c.tid)
	if err != nil || !c.sameNetns() || !st.mayBind(ap.Port()) {
		// Another network namespace has other ports; a privileged port
		// the worker may not bind must fail for it with EACCES as usual,
		// not succeed because goinit is root.
		c.cont()
		return
	}
	peer, err := c.s.inspect(st.tgid, c.tid, fd)
	if err != nil {
		c.debugOnce(err)
		c.cont()
		return
	}
	defer peer.release()
	if peer.domain != family || peer.typ != unix.SOCK_STREAM || peer.device ||
		(peer.proto != unix.IPPROTO_TCP && peer.proto != unix.IPPROTO_MPTCP) {
		c.cont()
		return
	}
	k := key{family: family, addr: ap, proto: peer.proto, v6only: peer.v6only, scopeID: scope}
	if !c.valid() {
		return
	}
	if was, ok := c.s.table.boundKey(peer.ino); ok {
		// The same bind again, restarted by a signal after goinit had
		// installed the held socket or bound the worker's own for it
		// (kernels without WAIT_KILLABLE_RECV).
		if was.addr == k.addr && was.family == k.family {
			c.answer(0)
		} else {
			c.answer(unix.EINVAL)
		}
		return
	}
	if peer.bound {
		c.cont() // the kernel's EINVAL
		return
	}
	if peer.reduced {
		c.bindReduced(k, fd, peer, st.tgid)
		return
	}
	h, how, err := c.s.table.bindShared(k, peer, raw, st.tgid, fd)
	switch {
	case err != nil:
		c.fail(err, fmt.Sprintf("bind %s at fd %d", k, fd))
		return
	case h == nil:
		c.answer(0)
		c.debug(fmt.Sprintf("bind %s at fd %d: %s", k, fd, how))
		return
	}
	c.give(h, fd, peer, st.tgid, "bind", how)
}

// bindReduced is a shared bind in reduced mode: goinit cannot take the
// worker's socket, so it binds a new held socket like it, by the
// reduced-mode rule, the first time the address is asked for.
func (c call) bindReduced(k key, fd int, peer *peerSocket, tgid int) {
	h, created, opts, err := c.s.table.get(k, peer)
	if err != nil {
		c.fail(err, fmt.Sprintf("bind %s", k))
		return
	}
	how := "given the held socket"
	if created {
		how = "goinit bound a new held socket (options " + strings.Join(opts, ",") + ")"
	}
	c.give(h, fd, peer, tgid, "bind", how)
}

// give installs the held socket h at the caller's descriptor fd, in place
// of its own socket peer, and makes the call (what: bind or listen) return
// 0. how says, for the debug line, where h came from.
func (c call) give(h *held, fd int, peer *peerSocket, tgid int, what, how string) bool {
	// O_NONBLOCK belongs to the open socket, shared by goinit and every
	// worker: each binder sets it as it had it, as with LISTEN_FDS.
	_ = unix.SetNonblock(h.fd, peer.nonblock)
	if err := notifAddFD(c.fd, c.n.ID, h.fd, fd, peer.cloexec); err != nil {
		if err != unix.ENOENT {
			c.s.log.Warn(fmt.Sprintf("worker %d (pid %d): cannot install the held socket %s at fd %d: %v; the worker keeps its own", c.worker, c.tid, h.key, fd, err), "worker", c.worker)
			c.cont()
		}
		return false
	}
	c.answer(0)
	c.debug(fmt.Sprintf("%s %s at fd %d: %s%s", what, h.key, fd, how, reducedNote(peer)))
	c.bound(h, tgid, peer.reduced)
	return true
}

// bound reports that process tgid has the held socket h at its bind: the
// Shared event the first time h is given out, then Bound.
func (c call) bound(h *held, tgid int, reduced bool) {
	e := Event{Worker: c.worker, Pid: tgid, Addr: h.key.addr, V6Only: h.key.v6only, Reduced: reduced}
	if c.s.table.announce(h) {
		e.Kind = Shared
		c.s.send(e)
	}
	e.Kind = Bound
	c.s.send(e)
}

// fail answers a call with the errno of err, with a debug line saying
// what failed, or, for an error that is not an errno, lets the kernel
// run it.
func (c call) fail(err error, what string) {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		c.cont()
		return
	}
	c.debug(fmt.Sprintf("%s: %v", what, err))
	c.answer(errno)
}

// reducedNote is what a debug line adds for a bind read in reduced mode.
func reducedNote(p *peerSocket) string {
	if !p.reduced {
		return ""
	}
	return " (reduced mode: pidfd_getfd refused; family, protocol, O_NONBLOCK and close-on-exec read from /proc, v6only by the reduced-mode rule, options not copied)"
}

// listen is listen(fd, backlog). On a held socket it is answered 0 with
// the queue kept at the largest backlog anyone asked for. On a worker's
// own socket bound to a shared address, goinit takes that socket and
// holds it from now on (or, if another worker's listened first, gives
// this one the held socket instead).
func (c call) listen() {
	fd, backlog := c.arg(0), c.arg(1)
	if backlog < 0 {
		backlog = math.MaxInt32 // the kernel reads it unsigned: somaxconn
	}
	ino, ok := socketInode(c.tid, fd)
	if !ok {
		c.cont()
		return
	}
	h, e, noted := c.s.table.listenState(ino)
	if h == nil {
		if noted {
			c.adopt(fd, ino, e, backlog)
		} else {
			c.cont()
		}
		return
	}
	if !c.valid() {
		return
	}
	got, err := c.s.table.raiseBacklog(h, backlog)
	if err != nil {
		c.debug(fmt.Sprintf("listen %s backlog %d: %v", h.key, backlog, err))
	}
	c.answer(0)
	c.debug(fmt.Sprintf("listen %s backlog %d: queue stays at %d", h.key, backlog, got))
	c.listening(h)
}

// listening reports that the caller listens on the held socket h.
func (c call) listening(h *held) {
	c.s.send(Event{Kind: Listening, Worker: c.worker, Pid: c.tgid(), WorkerPid: c.loop.pid, Addr: h.key.addr, V6Only: h.key.v6only})
}

// adopt answers listen(fd, backlog) of the caller's own socket ino, noted
// (e) as bound to a shared address: it becomes the held socket of that
// address, listening with the larger of backlog and goinit's.
func (c call) adopt(fd int, ino uint64, e note, backlog int) {
	st, err := readStatus(c.tid)
	var peer *peerSocket
	if err == nil {
		peer, err = c.s.inspect(st.tgid, c.tid, fd)
	}
	if err != nil || peer.reduced || peer.ino != ino || !boundTo(peer.fd, e.key) {
		// Its bind failed (it listens on a port of the kernel's
		// choosing then), or the descriptor changed: not shared.
		if peer != nil {
			peer.release()
		}
		c.s.table.forget(ino)
		c.cont()
		return
	}
	if !c.valid() {
		peer.release()
		return
	}
	h, created, err := c.s.table.adopt(e.key, peer.fd, ino, backlog)
	switch {
	case err != nil:
		peer.release()
		c.fail(err, fmt.Sprintf("listen %s", e.key))
		return
	case !created:
		// Both bound their own sockets (SO_REUSEADDR) and another
		// listened first: this one gets that socket instead of its own.
		peer.release()
		if c.give(h, fd, peer, st.tgid, "listen", "given the held socket in place of its own") {
			if _, err := c.s.table.raiseBacklog(h, backlog); err != nil {
				c.debug(fmt.Sprintf("listen %s backlog %d: %v", h.key, backlog, err))
			}
			c.listening(h)
		}
		return
	}
	peer.fd = -1 // the held socket's now
	c.answer(0)
	c.debug(fmt.Sprintf("listen %s at fd %d backlog %d: goinit holds the worker's own socket, queue %d", h.key, fd, backlog, h.backlog))
	c.bound(h, st.tgid, false) // its own bind got what is now the held socket
	c.listening(h)
}

// shutdown is shutdown(fd, SHUT_RD or SHUT_RDWR) (the filter lets SHUT_WR
// through). On a listening socket it stops accepting for the socket, that
// is for every worker and goinit: on a held socket it is answered 0 and
// not done.
func (c call) shutdown() {
	h := c.heldAt(c.arg(0))
	if h == nil {
		c.cont()
		return
	}
	if c.valid() {
		c.answer(0)
		c.debug(fmt.Sprintf("shutdown(%d) of the held socket %s: ignored, the other workers keep accepting", c.arg(1), h.key))
	}
}

// heldAt returns the held socket at the caller's descriptor fd, if any.
func (c call) heldAt(fd int) *held {
	ino, ok := socketInode(c.tid, fd)
	if !ok {
		return nil
	}
	return c.s.table.byInode(ino)
}

func (c call) tgid() int {
	if st, err := readStatus(c.tid); err == nil {
		return st.tgid
	}
	return c.tid
}

func (c call) sameNetns() bool {
	ns, err := netnsInode(strconv.Itoa(c.tid))
	return err == nil && ns == c.s.netns
}

// debugOnce logs why a worker's socket could not be read: typically goinit
// lacks the right to ptrace its workers (another uid without
// CAP_SYS_PTRACE), which turns sharing off for them.
func (c call) debugOnce(err error) {
	if c.s.warnedPeer.CompareAndSwap(false, true) {
		c.s.log.Warn(fmt.Sprintf("worker %d: cannot read the address or socket it binds (%v); its binds are not shared (goinit needs CAP_SYS_PTRACE to share the ports of workers running as another user)", c.worker, err), "worker", c.worker)
		return
	}
	c.debug(fmt.Sprintf("cannot read the address or socket it binds: %v", err))
}
