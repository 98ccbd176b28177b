package portshare

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultEventBuffer is the capacity of the Events channel when
// Config.EventBuffer is 0.
const DefaultEventBuffer = 256

// Config configures a [Sharer].
type Config struct {
	// Policy says which ports are shared. Off is refused by New: with
	// sharing off, goinit needs no Sharer and installs no filter.
	Policy Policy
	// Backlog is every held socket's accept queue; 0 means
	// [DefaultBacklog]. Workers' listen() calls can raise it, never lower it.
	Backlog int
	// Logger gets one debug line per intercepted call, a warning when
	// something goinit did not expect happens, and one warning when it
	// runs in reduced mode (pidfd_getfd refused); nil discards them.
	Logger *slog.Logger
	// EventBuffer is the capacity of the Events channel; 0 means
	// DefaultEventBuffer. When it is full, events are dropped and counted.
	EventBuffer int
}

// EventKind says what an [Event] reports.
type EventKind int

const (
	// Shared: Addr is shared for the first time (a worker's bind got a
	// held socket). goinit logs it as
	// "sharing [::]:3000 between the workers; goinit holds it".
	Shared EventKind = iota + 1
	// Bound: the worker's bind to Addr got the held socket, or its own
	// socket of Addr became the held one when it listened (sent then,
	// before Listening).
	Bound
	// Listening: the worker called listen() on the held socket of Addr;
	// the server is ready for connections there (Node cluster's
	// 'listening').
	Listening
	// Detached: no process of the worker is left that could make a call
	// (its notification loop ended), or attaching failed (Err is set).
	Detached
)

func (k EventKind) String() string {
	switch k {
	case Shared:
		return "shared"
	case Bound:
		return "bound"
	case Listening:
		return "listening"
	case Detached:
		return "detached"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is something a worker did with a shared port.
type Event struct {
	Kind   EventKind
	Worker int // the id given to Attach
	// Pid is the calling process (thread group id): the worker, or one of
	// its descendants, which inherit the filter.
	Pid int
	// WorkerPid is the pid given to Attach: the worker whose filter the
	// caller runs under, which a descendant's listen() makes ready.
	WorkerPid int
	Addr      netip.AddrPort // zero for Detached
	V6Only    bool           // Addr is an AF_INET6 socket that refuses IPv4
	// Reduced: for Shared and Bound, goinit could not read the worker's
	// socket in full (pidfd_getfd refused): the held socket was made, or
	// chosen, by the reduced-mode rule. See [Sharer.Reduced].
	Reduced bool
	Err     error // for Detached: why attaching failed, if it did
}

// Sharer shares the ports unmodified workers bind. It holds one listening
// socket per exact address for its whole life and answers every worker's
// intercepted bind, listen and shutdown from one goroutine per worker. Its
// methods never block on a worker, so the supervisor loop can call them.
type Sharer struct {
	policy     Policy
	log        *slog.Logger
	table      *table
	events     chan Event
	dropped    atomic.Uint64
	warnedPeer atomic.Bool // the ptrace warning was logged
	// reduced is set, for good, once pidfd_getfd is known to be refused
	// (by New's probe or by a bind): the error wrapping ErrReduced.
	reduced atomic.Pointer[error]
	netns   uint64 // goinit's network namespace: held sockets live there

	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex // orders wg.Add in start against Close's wg.Wait
	closed bool
	wg     sync.WaitGroup
}

// New returns a Sharer with no held socket and no worker.
func New(cfg Config) (*Sharer, error) {
	if cfg.Policy.Mode == Off {
		return nil, fmt.Errorf("portshare: policy is off; no Sharer is needed")
	}
	if cfg.Backlog <= 0 {
		cfg.Backlog = DefaultBacklog()
	}
	if cfg.EventBuffer <= 0 {
		cfg.EventBuffer = DefaultEventBuffer
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ns, _ := netnsInode("self")
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sharer{
		policy: cfg.Policy,
		log:    cfg.Logger,
		table:  newTable(cfg.Backlog),
		events: make(chan Event, cfg.EventBuffer),
		netns:  ns,
		ctx:    ctx,
		cancel: cancel,
	}
	if err := FullFidelity(); err != nil {
		s.goReduced(err) // the warning, at start rather than at the first bind
	}
	return s, nil
}

// Events delivers what workers do with shared ports. It is never closed:
// a supervisor selects on it for as long as it runs.
func (s *Sharer) Events() <-chan Event { return s.events }

// Dropped is the number of events dropped because Events was full.
func (s *Sharer) Dropped() uint64 { return s.dropped.Load() }

// Hold makes a listening TCP socket goinit bound itself (--listen) the
// held socket of its address, so that a worker binding the same address
// itself gets it. Sharer keeps a duplicate; f stays the caller's. Its
// backlog is raised to the Sharer's.
func (s *Sharer) Hold(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("portshare: hold %s: %w", f.Name(), err)
	}
	var herr error
	if err := rc.Control(func(fd uintptr) { _, herr = s.table.hold(int(fd)) }); err != nil {
		return fmt.Errorf("portshare: hold %s: %w", f.Name(), err)
	}
	return herr
}

// Attach serves the notifications of worker (any id the caller likes;
// events carry it) started as pid, whose shim sent notif. It takes notif
// over (closing it when done) and returns at once: a goroutine answers the
// worker and every descendant until none of them is left, then sends
// Detached.
func (s *Sharer) Attach(worker, pid int, notif *os.File) {
	f, err := takePollable(notif)
	if err != nil {
		s.send(Event{Kind: Detached, Worker: worker, Pid: pid, Err: err})
		return
	}
	s.start(worker, pid, func() (*os.File, error) { return f, nil })
}

// AttachHandoff is Attach for a worker whose notification descriptor has
// not arrived yet: the worker's goroutine receives it from h within
// timeout (0 means DefaultHandoffTimeout), then serves it. A worker that
// calls bind before that simply waits. If nothing arrives, the event is
// Detached with Err set.
func (s *Sharer) AttachHandoff(worker, pid int, h *Handoff, timeout time.Duration) {
	if timeout <= 0 {
		timeout = DefaultHandoffTimeout
	}
	h.Started()
	s.start(worker, pid, func() (*os.File, error) {
		ctx, cancel := context.WithTimeout(s.ctx, timeout)
		defer cancel()
		return h.Receive(ctx)
	})
}

func (s *Sharer) start(worker, pid int, open func() (*os.File, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		if f, err := open(); err == nil {
			f.Close()
		}
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		notif, err := open()
		if err != nil {
			s.send(Event{Kind: Detached, Worker: worker, Pid: pid, Err: err})
			return
		}
		l := &loop{s: s, worker: worker, pid: pid}
		err = l.run(notif)
		s.send(Event{Kind: Detached, Worker: worker, Pid: pid, Err: err})
	}()
}

// Close stops every worker's loop and closes every held socket. A worker
// still running afterwards gets ENOSYS from its next bind, listen or
// trapped shutdown: stop the workers first. Close waits only for goinit's
// own goroutines, each of which ends at once.
func (s *Sharer) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.table.close()
	return nil
}

// send delivers e without ever blocking a notification loop.
func (s *Sharer) send(e Event) {
	select {
	case s.events <- e:
	default:
		s.dropped.Add(1)
	}
}

// takePollable replaces notif by a duplicate that Go's poller can wait on
// (a descriptor must be non-blocking before os.NewFile to be pollable),
// and closes notif.
func takePollable(notif *os.File) (*os.File, error) {
	defer notif.Close()
	rc, err := notif.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("portshare: notification descriptor: %w", err)
	}
	dup := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("portshare: notification descriptor: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("portshare: notification descriptor: %w", derr)
	}
	return pollable(dup, "seccomp-notify")
}

// String is the event as a log line, e.g.
// "sharing [::]:3000 between the workers; goinit holds it".
func (e Event) String() string {
	addr := e.Addr.String()
	if e.V6Only {
		addr += " (v6only)"
	}
	reduced := ""
	if e.Reduced {
		reduced = " (reduced mode: v6only and socket options not read from the worker)"
	}
	switch e.Kind {
	case Shared:
		return "sharing " + addr + " between the workers; goinit holds it" + reduced
	case Bound:
		return fmt.Sprintf("worker %d (pid %d) bound %s: it got goinit's held socket", e.Worker, e.Pid, addr) + reduced
	case Listening:
		return fmt.Sprintf("worker %d (pid %d) listens on %s", e.Worker, e.Pid, addr)
	case Detached:
		if e.Err != nil {
			return fmt.Sprintf("worker %d (pid %d): its binds are not shared: %v", e.Worker, e.Pid, e.Err)
		}
		return fmt.Sprintf("worker %d (pid %d) and its descendants are gone", e.Worker, e.Pid)
	}
	return e.Kind.String()
}

// HeldSocket is one listening socket goinit holds for the workers.
type HeldSocket struct {
	// Addr is its address, "[::]:3000" or "0.0.0.0:3000 (v6only)".
	Addr string
	// Inode is the socket's inode, which /proc/net/tcp* rows name.
	Inode uint64
}

// Held lists the sockets held now, sorted by address, for status and
// metrics (the accept queue of each).
func (s *Sharer) Held() []HeldSocket {
	s.table.mu.Lock()
	defer s.table.mu.Unlock()
	out := make([]HeldSocket, 0, len(s.table.byKey))
	for k, h := range s.table.byKey {
		out = append(out, HeldSocket{Addr: k.String(), Inode: h.ino})
	}
	slices.SortFunc(out, func(a, b HeldSocket) int { return strings.Compare(a.Addr, b.Addr) })
	return out
}
