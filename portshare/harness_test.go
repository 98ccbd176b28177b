package portshare

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
	"golang.org/x/sys/unix"
)

// The test binary doubles as goinit's shim and as a Go server, so the tests
// run exactly the calls goinit makes, in real processes.
const (
	envShim     = "PORTSHARE_TEST_SHIM"     // handoff fd: install the filter, exec argv
	envShimUID  = "PORTSHARE_TEST_UID"      // drop to this uid (and gid) first
	envGoServer = "PORTSHARE_TEST_GOSERVER" // port: net.Listen("tcp", ":PORT") and serve
	envNoGetfd  = "PORTSHARE_TEST_NO_GETFD" // 1: pidfd_getfd fails with EPERM in the whole test process
)

func TestMain(m *testing.M) {
	if v := os.Getenv(envShim); v != "" {
		os.Exit(testShim(v))
	}
	if v := os.Getenv(envGoServer); v != "" {
		os.Exit(testGoServer(v))
	}
	if os.Getenv(envNoGetfd) == "1" {
		if err := refuseGetfd(); err != nil {
			fmt.Fprintln(os.Stderr, "cannot make pidfd_getfd fail:", err)
			os.Exit(2)
		}
	}
	os.Exit(m.Run())
}

// testShim plays goinit's shim: optionally become another user, install
// the filter and send its descriptor, exec the command on the same thread.
func testShim(fdText string) int {
	fd, _ := strconv.Atoi(fdText)
	if v := os.Getenv(envShimUID); v != "" {
		id, _ := strconv.Atoi(v)
		err := syscall.Setgroups(nil)
		if err == nil {
			err = syscall.Setgid(id)
		}
		if err == nil {
			err = syscall.Setuid(id)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "shim: setuid:", err)
			return 125
		}
	}
	path, err := exec.LookPath(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "shim:", err)
		return 127
	}
	if err := InstallFilter(fd); err != nil {
		fmt.Fprintln(os.Stderr, "shim:", err)
		return 125
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envShim+"=") && !strings.HasPrefix(kv, envShimUID+"=") {
			env = append(env, kv)
		}
	}
	err = unix.Exec(path, os.Args[1:], env)
	fmt.Fprintln(os.Stderr, "shim: exec:", err)
	return 126
}

// testGoServer is an unmodified Go server: net.Listen("tcp", ":PORT"),
// which is MPTCP since Go 1.24 where the kernel has it.
func testGoServer(port string) int {
	l, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	proto := 0
	if rc, err := l.(*net.TCPListener).SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { proto, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) })
	}
	fmt.Printf("bound %d protocol %d\n", l.Addr().(*net.TCPAddr).Port, proto)
	for {
		c, err := l.Accept()
		if err != nil {
			return 1
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Read(make([]byte, 4096))
			body := fmt.Sprintf("pid %d port %d\n", os.Getpid(), l.Addr().(*net.TCPAddr).Port)
			fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}()
	}
}

// requireRoot skips where the tests cannot run, and fails under CI=true,
// where they must.
func requireRoot(t *testing.T) {
	t.Helper()
	testbin.RequireRoot(t, "pidfd_getfd on workers of other users")
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// newSharer returns a Sharer closed at the end of the test, logging to t.
func newSharer(t *testing.T, p Policy) *Sharer {
	t.Helper()
	s, err := New(Config{Policy: p, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// worker is a process started through the test shim.
type worker struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan string
	stop  func() // SIGKILL its process group and reap it
}

// startWorker starts argv through the shim, with the notification
// descriptor attached to s as worker id; uid >= 0 runs it as that user.
func startWorker(t *testing.T, s *Sharer, id, uid int, env []string, argv ...string) *worker {
	t.Helper()
	h, err := NewHandoff()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], argv...)
	cmd.Env = append(append(os.Environ(), envShim+"=3"), env...)
	if uid >= 0 {
		cmd.Env = append(cmd.Env, envShimUID+"="+strconv.Itoa(uid))
	}
	cmd.ExtraFiles = []*os.File{h.Child()}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = testWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		h.Close()
		t.Fatal(err)
	}
	s.AttachHandoff(id, cmd.Process.Pid, h, 0)
	w := &worker{t: t, cmd: cmd, lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			t.Logf("worker %d: %s", id, sc.Text())
			w.lines <- sc.Text()
		}
		close(w.lines)
	}()
	var once sync.Once
	w.stop = func() {
		once.Do(func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
		})
	}
	t.Cleanup(w.stop)
	return w
}

// line waits for the worker's next line of output that starts with prefix.
func (w *worker) line(prefix string) string {
	w.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-w.lines:
			if !ok {
				w.t.Fatalf("worker exited before printing %q", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-deadline:
			w.t.Fatalf("no line %q from the worker within 20s", prefix)
		}
	}
}

// ask sends one HTTP/1.0 request on a new connection and returns the body.
func ask(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	_, body, ok := strings.Cut(string(b), "\r\n\r\n")
	if !ok {
		return "", fmt.Errorf("no HTTP response from %s: %q", addr, b)
	}
	return strings.TrimSpace(body), nil
}

// pidsAnswering asks addr until every pid in want has answered.
func pidsAnswering(t *testing.T, addr string, port int, want ...int) {
	t.Helper()
	missing := map[int]bool{}
	for _, p := range want {
		missing[p] = true
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(missing) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: pids %v never answered", addr, missing)
		}
		body, err := ask(addr)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		var pid, gotPort int
		if _, err := fmt.Sscanf(body, "pid %d port %d", &pid, &gotPort); err != nil {
			t.Fatalf("%s: reply %q: %v", addr, body, err)
		}
		if gotPort != port {
			t.Fatalf("%s: pid %d says its port is %d, want %d", addr, pid, gotPort, port)
		}
		delete(missing, pid)
	}
}

// waitEvent waits for an event of kind from worker.
func waitEvent(t *testing.T, s *Sharer, kind EventKind, worker int) Event {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case e := <-s.Events():
			if e.Kind == kind && e.Worker == worker {
				return e
			}
		case <-deadline:
			t.Fatalf("no %s event from worker %d within 20s", kind, worker)
		}
	}
}

// heldCount is the number of sockets s holds.
func heldCount(s *Sharer) int {
	s.table.mu.Lock()
	defer s.table.mu.Unlock()
	return len(s.table.byKey)
}

func testdata(name string) string {
	p, _ := filepath.Abs(filepath.Join("testdata", name))
	return p
}
