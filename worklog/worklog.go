package worklog

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Mode is a --worker-logs value.
type Mode string

// The --worker-logs modes.
const (
	Inherit Mode = "inherit"
	Prefix  Mode = "prefix"
	JSON    Mode = "json"
)

// ParseMode reads a --worker-logs value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Inherit, Prefix, JSON:
		return m, nil
	}
	return "", fmt.Errorf("--worker-logs=%q: want inherit, prefix or json", s)
}

// MaxLine is the longest line written as one; longer lines are cut.
const MaxLine = 16 << 10

// DefaultQueueBytes bounds each stream's queue of lines not yet written.
const DefaultQueueBytes = 256 << 10

// batchBytes is how much of one queue a destination writes before it turns
// to the next queue.
const batchBytes = 64 << 10

// Options tune [New].
type Options struct {
	// QueueBytes bounds each stream's queue; default DefaultQueueBytes.
	QueueBytes int
	// Now stamps JSON lines; default time.Now.
	Now func() time.Time
}

// Logs copies worker output to goinit's stdout and stderr.
type Logs struct {
	mode    Mode
	o       Options
	out     *dest
	err     *dest
	dropped atomic.Uint64
	readers sync.WaitGroup
	stop    chan struct{}
	writers sync.WaitGroup
}

// New starts the destination writers for mode Prefix or JSON. Call Close
// when goinit exits, to write what is left.
func New(mode Mode, stdout, stderr io.Writer, o Options) (*Logs, error) {
	if mode != Prefix && mode != JSON {
		return nil, fmt.Errorf("worklog: mode %q copies nothing; use prefix or json", mode)
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = DefaultQueueBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	l := &Logs{mode: mode, o: o, stop: make(chan struct{})}
	l.out, l.err = newDest(stdout), newDest(stderr)
	for _, d := range []*dest{l.out, l.err} {
		l.writers.Add(1)
		go func() {
			defer l.writers.Done()
			d.run(l.stop)
		}()
	}
	return l, nil
}

// Dropped counts the lines dropped so far, over every stream.
func (l *Logs) Dropped() uint64 { return l.dropped.Load() }

// Stderr is a writer for goinit's own log lines (give it to slog): each
// Write goes to goinit's stderr whole, between the workers' lines. It
// blocks while stderr does, as writing to os.Stderr would.
func (l *Logs) Stderr() io.Writer { return l.err }

// Close waits until every stream has ended (its worker and their children
// have closed it) and every queued line is written, or until ctx ends, and
// stops the writers. Lines still queued then are lost, and counted in the
// error.
func (l *Logs) Close(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		l.readers.Wait()
		l.out.drain()
		l.err.drain()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		if n := l.out.pending() + l.err.pending(); n > 0 {
			err = fmt.Errorf("worker logs: %d lines not written before the deadline", n)
		}
	}
	close(l.stop)
	l.writers.Wait()
	return err
}

// Pipes are the write ends a worker gets as its stdout and stderr.
type Pipes struct {
	// Stdout and Stderr go to exec.Cmd.Stdout and Stderr (as *os.File,
	// so exec starts no copying goroutine of its own).
	Stdout, Stderr *os.File

	pid     atomic.Int64
	started chan struct{}
	once    sync.Once
	streams [2]*stream
}

// Open makes the pipes for one worker (role "worker" with its id) or the
// agent (role "agent"). Pass them to the command, start it, then call
// Started with its pid, or Abort if it did not start.
func (l *Logs) Open(role string, id int) (*Pipes, error) {
	p := &Pipes{started: make(chan struct{})}
	for i, d := range []*dest{l.out, l.err} {
		r, w, err := os.Pipe()
		if err != nil {
			p.closeWriters()
			for _, s := range p.streams[:i] {
				s.r.Close()
			}
			return nil, fmt.Errorf("worker log pipe: %w", err)
		}
		name := "stdout"
		if i == 1 {
			p.Stderr, name = w, "stderr"
		} else {
			p.Stdout = w
		}
		p.streams[i] = &stream{l: l, p: p, r: r, q: &queue{max: l.o.QueueBytes}, role: role, id: id, name: name}
		d.add(p.streams[i].q)
	}
	for _, s := range p.streams {
		l.readers.Add(1)
		go func() {
			defer l.readers.Done()
			s.read()
		}()
	}
	return p, nil
}

// Started records the worker's pid and closes goinit's copies of the write
// ends, so that a stream ends when the worker (and every child holding it)
// has exited.
func (p *Pipes) Started(pid int) {
	p.pid.Store(int64(pid))
	p.closeWriters()
	p.once.Do(func() { close(p.started) })
}

// Abort closes the pipes of a worker that did not start.
func (p *Pipes) Abort() { p.Started(0) }

// Dropped counts this worker's dropped lines, stdout and stderr.
func (p *Pipes) Dropped() uint64 {
	return p.streams[0].q.droppedTotal() + p.streams[1].q.droppedTotal()
}

func (p *Pipes) closeWriters() {
	for _, f := range []*os.File{p.Stdout, p.Stderr} {
		if f != nil {
			f.Close()
		}
	}
}

// stream is one pipe being read.
type stream struct {
	l    *Logs
	p    *Pipes
	r    *os.File
	q    *queue
	role string
	id   int
	name string
}

// read cuts the pipe into lines until EOF and queues them.
func (s *stream) read() {
	defer s.r.Close()
	defer s.q.close()
	<-s.p.started
	buf := make([]byte, MaxLine)
	n := 0
	for {
		m, err := s.r.Read(buf[n:])
		n += m
		start := 0
		for i := 0; i < n; i++ {
			if buf[i] == '\n' {
				s.emit(buf[start:i])
				start = i + 1
			}
		}
		if start == 0 && n == len(buf) {
			cut := runeBoundary(buf)
			s.emit(buf[:cut])
			start = cut
		}
		n = copy(buf, buf[start:n])
		if err != nil {
			if n > 0 {
				s.emit(buf[:n])
			}
			return
		}
	}
}

// runeBoundary returns where to cut a full buffer so that no UTF-8
// sequence is split (or the whole buffer if it ends in invalid bytes).
func runeBoundary(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if utf8.FullRune(b[i:]) {
				return len(b)
			}
			if i == 0 {
				return len(b)
			}
			return i
		}
	}
	return len(b)
}

func (s *stream) emit(line []byte) {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if s.q.push(s.format(line), func(dropped uint64) []byte {
		return s.format([]byte("goinit: dropped " + strconv.FormatUint(dropped, 10) + " lines (" + s.name + " could not keep up)"))
	}) {
		return
	}
	s.l.dropped.Add(1)
}

// format renders one line in the Logs' mode, newline included.
func (s *stream) format(line []byte) []byte {
	if s.l.mode == Prefix {
		b := make([]byte, 0, len(line)+16)
		b = append(b, '[')
		b = append(b, s.role...)
		if s.role == "worker" {
			b = append(b, ' ')
			b = strconv.AppendInt(b, int64(s.id), 10)
		}
		b = append(b, "] "...)
		b = append(b, line...)
		return append(b, '\n')
	}
	b := make([]byte, 0, len(line)+96)
	b = append(b, `{"time":"`...)
	b = s.l.o.Now().AppendFormat(b, time.RFC3339Nano)
	if s.role == "worker" {
		b = append(b, `","worker":`...)
		b = strconv.AppendInt(b, int64(s.id), 10)
	} else {
		b = append(b, `","role":`...)
		b = appendJSONString(b, []byte(s.role))
	}
	b = append(b, `,"pid":`...)
	b = strconv.AppendInt(b, s.p.pid.Load(), 10)
	b = append(b, `,"stream":"`...)
	b = append(b, s.name...)
	b = append(b, `","msg":`...)
	b = appendJSONString(b, line)
	return append(b, "}\n"...)
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 as U+FFFD.
func appendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for len(s) > 0 {
		r, size := utf8.DecodeRune(s)
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r == '\n':
			b = append(b, `\n`...)
		case r == '\t':
			b = append(b, `\t`...)
		case r < 0x20 || r == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xf])
		default:
			b = append(b, s[:size]...)
		}
		s = s[size:]
	}
	return append(b, '"')
}

// queue holds one stream's formatted lines until its destination writes
// them.
type queue struct {
	mu      sync.Mutex
	lines   [][]byte
	bytes   int
	max     int
	dropped uint64 // since the last drop notice
	total   uint64
	closed  bool
	wake    func()
}

// push queues line, or drops it when the queue is full and returns false.
// After drops, notice(n) is queued first, once there is room for it.
func (q *queue) push(line []byte, notice func(uint64) []byte) bool {
	q.mu.Lock()
	ok := true
	if q.dropped > 0 {
		if n := notice(q.dropped); q.bytes+len(n)+len(line) <= q.max {
			q.lines, q.bytes, q.dropped = append(q.lines, n), q.bytes+len(n), 0
		}
	}
	if q.dropped > 0 || q.bytes+len(line) > q.max {
		q.dropped++
		q.total++
		ok = false
	} else {
		q.lines, q.bytes = append(q.lines, line), q.bytes+len(line)
	}
	wake := q.wake
	q.mu.Unlock()
	if ok && wake != nil {
		wake()
	}
	return ok
}

// take removes up to limit bytes of lines (at least one line) and appends
// them to b.
func (q *queue) take(b []byte, limit int) ([]byte, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	i, n := 0, 0
	for i < len(q.lines) && (i == 0 || n+len(q.lines[i]) <= limit) {
		b = append(b, q.lines[i]...)
		n += len(q.lines[i])
		q.lines[i] = nil
		i++
	}
	q.lines, q.bytes = q.lines[i:], q.bytes-n
	return b, q.closed && len(q.lines) == 0
}

func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	wake := q.wake
	q.mu.Unlock()
	if wake != nil {
		wake()
	}
}

func (q *queue) droppedTotal() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.total
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.lines)
}

// dest is one of goinit's outputs and the goroutine that writes to it.
type dest struct {
	w      io.Writer
	wmu    sync.Mutex // held for each write: whole lines, never interleaved
	mu     sync.Mutex
	queues []*queue
	wakeC  chan struct{}
	idle   chan struct{} // signalled when a pass found nothing to write
}

func newDest(w io.Writer) *dest {
	return &dest{w: w, wakeC: make(chan struct{}, 1), idle: make(chan struct{}, 1)}
}

func (d *dest) wake() {
	select {
	case d.wakeC <- struct{}{}:
	default:
	}
}

func (d *dest) add(q *queue) {
	q.mu.Lock()
	q.wake = d.wake
	q.mu.Unlock()
	d.mu.Lock()
	d.queues = append(d.queues, q)
	d.mu.Unlock()
}

// run writes queued lines, a batch per queue in turn, until stop.
func (d *dest) run(stop <-chan struct{}) {
	var buf []byte
	for {
		select {
		case <-stop:
			return
		case <-d.wakeC:
		}
		for {
			d.mu.Lock()
			qs := append([]*queue(nil), d.queues...)
			d.mu.Unlock()
			wrote := false
			for _, q := range qs {
				var finished bool
				buf, finished = q.take(buf[:0], batchBytes)
				if len(buf) > 0 {
					wrote = true
					d.write(buf)
				}
				if finished {
					d.remove(q)
				}
			}
			if !wrote {
				break
			}
		}
		select {
		case d.idle <- struct{}{}:
		default:
		}
	}
}

func (d *dest) remove(q *queue) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, x := range d.queues {
		if x == q {
			d.queues = append(d.queues[:i], d.queues[i+1:]...)
			return
		}
	}
}

// write writes whole lines; a failing destination (a closed stdout) loses
// them, as it would lose a worker's direct writes.
func (d *dest) write(b []byte) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.w.Write(b)
}

// Write is goinit's own line: written whole, between the workers' batches.
func (d *dest) Write(b []byte) (int, error) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	return d.w.Write(b)
}

func (d *dest) pending() int {
	d.mu.Lock()
	qs := append([]*queue(nil), d.queues...)
	d.mu.Unlock()
	n := 0
	for _, q := range qs {
		n += q.len()
	}
	return n
}

// drain returns once every queue has been written and removed.
func (d *dest) drain() {
	for d.pending() > 0 || d.hasQueues() {
		d.wake()
		<-d.idle
	}
}

func (d *dest) hasQueues() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.queues) > 0
}
