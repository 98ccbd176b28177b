package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
)

// bindServer is the Go test server that binds its port itself.
func bindServer(t *testing.T) string {
	t.Helper()
	return testbin.Build(t, "./init/testdata/bindserver")
}

// nodeApp writes an unmodified Node server, app.listen(port) and nothing
// else, and returns its path.
func nodeApp(t *testing.T, port int) string {
	t.Helper()
	testbin.Tool(t, "node")
	app := filepath.Join(t.TempDir(), "app.js")
	src := fmt.Sprintf(`const http = require('http');
const server = http.createServer((req, res) => res.end(JSON.stringify({pid: process.pid, worker: process.env.GOINIT_WORKER_ID, port: server.address().port})));
server.listen(%d, () => console.log('listening ' + server.address().port));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
`, port)
	if err := os.WriteFile(app, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return app
}

// answeringPids asks addr over network, from 8 concurrent clients and a
// new connection per request, until want distinct pids have answered
// (sequential requests could all be taken by the worker that accepts
// first), and returns them.
func answeringPids(t *testing.T, network, addr string, want int) map[int]bool {
	t.Helper()
	client := newClient(network, addr)
	var mu sync.Mutex
	pids := map[int]bool{}
	enough := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(pids) >= want
	}
	deadline := time.Now().Add(20 * time.Second)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000 && !enough() && time.Now().Before(deadline); i++ {
				pid, err := get(client, "http://app/")
				if err != nil {
					time.Sleep(10 * time.Millisecond) // not listening yet
					continue
				}
				mu.Lock()
				pids[pid] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if !enough() {
		t.Fatalf("only pids %v answered on %s within 20s, want %d distinct workers", pids, addr, want)
	}
	return pids
}

// TestUnmodifiedServersShareOnePort runs servers that bind the port
// themselves, with no --listen: Node (dual-stack [::]), Go (net.Listen,
// MPTCP since Go 1.24) and Python's http.server on 0.0.0.0. Every worker
// answers on the one port, which goinit holds.
func TestUnmodifiedServersShareOnePort(t *testing.T) {
	requireRoot(t)
	type server struct {
		name  string
		cmd   func(port int) []string
		env   func(port int) []string
		addrs []string // dialled addresses, %d = port
	}
	servers := []server{
		{"node", func(port int) []string { return []string{"node", nodeApp(t, port)} }, nil,
			[]string{"127.0.0.1:%d", "[::1]:%d"}},
		{"go", func(int) []string { return []string{bindServer(t)} },
			func(port int) []string { return []string{fmt.Sprintf("APP_ADDR=:%d", port)} },
			[]string{"127.0.0.1:%d", "[::1]:%d"}},
		{"python", func(port int) []string {
			return []string{"python3", "-c", fmt.Sprintf(`import http.server, json, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = json.dumps({"pid": os.getpid(), "port": self.server.server_address[1]}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
http.server.HTTPServer(("0.0.0.0", %d), H).serve_forever()`, port)}
		}, nil, []string{"127.0.0.1:%d"}},
	}
	for _, sv := range servers {
		t.Run(sv.name, func(t *testing.T) {
			port := testbin.FreePort(t)
			var env []string
			if sv.env != nil {
				env = sv.env(port)
			}
			args := append([]string{"--workers=3", "--"}, sv.cmd(port)...)
			p := start(t, runOpts{pid1: true, env: env}, args...)
			defer p.cmd.Process.Signal(syscall.SIGKILL)
			for _, a := range sv.addrs {
				addr := fmt.Sprintf(a, port)
				pids := answeringPids(t, "tcp", addr, 3)
				t.Logf("%s: pids %v", addr, pids)
			}
			if !strings.Contains(p.errText(), fmt.Sprintf(":%d between the workers; goinit holds it", port)) {
				t.Errorf("no log line saying the port is shared:\n%s", p.errText())
			}
			if strings.Contains(p.errText(), "address already in use") || strings.Contains(p.errText(), "EADDRINUSE") {
				t.Fatalf("a worker could not bind:\n%s", p.errText())
			}
			p.signal(syscall.SIGTERM)
			if code := p.wait(20 * time.Second); code != 0 {
				t.Fatalf("exit %d after SIGTERM:\n%s", code, p.errText())
			}
		})
	}
}

// TestSharedPortSurvivesKillUnderLoad SIGKILLs a worker of an unmodified
// server under a bounded loopback load, with 2 workers and with a single
// restarted one: no connection is refused, because goinit holds the
// socket; clients of a single worker wait in its queue.
func TestSharedPortSurvivesKillUnderLoad(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"two workers", []string{"--workers=2", "--restart-delay=50ms"}},
		{"single command", []string{"--share-ports=auto", "--restart=always", "--restart-delay=50ms"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			port := testbin.FreePort(t)
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			args := append(c.args, "--", bindServer(t))
			p := start(t, runOpts{pid1: true, env: []string{fmt.Sprintf("APP_ADDR=:%d", port)}}, args...)
			defer p.cmd.Process.Signal(syscall.SIGKILL)
			workers := 2
			if c.name == "single command" {
				workers = 1
			}
			pids := answeringPids(t, "tcp", addr, workers)
			refused, answered, lost := loadWhileKilling(t, p, addr, pids)
			t.Logf("%d answered, %d refused, %d lost inside the killed worker", answered, refused, lost)
			if refused != 0 {
				t.Fatalf("%d connections refused while a worker restarted", refused)
			}
			answeringPids(t, "tcp", addr, workers) // the replacement serves
		})
	}
}

// loadWhileKilling runs 4 clients, each up to 300 requests on new
// connections within 20 s, and SIGKILLs one of pids (namespace pids of
// goinit's workers) after the first quarter.
func loadWhileKilling(t *testing.T, p *proc, addr string, pids map[int]bool) (refused, answered, lost int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	stop := time.Now().Add(20 * time.Second)
	const perClient = 300
	killNow, killed := make(chan struct{}), make(chan struct{})
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perClient && time.Now().Before(stop); i++ {
				if c == 0 && i == perClient/4 {
					close(killNow)
					<-killed
				}
				conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					mu.Lock()
					refused++
					mu.Unlock()
					continue
				}
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(conn, "GET / HTTP/1.0\r\n\r\n")
				b, err := io.ReadAll(conn)
				conn.Close()
				mu.Lock()
				if err != nil || !strings.Contains(string(b), `"pid"`) {
					lost++
				} else {
					answered++
				}
				mu.Unlock()
			}
		}()
	}
	<-killNow
	for pid := range pids {
		if err := syscall.Kill(hostPid(t, p.cmd.Process.Pid, pid), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		break
	}
	close(killed)
	wg.Wait()
	return refused, answered, lost
}

// TestSharePortsList shares only the listed ports: a worker binding
// another port binds it for itself, so a second worker fails with
// EADDRINUSE exactly as without goinit.
func TestSharePortsList(t *testing.T) {
	requireRoot(t)
	shared, other := testbin.FreePort(t), testbin.FreePort(t)
	script := fmt.Sprintf(`python3 -c '
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", %d)); s.listen()
o = socket.socket()
try:
    o.bind(("127.0.0.1", %d)); o.listen(); print("other bound", flush=True)
except OSError as e:
    print("other failed", e.errno, flush=True)
print("ready", flush=True)
time.sleep(1000)
'`, shared, other)
	p := start(t, runOpts{pid1: true}, fmt.Sprintf("--share-ports=%d", shared), "--workers=2", "--", "sh", "-c", script)
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	eventually(t, 20*time.Second, "both workers to report", func() bool {
		return strings.Count(p.stdout(), "ready") == 2
	})
	if n := strings.Count(p.stdout(), "other bound"); n != 1 {
		t.Fatalf("the unlisted port was bound %d times, want once (the second worker gets EADDRINUSE):\n%s", n, p.stdout())
	}
	if !strings.Contains(p.stdout(), fmt.Sprintf("other failed %d", syscall.EADDRINUSE)) {
		t.Fatalf("the second bind of the unlisted port did not fail with EADDRINUSE:\n%s", p.stdout())
	}
}

// TestSharePortsNonRootWorker shares the port of a worker run with --user
// as an unprivileged user (no_new_privs lets it install the filter).
func TestSharePortsNonRootWorker(t *testing.T) {
	requireRoot(t)
	port := testbin.FreePort(t)
	p := start(t, runOpts{pid1: true, env: []string{fmt.Sprintf("APP_ADDR=:%d", port)}},
		"--workers=2", "--user=65534:65534", "--", bindServer(t))
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	answeringPids(t, "tcp", fmt.Sprintf("127.0.0.1:%d", port), 2)
}

// TestSharePortsBadValues checks that a bad --share-ports is exit 2 with
// one line, before any worker starts.
func TestSharePortsBadValues(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"--share-ports=banana"}, nil, `invalid --share-ports value "banana"`},
		{[]string{"--share-ports=udp:53"}, nil, `only tcp`},
		{[]string{"--share-ports=0"}, nil, `not a port number`},
		{[]string{"--share-ports=70000"}, nil, `not a port number`},
		{nil, []string{"GOINIT_SHARE_PORTS=3000,x"}, `$GOINIT_SHARE_PORTS: invalid --share-ports value "3000,x"`},
	} {
		args := append(append([]string{"--workers=2"}, c.args...), "--", "true")
		code, stderr := runToEnd(t, runOpts{env: c.env}, args...)
		if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v %v: exit %d, stderr %q; want 2 and one line with %q", c.args, c.env, code, stderr, c.want)
		}
	}
}

// TestSharePortsForeignProc checks what happens where sharing cannot work
// because /proc belongs to another PID namespace: an explicit list is exit
// 2 with one line naming the cause and the fix, auto warns once and the
// workers bind as without goinit.
func TestSharePortsForeignProc(t *testing.T) {
	requireRoot(t)
	code, stderr := runToEnd(t, runOpts{pid1: true, hostProc: true}, "--workers=2", "--share-ports=3000", "--", "true")
	if code != 2 || !strings.Contains(stderr, "/proc is not mounted for goinit's PID namespace") ||
		!strings.Contains(stderr, "--listen=ADDR") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("explicit list: exit %d, stderr %q; want 2 and one line with the cause and the fix", code, stderr)
	}
	code, stderr = runToEnd(t, runOpts{pid1: true, hostProc: true}, "--workers=2", "--restart=never", "--", "true")
	if code != 0 || strings.Count(stderr, "are not shared: /proc is not mounted") != 1 {
		t.Errorf("auto: exit %d, stderr %q; want 0 and one warning", code, stderr)
	}
}

// TestWorkersDieWithGoinit checks that workers whose ports goinit shares
// never outlive a goinit that is not PID 1 and is SIGKILLed: their next
// bind() would fail with ENOSYS. They get SIGKILL when it dies.
// TestWorkersKeepTheirParentDeathSignal checks that a worker started
// through the shim still has its parent-death signal after the exec: the
// signal belongs to a thread, the exec keeps only the exec'ing thread's,
// and the shim may exec from another thread than the one forked.
func TestWorkersKeepTheirParentDeathSignal(t *testing.T) {
	requireRoot(t)
	p := start(t, runOpts{}, "--workers=4", "--control=off", "--", testbin.Build(t, "./init/testdata/pdeathsig"))
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	var said []string
	eventually(t, 10*time.Second, "4 workers saying their parent-death signal", func() bool {
		said = said[:0]
		for _, l := range strings.Split(p.stdout(), "\n") {
			if strings.HasPrefix(l, "pdeathsig") {
				said = append(said, l)
			}
		}
		return len(said) == 4
	})
	for _, l := range said {
		if l != fmt.Sprintf("pdeathsig %d", syscall.SIGKILL) {
			t.Fatalf("a worker says %q, want SIGKILL (%d): it would outlive a killed goinit", l, syscall.SIGKILL)
		}
	}
	p.signal(syscall.SIGTERM)
	p.wait(20 * time.Second)
}

func TestWorkersDieWithGoinit(t *testing.T) {
	requireRoot(t)
	port := testbin.FreePort(t)
	p := start(t, runOpts{env: []string{fmt.Sprintf("APP_ADDR=127.0.0.1:%d", port)}}, "--workers=2", "--control=off", "--", bindServer(t))
	pids := answeringPids(t, "tcp", fmt.Sprintf("127.0.0.1:%d", port), 2)
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
	eventually(t, 10*time.Second, "the workers to die with goinit", func() bool {
		for pid := range pids {
			if st := procState(pid); st != "" && st != "Z" {
				return false
			}
		}
		return true
	})
}
