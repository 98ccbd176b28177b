package health

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

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
// publisher its snapshots come from.
func serve(t *testing.T, o Options) (string, *state.Publisher) {
	t.Helper()
	var pub state.Publisher
	o.Snapshot = pub.Load
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(o).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return 5s after its context ended")
		}
	})
	return "http://" + ln.Addr().String(), &pub
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

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

// TestMaxConns: connections beyond MaxConns wait; closing one lets the next
// request through.
func TestMaxConns(t *testing.T) {
	base, pub := serve(t, Options{MaxConns: 2, ReadHeaderTimeout: 10 * time.Second})
	pub.Publish(statetest.Sample(time.Now()))
	addr := strings.TrimPrefix(base, "http://")
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	result := make(chan int, 1)
	go func() {
		c := &http.Client{Timeout: 8 * time.Second}
		resp, err := c.Get(base + "/healthz")
		if err != nil {
			result <- 0
			return
		}
		resp.Body.Close()
		result <- resp.StatusCode
	}()
	select {
	case code := <-result:
		t.Fatalf("a third connection was served (%d) while 2 of MaxConns=2 were held", code)
	case <-time.After(500 * time.Millisecond):
	}
	held[0].Close()
	select {
	case code := <-result:
		if code != 200 {
			t.Fatalf("after a slot freed: %d, want 200", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("closing a held connection did not let the waiting request through")
	}
}
