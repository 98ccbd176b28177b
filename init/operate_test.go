package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
	"github.com/goinit/goinit/state"
)

// cli runs `goinit ARGS...` as the client of the control socket sock and
// returns its exit code and output.
func cli(t *testing.T, sock string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(goinitBin(t), args...)
	cmd.Env = append(os.Environ(), "GOINIT_CONTROL="+sock)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, string(out)
}

// status is `goinit status --json`.
func status(t *testing.T, sock string) state.Snapshot {
	t.Helper()
	code, out := cli(t, sock, "status", "--json")
	var s state.Snapshot
	if code != 0 || json.Unmarshal([]byte(out), &s) != nil {
		t.Fatalf("goinit status --json: exit %d, %q", code, out)
	}
	return s
}

// startControlled is startScript with 2 workers and a control socket.
func startControlled(t *testing.T, flags ...string) (p *proc, sock, script, addr string) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "control.sock")
	p, script, addr = startScript(t, 2, append([]string{"--control=" + sock}, flags...)...)
	return p, sock, script, addr
}

// TestControlCLI drives a running goinit with the same binary as client:
// status (table and JSON), reload --wait (exit 0, and 4 when a bad release
// rolls back), scale, restart and signal.
func TestControlCLI(t *testing.T) {
	requireRoot(t)
	p, sock, script, addr := startControlled(t, "--ready-timeout=2s")

	code, out := cli(t, sock, "status")
	if code != 0 || !strings.Contains(out, "2 of 2 workers ready") || !strings.Contains(out, "worker  0") {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	s := status(t, sock)
	if len(s.Processes) != 2 || s.Processes[0].State != state.StateReady || s.Processes[1].PID == 0 || s.Pool.Workers != 2 {
		t.Fatalf("status --json: %+v", s)
	}
	first := s.Processes[0].PID
	if len(s.Sockets) != 1 || !strings.HasPrefix(s.Sockets[0].Address, addr) || s.Sockets[0].Inode == 0 {
		t.Fatalf("status --json sockets %+v, want the held %s", s.Sockets, addr)
	}

	writeRelease(t, script, "2", "")
	if code, out := cli(t, sock, "reload", "--wait"); code != 0 || !strings.Contains(out, "reload complete") {
		t.Fatalf("reload --wait: exit %d %q", code, out)
	}
	if s := status(t, sock); s.Processes[0].PID == first || s.Reloads.Succeeded != 1 {
		t.Fatalf("after reload: %+v", s)
	}
	writeRelease(t, script, "", "exit 3")
	if code, out := cli(t, sock, "reload", "--wait"); code != 4 || !strings.Contains(out, "rolled back") {
		t.Fatalf("reload --wait of a bad release: exit %d %q, want 4", code, out)
	}
	writeRelease(t, script, "3", "")

	if code, out := cli(t, sock, "scale", "3"); code != 0 {
		t.Fatalf("scale 3: exit %d %q", code, out)
	}
	eventually(t, 10*time.Second, "3 ready workers", func() bool { s := status(t, sock); return s.ReadyWorkers() == 3 })
	before := status(t, sock).Processes[2].PID
	if code, out := cli(t, sock, "restart", "2"); code != 0 {
		t.Fatalf("restart 2: exit %d %q", code, out)
	}
	eventually(t, 10*time.Second, "worker 2 replaced", func() bool {
		s := status(t, sock)
		return s.Processes[2].PID != before && s.Processes[2].Ready
	})
	if code, out := cli(t, sock, "restart", "9"); code == 0 || !strings.Contains(out, "no worker 9") {
		t.Fatalf("restart 9: exit %d %q", code, out)
	}
	if code, out := cli(t, sock, "signal", "TERM", "1"); code != 0 || !strings.Contains(out, "1 process") {
		t.Fatalf("signal TERM 1: exit %d %q", code, out)
	}
	waitLogN(t, p, "worker 1 (pid", 1, 10*time.Second)

	p.signal(syscall.SIGTERM)
	p.wait(20 * time.Second)
	if code, out := cli(t, sock, "status"); code != 3 || !strings.Contains(out, "no goinit control socket") {
		t.Fatalf("status after goinit exited: exit %d %q, want 3", code, out)
	}
}

// get returns the status and body of GET url.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHealthEndpoints follows /healthz and /readyz through a start, a
// shutdown held by --pre-stop-delay (ready goes 503 while goinit stays
// alive), and checks /metrics with promtool.
func TestHealthEndpoints(t *testing.T) {
	requireRoot(t)
	promtool := testbin.Tool(t, "promtool")
	addr := fmt.Sprintf("127.0.0.1:%d", testbin.FreePort(t))
	p := start(t, runOpts{pid1: true}, "--workers=2", "--health-addr="+addr, "--pre-stop-delay=3s", "--control=off",
		"--", "sleep", "1000")
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	eventually(t, 10*time.Second, "/readyz 200", func() bool { c, _ := httpGet(t, "http://"+addr+"/readyz"); return c == 200 })
	if c, body := httpGet(t, "http://"+addr+"/healthz"); c != 200 {
		t.Fatalf("/healthz %d %q", c, body)
	}
	_, metrics := httpGet(t, "http://"+addr+"/metrics")
	for _, m := range []string{`goinit_ready_workers 2`, `goinit_build_info{`, `goinit_processes{role="worker",state="ready"} 2`} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(metrics)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}

	p.signal(syscall.SIGTERM) // held for 3s
	eventually(t, 2*time.Second, "/readyz 503 during the pre-stop delay", func() bool {
		c, _ := httpGet(t, "http://"+addr+"/readyz")
		return c == 503
	})
	if c, _ := httpGet(t, "http://"+addr+"/healthz"); c != 200 {
		t.Fatalf("/healthz %d while draining, want 200 (the kubelet must not kill a draining pod)", c)
	}
	p.wait(20 * time.Second)
}

// TestHealthCrashLoop checks that /healthz turns 503 once a worker is
// crash-looping, while goinit stops the others.
func TestHealthCrashLoop(t *testing.T) {
	requireRoot(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testbin.FreePort(t))
	script := `if [ "$GOINIT_WORKER_ID" = 1 ]; then sleep 0.5; exit 3; fi; trap '' TERM; exec sleep 1000`
	p := start(t, runOpts{pid1: true}, "--workers=2", "--health-addr="+addr, "--max-restarts=1", "--restart-delay=10ms",
		"--stop-timeout=4s", "--control=off", "--", "sh", "-c", script)
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	eventually(t, 10*time.Second, "/healthz 200", func() bool { c, _ := httpGet(t, "http://"+addr+"/healthz"); return c == 200 })
	eventually(t, 10*time.Second, "/healthz 503 on the crash loop", func() bool {
		c, _ := httpGet(t, "http://"+addr+"/healthz")
		return c == 503
	})
	if code := p.wait(20 * time.Second); code != 3 {
		t.Fatalf("exit %d, want the crash-looping worker's 3", code)
	}
}

// TestWorkerLogs checks --worker-logs=prefix and json: each worker line is
// tagged whole, and goinit's own lines stay as they are.
func TestWorkerLogs(t *testing.T) {
	requireRoot(t)
	script := `for i in 1 2 3; do echo "line $i of $GOINIT_WORKER_ID"; echo "err $i" >&2; done`
	p := start(t, runOpts{pid1: true}, "--workers=2", "--restart=never", "--worker-logs=prefix", "--", "sh", "-c", script)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !p.hasLine("[worker 1] line 3 of 1") || !p.hasLine("[worker 0] line 1 of 0") {
		t.Fatalf("prefix: stdout\n%s", p.stdout())
	}
	if !strings.Contains(p.errText(), "[worker 0] err 2") || !strings.Contains(p.errText(), `msg="worker 0 started"`) {
		t.Fatalf("prefix: stderr\n%s", p.errText())
	}

	p = start(t, runOpts{pid1: true}, "--workers=1", "--restart=never", "--worker-logs=json", "--", "sh", "-c", script)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	var rec struct {
		Worker int    `json:"worker"`
		Pid    int    `json:"pid"`
		Stream string `json:"stream"`
		Msg    string `json:"msg"`
	}
	line := p.waitLine(`{`, time.Second)
	if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Msg != "line 1 of 0" || rec.Stream != "stdout" || rec.Pid == 0 {
		t.Fatalf("json line %q: %+v %v", line, rec, err)
	}
}

// TestReloadWaitReadyAtExec checks that `goinit reload --wait` is answered
// when the reload ends at once, as it does for workers ready at exec.
func TestReloadWaitReadyAtExec(t *testing.T) {
	requireRoot(t)
	sock := filepath.Join(t.TempDir(), "control.sock")
	p := start(t, runOpts{pid1: true}, "--workers=2", "--ready=exec", "--control="+sock, "--", "sleep", "1000")
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	eventually(t, 10*time.Second, "the control socket", func() bool { _, err := os.Stat(sock); return err == nil })
	done := make(chan string, 1)
	go func() {
		code, out := cli(t, sock, "reload", "--wait")
		done <- fmt.Sprintf("%d %s", code, out)
	}()
	select {
	case got := <-done:
		if !strings.HasPrefix(got, "0 ") || !strings.Contains(got, "reload complete") {
			t.Fatalf("reload --wait: %s", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("reload --wait never answered")
	}
}

// TestQueuedReloadWaitGetsItsOwnResult: a `reload --wait` asked while a
// reload is in progress is queued, and is answered when the reload that
// follows has ended, not with the result of the one it waited behind.
func TestQueuedReloadWaitGetsItsOwnResult(t *testing.T) {
	requireRoot(t)
	_, sock, script, _ := startControlled(t, "--ready-timeout=10s")

	// Each replacement takes a second before it binds: the first reload
	// is still replacing workers when the second is asked for.
	writeRelease(t, script, "2", "sleep 1; APP_VERSION=2 exec "+bindServer(t))
	if code, out := cli(t, sock, "reload"); code != 0 {
		t.Fatalf("reload: exit %d %q", code, out)
	}
	code, out := cli(t, sock, "reload", "--wait")
	if code != 0 || !strings.Contains(out, "with release 2") {
		t.Fatalf("queued reload --wait: exit %d %q, want the end of release 2", code, out)
	}
	if s := status(t, sock); s.Reloads.Succeeded != 2 || s.Pool.Reloading {
		t.Fatalf("when the queued reload --wait was answered: %d reloads succeeded (reloading %v), want 2 done",
			s.Reloads.Succeeded, s.Pool.Reloading)
	}

	// Behind a reload that rolls back, the queued one is dropped.
	writeRelease(t, script, "", "sleep 1; exit 3")
	if code, out := cli(t, sock, "reload"); code != 0 {
		t.Fatalf("reload of a bad release: exit %d %q", code, out)
	}
	if code, out := cli(t, sock, "reload", "--wait"); code != 4 || !strings.Contains(out, "not reloaded") {
		t.Fatalf("reload --wait queued behind a rollback: exit %d %q, want 4", code, out)
	}
}
