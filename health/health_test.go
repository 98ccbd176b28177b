package health

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
	"github.com/goinit/goinit/state"
	"github.com/goinit/goinit/state/statetest"
)

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]string{
		"":               "",
		"off":            "",
		":9090":          "127.0.0.1:9090",
		"9090":           "127.0.0.1:9090",
		"0.0.0.0:9090":   "0.0.0.0:9090",
		"[::]:9090":      "[::]:9090",
		"[::1]:9090":     "[::1]:9090",
		"localhost:9090": "localhost:9090",
	} {
		got, err := ParseAddr(in)
		if err != nil || got != want {
			t.Errorf("ParseAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"abc", ":0", ":65536", "::9090", "host:port", "a b:1"} {
		if got, err := ParseAddr(in); err == nil {
			t.Errorf("ParseAddr(%q) = %q, want an error", in, got)
		} else if !strings.HasPrefix(err.Error(), "--health-addr ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseAddr(%q): error %q is not one line naming the flag", in, err)
		}
	}
}

// serve runs a Server on a loopback port and returns its base URL and the
// publisher its snapshots come from; it is stopped when the test ends.
func serve(t *testing.T, o Options) (string, *state.Publisher) {
	t.Helper()
	base, pub, stop := start(t, o)
	t.Cleanup(func() {
		if err := stop(5 * time.Second); err != nil {
			t.Error(err)
		}
	})
	return base, pub
}

// start runs a Server on a loopback port. stop ends its context and
// returns Serve's error, or an error if Serve is still running after wait.
func start(t *testing.T, o Options) (base string, pub *state.Publisher, stop func(wait time.Duration) error) {
	t.Helper()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startOn(t, ln, o)
}

// startOn is start on a listener of the test's own.
func startOn(t *testing.T, ln net.Listener, o Options) (base string, pub *state.Publisher, stop func(wait time.Duration) error) {
	t.Helper()
	pub = new(state.Publisher)
	o.Snapshot = pub.Load
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(o).Serve(ctx, ln) }()
	return "http://" + ln.Addr().String(), pub, func(wait time.Duration) error {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("Serve: %w", err)
			}
			return nil
		case <-time.After(wait):
			return fmt.Errorf("Serve did not return %s after its context ended", wait)
		}
	}
}

func get(t *testing.T, url string) (int, string) { t.Helper(); return testbin.Get(t, nil, url) }

// TestTransitions walks the endpoints through goinit's life: start, ready,
// a worker not ready under --min-ready, pre-stop delay, a crash loop.
func TestTransitions(t *testing.T) {
	base, pub := serve(t, Options{})
	expect := func(step, path string, code int, body string) {
		t.Helper()
		gotCode, gotBody := get(t, base+path)
		if gotCode != code || !strings.Contains(gotBody, body) {
			t.Errorf("%s: GET %s = %d %q, want %d with %q", step, path, gotCode, gotBody, code, body)
		}
	}
	expect("before the first snapshot", "/healthz", 200, "starting")
	expect("before the first snapshot", "/readyz", 503, "starting")
	expect("before the first snapshot", "/metrics", 503, "no metrics yet")

	now := time.Now()
	s := statetest.Sample(now)
	s.Phase = state.PhaseStarting
	pub.Publish(s)
	expect("starting", "/readyz", 503, "goinit is starting")

	s = statetest.Sample(now)
	pub.Publish(s)
	expect("running", "/healthz", 200, "ok")
	expect("running", "/readyz", 200, "2 ready, --min-ready is 1")

	s = statetest.Sample(now)
	s.Pool.MinReady = 3
	pub.Publish(s)
	expect("min-ready not met", "/readyz", 503, "2 ready, --min-ready is 3")

	s = statetest.Sample(now)
	s.Phase = state.PhaseDelaying
	pub.Publish(s)
	expect("pre-stop delay", "/readyz", 503, "goinit is delaying")
	expect("pre-stop delay", "/healthz", 200, "ok")

	s = statetest.Sample(now)
	s.Pool.CrashLooping = true
	pub.Publish(s)
	expect("crash loop", "/healthz", 503, "crash-looping")

	code, body := get(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, "goinit_crash_looping 1\n") {
		t.Errorf("GET /metrics = %d, want 200 with goinit_crash_looping 1:\n%s", code, body)
	}
	resp, err := http.Post(base+"/readyz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /readyz = %d, want 405", resp.StatusCode)
	}
}

func TestStaleSnapshot(t *testing.T) {
	now := time.Now()
	s := statetest.Sample(now.Add(-time.Minute))
	if code, msg := Liveness(s, 30*time.Second, now); code != 503 || !strings.Contains(msg, "no state for 1m0s") {
		t.Fatalf("Liveness(stale) = %d %q, want 503 naming the age", code, msg)
	}
	if code, _ := Liveness(s, 0, now); code != 200 {
		t.Fatalf("Liveness without an age limit = %d, want 200", code)
	}
}

// TestSlowClient: a client that opens a request and never finishes its
// headers is cut off at ReadHeaderTimeout, and probes are answered meanwhile.
func TestSlowClient(t *testing.T) {
	base, pub := serve(t, Options{ReadHeaderTimeout: 300 * time.Millisecond, MaxConns: 4})
	pub.Publish(statetest.Sample(time.Now()))
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("probe next to a slow client = %d", code)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	io.Copy(io.Discard, c) // returns when the server closes
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("slow client held its connection for %s, want about 300ms", d)
	}
}

// exchange sends raw on a fresh connection, reads until the server closes
// it (every answer is Connection: close) and parses the answer as a reply
// to method.
func exchange(t *testing.T, base, method, raw string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("%q: reading the answer until the server closes: %v (got %q)", raw, err, all)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%q: answer is not HTTP: %v\n%s", raw, err, all)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%q: answer body: %v\n%s", raw, err, all)
	}
	if rest := len(all) - bytes.Index(all, []byte("\r\n\r\n")) - 4 - len(body); rest != 0 {
		t.Errorf("%q: %d bytes after the body\n%s", raw, rest, all)
	}
	return resp, string(body)
}

// TestWire checks the bytes on the wire for what probes, scrapes, curl and
// garbage send.
func TestWire(t *testing.T) {
	base, pub := serve(t, Options{})
	pub.Publish(statetest.Sample(time.Now()))
	for _, tc := range []struct {
		name, method, raw string
		status            int
		contentType, body string
	}{
		{"HTTP/1.0", "GET", "GET /healthz HTTP/1.0\r\n\r\n", 200, "text/plain; charset=utf-8", "ok: goinit is running\n"},
		{"kubelet", "GET", "GET /readyz HTTP/1.1\r\nHost: 10.1.2.3:9090\r\nUser-Agent: kube-probe/1.31\r\nAccept: */*\r\nConnection: close\r\n\r\n", 200, "text/plain; charset=utf-8", "ready: 2 ready"},
		{"query ignored", "GET", "GET /readyz?full=1 HTTP/1.1\r\nHost: x\r\n\r\n", 200, "", "ready: 2 ready"},
		{"absolute-form", "GET", "GET http://x:9090/healthz HTTP/1.1\r\nHost: x:9090\r\n\r\n", 200, "", "ok"},
		{"gzip asked, identity sent", "GET", "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n", 200, "text/plain; version=0.0.4; charset=utf-8", "goinit_ready_workers 2\n"},
		{"HEAD", "HEAD", "HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n", 200, "text/plain; charset=utf-8", ""},
		{"HEAD metrics", "HEAD", "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200, "text/plain; version=0.0.4; charset=utf-8", ""},
		{"POST with a body", "POST", "POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world", 405, "", "method POST not allowed"},
		{"lower-case method", "GET", "get /readyz HTTP/1.1\r\nHost: x\r\n\r\n", 405, "", "not allowed"},
		{"unknown path", "GET", "GET /metrics/ HTTP/1.1\r\nHost: x\r\n\r\n", 404, "", "goinit serves /healthz, /readyz and /metrics"},
		{"no Host", "GET", "GET /healthz HTTP/1.1\r\n\r\n", 400, "", "bad request: an HTTP/1.1 request needs exactly one Host"},
		{"HTTP/2 preface", "GET", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "", "only HTTP/1.0 and HTTP/1.1"},
		{"garbage", "GET", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", 400, "", "bad request: "},
		{"head over 8 KiB", "GET", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 12<<10) + "\r\n\r\n", 431, "", "larger than 8 KiB"},
	} {
		resp, body := exchange(t, base, tc.method, tc.raw)
		switch {
		case resp.StatusCode != tc.status:
			t.Errorf("%s: status %d, want %d (%q)", tc.name, resp.StatusCode, tc.status, body)
		case !strings.Contains(body, tc.body) || (tc.body == "" && body != ""):
			t.Errorf("%s: body %q, want %q", tc.name, body, tc.body)
		case tc.contentType != "" && resp.Header.Get("Content-Type") != tc.contentType:
			t.Errorf("%s: Content-Type %q, want %q", tc.name, resp.Header.Get("Content-Type"), tc.contentType)
		case !resp.Close || resp.Header.Get("Content-Encoding") != "":
			t.Errorf("%s: headers %v, want Connection: close and no Content-Encoding", tc.name, resp.Header)
		case (tc.status == 405) != (resp.Header.Get("Allow") == "GET, HEAD"):
			t.Errorf("%s: Allow %q", tc.name, resp.Header.Get("Allow"))
		case resp.Header.Get("Date") == "":
			t.Errorf("%s: no Date", tc.name)
		}
		if tc.method == "HEAD" && resp.ContentLength <= 0 {
			t.Errorf("%s: Content-Length %d", tc.name, resp.ContentLength)
		}
		// The metrics change from one scrape to the next (the snapshot's age).
		if tc.method == "HEAD" && !strings.Contains(tc.raw, "/metrics") {
			_, get := exchange(t, base, "GET", strings.Replace(tc.raw, "HEAD", "GET", 1))
			if resp.ContentLength <= 0 || resp.ContentLength != int64(len(get)) {
				t.Errorf("%s: Content-Length %d, GET's body has %d bytes", tc.name, resp.ContentLength, len(get))
			}
		}
	}
}

// TestTrickle: the header deadline is for the whole head, so a client
// sending a byte now and then is still cut off, with a 408.
func TestTrickle(t *testing.T) {
	base, _ := serve(t, Options{ReadHeaderTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	answered := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(c)
		answered <- b
	}()
	for _, b := range []byte("GET /healthz HTTP/1.1\r\nHost: x\r\n") {
		if _, err := c.Write([]byte{b}); err != nil {
			break // cut off
		}
		select {
		case b := <-answered:
			if d := time.Since(start); !bytes.HasPrefix(b, []byte("HTTP/1.1 408 ")) || d > 3*time.Second {
				t.Fatalf("after %s: %q, want a 408 at about 300ms", d, b)
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("a client trickling its head was not cut off in %s", time.Since(start))
}

// TestShutdown: once the context ends, Serve stops accepting, gives
// connections ShutdownTimeout and then closes them and returns.
func TestShutdown(t *testing.T) {
	base, _, stop := start(t, Options{ReadHeaderTimeout: time.Minute, ShutdownTimeout: 200 * time.Millisecond})
	addr := strings.TrimPrefix(base, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\n")
	// The server has the connection once it answers another probe.
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("probe = %d", code)
	}
	if err := stop(5 * time.Second); err != nil {
		t.Fatalf("%v, with ShutdownTimeout 200ms", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("held connection after Serve returned: read %v, want EOF", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("the listener still accepts after Serve returned")
	}
}
