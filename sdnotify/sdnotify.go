package sdnotify

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// EnvSocket is the variable that tells a process where to send.
const EnvSocket = "NOTIFY_SOCKET"

// MaxDatagram is the longest message accepted, in bytes: systemd's
// NOTIFY_BUFFER_MAX, so what systemd accepts goinit accepts.
const MaxDatagram = 4096

// maxFDs is how many descriptors one datagram may bring (SCM_MAX_FD);
// the kernel closes any beyond the room given for them.
const maxFDs = 253

// DefaultEvents is the capacity of the channel [Hub.Events] returns.
const DefaultEvents = 64

// Options configures a [Hub]. The zero value uses the defaults.
type Options struct {
	// Events is the capacity of the events channel; 0 means DefaultEvents.
	Events int
	// Logger receives rejected senders (warning) and dropped datagrams
	// (debug); nil discards them.
	Logger *slog.Logger
}

// Hub creates the notify sockets of one goinit and gathers their events on
// one Go channel. K names a process (a worker id, the agent); it is opaque
// here. Its methods may be called from any goroutine.
type Hub[K comparable] struct {
	log    *slog.Logger
	events chan Event[K]
	total  counters
	pid    int
}

// NewHub returns a Hub with opts.
func NewHub[K comparable](opts Options) *Hub[K] {
	if opts.Events <= 0 {
		opts.Events = DefaultEvents
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub[K]{log: log, events: make(chan Event[K], opts.Events), pid: os.Getpid()}
}

// Events returns the channel on which every socket's accepted messages
// arrive. The supervisor selects on it; it is never closed.
func (h *Hub[K]) Events() <-chan Event[K] { return h.events }

// Stats returns the counters summed over every socket the hub opened.
func (h *Hub[K]) Stats() Stats { return h.total.load() }

// Open creates the notify socket of one start of the process named key.
// Give each start its own socket: a leftover of an earlier start cannot
// then speak for the new one.
func (h *Hub[K]) Open(key K) (*Socket[K], error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	name := fmt.Sprintf("goinit-%d-%s", h.pid, hex.EncodeToString(rnd[:]))
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("notify socket for %v: %w", key, err)
	}
	// SO_PASSCRED before bind: no datagram can arrive without a pid.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("notify socket for %v: SO_PASSCRED: %w", key, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: "@" + name}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("notify socket for %v: bind @%s: %w", key, name, err)
	}
	f := os.NewFile(uintptr(fd), "notify-"+name)
	pc, err := net.FilePacketConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("notify socket for %v: %w", key, err)
	}
	s := &Socket[K]{
		key:     key,
		hub:     h,
		addr:    "@" + name,
		conn:    pc.(*net.UnixConn),
		started: make(chan struct{}),
		done:    make(chan struct{}),
	}
	s.wg.Add(1)
	go s.read()
	return s, nil
}

// Stats are notify counters, for metrics. Every field only grows.
type Stats struct {
	// Received counts datagrams read.
	Received uint64
	// Accepted counts datagrams from the process or its descendants.
	Accepted uint64
	// Rejected counts datagrams from any other process, or with no pid.
	Rejected uint64
	// RejectedGone counts, among Rejected, datagrams whose sender had
	// exited before it could be checked.
	RejectedGone uint64
	// Truncated counts datagrams longer than MaxDatagram, dropped.
	Truncated uint64
	// Barriers counts BARRIER=1 answered.
	Barriers uint64
	// FDsClosed counts descriptors received and closed.
	FDsClosed uint64
}

type stat int

const (
	statReceived stat = iota
	statAccepted
	statRejected
	statGone
	statTruncated
	statBarriers
	statFDs
	numStats
)

// counters is Stats, updated from several goroutines.
type counters [numStats]atomic.Uint64

func (c *counters) load() Stats {
	return Stats{
		Received: c[statReceived].Load(), Accepted: c[statAccepted].Load(),
		Rejected: c[statRejected].Load(), RejectedGone: c[statGone].Load(),
		Truncated: c[statTruncated].Load(), Barriers: c[statBarriers].Load(),
		FDsClosed: c[statFDs].Load(),
	}
}
