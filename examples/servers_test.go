// Tests for the example servers: each runs as a real socket-activated worker
// (descriptor 3 from listen.Open, LISTEN_PID set by a shell that then execs
// the server) and on its own, on loopback only.
package examples_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
	"github.com/goinit/goinit/listen"
)

const timeout = 15 * time.Second

// proc is a running example server whose stderr is collected line by line.
type proc struct {
	cmd   *exec.Cmd
	lines chan string // stderr lines, closed at exit
	done  chan struct{}
	err   error // from Wait, valid after done

	mu  sync.Mutex
	log strings.Builder
}

func start(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, lines: make(chan string, 1000), done: make(chan struct{})}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		close(p.lines)
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			p.mu.Lock()
			t.Logf("%s stderr:\n%s", cmd.Path, p.log.String())
			p.mu.Unlock()
		}
	})
	return p
}

// waitLine returns the submatches of the first stderr line matching re.
func (p *proc) waitLine(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				// p.err is written by Wait after lines closes: read it only
				// once done is closed.
				select {
				case <-p.done:
					t.Fatalf("server exited (%v) before logging %q", p.err, re)
				case <-deadline:
					t.Fatalf("server closed stderr and did not exit within %s before logging %q", timeout, re)
				}
			}
			if m := re.FindStringSubmatch(line); m != nil {
				return m
			}
		case <-deadline:
			t.Fatalf("no stderr line matching %q within %s", re, timeout)
		}
	}
}

// stop sends SIGTERM and expects a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("after SIGTERM: %v, want exit status 0", p.err)
		}
	case <-time.After(timeout):
		t.Fatalf("still running %s after SIGTERM", timeout)
	}
}

func environ(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "LISTEN_"), k == "PORT", k == "HOST", k == "GOINIT_WORKER_ID",
			k == "NODE_APP_INSTANCE", k == "WORKERS", k == "NODE_CLUSTER_SCHED_POLICY":
		default:
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// startActivated runs argv as a socket-activated worker with GOINIT_WORKER_ID
// set to worker, and returns it with the base URL of its socket.
func startActivated(t *testing.T, worker string, argv ...string) (*proc, string) {
	t.Helper()
	a, err := listen.ParseAddr("tcp4://127.0.0.1:0#http")
	if err != nil {
		t.Fatal(err)
	}
	f, err := listen.Open(context.Background(), a, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	bound, err := listen.BoundAddr(f)
	if err != nil {
		t.Fatal(err)
	}
	files := []*os.File{f}
	cmd := exec.Command("sh", append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`}, argv...)...)
	cmd.Env = environ(append(listen.Env([]listen.Addr{a}, files), "GOINIT_WORKER_ID="+worker)...)
	cmd.ExtraFiles = files
	return start(t, cmd), "http://" + bound.String()
}

var servingOn = regexp.MustCompile(`worker "([^"]*)" \(pid (\d+)\) serving on (\S+)`)

// startAlone runs argv with HOST=127.0.0.1 PORT=0 and returns it with the
// base URL it logged.
func startAlone(t *testing.T, argv ...string) (*proc, string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = environ("HOST=127.0.0.1", "PORT=0")
	p := start(t, cmd)
	return p, "http://" + p.waitLine(t, servingOn)[3]
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	return testbin.Get(t, c, url)
}

// checkRoutes exercises every route of one server process.
func checkRoutes(t *testing.T, base, server, worker string, pid int) {
	t.Helper()
	c := &http.Client{Timeout: timeout} // keep-alive on: shutdown must close idle connections
	if code, body := get(t, c, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("GET /healthz = %d %q, want 200 ok", code, body)
	}
	want := fmt.Sprintf("hello from %s worker=%s pid=%d\n", server, worker, pid)
	for range 3 {
		if code, body := get(t, c, base+"/"); code != 200 || body != want {
			t.Errorf("GET / = %d %q, want 200 %q", code, body, want)
		}
	}
	if code, _ := get(t, c, base+"/nope"); code != 404 {
		t.Errorf("GET /nope = %d, want 404", code)
	}
	code, body := get(t, c, base+"/stats")
	var st struct {
		PID      int    `json:"pid"`
		Worker   string `json:"worker"`
		Requests int    `json:"requests"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != 200 {
		t.Fatalf("GET /stats = %d %q: %v", code, body, err)
	}
	if st.PID != pid || st.Worker != worker || st.Requests != 3 {
		t.Errorf("GET /stats = %+v, want pid %d, worker %q, 3 requests", st, pid, worker)
	}
}

// inBursts GETs url over new connections in bursts of 4 concurrent
// requests, at most 50 bursts, until done reports true, and hands each
// body to check (one at a time, on the test's goroutine). The bursts are
// there because with one shared socket an idle worker that wins one
// accept tends to win every sequential one.
func inBursts(t *testing.T, url string, check func(body []byte), done func() bool) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	for burst := 0; !done() && burst < 50; burst++ {
		bodies := make([][]byte, 4)
		errs := make([]error, 4)
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				resp, err := client.Get(url)
				if err == nil {
					bodies[i], err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				errs[i] = err
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		for _, b := range bodies {
			check(b)
		}
	}
}

// goinitPID1 returns the command that runs goinit with args as PID 1 of
// new PID and mount namespaces, as in a container: procns mounts a /proc
// of the new namespace, where goinit reads its workers, and execs goinit,
// which stays PID 1 (so the command's pid is goinit's). It needs root: the
// test fails without it under CI=true, and is skipped elsewhere.
func goinitPID1(t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root (a PID namespace), and CI runs as root")
		}
		t.Skip("needs root (a PID namespace)")
	}
	cmd := exec.Command(testbin.Build(t, "./init/testdata/procns"), append([]string{testbin.Goinit(t)}, args...)...)
	cmd.Env = environ(env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	return cmd
}

func goServer(t *testing.T) string { return testbin.Build(t, "./examples/goserver") }

// nodeScript returns the node command for a script in examples/nodeserver.
func nodeScript(t *testing.T, script string) []string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node is required when CI is set: %v", err)
		}
		t.Skipf("node not installed (%v); install Node.js 20 to run this test", err)
	}
	return []string{node, filepath.Join(testbin.Root(), "examples", "nodeserver", script)}
}

func TestGoServerActivated(t *testing.T) {
	p, base := startActivated(t, "7", goServer(t))
	checkRoutes(t, base, "goserver", "7", p.cmd.Process.Pid)
	p.stop(t)
}

func TestGoServerAlone(t *testing.T) {
	p, base := startAlone(t, goServer(t))
	checkRoutes(t, base, "goserver", "", p.cmd.Process.Pid)
	p.stop(t)
}

func TestNodeServerActivated(t *testing.T) {
	p, base := startActivated(t, "7", nodeScript(t, "server.js")...)
	checkRoutes(t, base, "nodeserver", "7", p.cmd.Process.Pid)
	p.stop(t)
}

func TestNodeServerAlone(t *testing.T) {
	p, base := startAlone(t, nodeScript(t, "server.js")...)
	checkRoutes(t, base, "nodeserver", "", p.cmd.Process.Pid)
	p.stop(t)
}

func TestNodeCluster(t *testing.T) {
	argv := nodeScript(t, "cluster.js")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = environ("HOST=127.0.0.1", "PORT=0", "WORKERS=2")
	p := start(t, cmd)
	first, second := p.waitLine(t, servingOn), p.waitLine(t, servingOn)
	if first[3] != second[3] || first[2] == second[2] {
		t.Fatalf("workers %q and %q: want two pids on one address", first[0], second[0])
	}
	// Node's default round-robin policy alternates new connections.
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	seen := map[string]bool{}
	for range 10 {
		_, body := get(t, c, "http://"+first[3]+"/")
		seen[body] = true
	}
	for _, w := range [][]string{first, second} {
		if want := fmt.Sprintf("hello from nodeserver worker=%s pid=%s\n", w[1], w[2]); !seen[want] {
			t.Errorf("no response %q among %v", want, seen)
		}
	}
	p.stop(t)
}
