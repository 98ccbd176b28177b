package portshare

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// A worker's bind of a shared address that goinit holds no socket for yet
// is the kernel's: the worker binds its own socket, and goinit only notes
// where that socket is ([table.expect]). When it listens, goinit takes a
// copy of it and holds it from then on ([table.adopt]): the first
// listener's own socket, with every option it set, is the one every later
// bind of the address gets. A socket that is bound but never listens (a
// client that binds a fixed local port before connect, a bind-and-close
// probe of whether a port is free) is never held, so it behaves exactly
// as it would without goinit.

// maxExpected bounds the sockets noted as bound but not listening yet;
// past it, the notes of sockets that are gone are dropped.
const maxExpected = 64

// expectation is a worker's own socket bound to a shared address that
// does not listen yet: where it is, to find it again.
type expectation struct {
	key  key
	tgid int // the process that bound it
	fd   int // its descriptor there
}

// expect notes that process tgid binds its own socket ino, at descriptor
// fd, to k.
func (t *table) expect(k key, ino uint64, tgid, fd int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	if len(t.expected) >= maxExpected {
		for i, e := range t.expected {
			if got, ok := socketInode(e.tgid, e.fd); !ok || got != i {
				delete(t.expected, i)
			}
		}
	}
	if len(t.expected) < maxExpected {
		t.expected[ino] = expectation{key: k, tgid: tgid, fd: fd}
	}
}

// expectation returns the note of socket ino, if it was bound to a shared
// address and does not listen yet.
func (t *table) expectationOf(ino uint64) (expectation, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.expected[ino]
	return e, ok
}

// forget drops the note of socket ino.
func (t *table) forget(ino uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.expected, ino)
}

// bound takes a copy of a socket other than except that some worker bound
// to k itself and that does not listen yet, for a second bind of k, which
// the kernel would refuse while that socket is bound (unless both set
// SO_REUSEADDR): the two workers are to share it. A socket that has been
// closed, replaced or connected is dropped. One whose bind has not
// happened yet (two workers binding at once) is skipped but kept: it may
// still listen, and then be adopted, or be given the held socket if the
// other listens first.
func (t *table) bound(k key, except uint64) (fd int, ino uint64, ok bool) {
	t.mu.Lock()
	var candidates []uint64
	for i, e := range t.expected {
		if e.key == k && i != except {
			candidates = append(candidates, i)
		}
	}
	notes := make([]expectation, len(candidates))
	for n, i := range candidates {
		notes[n] = t.expected[i]
	}
	t.mu.Unlock()
	for n, i := range candidates {
		e := notes[n]
		dup, err := copyFD(e.tgid, e.fd)
		if err != nil {
			t.forget(i)
			continue
		}
		switch {
		case !sameSocket(dup, i) || connected(dup):
			t.forget(i)
		case boundTo(dup, k):
			return dup, i, true
		}
		unix.Close(dup)
	}
	return -1, 0, false
}

// adopt makes fd, goinit's copy of a worker's socket ino bound to k,
// the held socket of k, listening with the larger of backlog and goinit's.
// If k is held already (two workers bound their own sockets, both with
// SO_REUSEADDR, and the other listened first), that socket is returned
// and created is false: the caller closes fd and gives the worker the
// held one. A failed listen is returned as the bare errno, the one the
// worker's own listen would have failed with.
func (t *table) adopt(k key, fd int, ino uint64, backlog int) (h *held, created bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.expected, ino)
	if t.closed {
		return nil, false, errClosed
	}
	if h := t.lookup(k); h != nil {
		return h, false, nil
	}
	backlog = max(backlog, t.backlog)
	if err := unix.Listen(fd, backlog); err != nil {
		return nil, false, err
	}
	h = &held{key: k, fd: fd, ino: ino, backlog: backlog}
	t.add(h)
	return h, true, nil
}

// copyFD takes a copy of descriptor fd of process tgid. A refusal of
// pidfd_getfd itself is returned as errGetfdRefused.
func copyFD(tgid, fd int) (int, error) {
	pidfd, err := unix.PidfdOpen(tgid, 0)
	if err != nil {
		if getfdRefused(err) {
			return -1, errGetfdRefused{err}
		}
		return -1, fmt.Errorf("pidfd_open(%d): %w", tgid, err)
	}
	dup, err := unix.PidfdGetfd(pidfd, fd, 0)
	unix.Close(pidfd)
	if err != nil {
		if getfdRefused(err) {
			return -1, errGetfdRefused{err}
		}
		return -1, fmt.Errorf("pidfd_getfd(%d, %d): %w", tgid, fd, err)
	}
	return dup, nil
}

// sameSocket reports whether fd is the socket with inode ino.
func sameSocket(fd int, ino uint64) bool {
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK && st.Ino == ino
}

// boundTo reports whether socket fd is bound to k's address and port.
func boundTo(fd int, k key) bool {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return false
	}
	var ap netip.AddrPort
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		ap = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		ap = netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	default:
		return false
	}
	return ap == k.addr
}

// connected reports whether socket fd has a peer (or is connecting): a
// client's socket, never to be shared.
func connected(fd int) bool {
	_, err := unix.Getpeername(fd)
	return err != unix.ENOTCONN
}
