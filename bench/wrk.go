package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// wrkResult is what the harness reads from one wrk run.
type wrkResult struct {
	// Requests is the number of responses received.
	Requests int64
	// RPS is wrk's requests per second.
	RPS float64
	// P99 is the 99th percentile latency.
	P99 time.Duration
	// Errors counts connect, read, write and timeout errors and non-2xx/3xx
	// responses: the sum of the fields below.
	Errors int64
	// Connect, Read, Write and Timeout are wrk's socket errors. On loopback
	// a refused connection shows as a write error: wrk connects without
	// blocking, and the refusal surfaces when it writes the request.
	Connect, Read, Write, Timeout int64
	// Non2xx counts responses with a status outside 2xx and 3xx.
	Non2xx int64
}

// kinds names the errors by kind, for a table note.
func (r wrkResult) kinds() string {
	return fmt.Sprintf("connect %d, read %d, write %d, timeout %d, non-2xx %d",
		r.Connect, r.Read, r.Write, r.Timeout, r.Non2xx)
}

// wrkLoad is one wrk invocation.
type wrkLoad struct {
	url                  string
	duration             time.Duration
	threads, connections int
	// closeConn sends "Connection: close", so every request opens a new
	// connection and goes through accept.
	closeConn bool
}

// runWrk runs wrk and parses its report.
func runWrk(ctx context.Context, wrk string, l wrkLoad) (wrkResult, error) {
	w, err := startWrk(ctx, wrk, l)
	if err != nil {
		return wrkResult{}, err
	}
	return w.wait()
}

// wrkRun is a wrk running in the background, until its duration is over or
// it is stopped.
type wrkRun struct {
	cmd    *exec.Cmd
	args   []string
	out    bytes.Buffer
	cancel context.CancelFunc
	done   chan struct{}
	err    error // Wait's result, valid once done is closed
}

// startWrk starts wrk for at most l.duration. wrk's report counts from its
// start until it ends, or until stop.
func startWrk(ctx context.Context, wrk string, l wrkLoad) (*wrkRun, error) {
	secs := max(1, int(l.duration.Round(time.Second)/time.Second))
	args := []string{
		"-t", strconv.Itoa(l.threads), "-c", strconv.Itoa(l.connections),
		"-d", fmt.Sprintf("%ds", secs), "--timeout", "2s", "--latency",
	}
	if l.closeConn {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, l.url)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
	w := &wrkRun{args: args, cancel: cancel, done: make(chan struct{})}
	w.cmd = exec.CommandContext(ctx, wrk, args...)
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	if err := w.cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("wrk %s: %w", strings.Join(args, " "), err)
	}
	go func() {
		w.err = w.cmd.Wait()
		close(w.done)
	}()
	return w, nil
}

// wait waits for wrk to end and parses its report.
func (w *wrkRun) wait() (wrkResult, error) {
	<-w.done
	w.cancel()
	if w.err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w\n%s", strings.Join(w.args, " "), w.err, w.out.String())
	}
	r, err := parseWrk(w.out.String())
	if err != nil {
		return r, fmt.Errorf("wrk %s: %w", strings.Join(w.args, " "), err)
	}
	return r, nil
}

// stop ends the load now: on SIGINT wrk stops its connections and prints
// its report for the time it ran.
func (w *wrkRun) stop() (wrkResult, error) {
	if err := w.cmd.Process.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return wrkResult{}, fmt.Errorf("stop wrk: %w", err)
	}
	return w.wait()
}

// parseWrk reads the figures out of wrk's --latency report.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := regexp.MustCompile(`(?m)^\s*(\d+) requests in `).FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no request count in wrk output:\n%s", out)
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	m = regexp.MustCompile(`(?m)^Requests/sec:\s*([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no Requests/sec in wrk output:\n%s", out)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	if m = regexp.MustCompile(`(?m)^\s*99%\s+([0-9.]+)(us|ms|s|m)\s*$`).FindStringSubmatch(out); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		unit := map[string]float64{"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[m[2]]
		r.P99 = time.Duration(v * unit * float64(time.Second))
	} else if r.Requests > 0 {
		return r, fmt.Errorf("no 99%% latency in wrk output:\n%s", out)
	}
	if m = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`).FindStringSubmatch(out); m != nil {
		for i, p := range []*int64{&r.Connect, &r.Read, &r.Write, &r.Timeout} {
			*p, _ = strconv.ParseInt(m[i+1], 10, 64)
		}
	}
	if m = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`).FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	r.Errors = r.Connect + r.Read + r.Write + r.Timeout + r.Non2xx
	return r, nil
}
