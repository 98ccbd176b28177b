package listen

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
)

// Sets holds the parent's listening sockets for a pool of workers: one set
// (a socket per address, in addrs order) for all of them, or, with
// SO_REUSEPORT, one set per starting worker slot, every set bound to the
// same addresses and ports so that the kernel spreads new connections over
// the slots' own accept queues. Worker id uses set id modulo [Sets.Len], so
// workers added beyond the starting count share the sets there are.
//
// Set 0 is never closed: it is the set [Env] describes, and the one a
// parent may hand out for other uses too (goinit's port sharer does). A
// later set can be closed once no worker uses it ([Sets.CloseUnused], after
// a scale-down) and bound again ([Sets.Reopen], before a scale-up). A Unix
// socket has one path and so one socket: every set holds set 0's Unix
// sockets, and closing a set never closes them.
//
// Closing a TCP listener that shares its port resets the connections
// queued on it (and those still in the handshake), unless the kernel
// migrates them to another listener of the SO_REUSEPORT group, which it
// does when net.ipv4.tcp_migrate_req is 1 ([TCPMigrateReq]). A closed UDP
// socket loses the datagrams in its buffer; new ones go to the others.
//
// A Sets is meant for one goroutine.
type Sets struct {
	addrs     []Addr
	reusePort bool
	sets      [][]*os.File // a closed set is nil
}

// OpenSets binds n sets of addrs with [Open]: n = 1 without reusePort (one
// socket per address, shared by every worker), any n >= 1 with it. The
// sets after the first are bound to the ports the first got, so that a
// ":0" address shares one kernel-chosen port. On error nothing stays open
// and the error is the *[OpenError].
func OpenSets(ctx context.Context, addrs []Addr, n int, reusePort bool) (*Sets, error) {
	if n < 1 || n > 1 && !reusePort {
		return nil, fmt.Errorf("listen: %d socket sets without SO_REUSEPORT; want 1, or SO_REUSEPORT", n)
	}
	s := &Sets{addrs: addrs, reusePort: reusePort, sets: make([][]*os.File, n)}
	for set := range n {
		if err := s.open(ctx, set); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// open binds set, which is closed; on error it leaves it closed.
func (s *Sets) open(ctx context.Context, set int) error {
	files := make([]*os.File, 0, len(s.addrs))
	for i, a := range s.addrs {
		if set > 0 && a.Network == "unix" {
			files = append(files, s.sets[0][i])
			continue
		}
		if set > 0 {
			a = samePort(a, s.sets[0][i])
		}
		f, err := Open(ctx, a, s.reusePort && a.Network != "unix")
		if err != nil {
			closeOwn(s.addrs, set, files)
			return err
		}
		files = append(files, f)
	}
	s.sets[set] = files
	return nil
}

// Len is the number of sets, open or closed.
func (s *Sets) Len() int { return len(s.sets) }

// Files returns the sockets for worker id, in addrs order: its set's, or
// set 0's while its set is closed. The caller re-opens a set before it
// starts a worker of it; the fallback only keeps a worker from ever
// starting without sockets, which it would take for a broken activation.
func (s *Sets) Files(id int) []*os.File {
	if f := s.sets[id%len(s.sets)]; f != nil {
		return f
	}
	return s.sets[0]
}

// IsOpen reports whether the set of worker id is open.
func (s *Sets) IsOpen(id int) bool { return s.sets[id%len(s.sets)] != nil }

// Reopen binds the set of worker id again if [Sets.CloseUnused] closed it,
// with SO_REUSEPORT on the same addresses and ports as set 0, so that it
// joins set 0's SO_REUSEPORT group. An open set is left as it is. The
// error names the set and wraps the *[OpenError].
func (s *Sets) Reopen(ctx context.Context, id int) error {
	set := id % len(s.sets)
	if s.sets[set] != nil {
		return nil
	}
	if err := s.open(ctx, set); err != nil {
		return fmt.Errorf("re-open socket set %d: %w", set, err)
	}
	return nil
}

// CloseUnused closes every set after the first that none of the worker ids
// inUse maps to, so that its worker slot's sockets leave their
// SO_REUSEPORT groups, and returns the sets it closed, in order. Only a
// set's own sockets are closed, not the Unix sockets it shares with set 0.
func (s *Sets) CloseUnused(inUse []int) []int {
	used := make([]bool, len(s.sets))
	for _, id := range inUse {
		used[id%len(s.sets)] = true
	}
	var closed []int
	for set := 1; set < len(s.sets); set++ {
		if used[set] || s.sets[set] == nil {
			continue
		}
		closeOwn(s.addrs, set, s.sets[set])
		s.sets[set] = nil
		closed = append(closed, set)
	}
	return closed
}

// PerSlotTCP reports whether the sets after the first have TCP sockets of
// their own: closing one of those resets the connections queued on it
// unless the kernel migrates them ([TCPMigrateReq]).
func (s *Sets) PerSlotTCP() bool {
	if len(s.sets) < 2 {
		return false
	}
	for _, a := range s.addrs {
		if isTCP(a.Network) {
			return true
		}
	}
	return false
}

// Close closes every socket of every set, each once.
func (s *Sets) Close() {
	for set := len(s.sets) - 1; set >= 0; set-- {
		closeOwn(s.addrs, set, s.sets[set])
		s.sets[set] = nil
	}
}

// closeOwn closes the sockets of set in files (addrs order, possibly fewer
// than addrs) that are its own, not set 0's shared Unix sockets. close(2)
// of a socket frees the descriptor whatever it returns: nothing to retry.
func closeOwn(addrs []Addr, set int, files []*os.File) {
	for i, f := range files {
		if set == 0 || addrs[i].Network != "unix" {
			f.Close()
		}
	}
}

// samePort returns a with the port the kernel chose for first, so that the
// per-worker sockets of a ":0" address all share one port.
func samePort(a Addr, first *os.File) Addr {
	host, port, err := net.SplitHostPort(a.Address)
	if err != nil || port != "0" {
		return a
	}
	bound, err := BoundAddr(first)
	if err != nil {
		return a
	}
	switch b := bound.(type) {
	case *net.TCPAddr:
		a.Address = net.JoinHostPort(host, strconv.Itoa(b.Port))
	case *net.UDPAddr:
		a.Address = net.JoinHostPort(host, strconv.Itoa(b.Port))
	}
	return a
}

// migrateReqPath is net.ipv4.tcp_migrate_req of the reading thread's
// network namespace.
const migrateReqPath = "/proc/sys/net/ipv4/tcp_migrate_req"

// TCPMigrateReq reports whether net.ipv4.tcp_migrate_req is 1 in the
// caller's network namespace (Linux 5.14 and later): then a TCP listener
// of a SO_REUSEPORT group that is closed hands the connections queued on
// it, and those in the handshake, to another listener of the group instead
// of resetting them. It only reads the setting: in a container it is the
// runtime's to set (docker run --sysctl, a pod's securityContext.sysctls).
func TCPMigrateReq() (bool, error) { return readMigrateReq(migrateReqPath) }

func readMigrateReq(path string) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, errors.New("this kernel has no net.ipv4.tcp_migrate_req: it needs Linux 5.14 or later")
	}
	if err != nil {
		return false, fmt.Errorf("read net.ipv4.tcp_migrate_req: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if v != "0" && v != "1" {
		return false, fmt.Errorf("net.ipv4.tcp_migrate_req is %q, want 0 or 1", v)
	}
	return v == "1", nil
}
