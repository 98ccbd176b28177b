package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/goinit/goinit/metrics"
	"github.com/goinit/goinit/state"
)

// Defaults of [Options].
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultMaxConns          = 64
	// DefaultShutdownTimeout bounds how long Serve waits for requests in
	// flight once its context is done.
	DefaultShutdownTimeout = time.Second
)

// maxHeaderBytes is far above any probe's or Prometheus's request.
const maxHeaderBytes = 8 << 10

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
	// Timeouts and limits; zero means the Default... constant.
	ReadHeaderTimeout time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxConns          int
	ShutdownTimeout   time.Duration
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
	o.IdleTimeout = orDefault(o.IdleTimeout, DefaultIdleTimeout)
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
// ShutdownTimeout for requests in flight and returns nil. ln is closed
// when Serve returns. Any other return is an accept error.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.o.ReadHeaderTimeout,
		ReadTimeout:       s.o.ReadHeaderTimeout,
		WriteTimeout:      s.o.WriteTimeout,
		IdleTimeout:       s.o.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.o.Logger.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(&limitListener{Listener: ln, sem: make(chan struct{}, s.o.MaxConns)}) }()
	select {
	case err := <-done:
		return fmt.Errorf("health endpoints: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.o.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("health endpoints: %w", err)
	}
	return nil
}

// Handler returns the endpoints as an http.Handler, for tests and for
// mounting them on another server.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /metrics", s.metrics)
	return mux
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	code, msg := Liveness(s.o.Snapshot(), s.o.MaxSnapshotAge, time.Now())
	text(w, code, msg)
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	code, msg := Readiness(s.o.Snapshot())
	text(w, code, msg)
}

func (s *Server) metrics(w http.ResponseWriter, _ *http.Request) {
	snap := s.o.Snapshot()
	if snap == nil {
		text(w, http.StatusServiceUnavailable, "goinit is starting: no metrics yet")
		return
	}
	queues, err := s.o.Queues()
	if err != nil {
		// The other metrics are still worth a scrape.
		s.o.Logger.Debug("metrics without accept queue lengths", "err", err)
	}
	var b bytes.Buffer
	if err := metrics.Write(&b, snap, queues); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", metrics.ContentType)
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.Write(b.Bytes())
}

// Liveness is /healthz's answer for snapshot s at now: the HTTP status and
// one line saying why. maxAge 0 disables the staleness check.
func Liveness(s *state.Snapshot, maxAge time.Duration, now time.Time) (int, string) {
	switch {
	case s == nil:
		return http.StatusOK, "ok: goinit is starting"
	case s.Pool.CrashLooping:
		return http.StatusServiceUnavailable, "unhealthy: a worker is crash-looping (goinit is stopping)"
	case maxAge > 0 && now.Sub(s.Taken) > maxAge:
		return http.StatusServiceUnavailable, fmt.Sprintf("unhealthy: the supervisor has published no state for %s (more than %s)",
			now.Sub(s.Taken).Round(time.Second), maxAge)
	}
	return http.StatusOK, "ok: goinit is " + string(s.Phase)
}

// Readiness is /readyz's answer for snapshot s: the HTTP status and one line
// saying why.
func Readiness(s *state.Snapshot) (int, string) {
	if s == nil {
		return http.StatusServiceUnavailable, "not ready: goinit is starting"
	}
	if !s.Phase.Running() {
		return http.StatusServiceUnavailable, "not ready: goinit is " + string(s.Phase)
	}
	ready, need := s.ReadyWorkers(), max(s.Pool.MinReady, 1)
	if ready < need {
		return http.StatusServiceUnavailable, fmt.Sprintf("not ready: %d ready, --min-ready is %d", ready, need)
	}
	return http.StatusOK, fmt.Sprintf("ready: %d ready, --min-ready is %d", ready, need)
}

func text(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write([]byte(msg + "\n"))
}

// limitListener holds at most cap(sem) connections open at once; further
// connections wait in the kernel's backlog until one closes.
type limitListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
