package bench

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
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
	// responses.
	Errors int64
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
	defer cancel()
	out, err := exec.CommandContext(ctx, wrk, args...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return r, fmt.Errorf("wrk %s: %w", strings.Join(args, " "), err)
	}
	return r, nil
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
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.Errors += n
		}
	}
	if m = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`).FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		r.Errors += n
	}
	return r, nil
}
