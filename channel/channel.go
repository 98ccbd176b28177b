package channel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// MaxLine is the longest line, in bytes without its newline, that goinit
// reads from a child. Longer lines are dropped and counted.
const MaxLine = 1 << 20

// Defaults for [Options].
const (
	// DefaultQueueLen is how many messages may wait to be written to one
	// child.
	DefaultQueueLen = 256
	// DefaultQueueBytes is how many bytes may wait to be written to one
	// child: four lines of MaxLine, so one full-size message always fits.
	DefaultQueueBytes = 4 * MaxLine
	// DefaultEvents is the capacity of the channel [Hub.Events] returns.
	// Each event holds at most one line, so goinit holds at most
	// DefaultEvents*MaxLine bytes of events the supervisor has not taken.
	DefaultEvents = 64
)

// The environment variables [Env] sets.
const (
	EnvFD            = "GOINIT_IPC_FD"
	EnvNodeFD        = "NODE_CHANNEL_FD"
	EnvNodeSerialize = "NODE_CHANNEL_SERIALIZATION_MODE"
)

// Env returns the variables that tell a child its channel is descriptor fd.
func Env(fd int) []string {
	n := strconv.Itoa(fd)
	return []string{EnvFD + "=" + n, EnvNodeFD + "=" + n, EnvNodeSerialize + "=json"}
}

// Options configures a [Hub]. The zero value uses the defaults.
type Options struct {
	// QueueLen bounds the messages waiting to be written to one child;
	// 0 means DefaultQueueLen.
	QueueLen int
	// QueueBytes bounds the bytes waiting to be written to one child;
	// 0 means DefaultQueueBytes. A message larger than this is dropped.
	QueueBytes int
	// Events is the capacity of the events channel; 0 means DefaultEvents.
	Events int
	// Logger receives debug lines about dropped input; nil discards them.
	Logger *slog.Logger
}

// Hub creates the channels of one goinit and gathers their events on one Go
// channel. K names a process (a worker id, the agent); it is opaque here.
// Its methods may be called from any goroutine.
type Hub[K comparable] struct {
	opts   Options
	log    *slog.Logger
	events chan Event[K]
	total  counters
}

// NewHub returns a Hub with opts.
func NewHub[K comparable](opts Options) *Hub[K] {
	if opts.QueueLen <= 0 {
		opts.QueueLen = DefaultQueueLen
	}
	if opts.QueueBytes <= 0 {
		opts.QueueBytes = DefaultQueueBytes
	}
	if opts.Events <= 0 {
		opts.Events = DefaultEvents
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub[K]{opts: opts, log: log, events: make(chan Event[K], opts.Events)}
}

// Events returns the channel on which every connection's events arrive.
// The supervisor selects on it; it is never closed.
func (h *Hub[K]) Events() <-chan Event[K] { return h.events }

// Stats returns the counters summed over every connection the hub opened.
func (h *Hub[K]) Stats() Stats { return h.total.load() }

// Open creates the channel of the process named key. It returns goinit's
// end, already being read, and the child's end, to pass in
// exec.Cmd.ExtraFiles. The caller must close the child's end once the child
// has started (or failed to): while goinit holds a copy, the child's exit
// is never seen as end of file.
func (h *Hub[K]) Open(key K) (*Conn[K], *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("channel for %v: socketpair: %w", key, err)
	}
	own := os.NewFile(uintptr(fds[0]), fmt.Sprintf("goinit-ipc-%v", key))
	child := os.NewFile(uintptr(fds[1]), fmt.Sprintf("goinit-ipc-%v-child", key))
	// FileConn dups the descriptor into the runtime's poller, so that
	// Close wakes a reader or writer blocked on a silent child.
	nc, err := net.FileConn(own)
	own.Close()
	if err != nil {
		child.Close()
		return nil, nil, fmt.Errorf("channel for %v: %w", key, err)
	}
	c := &Conn[K]{
		key:     key,
		hub:     h,
		conn:    nc.(*net.UnixConn),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		maxLen:  h.opts.QueueLen,
		maxSize: h.opts.QueueBytes,
	}
	c.wg.Add(2)
	go c.read()
	go c.write()
	return c, child, nil
}

// Stats are a channel's counters, for metrics. Every field only grows.
type Stats struct {
	// Received counts lines read that were valid JSON, unknown ones included.
	Received uint64
	// Sent counts messages written to the child in full.
	Sent uint64
	// DroppedInvalid counts lines read that were not JSON.
	DroppedInvalid uint64
	// DroppedOversize counts lines read longer than MaxLine, and messages
	// given to Send larger than the queue's byte bound.
	DroppedOversize uint64
	// DroppedQueueFull counts queued messages dropped to make room.
	DroppedQueueFull uint64
	// DroppedClosed counts messages given to Send after Close or after the
	// child stopped reading for good, and messages still queued then.
	DroppedClosed uint64
	// Unknown counts valid JSON lines that were not ready, ping or a
	// message.
	Unknown uint64
	// Closed counts connections the child ended (end of file or error).
	Closed uint64
}

// stat indexes counters.
type stat int

const (
	statReceived stat = iota
	statSent
	statInvalid
	statOversize
	statFull
	statClosedDrop
	statUnknown
	statClosed
	numStats
)

// counters is Stats, updated from several goroutines.
type counters [numStats]atomic.Uint64

func (c *counters) load() Stats {
	return Stats{
		Received: c[statReceived].Load(), Sent: c[statSent].Load(),
		DroppedInvalid: c[statInvalid].Load(), DroppedOversize: c[statOversize].Load(),
		DroppedQueueFull: c[statFull].Load(), DroppedClosed: c[statClosedDrop].Load(),
		Unknown: c[statUnknown].Load(), Closed: c[statClosed].Load(),
	}
}

// validLine reports whether b may be written to a child: one JSON value and
// no newline inside it, since Node ends the worker on a line it cannot parse.
func validLine(b []byte) bool {
	return bytes.IndexByte(b, '\n') < 0 && json.Valid(b)
}
