// Package testbin builds goinit and the test programs once per test process,
// so that end-to-end tests in every package run real binaries, exactly as
// users do.
package testbin

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goinit/goinit/signals"
)

// built remembers which packages this test process has built; building
// the same program again would only cost time.
var built = struct {
	sync.Mutex
	paths map[string]string
}{paths: map[string]string{}}

// Root returns the repository root, found from this source file's location.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// CacheDir returns the git-ignored cache directory for downloaded or built
// test artefacts, creating it if needed.
func CacheDir(t testing.TB) string {
	dir := filepath.Join(Root(), ".cache")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("create cache dir: %v", err)
	}
	return dir
}

// Goinit returns the path of a static goinit binary built from this tree
// as it is released (signals.PreemptOffLDFlags, so it forwards SIGURG).
func Goinit(t testing.TB) string {
	t.Helper()
	return build(t, "./init", "goinit", signals.PreemptOffLDFlags)
}

// GoinitPlain returns goinit built by a plain `go build`, without the
// release build's linker flags: its Go runtime preempts goroutines with
// SIGURG, so it must not forward SIGURG.
func GoinitPlain(t testing.TB) string {
	t.Helper()
	return build(t, "./init", "goinit-plain", "")
}

// Build compiles the Go package pkg (relative to the repository root, e.g.
// "./examples/goserver") into a static binary and returns its path. Each
// package is built once per test process, into the git-ignored cache, where
// the next run overwrites it instead of leaving a copy in /tmp. The binary
// is named after the package directory ("init" is named "goinit").
func Build(t testing.TB, pkg string) string {
	t.Helper()
	return build(t, pkg, filepath.Base(pkg), "")
}

// build compiles pkg into the cache as name, with ldflags.
func build(t testing.TB, pkg, name, ldflags string) string {
	t.Helper()
	built.Lock()
	defer built.Unlock()
	key := pkg + " " + name
	if p, ok := built.paths[key]; ok {
		return p
	}
	out := filepath.Join(CacheDir(t), "bin", filepath.Clean(pkg), name)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatalf("build %s: %v", pkg, err)
	}
	// Test packages run in parallel processes: build to a private name and
	// rename, which is atomic, so nobody ever runs a half-written binary.
	tmp, err := os.CreateTemp(filepath.Dir(out), name+".*.tmp")
	if err != nil {
		t.Fatalf("build %s: %v", pkg, err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags="+ldflags, "-o", tmp.Name(), pkg)
	cmd.Dir = Root()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		t.Fatalf("build %s: %v", pkg, err)
	}
	built.paths[key] = out
	return out
}

// Answers asks the HTTP workers behind the unix socket sock until every
// reply in want (e.g. "worker ID pid PID") has come back, and fails t
// after timeout. Each request is a new connection, so the kernel may hand
// it to any worker.
func Answers(t testing.TB, sock string, timeout time.Duration, want ...string) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	defer client.CloseIdleConnections()
	missing := map[string]bool{}
	for _, w := range want {
		missing[w] = true
	}
	var got []string
	deadline := time.Now().Add(timeout)
	for len(missing) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no reply %v within %s; got %q", missing, timeout, got)
		}
		resp, err := client.Get("http://worker/")
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		reply := strings.TrimSpace(string(b))
		got = append(got, reply)
		delete(missing, reply)
	}
}

// Get fetches url with c (a client with a 5 s timeout when nil) and
// returns the status and body; a request that fails fails the test.
func Get(t testing.TB, c *http.Client, url string) (int, string) {
	t.Helper()
	if c == nil {
		c = &http.Client{Timeout: 5 * time.Second}
	}
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

// Next receives the next value from ch, failing the test if none comes
// within 10 s.
func Next[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received within 10s")
	}
	panic("unreachable")
}

// RequireRoot skips a test that needs root, saying why (what), except
// when CI=true: CI runs as root, so there it is a failure, not a skip.
func RequireRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("this test needs root (%s), and CI runs as root", what)
		}
		t.Skipf("needs root (%s)", what)
	}
}

// Tool returns the path of a program a test needs. Without it the test is
// skipped, except when CI=true: CI installs it (scripts/install-deps.sh),
// so a missing tool there is a failure, not a skip.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing, and CI installs it (scripts/install-deps.sh): %v", name, err)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

// FreePort returns a TCP port nothing listened on a moment ago, on any
// address family.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
