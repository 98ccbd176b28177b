package control

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"syscall"
	"time"

	"github.com/goinit/goinit/signals"
	"github.com/goinit/goinit/state"

	"golang.org/x/sys/unix"
)

// Client talks to a goinit's control socket. One call is one connection.
type Client struct {
	// Path is the socket; empty means DefaultPath.
	Path string
}

// UnavailableError says goinit could not be reached: no socket, a refused
// connection, a broken answer. The CLI exits [ExitUnavailable].
type UnavailableError struct {
	Path string
	Err  error
}

func (e *UnavailableError) Error() string {
	switch {
	case errors.Is(e.Err, fs.ErrNotExist):
		return fmt.Sprintf("no goinit control socket at %s (is goinit running with --control?)", e.Path)
	case errors.Is(e.Err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nothing accepts on %s (goinit has stopped, or the socket was left by an old goinit)", e.Path)
	case errors.Is(e.Err, fs.ErrPermission):
		return fmt.Sprintf("permission denied on %s: run as root or as goinit's user", e.Path)
	}
	return fmt.Sprintf("control socket %s: %v", e.Path, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// RemoteError is goinit's refusal or failure of a command, in its words.
// The CLI exits [ExitFailed], or [ExitRolledBack] when Result says so.
type RemoteError struct {
	Msg    string
	Result ReloadResult
}

func (e *RemoteError) Error() string { return e.Msg }

func (c *Client) path() string {
	if c.Path == "" {
		return DefaultPath
	}
	return c.Path
}

// call sends req and returns the first response; with each set, it keeps
// reading responses (top) and calls each for every one until it returns an
// error or ctx ends.
func (c *Client) call(ctx context.Context, req wireRequest, each func(wireResponse) error) (wireResponse, error) {
	req.V = Version
	path := c.path()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return wireResponse{}, &UnavailableError{Path: path, Err: unwrapPath(err)}
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })()
	b, _ := json.Marshal(req)
	// A server that refuses the connection (a peer it does not serve, too
	// many clients) answers and closes before reading: the write may fail,
	// the answer is still there to read.
	_, werr := conn.Write(append(b, '\n'))
	// A status can be large (a snapshot per worker); Scanner's limit is
	// raised well above any real one, so a runaway answer still fails.
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for {
		if !sc.Scan() {
			if ctx.Err() != nil {
				return wireResponse{}, ctx.Err()
			}
			err := cmp.Or(werr, sc.Err())
			if err == nil {
				err = errors.New("goinit closed the connection without answering")
			}
			return wireResponse{}, &UnavailableError{Path: path, Err: err}
		}
		var resp wireResponse
		if err := json.Unmarshal(sc.Bytes(), &resp); err != nil {
			return wireResponse{}, &UnavailableError{Path: path, Err: fmt.Errorf("unreadable answer: %w", err)}
		}
		if resp.V != Version {
			return wireResponse{}, &UnavailableError{Path: path, Err: fmt.Errorf("goinit answered in protocol version %d; this client speaks %d", resp.V, Version)}
		}
		if !resp.OK {
			return resp, &RemoteError{Msg: resp.Error, Result: resp.Result}
		}
		if each == nil {
			return resp, nil
		}
		if err := each(resp); err != nil {
			return resp, err
		}
	}
}

// Status returns goinit's latest snapshot.
func (c *Client) Status(ctx context.Context) (*state.Snapshot, error) {
	resp, err := c.call(ctx, wireRequest{Cmd: CmdStatus}, nil)
	if err != nil {
		return nil, err
	}
	if resp.Status == nil {
		return nil, &UnavailableError{Path: c.path(), Err: errors.New("the answer has no status")}
	}
	return resp.Status, nil
}

// Top calls fn with a fresh snapshot every interval until ctx ends (then
// it returns ctx.Err()) or fn returns an error.
func (c *Client) Top(ctx context.Context, interval time.Duration, fn func(*state.Snapshot) error) error {
	_, err := c.call(ctx, wireRequest{Cmd: CmdTop, IntervalMS: int(interval / time.Millisecond)}, func(r wireResponse) error {
		if r.Status == nil {
			return &UnavailableError{Path: c.path(), Err: errors.New("a top frame has no status")}
		}
		return fn(r.Status)
	})
	return err
}

// Reload asks for a rolling reload. With wait it returns when the reload
// has finished: a rolled-back reload is a *RemoteError with Result
// ReloadRolledBack. It returns goinit's message.
func (c *Client) Reload(ctx context.Context, wait bool) (string, error) {
	resp, err := c.call(ctx, wireRequest{Cmd: CmdReload, Wait: wait}, nil)
	return resp.Message, err
}

// Scale sets the number of worker slots.
func (c *Client) Scale(ctx context.Context, workers int) (string, error) {
	resp, err := c.call(ctx, wireRequest{Cmd: CmdScale, Workers: workers}, nil)
	return resp.Message, err
}

// Restart replaces the target's processes gracefully.
func (c *Client) Restart(ctx context.Context, target Target) (string, error) {
	resp, err := c.call(ctx, wireRequest{Cmd: CmdRestart, Target: string(target)}, nil)
	return resp.Message, err
}

// Signal sends sig to the target's processes.
func (c *Client) Signal(ctx context.Context, sig unix.Signal, target Target) (string, error) {
	resp, err := c.call(ctx, wireRequest{Cmd: CmdSignal, Signal: signals.Name(sig), Target: string(target)}, nil)
	return resp.Message, err
}
