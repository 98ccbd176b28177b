package channel

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// readBuffer is the reader's buffer; lines longer than it are gathered
// piece by piece, up to MaxLine.
const readBuffer = 64 << 10

// Conn is goinit's end of one child's channel. Send and Close may be called
// from any goroutine and return at once.
type Conn[K comparable] struct {
	key  K
	hub  *Hub[K]
	conn *net.UnixConn

	mu      sync.Mutex
	queue   [][]byte // lines waiting for the writer, oldest first
	size    int      // bytes in queue
	closed  bool     // Close was called, or the child stopped reading
	maxLen  int
	maxSize int

	wake  chan struct{} // capacity 1: the queue is no longer empty
	done  chan struct{} // closed by Close
	once  sync.Once
	wg    sync.WaitGroup
	stats counters
}

// Key returns the name the connection was opened with.
func (c *Conn[K]) Key() K { return c.key }

// Stats returns this connection's counters.
func (c *Conn[K]) Stats() Stats { return c.stats.load() }

func (c *Conn[K]) count(s stat) {
	c.stats[s].Add(1)
	c.hub.total[s].Add(1)
}

// Send queues line, one JSON value without its newline, to be written to
// the child, and returns at once. It reports whether the line was queued:
// false when it is not a single valid JSON line (which would end a Node
// worker), larger than the queue's byte bound, or the connection is closed.
// When the queue is full, the oldest queued lines are dropped to make room
// and counted. Send keeps line without copying it, so one line can be sent to many
// children; the caller must not change it afterwards.
func (c *Conn[K]) Send(line []byte) bool {
	l, ok := NewLine(line)
	if !ok {
		c.hub.log.Debug(fmt.Sprintf("channel of %v: not sending a line that is not one JSON value", c.key))
		c.count(statInvalid)
		return false
	}
	return c.SendLine(l)
}

// Line is a line checked once by NewLine, so that a message sent to many
// children (a broadcast of up to MaxLine bytes) is not validated again for
// each of them.
type Line struct{ b []byte }

// NewLine checks b as Send does; ok is false when it is not one JSON value
// without a newline.
func NewLine(b []byte) (l Line, ok bool) {
	if !validLine(b) {
		return Line{}, false
	}
	return Line{b}, true
}

// SendLine is Send for a line already checked by NewLine.
func (c *Conn[K]) SendLine(l Line) bool {
	line := l.b
	n := len(line) + 1
	if n > c.maxSize {
		c.hub.log.Debug(fmt.Sprintf("channel of %v: dropped a %d-byte message, over the %d-byte queue bound", c.key, n, c.maxSize))
		c.count(statOversize)
		return false
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.count(statClosedDrop)
		return false
	}
	dropped := 0
	for len(c.queue) > 0 && (len(c.queue) >= c.maxLen || c.size+n > c.maxSize) {
		c.size -= len(c.queue[0]) + 1
		c.queue[0] = nil
		c.queue = c.queue[1:]
		dropped++
	}
	c.queue = append(c.queue, line)
	c.size += n
	c.mu.Unlock()
	for range dropped {
		c.count(statFull)
	}
	if dropped > 0 {
		c.hub.log.Debug(fmt.Sprintf("channel of %v: queue full, dropped the %d oldest message(s); the process is not reading", c.key, dropped))
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return true
}

// Close ends the connection and both its goroutines, and discards what is
// still queued. It sends no Closed event. It is safe to call more than once.
func (c *Conn[K]) Close() error {
	var err error
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.done)
		err = c.conn.Close()
		c.wg.Wait()
		c.discard()
	})
	return err
}

// discard drops whatever is still queued, counting it.
func (c *Conn[K]) discard() {
	c.mu.Lock()
	n := len(c.queue)
	c.queue, c.size = nil, 0
	c.closed = true
	c.mu.Unlock()
	for range n {
		c.count(statClosedDrop)
	}
}

// next takes the oldest queued line, waiting for one; ok is false once the
// connection is closed.
func (c *Conn[K]) next() (line []byte, ok bool) {
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			line = c.queue[0]
			c.queue[0] = nil
			c.queue = c.queue[1:]
			c.size -= len(line) + 1
			if len(c.queue) == 0 {
				c.queue = nil // let the backing array go
			}
			c.mu.Unlock()
			return line, true
		}
		c.mu.Unlock()
		select {
		case <-c.wake:
		case <-c.done:
			return nil, false
		}
	}
}

// write is the writer goroutine: it empties the queue into the socket. A
// child that does not read blocks only this goroutine, until Close.
func (c *Conn[K]) write() {
	defer c.wg.Done()
	for {
		line, ok := c.next()
		if !ok {
			return
		}
		// Two buffers, one writev: the line itself may be shared by every
		// recipient of a broadcast, so it is never copied to add "\n".
		bufs := net.Buffers{line, []byte{'\n'}}
		if _, err := bufs.WriteTo(c.conn); err != nil {
			c.count(statClosedDrop)
			select {
			case <-c.done:
			default:
				c.hub.log.Debug(fmt.Sprintf("channel of %v: cannot write, dropping what is queued: %v", c.key, err))
			}
			c.discard()
			return
		}
		c.count(statSent)
	}
}

// read is the reader goroutine: it splits what the child writes into lines,
// classifies them and delivers events, until end of file or Close.
func (c *Conn[K]) read() {
	defer c.wg.Done()
	r := bufio.NewReaderSize(c.conn, readBuffer)
	var line []byte
	oversize := false
	for {
		chunk, err := r.ReadSlice('\n')
		if err == nil || errors.Is(err, bufio.ErrBufferFull) {
			complete := err == nil
			if complete {
				chunk = chunk[:len(chunk)-1]
			}
			if !oversize && len(line)+len(chunk) > MaxLine {
				oversize, line = true, line[:0]
			}
			if !oversize {
				line = append(line, chunk...)
			}
			if !complete {
				continue
			}
			if oversize {
				c.count(statOversize)
				c.hub.log.Debug(fmt.Sprintf("channel of %v: dropped a line longer than %d bytes", c.key, MaxLine))
			} else if !c.line(line) {
				return
			}
			oversize, line = false, line[:0]
			if cap(line) > readBuffer {
				line = nil // one long line should not pin a MiB per connection
			}
			continue
		}
		if len(line) > 0 || len(chunk) > 0 || oversize {
			c.count(statInvalid)
			c.hub.log.Debug(fmt.Sprintf("channel of %v: dropped an unterminated last line", c.key))
		}
		select {
		case <-c.done:
			return // our own Close
		default:
		}
		if errors.Is(err, io.EOF) {
			err = nil
		}
		c.count(statClosed)
		c.deliver(Event[K]{Key: c.key, Kind: Closed, Err: err})
		return
	}
}

// line handles one complete line; it returns false once Close was called.
func (c *Conn[K]) line(b []byte) bool {
	if len(b) == 0 || (len(b) == 1 && b[0] == '\r') {
		return true
	}
	if !validLine(b) {
		c.count(statInvalid)
		c.hub.log.Debug(fmt.Sprintf("channel of %v: dropped a line that is not JSON: %.80q", c.key, b))
		return true
	}
	c.count(statReceived)
	kind, to, data := classify(b)
	if kind == 0 {
		c.count(statUnknown)
		c.hub.log.Debug(fmt.Sprintf("channel of %v: dropped a line goinit does not understand: %.80q", c.key, b))
		return true
	}
	return c.deliver(Event[K]{Key: c.key, Kind: kind, To: to, Data: data})
}

// deliver hands ev to the supervisor, waiting for room: dropping a "ready"
// would fail a start. It returns false if Close came first.
func (c *Conn[K]) deliver(ev Event[K]) bool {
	select {
	case c.hub.events <- ev:
		return true
	case <-c.done:
		return false
	}
}
