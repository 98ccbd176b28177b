package portshare

import (
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A worker's bind of a shared address that goinit holds no socket for yet
// binds the worker's own socket, and goinit notes where that socket is
// ([table.bindShared]). When it listens, goinit takes a copy of it and
// holds it from then on ([table.adopt]): the first listener's own socket,
// with every option it set, is the one every later bind of the address
// gets. A socket that is bound but never listens (a client that binds a
// fixed local port before connect, a bind-and-close probe of whether a
// port is free) is not held, so it behaves as it would without goinit,
// unless another worker's bind of the same address would fail because of
// it (EADDRINUSE): then the two share it, and goinit holds it.

// maxNotes bounds the sockets noted as bound but not listening yet;
// past it, the notes of sockets that are gone, or connected (a client's),
// are dropped, and then a new one is not noted: that socket's listen is
// the kernel's, not shared.
const maxNotes = 256

// note is a worker's own socket bound to a shared address that
// does not listen yet: where it is, to find it again.
type note struct {
	key  key
	tgid int // the process that bound it
	fd   int // its descriptor there
}

// noteLocked notes that process tgid bound its own socket ino, at
// descriptor fd, to k. The caller holds t.mu.
func (t *table) noteLocked(k key, ino uint64, tgid, fd int) {
	if len(t.notes) >= maxNotes {
		for i, e := range t.notes {
			if !live(i, e) {
				delete(t.notes, i)
			}
		}
	}
	if len(t.notes) < maxNotes {
		t.notes[ino] = note{key: k, tgid: tgid, fd: fd}
	}
}

// live reports whether the noted socket ino is still where the note says
// and not connected: one that may yet listen.
func live(ino uint64, e note) bool {
	if got, ok := socketInode(e.tgid, e.fd); !ok || got != ino {
		return false
	}
	dup, err := copyFD(e.tgid, e.fd)
	if err != nil {
		return false
	}
	defer unix.Close(dup)
	return !connected(dup)
}

// listenState returns, in one look under the lock (a promotion by another
// worker's bind moves a socket from noted to held), the held socket with
// inode ino, or else its note, if it was bound to a shared address.
func (t *table) listenState(ino uint64) (h *held, e note, noted bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if h := t.byIno[ino]; h != nil {
		return h, note{}, false
	}
	e, noted = t.notes[ino]
	return nil, e, noted
}

// boundKey returns the key socket ino was bound to through goinit: as a
// held socket, or as a noted one.
func (t *table) boundKey(ino uint64) (key, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if h := t.byIno[ino]; h != nil {
		return h.key, true
	}
	e, ok := t.notes[ino]
	return e.key, ok
}

// forget drops the note of socket ino.
func (t *table) forget(ino uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.notes, ino)
}

// bindShared decides a full-mode bind of the worker's socket peer (goinit's
// copy of it, at descriptor fd of process tgid) to k, under the table's
// lock, so that two workers binding k at once are decided one after the
// other:
//
//   - k is held: that socket is returned, for the caller to install.
//   - otherwise goinit binds the worker's own socket itself, with the
//     sockaddr the worker passed (raw), notes it, and returns nil: the
//     caller answers the bind 0, or with the bind's errno, exactly as the
//     kernel would have for the worker. Binding it here rather than letting
//     the worker's call go on is what orders it before any later bind of k.
//   - if that bind fails with EADDRINUSE because another worker's own
//     socket is bound to k and not listening yet (one of them without
//     SO_REUSEADDR), goinit holds that one from now on and returns it.
//     With SO_REUSEADDR on both, both binds succeed, and the second to
//     listen is given the first's socket then (adopt).
//
// how says, for the debug line, what was done.
func (t *table) bindShared(k key, peer *peerSocket, raw []byte, tgid, fd int) (h *held, how string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, "", errClosed
	}
	if h := t.lookup(k); h != nil {
		return h, "given the held socket", nil
	}
	err = rawBind(peer.fd, raw)
	if err == unix.EADDRINUSE {
		// Another worker's own socket of k, bound and not listening
		// yet (without SO_REUSEADDR on both): the two share it.
		if dup, ino, ok := t.boundLocked(k, peer.ino); ok {
			h, aerr := t.adoptLocked(k, dup, ino, 0)
			if aerr == nil {
				return h, "given another worker's socket of that address, which goinit now holds", nil
			}
			unix.Close(dup)
		}
	}
	if err != nil {
		return nil, "", err
	}
	t.noteLocked(k, peer.ino, tgid, fd)
	return nil, "goinit bound the worker's own socket, which it holds once it listens", nil
}

// rawBind binds socket fd to the sockaddr bytes a worker passed to bind(2),
// unchanged, so that nothing of the worker's address is lost in decoding.
func rawBind(fd int, sa []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&sa[0])), uintptr(len(sa)))
	if errno != 0 {
		return errno
	}
	return nil
}

// boundLocked takes a copy of a socket other than except that some worker
// bound to k itself and that does not listen yet, for a second bind of k,
// which the kernel would refuse while that socket is bound (unless both set
// SO_REUSEADDR): the two workers are to share it. Notes of sockets that
// have been closed, replaced or connected are dropped. The caller holds
// t.mu.
func (t *table) boundLocked(k key, except uint64) (fd int, ino uint64, ok bool) {
	for i, e := range t.notes {
		if e.key != k || i == except {
			continue
		}
		dup, err := copyFD(e.tgid, e.fd)
		if err != nil {
			delete(t.notes, i)
			continue
		}
		if sameSocket(dup, i) && !connected(dup) && boundTo(dup, k) {
			return dup, i, true
		}
		unix.Close(dup)
		delete(t.notes, i)
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
	delete(t.notes, ino)
	if t.closed {
		return nil, false, errClosed
	}
	if h := t.lookup(k); h != nil {
		return h, false, nil
	}
	h, err = t.adoptLocked(k, fd, ino, backlog)
	return h, err == nil, err
}

// adoptLocked is adopt for a k that is not held. The caller holds t.mu.
func (t *table) adoptLocked(k key, fd int, ino uint64, backlog int) (*held, error) {
	delete(t.notes, ino)
	backlog = max(backlog, t.backlog)
	if err := unix.Listen(fd, backlog); err != nil {
		return nil, err
	}
	h := &held{key: k, fd: fd, ino: ino, backlog: backlog}
	t.add(h)
	return h, nil
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

// connected reports whether socket fd has a peer: a client's socket, never
// to be shared. (One still connecting reads as not connected; listen() on
// it fails, and so would sharing it.)
func connected(fd int) bool {
	_, err := unix.Getpeername(fd)
	return err != unix.ENOTCONN
}
