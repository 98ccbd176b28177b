package sdnotify

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
	"golang.org/x/sys/unix"
)

// tool returns the path of a client program, skipping the test when it is
// missing (failing in CI, where scripts/install-deps.sh installs it).
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is needed: run scripts/install-deps.sh", name)
		}
		t.Skipf("%s not installed (apt-get install systemd python3)", name)
	}
	return p
}

// sdNotifyPy is a python3 program calling libsystemd's sd_notify(3) with
// argv[1], then, if argv[2] is "barrier", sd_notify_barrier(3).
const sdNotifyPy = `
import ctypes, sys
lib = ctypes.CDLL("libsystemd.so.0")
r = lib.sd_notify(0, sys.argv[1].encode())
if r <= 0: sys.exit("sd_notify returned %d" % r)
if len(sys.argv) > 2 and sys.argv[2] == "barrier":
    r = lib.sd_notify_barrier(0, ctypes.c_uint64(5000000))
    if r < 0: sys.exit("sd_notify_barrier returned %d" % r)
`

func python(t *testing.T) string {
	t.Helper()
	py := tool(t, "python3")
	if out, err := exec.Command(py, "-c", `import ctypes; ctypes.CDLL("libsystemd.so.0")`).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("libsystemd.so.0 is needed: %s", out)
		}
		t.Skipf("libsystemd.so.0 not loadable: %s", out)
	}
	return py
}

// logBuffer collects log lines, safe for the reader goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newHub(t *testing.T) (*Hub[string], *logBuffer) {
	var logs logBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("log:\n" + logs.String())
		}
	})
	return NewHub[string](Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}), &logs
}

func open(t *testing.T, hub *Hub[string], key string) *Socket[string] {
	t.Helper()
	s, err := hub.Open(key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// run starts cmd as the process of s, with s's NOTIFY_SOCKET, and names it.
// stdout is returned as lines, so a test can wait for a marker.
func run(t *testing.T, s *Socket[string], cmd *exec.Cmd, setPID bool) *bufio.Scanner {
	t.Helper()
	cmd.Env = append(os.Environ(), s.Env())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if setPID {
		s.SetPID(cmd.Process.Pid)
	}
	return bufio.NewScanner(out)
}

// waitLine waits for the marker line on sc, failing after a deadline.
func waitLine(t *testing.T, sc *bufio.Scanner, marker string) {
	t.Helper()
	got := make(chan bool, 1)
	go func() {
		for sc.Scan() {
			if sc.Text() == marker {
				got <- true
				return
			}
		}
		got <- false
	}()
	select {
	case ok := <-got:
		if !ok {
			t.Fatalf("process ended before printing %q", marker)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no %q within 10s", marker)
	}
}

// next waits for the next event of hub, failing the test after a deadline.
func next(t *testing.T, hub *Hub[string]) Event[string] {
	t.Helper()
	return testbin.Next(t, hub.Events())
}

// none checks that no event arrives for a while after everything a test
// did was answered (the barriers), so nothing can still be on its way.
func none(t *testing.T, hub *Hub[string]) {
	t.Helper()
	select {
	case ev := <-hub.Events():
		t.Fatalf("unexpected event %+v", ev)
	default:
	}
}

// Debian's systemd-notify, run from a worker's shell: it is a child of the
// worker, and waits on a barrier until goinit has handled its message.
func TestSystemdNotifyFromWorkerShell(t *testing.T) {
	notify := tool(t, "systemd-notify")
	hub, _ := newHub(t)
	s := open(t, hub, "worker 0")
	sc := run(t, s, exec.Command("/bin/sh", "-c", notify+` --ready --status="serving on :8080" && `+notify+` WATCHDOG=1 && echo done && exec sleep 60`), true)
	ev := next(t, hub)
	if ev.Key != "worker 0" || !ev.Ready || !ev.StatusSet || ev.Status != "serving on :8080" || ev.Watchdog {
		t.Fatalf("first event = %+v, want READY=1 and the status", ev)
	}
	if ev = next(t, hub); !ev.Watchdog || ev.Ready || ev.StatusSet {
		t.Fatalf("second event = %+v, want WATCHDOG=1 alone", ev)
	}
	waitLine(t, sc, "done") // both barriers answered
	st := s.Stats()
	if st.Accepted != 4 || st.Barriers != 2 || st.FDsClosed != 2 || st.Rejected != 0 {
		t.Fatalf("stats = %+v, want 4 accepted (2 messages, 2 barriers), 2 descriptors closed", st)
	}
	none(t, hub)
}

// A process that is not the worker nor below it cannot speak for it:
// neither an unrelated one nor another worker's child.
func TestForgedSendersRejected(t *testing.T) {
	notify := tool(t, "systemd-notify")
	hub, logs := newHub(t)
	a := open(t, hub, "worker 1")
	b := open(t, hub, "worker 2")
	run(t, a, exec.Command("/bin/sleep", "60"), true)
	// Worker 2 tries to speak for worker 1.
	bsc := run(t, b, exec.Command("/bin/sh", "-c", "NOTIFY_SOCKET="+a.Addr()+" "+notify+" --ready; echo sent; exec sleep 60"), true)
	waitLine(t, bsc, "sent")
	// An unrelated process (the test's own child) tries too.
	cmd := exec.Command(notify, "--ready", "--status=forged")
	cmd.Env = append(os.Environ(), a.Env())
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-notify: %v: %s", err, out)
	}
	// It waited on its barrier: answered by closing the descriptor, not by
	// its 5 s timeout.
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("forged systemd-notify took %v: its barrier was not answered", d)
	}
	st := a.Stats()
	if st.Rejected != 4 || st.Accepted != 0 || st.FDsClosed != 2 || st.RejectedGone != 0 {
		t.Fatalf("stats = %+v, want 4 rejected (2 messages, 2 barriers), 2 descriptors closed", st)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "not pid ") {
		t.Errorf("no warning about the forged sender in the log")
	}
	none(t, hub)
}

// libsystemd's sd_notify(3), from the worker itself and from a descendant
// that waits with sd_notify_barrier(3).
func TestLibsystemdClient(t *testing.T) {
	py := python(t)
	hub, _ := newHub(t)
	s := open(t, hub, "agent")
	script := py + ` -c '` + sdNotifyPy + `' "READY=1
STATUS=from a child" barrier && echo child-done && exec ` + py + ` -c '` + sdNotifyPy + `' WATCHDOG=1 && sleep 60`
	sc := run(t, s, exec.Command("/bin/sh", "-c", script), true)
	ev := next(t, hub)
	if !ev.Ready || ev.Status != "from a child" || ev.PID == s.pid {
		t.Fatalf("event = %+v, want READY=1 from a child of pid %d", ev, s.pid)
	}
	waitLine(t, sc, "child-done")
	// The shell exec'd python: the worker's own pid speaks now.
	if ev = next(t, hub); !ev.Watchdog || ev.PID != s.pid {
		t.Fatalf("event = %+v, want WATCHDOG=1 from pid %d", ev, s.pid)
	}
	if st := s.Stats(); st.Accepted != 3 || st.Barriers != 1 || st.FDsClosed != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

// The race: a sender that did not wait is gone when its datagram is read.
// A child of the worker cannot be told apart from a stranger then, and is
// rejected; the worker itself is accepted, since its pid is not recycled
// before goinit reaps it. The reader starts at SetPID, so the test makes
// the sender exit first.
func TestSenderExitedBeforeCheck(t *testing.T) {
	py := python(t)
	hub, logs := newHub(t)
	s := open(t, hub, "worker 3")
	cmd := exec.Command("/bin/sh", "-c", py+` -c '`+sdNotifyPy+`' READY=1 && echo sent && exec sleep 60`)
	sc := run(t, s, cmd, false)
	waitLine(t, sc, "sent") // the shell has reaped its python child
	s.SetPID(cmd.Process.Pid)
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Received == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := s.Stats(); st.Rejected != 1 || st.RejectedGone != 1 {
		t.Fatalf("stats = %+v, want 1 rejected as gone", st)
	}
	if !strings.Contains(logs.String(), "exited before it could be checked") {
		t.Errorf("log does not say the sender had exited")
	}
	none(t, hub)

	// The worker itself, exited but not reaped.
	w := open(t, hub, "worker 4")
	wcmd := exec.Command(py, "-c", sdNotifyPy, "READY=1\nSTATUS=bye")
	run(t, w, wcmd, false)
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, wcmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	w.SetPID(wcmd.Process.Pid)
	if ev := next(t, hub); ev.Key != "worker 4" || !ev.Ready || ev.Status != "bye" {
		t.Fatalf("event = %+v, want READY=1 from the exited worker", ev)
	}
}

// Descriptors passed with any datagram are closed, a stranger's included,
// and an oversized datagram is dropped.
func TestDescriptorsClosedAndOversize(t *testing.T) {
	hub, _ := newHub(t)
	s := open(t, hub, "w")
	run(t, s, exec.Command("/bin/sleep", "60"), true)
	before := openFDs(t)
	c, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(c)
	to := &unix.SockaddrUnix{Name: s.Addr()}
	var readEnds []*os.File
	var writeEnds []*os.File
	var writeFDs []int
	for range 3 {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		readEnds = append(readEnds, r)
		writeEnds = append(writeEnds, w)
		writeFDs = append(writeFDs, int(w.Fd()))
	}
	if err := unix.Sendmsg(c, []byte("READY=1\nBARRIER=1"), unix.UnixRights(writeFDs...), to, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Sendto(c, bytes.Repeat([]byte("X"), MaxDatagram+1), 0, to); err != nil {
		t.Fatal(err)
	}
	for _, w := range writeEnds {
		w.Close() // goinit's copies are now the only write ends
	}
	for i, r := range readEnds {
		r.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := r.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("pipe %d: read = %v, want EOF once goinit closed the descriptor", i, err)
		}
		r.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Truncated == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := s.Stats(); st.Rejected != 1 || st.FDsClosed != 3 || st.Truncated != 1 {
		t.Fatalf("stats = %+v, want 1 rejected, 3 descriptors closed, 1 truncated", st)
	}
	if after := openFDs(t); after > before+1 { // +1: the test's own socket
		t.Errorf("goinit has %d descriptors open, %d before: a passed one leaked", after, before)
	}
	none(t, hub)
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestCloseBeforeAndAfterSetPID(t *testing.T) {
	hub, _ := newHub(t)
	s, err := hub.Open("x")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.Addr(), "@goinit-") || s.Env() != "NOTIFY_SOCKET="+s.Addr() {
		t.Fatalf("Addr %q, Env %q", s.Addr(), s.Env())
	}
	s.Close() // never started: the reader ends at once
	s.Close()
	s2 := open(t, hub, "y")
	s2.SetPID(os.Getpid())
	s2.SetPID(1) // ignored
	if s2.pid != os.Getpid() {
		t.Fatal("second SetPID changed the pid")
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want fields
	}{
		{"READY=1", fields{ready: true}},
		{"READY=1\nSTATUS=up\nMAINPID=42", fields{ready: true, status: "up", statusSet: true, mainPID: 42}},
		{"STATUS=", fields{statusSet: true}},
		{"STATUS=a=b", fields{status: "a=b", statusSet: true}},
		{"WATCHDOG=1", fields{watchdog: true}},
		{"WATCHDOG=trigger", fields{trigger: true}},
		{"RELOADING=1\nMONOTONIC_USEC=123", fields{reloading: true}},
		{"STOPPING=1", fields{stopping: true}},
		{"ERRNO=2", fields{errno: 2, errnoSet: true}},
		{"ERRNO=x\nMAINPID=-3\nMAINPID=0", fields{}},
		{"BARRIER=1", fields{barrier: true}},
		{"READY=0\nFDSTORE=1\nnonsense\n\n", fields{}},
		{"READY=1\nREADY=0", fields{}},
		{"ready=1", fields{}},
	} {
		if got := parse(tc.msg); got != tc.want {
			t.Errorf("parse(%q) = %+v, want %+v", tc.msg, got, tc.want)
		}
	}
	if (fields{barrier: true}).event() || !(fields{statusSet: true}).event() {
		t.Error("event(): a barrier alone is no event, an empty STATUS= is one")
	}
}

func TestDescends(t *testing.T) {
	self, parent := os.Getpid(), os.Getppid()
	for _, tc := range []struct {
		pid   int
		roots []int
		want  bool
	}{
		{self, []int{self}, true},
		{self, []int{parent}, true},
		{self, []int{0, parent}, true},
		{parent, []int{self}, false},
		{1, []int{self}, false},
		{self, []int{0}, false},
	} {
		if got, err := descends(tc.pid, tc.roots...); got != tc.want || err != nil {
			t.Errorf("descends(%d, %v) = %v, %v; want %v", tc.pid, tc.roots, got, err, tc.want)
		}
	}
	// A process that is gone.
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := descends(cmd.Process.Pid, self); err != errGone {
		t.Errorf("descends(reaped pid) error = %v, want errGone", err)
	}
}
