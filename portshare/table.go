package portshare

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// DefaultBacklogFallback is goinit's backlog for held sockets when
// /proc/sys/net/core/somaxconn cannot be read (it is 4096 since Linux 5.4).
const DefaultBacklogFallback = 4096

// DefaultBacklog returns the backlog of a held socket when Config.Backlog
// is 0: net.core.somaxconn, the most the kernel grants, which is also what
// Go's own listeners ask for. A worker's listen() can raise it (up to
// somaxconn) but never lower it.
func DefaultBacklog() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		return DefaultBacklogFallback
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return DefaultBacklogFallback
	}
	return n
}

// held is one listening socket goinit keeps for its whole life.
type held struct {
	key       key
	fd        int
	ino       uint64
	backlog   int  // the largest asked for so far
	announced bool // a Shared event was sent
}

// table is the set of held sockets. Each worker's notification loop runs
// in its own goroutine, so the table is the one piece of state they share,
// behind one mutex; lookups and creations are short system calls.
type table struct {
	mu    sync.Mutex
	byKey map[key]*held
	byIno map[uint64]*held
	// notes are the workers' own sockets bound to a shared address
	// that do not listen yet, by inode (see adopt.go).
	notes   map[uint64]note
	backlog int
	closed  bool
}

func newTable(backlog int) *table {
	return &table{byKey: map[key]*held{}, byIno: map[uint64]*held{}, notes: map[uint64]note{}, backlog: backlog}
}

// errClosed is returned once the table has been closed.
var errClosed = fmt.Errorf("portshare: closed")

// get returns the held socket for k in reduced mode (goinit has no copy
// of the worker's socket peer to adopt), creating one like it when there
// is none. created says it was made now. A failure to bind
// the new socket is returned as the bare errno, for the worker's bind to
// fail with, exactly as its own bind would have: the kernel judges the
// new socket against every held one, which are bound and listening as the
// workers' sockets would be (so AF_INET 0.0.0.0:P against a dual-stack
// [::]:P is EADDRINUSE, and against a v6only [::]:P it is fine).
func (t *table) get(k key, peer *peerSocket) (h *held, created bool, opts []string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, false, nil, errClosed
	}
	if peer.reduced && k.family == unix.AF_INET6 {
		// The worker's IPV6_V6ONLY is unknown: any held socket of its
		// address is the one, whatever its v6only; a new one gets the
		// reduced-mode rule's.
		for _, v := range []bool{false, true} {
			k.v6only = v
			if h := t.lookup(k); h != nil {
				return h, false, nil, nil
			}
		}
		k.v6only = t.reducedV6Only(k)
	}
	if h := t.lookup(k); h != nil {
		return h, false, nil, nil
	}
	h, opts, err = t.create(k)
	if err != nil {
		return nil, false, nil, err
	}
	t.add(h)
	return h, true, opts, nil
}

// lookup finds the held socket of k. TCP and MPTCP are one address space:
// a Go worker (MPTCP since Go 1.24) binding the port of a TCP socket held
// for --listen or for a Node worker gets that socket, where its own bind
// would only collide with goinit's.
func (t *table) lookup(k key) *held {
	if h := t.byKey[k]; h != nil {
		return h
	}
	other := k
	other.proto = unix.IPPROTO_TCP
	if k.proto == unix.IPPROTO_TCP {
		other.proto = unix.IPPROTO_MPTCP
	}
	return t.byKey[other]
}

func (t *table) add(h *held) {
	t.byKey[h.key] = h
	t.byIno[h.ino] = h
}

// create makes, binds and listens a new held socket of k, with the
// reduced-mode options.
func (t *table) create(k key) (*held, []string, error) {
	fd, err := unix.Socket(k.family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, k.proto)
	if err != nil {
		return nil, nil, err
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if k.family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, boolInt(k.v6only)); err != nil {
			return nil, nil, err
		}
	}
	set, failed := reducedOptions(fd)
	if err := unix.Bind(fd, k.sockaddr()); err != nil {
		return nil, nil, err
	}
	if err := unix.Listen(fd, t.backlog); err != nil {
		return nil, nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, nil, err
	}
	ok = true
	for _, f := range failed {
		set = append(set, f+" (not supported here; left at the default)")
	}
	return &held{key: k, fd: fd, ino: st.Ino, backlog: t.backlog}, set, nil
}

// hold adds a socket goinit bound itself (--listen): a duplicate of fd,
// which must be a listening TCP or MPTCP socket.
func (t *table) hold(fd int) (key, error) {
	k, err := listeningKey(fd)
	if err != nil {
		return k, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return k, errClosed
	}
	if t.byKey[k] != nil {
		return k, fmt.Errorf("portshare: %s is already held", k)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return k, fmt.Errorf("portshare: hold %s: %w", k, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(dup, &st); err != nil {
		unix.Close(dup)
		return k, fmt.Errorf("portshare: hold %s: %w", k, err)
	}
	// Raise (never lower) its queue to goinit's backlog, as for any held
	// socket; listen() on a listening socket only changes the backlog.
	if err := unix.Listen(dup, t.backlog); err != nil {
		unix.Close(dup)
		return k, fmt.Errorf("portshare: hold %s: %w", k, err)
	}
	t.add(&held{key: k, fd: dup, ino: st.Ino, backlog: t.backlog})
	return k, nil
}

// listeningKey returns the key of a listening stream socket.
func listeningKey(fd int) (key, error) {
	var k key
	if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || acc == 0 {
		return k, fmt.Errorf("portshare: descriptor %d is not a listening socket", fd)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err == nil {
		k.proto, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	}
	if err != nil || typ != unix.SOCK_STREAM || (k.proto != unix.IPPROTO_TCP && k.proto != unix.IPPROTO_MPTCP) {
		return k, fmt.Errorf("portshare: descriptor %d is not a TCP socket", fd)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return k, fmt.Errorf("portshare: getsockname: %w", err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		k.family, k.addr = unix.AF_INET, netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		k.family, k.addr, k.scopeID = unix.AF_INET6, netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)), a.ZoneId
		v, _ := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		k.v6only = v != 0
	default:
		return k, fmt.Errorf("portshare: descriptor %d is not an IP socket", fd)
	}
	return k, nil
}

// byInode returns the held socket with this inode, if any.
func (t *table) byInode(ino uint64) *held {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byIno[ino]
}

// raiseBacklog applies a worker's listen(backlog) to h: the queue becomes
// the largest backlog asked for, never smaller (Python asks for 5).
func (t *table) raiseBacklog(h *held, backlog int) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if backlog <= h.backlog {
		return h.backlog, nil
	}
	if err := unix.Listen(h.fd, backlog); err != nil {
		return h.backlog, err
	}
	h.backlog = backlog
	return backlog, nil
}

// announce reports whether h is being shared for the first time.
func (t *table) announce(h *held) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	first := !h.announced
	h.announced = true
	return first
}

// close closes every held socket; later calls of get and hold fail.
func (t *table) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, h := range t.byKey {
		unix.Close(h.fd)
	}
	clear(t.byKey)
	clear(t.byIno)
	clear(t.notes)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
