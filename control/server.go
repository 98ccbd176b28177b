package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/state"
)

// DefaultPath is where the control socket is when --control is not given.
const DefaultPath = "/run/goinit/control.sock"

// Defaults of [Options].
const (
	DefaultMaxClients     = 16
	DefaultRequestTimeout = 5 * time.Second
	DefaultWriteTimeout   = 5 * time.Second
	// DefaultReplyTimeout bounds the wait for the supervisor's answer to
	// anything but reload --wait.
	DefaultReplyTimeout = 10 * time.Second
	// DefaultReloadTimeout bounds reload --wait: a rolling reload of many
	// slow workers can take minutes (--ready-timeout per slot).
	DefaultReloadTimeout = time.Hour
)

// Listen binds the control socket --control=spec asks for. spec "" means
// DefaultPath if its directory exists or can be made; otherwise the socket
// is off, which Listen reports in one debug line and as (nil, nil), so a
// read-only root keeps working. "off" returns (nil, nil). Any other spec is
// a path the user chose, and failing to bind it is an error.
//
// A socket file left by an earlier goinit (nobody accepts on it) is
// replaced; one another process listens on is an error.
func Listen(spec string, logger *slog.Logger) (*net.UnixListener, error) {
	return listen(spec, DefaultPath, logger)
}

func listen(spec, defaultPath string, logger *slog.Logger) (*net.UnixListener, error) {
	switch spec {
	case "off":
		return nil, nil
	case "":
		ln, err := listenPath(defaultPath)
		if err != nil {
			logger.Debug("control socket off: " + err.Error() + "; set --control=PATH on a writable directory to enable it")
			return nil, nil
		}
		return ln, nil
	}
	ln, err := listenPath(spec)
	if err != nil {
		return nil, fmt.Errorf("--control=%s: %w", spec, err)
	}
	return ln, nil
}

func listenPath(path string) (*net.UnixListener, error) {
	// 0700: only goinit's uid (and root) may reach the socket at all. A
	// directory that already exists (a volume) keeps its mode; the socket's
	// mode and the peer check still apply.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("cannot create %s: %w", filepath.Dir(path), unwrapPath(err))
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", path, unwrapPath(err))
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("cannot make %s mode 0600: %w", path, unwrapPath(err))
	}
	return ln, nil
}

// removeStale removes a socket file nobody accepts on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; remove it or choose another --control path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("another process (another goinit?) is listening on %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s exists and cannot be checked: %w", path, err)
	}
	return os.Remove(path)
}

// unwrapPath drops the *PathError/*OpError wrapping whose text would repeat
// the path.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		var se *os.SyscallError
		if errors.As(oe.Err, &se) {
			return se.Err
		}
	}
	return err
}

// Options configure a [Server]. Requests and Snapshot are required.
type Options struct {
	// Requests is where commands for the supervisor go; the supervisor
	// selects on the receiving end. A small buffer (say 4) lets a burst
	// of clients queue; when it stays full, clients are told goinit is
	// busy after ReplyTimeout.
	Requests chan<- Request
	// Snapshot returns the latest published snapshot, or nil before the
	// first: usually (*state.Publisher).Load.
	Snapshot func() *state.Snapshot
	// Logger gets refused peers and client errors; default slog.Default().
	Logger *slog.Logger
	// Limits and deadlines; zero means the Default... constant.
	MaxClients     int
	RequestTimeout time.Duration
	WriteTimeout   time.Duration
	ReplyTimeout   time.Duration
	ReloadTimeout  time.Duration
}

// Server serves the control protocol. It only reads published snapshots
// and sends Requests; it never touches the supervisor's state.
type Server struct {
	o   Options
	uid int
	sem chan struct{}
}

// NewServer returns a Server with o's defaults filled in. The uid allowed
// besides root is the process's effective uid at this call.
func NewServer(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxClients <= 0 {
		o.MaxClients = DefaultMaxClients
	}
	o.RequestTimeout = orDefault(o.RequestTimeout, DefaultRequestTimeout)
	o.WriteTimeout = orDefault(o.WriteTimeout, DefaultWriteTimeout)
	o.ReplyTimeout = orDefault(o.ReplyTimeout, DefaultReplyTimeout)
	o.ReloadTimeout = orDefault(o.ReloadTimeout, DefaultReloadTimeout)
	return &Server{o: o, uid: os.Geteuid(), sem: make(chan struct{}, o.MaxClients)}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Serve accepts connections on ln until ctx is done, then closes ln (which
// removes the socket file) and every open connection, waits for its
// handlers and returns nil. Any other return is an accept error.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			ln.Close()
			return fmt.Errorf("control socket: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, c)
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	// Closing the connection is how a blocked read or write learns that
	// goinit is stopping.
	defer context.AfterFunc(ctx, func() { c.Close() })()
	cred, err := peerCred(c)
	if err != nil {
		s.o.Logger.Warn("control socket: cannot read the peer's credentials; connection refused", "err", err)
		return
	}
	if cred.Uid != 0 && int(cred.Uid) != s.uid {
		s.o.Logger.Warn(fmt.Sprintf("control socket: refused a connection from uid %d (pid %d): only root and goinit's uid %d may control goinit",
			cred.Uid, cred.Pid, s.uid))
		s.write(c, wireResponse{Error: fmt.Sprintf("permission denied: uid %d may not control goinit (root and uid %d may)", cred.Uid, s.uid)})
		return
	}
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		s.write(c, wireResponse{Error: fmt.Sprintf("goinit is busy: %d control clients are connected; try again", s.o.MaxClients)})
		return
	}

	req, err := s.readRequest(c)
	if err != nil {
		s.o.Logger.Debug("control socket: bad request", "pid", cred.Pid, "err", err)
		s.write(c, wireResponse{Error: err.Error()})
		return
	}
	args, interval, err := req.validate()
	if err != nil {
		s.write(c, wireResponse{Error: err.Error()})
		return
	}
	// A client that half-closes after its request (socat, nc -N) still
	// reads the answer, so EOF on the read side means nothing here: a
	// client that left is noticed when a write fails, or at the deadline.
	switch req.Cmd {
	case CmdStatus:
		s.write(c, s.status())
	case CmdTop:
		s.top(ctx, c, interval)
	case CmdReload:
		if args.Wait {
			// A reload can take minutes: a client that has gone away
			// meanwhile gives its slot back at once.
			var stop func()
			ctx, stop = untilHangup(ctx, c)
			defer stop()
		}
		s.write(c, s.ask(ctx, req.Cmd, args))
	default:
		s.write(c, s.ask(ctx, req.Cmd, args))
	}
}

// hangupPoll is how often untilHangup looks at the connection.
const hangupPoll = 500 * time.Millisecond

// untilHangup returns a context that ends with ctx or once the client has
// closed its end of c entirely (POLLHUP), and the function that stops
// watching. A half-close (shutdown(SHUT_WR), as socat and nc -N do after
// the request) is not a hangup: such a client still reads the answer.
// Go's poller does not report POLLHUP, so one goroutine polls the socket
// (never a read, which would consume the client's bytes) until stopped.
func untilHangup(ctx context.Context, c *net.UnixConn) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	raw, err := c.SyscallConn()
	if err != nil {
		return ctx, cancel
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			hup := false
			// Within Control the descriptor cannot be closed under us.
			raw.Control(func(fd uintptr) {
				pfd := []unix.PollFd{{Fd: int32(fd)}}
				if n, err := unix.Poll(pfd, 0); err == nil && n > 0 {
					hup = pfd[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
				}
			})
			if hup {
				cancel()
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(hangupPoll):
			}
		}
	}()
	return ctx, func() { cancel(); <-done }
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

// readRequest reads the one request line, within RequestTimeout and
// MaxRequestBytes.
func (s *Server) readRequest(c *net.UnixConn) (wireRequest, error) {
	c.SetReadDeadline(time.Now().Add(s.o.RequestTimeout))
	r := bufio.NewReaderSize(io.LimitReader(c, MaxRequestBytes), MaxRequestBytes)
	line, err := r.ReadSlice('\n')
	if err != nil {
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			return wireRequest{}, fmt.Errorf("no request within %s", s.o.RequestTimeout)
		case len(line) >= MaxRequestBytes || errors.Is(err, bufio.ErrBufferFull):
			return wireRequest{}, fmt.Errorf("request longer than %d bytes", MaxRequestBytes)
		case errors.Is(err, io.EOF) && len(bytes.TrimSpace(line)) > 0:
			// A last line without its newline is still a request.
		default:
			return wireRequest{}, fmt.Errorf("reading the request: %w", err)
		}
	}
	var req wireRequest
	if err := json.Unmarshal(line, &req); err != nil {
		return wireRequest{}, fmt.Errorf("the request is not a JSON object like {\"v\":1,\"cmd\":\"status\"}: %w", err)
	}
	return req, nil
}

func (s *Server) status() wireResponse {
	snap := s.o.Snapshot()
	if snap == nil {
		return wireResponse{Error: "goinit is starting; try again in a moment"}
	}
	return wireResponse{OK: true, Status: snap}
}

// ask hands a command to the supervisor and waits for its answer, bounded
// by ReplyTimeout (ReloadTimeout for reload --wait) and by the client.
func (s *Server) ask(ctx context.Context, cmd Cmd, args Args) wireResponse {
	timeout := s.o.ReplyTimeout
	if cmd == CmdReload && args.Wait {
		timeout = s.o.ReloadTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reply := make(chan Response, 1)
	select {
	case s.o.Requests <- Request{Cmd: cmd, Args: args, Reply: reply}:
	case <-ctx.Done():
		return wireResponse{Error: fmt.Sprintf("goinit is busy: the supervisor took no request within %s", timeout)}
	}
	select {
	case r := <-reply:
		w := wireResponse{OK: r.Err == nil, Message: r.Message, Result: r.Result}
		if r.Err != nil {
			w.Error = r.Err.Error()
		}
		return w
	case <-ctx.Done():
		return wireResponse{Error: fmt.Sprintf("no answer from the supervisor within %s", timeout)}
	}
}

// top streams status frames until the client leaves or a write times out.
func (s *Server) top(ctx context.Context, c *net.UnixConn, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.write(c, s.status()); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// write sends one response line within WriteTimeout; a client that does
// not read gets its connection closed by the caller when this fails.
func (s *Server) write(c *net.UnixConn, w wireResponse) error {
	w.V = Version
	b, err := json.Marshal(w)
	if err != nil {
		return err
	}
	c.SetWriteDeadline(time.Now().Add(s.o.WriteTimeout))
	_, err = c.Write(append(b, '\n'))
	return err
}
