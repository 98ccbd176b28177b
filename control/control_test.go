package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/state"
	"github.com/goinit/goinit/state/statetest"
)

// helperEnv makes the test binary act as a `goinit` client: it runs RunCLI
// with its arguments and exits with its code (the peer-credential test
// runs it as another uid).
const helperEnv = "GOINIT_CONTROL_TEST_CLIENT"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(RunCLI(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// syncBuffer is a log destination tests read while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeSupervisor answers requests the way init/ will: one goroutine, never
// blocking on a reply. It records what it was asked.
type fakeSupervisor struct {
	mu       sync.Mutex
	asked    []Request
	rollback bool // the next reload --wait fails
	hold     bool // reload --wait is never answered
}

func (f *fakeSupervisor) run(ctx context.Context, reqs <-chan Request, pub *state.Publisher) {
	workers := 3
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-reqs:
			f.mu.Lock()
			f.asked = append(f.asked, r)
			rollback, hold := f.rollback, f.hold
			f.mu.Unlock()
			switch r.Cmd {
			case CmdReload:
				switch {
				case hold && r.Args.Wait:
				case !r.Args.Wait:
					r.Respond(Response{Message: "reload started"})
				case rollback:
					r.Respond(Response{Err: errors.New("worker 1 (pid 99) exited with status 1 before it was ready; rolled back to the previous version"), Result: ReloadRolledBack})
				default:
					r.Respond(Response{Message: "reloaded 3 workers", Result: ReloadSucceeded})
				}
			case CmdScale:
				s := *pub.Load() // a copy: published snapshots are never changed
				s.Pool.Workers, workers = r.Args.Workers, r.Args.Workers
				pub.Publish(&s)
				r.Respond(Response{Message: fmt.Sprintf("scaling to %d workers", workers)})
			case CmdRestart, CmdSignal:
				if id, ok := r.Args.Target.Worker(); ok && id >= workers {
					r.Respond(Response{Err: fmt.Errorf("no worker %d (workers are 0 to %d)", id, workers-1)})
					continue
				}
				r.Respond(Response{Message: "done"})
			}
		}
	}
}

func (f *fakeSupervisor) last() Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.asked) == 0 {
		return Request{}
	}
	return f.asked[len(f.asked)-1]
}

type testServer struct {
	path string
	pub  *state.Publisher
	sup  *fakeSupervisor
	logs *syncBuffer
}

// startServer runs a Server on a socket in a temporary directory, with a
// fake supervisor goroutine behind it.
func startServer(t *testing.T, o Options) *testServer {
	t.Helper()
	ts := &testServer{path: filepath.Join(t.TempDir(), "run", "control.sock"), pub: &state.Publisher{},
		sup: &fakeSupervisor{}, logs: &syncBuffer{}}
	ts.pub.Publish(statetest.Sample(time.Now()))
	logger := slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ln, err := Listen(ts.path, logger)
	if err != nil {
		t.Fatal(err)
	}
	reqs := make(chan Request, 4)
	o.Requests, o.Snapshot, o.Logger = reqs, ts.pub.Load, logger
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(o).Serve(ctx, ln) }()
	go ts.sup.run(ctx, reqs, ts.pub)
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
		if _, err := os.Stat(ts.path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket file left behind after Serve: %v", err)
		}
	})
	return ts
}

// cli runs a control subcommand against ts in-process.
func (ts *testServer) cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code := RunCLI(ctx, append(args, "--control="+ts.path), func(string) string { return "" }, &out, &errb)
	return code, out.String(), errb.String()
}

func TestSocketMode(t *testing.T) {
	ts := startServer(t, Options{})
	for path, want := range map[string]os.FileMode{ts.path: 0o600 | os.ModeSocket, filepath.Dir(ts.path): 0o700 | os.ModeDir} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
		}
	}
}

func TestCLI(t *testing.T) {
	ts := startServer(t, Options{})
	for _, tc := range []struct {
		args      []string
		code      int
		out, errs string
		check     func(Request) bool
	}{
		{args: []string{"status"}, out: "worker  2   -    backing-off  no     -"},
		{args: []string{"status"}, out: "signal KILL: killed by the OOM killer (memory limit 256MiB)"},
		{args: []string{"status"}, out: "2 of 3 workers ready (--min-ready 1)"},
		{args: []string{"reload"}, out: "reload started", check: func(r Request) bool { return r.Cmd == CmdReload && !r.Args.Wait }},
		{args: []string{"reload", "--wait"}, out: "reloaded 3 workers", check: func(r Request) bool { return r.Args.Wait }},
		{args: []string{"scale", "5"}, out: "scaling to 5 workers", check: func(r Request) bool { return r.Cmd == CmdScale && r.Args.Workers == 5 }},
		{args: []string{"restart", "all"}, out: "done", check: func(r Request) bool { return r.Cmd == CmdRestart && r.Args.Target == TargetAll }},
		{args: []string{"restart", "9"}, code: ExitFailed, errs: "goinit: restart: no worker 9 (workers are 0 to 4)\n"},
		{args: []string{"signal", "hup", "1"}, out: "done", check: func(r Request) bool {
			return r.Cmd == CmdSignal && r.Args.Signal == unix.SIGHUP && r.Args.Target == "1"
		}},
		{args: []string{"signal", "USR1"}, out: "done", check: func(r Request) bool { return r.Args.Signal == unix.SIGUSR1 && r.Args.Target == TargetAll }},
		{args: []string{"scale", "0"}, code: ExitUsage, errs: "N must be a number of workers from 1 to 4096"},
		{args: []string{"signal", "NOPE"}, code: ExitUsage, errs: "usage: goinit signal SIG [ID|agent|all]"},
		{args: []string{"restart"}, code: ExitUsage, errs: "takes one argument"},
		{args: []string{"status", "--bogus"}, code: ExitUsage, errs: "unknown flag: --bogus"},
	} {
		code, out, errs := ts.cli(t, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errs, tc.errs) {
			t.Errorf("goinit %s: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				strings.Join(tc.args, " "), code, out, errs, tc.code, tc.out, tc.errs)
		}
		if tc.check != nil && !tc.check(ts.sup.last()) {
			t.Errorf("goinit %s: the supervisor got %+v", strings.Join(tc.args, " "), ts.sup.last())
		}
	}

	ts.sup.mu.Lock()
	ts.sup.rollback = true
	ts.sup.mu.Unlock()
	if code, _, errs := ts.cli(t, "reload", "--wait"); code != ExitRolledBack || !strings.Contains(errs, "rolled back") {
		t.Errorf("reload --wait of a bad release: exit %d, stderr %q; want %d", code, errs, ExitRolledBack)
	}

	code, out, _ := ts.cli(t, "status", "--json")
	var snap state.Snapshot
	if err := json.Unmarshal([]byte(out), &snap); code != 0 || err != nil {
		t.Fatalf("status --json: exit %d, %v:\n%s", code, err, out)
	}
	if len(snap.Processes) != 4 || snap.Processes[3].LastReason == "" || snap.Pool.Workers != 5 {
		t.Errorf("status --json lost fields: %+v", snap)
	}
}

// TestTop: frames arrive every interval until the context ends (Ctrl-C),
// which is a clean exit; output that is not a terminal gets no ANSI codes.
func TestTop(t *testing.T) {
	ts := startServer(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 1300*time.Millisecond)
	defer cancel()
	var out, errb bytes.Buffer
	code := RunCLI(ctx, []string{"top", "--interval=200ms", "--control=" + ts.path}, os.Getenv, &out, &errb)
	frames := strings.Count(out.String(), "--- ")
	if code != ExitOK || frames < 4 || frames > 8 || strings.Contains(out.String(), "\x1b") || errb.Len() > 0 {
		t.Fatalf("top for 1.3s at 200ms: exit %d, %d frames, stderr %q:\n%s", code, frames, errb.String(), out.String())
	}
}

func TestNoSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	var out, errb bytes.Buffer
	code := RunCLI(context.Background(), []string{"status"}, func(k string) string {
		if k == EnvControl {
			return path
		}
		return ""
	}, &out, &errb)
	want := "goinit: no goinit control socket at " + path + " (is goinit running with --control?)\n"
	if code != ExitUnavailable || errb.String() != want {
		t.Fatalf("status without a socket: exit %d, stderr %q; want %d, %q", code, errb.String(), ExitUnavailable, want)
	}
	code = RunCLI(context.Background(), []string{"status"}, func(string) string { return "off" }, &out, &errb)
	if code != ExitUnavailable {
		t.Fatalf("status with %s=off: exit %d", EnvControl, code)
	}
}

// rawCall sends one line and returns the one answer line.
func rawCall(t *testing.T, path, line string) wireResponse {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, line); err != nil {
		t.Fatal(err)
	}
	var r wireResponse
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		t.Fatalf("answer to %.60q: %v", line, err)
	}
	return r
}

func TestBadRequests(t *testing.T) {
	ts := startServer(t, Options{})
	for line, want := range map[string]string{
		`{"v":2,"cmd":"status"}` + "\n":                "protocol version 2 is not supported; this goinit speaks version 1",
		`{"v":1,"cmd":"launch"}` + "\n":                `unknown command "launch"`,
		`status` + "\n":                                "not a JSON object",
		`{"v":1,"cmd":"scale","workers":99999}` + "\n": "from 1 to 4096",
		`{"v":1,"cmd":"restart","target":"-1"}` + "\n": `target "-1"`,
		`{"v":1,"cmd":"status","pad":"` + strings.Repeat("x", MaxRequestBytes) + `"}` + "\n": "request longer than 4096 bytes",
	} {
		if r := rawCall(t, ts.path, line); r.OK || !strings.Contains(r.Error, want) || r.V != Version {
			t.Errorf("%.60q: answer %+v, want an error with %q", line, r, want)
		}
	}
	// A request without its final newline, half-closed (socat, nc -N), is
	// still answered.
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: ts.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, `{"v":1,"cmd":"scale","workers":2}`)
	c.CloseWrite()
	var r wireResponse
	if err := json.NewDecoder(c).Decode(&r); err != nil || !r.OK || r.Message != "scaling to 2 workers" {
		t.Fatalf("half-closed request: %+v, %v", r, err)
	}
}

// TestClientNeverReads: a top client that never reads fills its socket
// buffer; the server drops it at its write deadline while other clients and
// the supervisor are served all along.
func TestClientNeverReads(t *testing.T) {
	ts := startServer(t, Options{WriteTimeout: 300 * time.Millisecond, RequestTimeout: 300 * time.Millisecond})
	// A big pool makes each frame about 100 KiB, so the buffer fills fast.
	big := statetest.Sample(time.Now())
	for i := range 400 {
		big.Processes = append(big.Processes, state.Process{Role: state.RoleWorker, ID: 3 + i, State: state.StateReady,
			LastReason: strings.Repeat("r", 200)})
	}
	ts.pub.Publish(big)

	stuck, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	io.WriteString(stuck, `{"v":1,"cmd":"top","interval_ms":200}`+"\n")
	silent, err := net.Dial("unix", ts.path) // connects, never sends
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		start := time.Now()
		if code, _, errs := ts.cli(t, "scale", "3"); code != 0 {
			t.Fatalf("scale next to a stuck client: exit %d %s", code, errs)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("scale took %s next to a stuck client", d)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// By now the server has given up on both: reading drains what was
	// buffered and then must reach EOF, not more frames.
	for name, c := range map[string]net.Conn{"never reads": stuck, "never sends": silent} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Errorf("client that %s: still open (%v), want closed by the server", name, err)
		}
	}
}

func TestMaxClients(t *testing.T) {
	ts := startServer(t, Options{MaxClients: 2})
	// Two top clients hold both slots; each has its first frame, so the
	// server has counted it.
	for range 2 {
		c, err := net.Dial("unix", ts.path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, `{"v":1,"cmd":"top"}`+"\n")
		var r wireResponse
		if err := json.NewDecoder(c).Decode(&r); err != nil || !r.OK {
			t.Fatalf("top: %+v, %v", r, err)
		}
	}
	code, _, errs := ts.cli(t, "status")
	if code != ExitFailed || !strings.Contains(errs, "2 control clients are connected") {
		t.Fatalf("a third client with MaxClients=2: exit %d %q, want refused as busy", code, errs)
	}
}

func TestListen(t *testing.T) {
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// The default path on a root that cannot have it (/proc refuses
	// mkdir, even to root): off, one debug line, no error.
	ln, err := listen("", "/proc/goinit-test/control.sock", logger)
	if ln != nil || err != nil {
		t.Fatalf("default path unavailable: %v, %v; want off", ln, err)
	}
	if got := logs.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "control socket off: cannot create /proc/goinit-test") {
		t.Fatalf("debug line: %q", got)
	}
	if _, err := Listen("/proc/goinit-test/control.sock", logger); err == nil || !strings.HasPrefix(err.Error(), "--control=/proc/goinit-test/control.sock: cannot create") {
		t.Fatalf("explicit unusable path: %v", err)
	}
	if ln, err := Listen("off", logger); ln != nil || err != nil {
		t.Fatalf("off: %v, %v", ln, err)
	}

	path := filepath.Join(t.TempDir(), "c.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path, logger); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("socket in use: %v", err)
	}
	old.SetUnlinkOnClose(false)
	old.Close() // leaves a stale socket file, as a killed goinit does
	ln, err = Listen(path, logger)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln.Close()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path, logger); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("regular file in the way: %v", err)
	}
}

// TestPeerCredentials runs the client as uid 65534. With the socket's own
// mode the kernel refuses the connect; with the mode opened up (a volume, a
// umask) the server's SO_PEERCRED check refuses and logs it.
func TestPeerCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root, and CI runs as root")
		}
		t.Skip("needs root to run a client as another uid")
	}
	ts := startServer(t, Options{})
	// The client binary and the socket's directories must be reachable
	// by uid 65534.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "client")
	copyFile(t, self, bin)
	for d := filepath.Dir(bin); d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	for d := filepath.Dir(ts.path); d != "/"; d = filepath.Dir(d) {
		if strings.HasPrefix(d, os.TempDir()+"/") {
			os.Chmod(d, 0o755)
		}
	}
	run := func() (int, string) {
		cmd := exec.Command(bin, "status", "--control="+ts.path)
		cmd.Env = []string{helperEnv + "=1"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), errb.String()
	}

	if code, errs := run(); code != ExitUnavailable || !strings.Contains(errs, "permission denied on "+ts.path) {
		t.Errorf("uid 65534 against a 0600 socket: exit %d, %q; want %d, permission denied", code, errs, ExitUnavailable)
	}
	if err := os.Chmod(ts.path, 0o666); err != nil {
		t.Fatal(err)
	}
	code, errs := run()
	if code != ExitFailed || !strings.Contains(errs, "permission denied: uid 65534 may not control goinit") {
		t.Errorf("uid 65534 through an open socket: exit %d, %q; want %d, refused by the server", code, errs, ExitFailed)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "refused a connection from uid 65534") {
		t.Errorf("refusal not logged:\n%s", logs)
	}
	if n := len(ts.sup.asked); n != 0 {
		t.Errorf("the supervisor got %d requests from a refused peer", n)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// A reload --wait client that goes away gives its slot back at once, not
// when the reload ends; one that only half-closes still gets the answer.
func TestReloadWaitClientLeaves(t *testing.T) {
	ts := startServer(t, Options{MaxClients: 1})
	ts.sup.mu.Lock()
	ts.sup.hold = true
	ts.sup.mu.Unlock()
	c, err := net.Dial("unix", ts.path)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, `{"v":1,"cmd":"reload","wait":true}`+"\n")
	c.(*net.UnixConn).CloseWrite() // a half-close is not leaving
	deadline := time.Now().Add(5 * time.Second)
	for ts.sup.last().Cmd != CmdReload {
		if time.Now().After(deadline) {
			t.Fatal("the supervisor never got the reload")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _, errs := ts.cli(t, "status"); code != ExitFailed || !strings.Contains(errs, "busy") {
		t.Fatalf("status while a half-closed reload --wait waits: exit %d %q, want busy", code, errs)
	}
	c.Close()
	for {
		code, _, _ := ts.cli(t, "status")
		if code == ExitOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot of a reload --wait client that left is still taken: status exit %d", code)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
