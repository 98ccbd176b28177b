package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
)

// nodeScript writes a Node program and returns its path.
func nodeScript(t *testing.T, src string) string {
	t.Helper()
	testbin.Tool(t, "node")
	f := filepath.Join(t.TempDir(), "app.js")
	if err := os.WriteFile(f, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// readyAfter returns how long after its start goinit logged worker id ready.
func readyAfter(t *testing.T, p *proc, id int, how string) time.Duration {
	t.Helper()
	re := regexp.MustCompile(fmt.Sprintf(`worker %d \(pid \d+\) is ready \(%s\) after ([0-9.]+m?s)`, id, regexp.QuoteMeta(how)))
	var d time.Duration
	eventually(t, 20*time.Second, fmt.Sprintf("worker %d ready (%s)", id, how), func() bool {
		m := re.FindStringSubmatch(p.errText())
		if m == nil {
			return false
		}
		d, _ = time.ParseDuration(m[1])
		return true
	})
	return d
}

// TestReadyMessage checks --ready=message with Node's own process.send:
// an unmodified-style Node app with no library says it is ready after
// 300 ms, and goinit counts it ready then, not at exec. The channel is the
// fd after the sockets, named by GOINIT_IPC_FD and NODE_CHANNEL_FD.
func TestReadyMessage(t *testing.T) {
	requireRoot(t)
	// Node takes NODE_CHANNEL_FD out of process.env once it has opened the
	// channel: process.send existing is the proof.
	app := nodeScript(t, `console.log('fds', process.env.GOINIT_IPC_FD, typeof process.send, process.env.LISTEN_FDS);
setTimeout(() => process.send('ready'), 300);
setInterval(() => {}, 1000);
process.on('SIGTERM', () => process.exit(0));
`)
	p := start(t, runOpts{pid1: true}, "--workers=2", "--ready=message", "--listen=127.0.0.1:0", "--", "node", app)
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	p.waitLine("fds 4 function 1", 20*time.Second)
	for id := range 2 {
		if d := readyAfter(t, p, id, "said ready"); d < 300*time.Millisecond {
			t.Errorf("worker %d ready after %s, before it said so at 300ms", id, d)
		}
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestReadyNotify checks --ready=notify with the real systemd-notify,
// run by the worker's shell (a child of the worker, as in a shell-script
// entrypoint), and that STATUS= is honoured.
func TestReadyNotify(t *testing.T) {
	requireRoot(t)
	testbin.Tool(t, "systemd-notify")
	script := `sleep 0.3; systemd-notify --ready --status="warmed up"; echo notified; exec sleep 1000`
	p := start(t, runOpts{pid1: true}, "--workers=2", "--ready=notify", "--log-level=debug", "--", "sh", "-c", script)
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	for id := range 2 {
		if d := readyAfter(t, p, id, "sent READY=1"); d < 300*time.Millisecond {
			t.Errorf("worker %d ready after %s, before READY=1", id, d)
		}
	}
	if !strings.Contains(p.errText(), "status: warmed up") {
		t.Errorf("STATUS= not seen:\n%s", p.errText())
	}
}

// TestReadyTimeout checks that a worker that never becomes ready is a
// failed start, killed and retried, never "ready anyway".
func TestReadyTimeout(t *testing.T) {
	requireRoot(t)
	p := start(t, runOpts{pid1: true}, "--workers=1", "--ready=notify", "--ready-timeout=500ms", "--max-restarts=1",
		"--restart-delay=10ms", "--", "sleep", "1000")
	code := p.wait(30 * time.Second)
	if !strings.Contains(p.errText(), "was not ready within 500ms (--ready-timeout, --ready=notify); killed it") {
		t.Fatalf("no timeout line:\n%s", p.errText())
	}
	if strings.Contains(p.errText(), "is ready") {
		t.Fatalf("a worker that never sent READY=1 was counted ready:\n%s", p.errText())
	}
	if code != 137 || !strings.Contains(p.errText(), "crash-looping") {
		t.Fatalf("exit %d, want 137 after the crash-loop limit:\n%s", code, p.errText())
	}
}

// TestWatchdog checks --watchdog with heartbeats over the channel: a Node
// worker pings, then hangs (stops pinging); goinit sends SIGABRT, then
// SIGKILL, and restarts it with the reason "hung".
func TestWatchdog(t *testing.T) {
	requireRoot(t)
	app := nodeScript(t, `process.send('ready');
let n = 0;
const beat = setInterval(() => { process.send('ping'); if (++n === 3) { clearInterval(beat); console.log('hanging'); } }, 100);
process.on('SIGABRT', () => console.log('got SIGABRT'));   // ignores it, as a hung process would
setInterval(() => {}, 1000);
`)
	p := start(t, runOpts{pid1: true}, "--workers=1", "--ready=message", "--watchdog=1s", "--", "node", app)
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	p.waitLine("hanging", 20*time.Second)
	p.waitLine("got SIGABRT", 10*time.Second)
	waitLogN(t, p, "is hung: no heartbeat for 1s (--watchdog); sent SIGABRT", 1, 10*time.Second)
	waitLogN(t, p, "(killed: hung)", 1, 15*time.Second)
	waitLogN(t, p, "worker 0 started", 2, 10*time.Second)
}

// TestMaxLifetime checks --max-lifetime: a worker is replaced gracefully
// after it ran that long, next to its successor, and the old one drains.
func TestMaxLifetime(t *testing.T) {
	requireRoot(t)
	port := testbin.FreePort(t)
	p := start(t, runOpts{pid1: true, env: []string{fmt.Sprintf("APP_ADDR=127.0.0.1:%d", port)}},
		"--workers=1", "--max-lifetime=1s", "--", bindServer(t))
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	answeringPids(t, "tcp", fmt.Sprintf("127.0.0.1:%d", port), 1)
	waitLogN(t, p, "recycling (max-lifetime 1s reached)", 1, 10*time.Second)
	waitLogN(t, p, "replacement (pid", 1, 10*time.Second)
	waitLogN(t, p, "replaced by pid", 1, 10*time.Second)
	// And again for the replacement: the lifetime is each process's. The
	// ±10% jitter is checked exactly, with time as a parameter, in cluster.
	waitLogN(t, p, "recycling (max-lifetime 1s reached)", 2, 10*time.Second)
}

// TestWorkerMessages checks worker-to-worker delivery on the channel with
// process.send only: a message "to" another worker id arrives wrapped as
// {"from": id, "data": ...}, "workers" reaches every other worker, and
// without an agent no pool event reaches a worker.
func TestWorkerMessages(t *testing.T) {
	requireRoot(t)
	app := nodeScript(t, `const id = Number(process.env.GOINIT_WORKER_ID);
process.on('message', m => console.log('worker ' + id + ' got ' + JSON.stringify(m)));
process.send('ready');
setTimeout(() => { if (id === 0) { process.send({to: 1, data: 'hi one'}); process.send({to: 'workers', data: {n: 2}}); } }, 500);
setInterval(() => {}, 1000);
process.on('SIGTERM', () => process.exit(0));
`)
	p := start(t, runOpts{pid1: true}, "--workers=3", "--ready=message", "--", "node", app)
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	p.waitLine(`worker 1 got {"from":0,"data":"hi one"}`, 20*time.Second)
	p.waitLine(`worker 2 got {"from":0,"data":{"n":2}}`, 20*time.Second)
	waitLine := func(s string) { p.waitLine(s, 20*time.Second) }
	waitLine(`worker 1 got {"from":0,"data":{"n":2}}`)
	if p.hasLine(`worker 0 got`) || p.hasLine(`worker 2 got {"from":0,"data":"hi one"}`) || strings.Contains(p.stdout(), `"from":"goinit"`) {
		t.Fatalf("a message reached a worker it was not for:\n%s", p.stdout())
	}
}
