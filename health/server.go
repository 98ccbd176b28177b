package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/goinit/goinit/metrics"
	"github.com/goinit/goinit/state"
)

// Defaults of [Options].
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultMaxConns          = 64
	// DefaultShutdownTimeout bounds how long Serve waits for requests in
	// flight once its context is done.
	DefaultShutdownTimeout = time.Second
)

// Options configure a [Server]. Only Snapshot is required.
type Options struct {
	// Snapshot returns the latest published snapshot, or nil before the
	// first one: usually (*state.Publisher).Load.
	Snapshot func() *state.Snapshot
	// Queues returns accept queue lengths by socket inode for /metrics;
	// default [state.ListenQueues].
	Queues func() (map[uint64]uint64, error)
	// MaxSnapshotAge, when not zero, makes /healthz fail once the latest
	// snapshot is older: the supervisor is expected to publish at least
	// this often (say every 5 s, with the cgroup statistics). Zero: no
	// check.
	MaxSnapshotAge time.Duration
	// Logger receives the server's own problems; default slog.Default().
	Logger *slog.Logger
	// ReadHeaderTimeout is how long a connection has, from when it gets
	// one of the MaxConns slots, to send its whole request head; then it
	// is answered 408 and closed. It may be closed sooner, unanswered, to
	// admit a new connection (see MaxConns). Default
	// DefaultReadHeaderTimeout.
	ReadHeaderTimeout time.Duration
	// WriteTimeout bounds writing the answer to a client that does not
	// read. Default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MaxConns caps the connections served at once. When all are taken,
	// a new connection evicts the one that has waited longest without
	// completing its request head (an idle client, or one trickling its
	// head), which is closed unanswered: a probe sends its request as soon
	// as it connects, so clients that only hold connections open never
	// make it wait. A connection whose head has arrived is answered and
	// never evicted; while every slot is answering, new connections wait
	// for one to finish (the next one accepted, the others in the listen
	// backlog). Default DefaultMaxConns.
	MaxConns int
	// ShutdownTimeout is how long Serve waits for connections in flight
	// once its context is done. Default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
}

// Server serves /healthz, /readyz and /metrics from published snapshots.
type Server struct {
	o Options
}

// New returns a Server with o's defaults filled in.
func New(o Options) *Server {
	if o.Queues == nil {
		o.Queues = state.ListenQueues
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.ReadHeaderTimeout = orDefault(o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	o.WriteTimeout = orDefault(o.WriteTimeout, DefaultWriteTimeout)
	o.ShutdownTimeout = orDefault(o.ShutdownTimeout, DefaultShutdownTimeout)
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	return &Server{o: o}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Listen binds addr (from [ParseAddr]) for Serve. goinit calls it at start,
// so that a port in use is a start-up error, not a late surprise.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--health-addr %s: %w", addr, err)
	}
	return ln, nil
}

// Serve answers requests on ln until ctx is done, then waits up to
// ShutdownTimeout for requests in flight, closes what is left and returns
// nil. ln is closed when Serve returns. Any other return is an accept
// error; accept errors from a shortage of file descriptors or memory are
// retried instead, with a backoff, so the endpoints come back by
// themselves.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	defer ln.Close()
	stopClose := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopClose()

	// cut closes the connections still open once ShutdownTimeout is up.
	cutCtx, cut := context.WithCancel(context.Background())
	defer cut()
	var conns sync.WaitGroup
	err := s.accept(ctx, ln, cutCtx, &conns)

	done := make(chan struct{})
	go func() { conns.Wait(); close(done) }()
	t := time.NewTimer(s.o.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		cut()
		<-done
	}
	return err
}

// accept runs each connection in a goroutine of its own, at most MaxConns
// at once ([slots]): a new connection evicts the one that has waited
// longest for its request head, or if all are being answered it waits,
// accepted, with the ones behind it in the kernel's backlog; however many
// connect, goinit holds at most MaxConns+1 of them.
func (s *Server) accept(ctx context.Context, ln net.Listener, cutCtx context.Context, conns *sync.WaitGroup) error {
	pool := newSlots(s.o.MaxConns)
	var backoff time.Duration
	for {
		// Accept first, then find a slot: eviction is for a connection
		// that has arrived, not for one that might.
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !retryable(err) {
				return fmt.Errorf("health endpoints: %w", err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.o.Logger.Warn(fmt.Sprintf("health endpoints: %v; accepting again in %s", err, backoff))
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		sl := pool.admit(ctx, c)
		if sl == nil {
			c.Close()
			return nil
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer pool.release(sl)
			stop := context.AfterFunc(cutCtx, func() { c.Close() })
			defer stop()
			s.serveConn(pool, sl)
		}()
	}
}

// retryable reports whether an accept error is a shortage that passes.
func retryable(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Limits of the lingering close; see serveConn.
const (
	lingerTimeout = 500 * time.Millisecond
	lingerBytes   = 64 << 10
)

// serveConn answers the one request of sl's connection and closes it,
// unless pool evicts it before its head has arrived.
func (s *Server) serveConn(pool *slots, sl *slot) {
	c := sl.c
	defer c.Close()
	// goinit is PID 1: a bug here must not take the container down with it.
	defer func() {
		if v := recover(); v != nil {
			s.o.Logger.Error(fmt.Sprintf("health endpoints: internal error answering %s: %v (please report it)", c.RemoteAddr(), v))
		}
	}()

	// One deadline for the whole head, not per read: a client that
	// trickles a byte at a time is still cut off.
	c.SetReadDeadline(time.Now().Add(s.o.ReadHeaderTimeout))
	head, err := readHead(c, make([]byte, maxHeadBytes))
	if !pool.answering(sl) {
		s.o.Logger.Debug("health endpoints: closed a connection without a complete request head to admit a new one",
			"remote", c.RemoteAddr().String(), "after", time.Since(sl.admitted).Round(time.Millisecond), "head_bytes", len(head))
		return
	}
	var resp response
	withBody := true
	switch {
	case err == nil:
		req, bad := parseRequest(head)
		if bad != nil {
			resp = textResponse(bad.status, "bad request: "+bad.reason)
			break
		}
		resp = s.route(req)
		withBody = req.method != "HEAD"
	case errors.Is(err, errHeadTooLarge):
		resp = textResponse(statusHeadTooLarge, "bad request: the request head is larger than 8 KiB")
	case errors.Is(err, os.ErrDeadlineExceeded) && len(head) > 0:
		resp = textResponse(statusRequestTimeout, fmt.Sprintf("bad request: the request head did not arrive within %s", s.o.ReadHeaderTimeout))
	default:
		// Nothing was asked (a TCP probe connects and closes), or the
		// client went away mid-request: nobody to answer.
		return
	}

	c.SetWriteDeadline(time.Now().Add(s.o.WriteTimeout))
	if _, err := c.Write(appendResponse(nil, resp, withBody, time.Now())); err != nil {
		s.o.Logger.Debug("health endpoints: writing an answer", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	// Closing a socket with unread bytes in its receive queue (a body, or
	// what followed an oversized head) sends a RST, which can make the
	// client lose the answer it has not read yet. So: send FIN, then read
	// and drop what the client still sends until it closes, for a bounded
	// time and size.
	if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		c.SetReadDeadline(time.Now().Add(lingerTimeout))
		io.CopyN(io.Discard, c, lingerBytes)
	}
}

// route answers a well-formed request. Paths are matched exactly: a probe
// or Prometheus sends them as configured.
func (s *Server) route(r request) response {
	switch r.path {
	case "/healthz", "/readyz", "/metrics":
	default:
		return textResponse(statusNotFound, "not found: goinit serves /healthz, /readyz and /metrics")
	}
	if r.method != "GET" && r.method != "HEAD" {
		return textResponse(statusMethodNotAllowed, fmt.Sprintf("method %.32s not allowed: %s answers GET and HEAD", r.method, r.path))
	}
	switch r.path {
	case "/healthz":
		return textResponse(Liveness(s.o.Snapshot(), s.o.MaxSnapshotAge, time.Now()))
	case "/readyz":
		return textResponse(Readiness(s.o.Snapshot()))
	}
	return s.metrics()
}

// metrics answers /metrics uncompressed whatever Accept-Encoding says
// (RFC 9110 allows identity always); a scrape is a few KiB.
func (s *Server) metrics() response {
	snap := s.o.Snapshot()
	if snap == nil {
		return textResponse(statusUnavailable, "goinit is starting: no metrics yet")
	}
	queues, err := s.o.Queues()
	if err != nil {
		// The other metrics are still worth a scrape.
		s.o.Logger.Debug("metrics without accept queue lengths", "err", err)
	}
	var b bytes.Buffer
	if err := metrics.Write(&b, snap, queues); err != nil {
		return textResponse(statusInternalServerError, "writing metrics: "+err.Error())
	}
	return response{status: statusOK, contentType: metrics.ContentType, body: b.Bytes()}
}

// Liveness is /healthz's answer for snapshot s at now: the HTTP status and
// one line saying why. maxAge 0 disables the staleness check.
func Liveness(s *state.Snapshot, maxAge time.Duration, now time.Time) (int, string) {
	switch {
	case s == nil:
		return statusOK, "ok: goinit is starting"
	case s.Pool.CrashLooping:
		return statusUnavailable, "unhealthy: a worker is crash-looping (goinit is stopping)"
	case maxAge > 0 && now.Sub(s.Taken) > maxAge:
		return statusUnavailable, fmt.Sprintf("unhealthy: the supervisor has published no state for %s (more than %s)",
			now.Sub(s.Taken).Round(time.Second), maxAge)
	}
	return statusOK, "ok: goinit is " + string(s.Phase)
}

// Readiness is /readyz's answer for snapshot s: the HTTP status and one line
// saying why.
func Readiness(s *state.Snapshot) (int, string) {
	if s == nil {
		return statusUnavailable, "not ready: goinit is starting"
	}
	if !s.Phase.Running() {
		return statusUnavailable, "not ready: goinit is " + string(s.Phase)
	}
	ready, need := s.ReadyWorkers(), max(s.Pool.MinReady, 1)
	if ready < need {
		return statusUnavailable, fmt.Sprintf("not ready: %d ready, --min-ready is %d", ready, need)
	}
	return statusOK, fmt.Sprintf("ready: %d ready, --min-ready is %d", ready, need)
}
