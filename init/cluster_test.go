package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
)

func workerBin(t *testing.T) string {
	t.Helper()
	return testbin.Build(t, "./init/testdata/worker")
}

// reports reads the workers' start-up reports from dir.
func reports(t *testing.T, dir string) []map[string]string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	var out []map[string]string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]string
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// get does one request on a new connection and returns the answering pid.
func get(client *http.Client, url string) (int, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Pid int `json:"pid"`
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return 0, fmt.Errorf("body %q: %w", b, err)
	}
	return body.Pid, nil
}

func newClient(network, addr string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true, // a new connection per request
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
		},
	}
}

// TestWorkersShareOnePort runs N workers on one port in both balance modes
// and over TCP and a unix socket, and checks what each worker got: its own
// id, LISTEN_PID equal to its pid, the fd names, PORT, and that every
// worker answers.
func TestWorkersShareOnePort(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct{ name, balance, network string }{
		{"shared-tcp", "shared", "tcp"}, {"reuseport-tcp", "reuseport", "tcp"}, {"shared-unix", "shared", "unix"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			addr := fmt.Sprintf("127.0.0.1:%d", testbin.FreePort(t))
			listenArg := addr
			if c.network == "unix" {
				addr = filepath.Join(dir, "app.sock")
				listenArg = "unix://" + addr
			}
			const n = 3
			p := start(t, runOpts{pid1: true, env: []string{"REPORT_DIR=" + dir}},
				"--workers="+strconv.Itoa(n), "--listen="+listenArg, "--balance="+c.balance, "--", workerBin(t))
			eventually(t, 20*time.Second, "3 workers to report", func() bool { return len(reports(t, dir)) == n })
			ids := map[string]bool{}
			for _, r := range reports(t, dir) {
				ids[r["GOINIT_WORKER_ID"]] = true
				if r["LISTEN_PID"] != r["pid"] || r["LISTEN_FDS"] != "1" || r["GOINIT_WORKERS"] != "3" {
					t.Errorf("worker report %v: want LISTEN_PID == pid, LISTEN_FDS=1, GOINIT_WORKERS=3", r)
				}
				port := addr[strings.LastIndexByte(addr, ':')+1:]
				if c.network == "tcp" && (r["PORT"] != port || r["LISTEN_FDNAMES"] != "tcp-"+port) {
					t.Errorf("worker report %v: want PORT=%s and LISTEN_FDNAMES=tcp-%s", r, port, port)
				}
				if c.network == "unix" && (r["PORT"] != "" || r["LISTEN_FDNAMES"] != "unix-app.sock") {
					t.Errorf("worker report %v: want no PORT, LISTEN_FDNAMES=unix-app.sock", r)
				}
			}
			if len(ids) != n || !ids["0"] || !ids["1"] || !ids["2"] {
				t.Fatalf("worker ids %v, want 0, 1, 2", ids)
			}
			// Every worker answers on the port; concurrent bursts of new
			// connections reach all of them (bounded).
			client := newClient(c.network, addr)
			seen := map[int]bool{}
			var mu sync.Mutex
			deadline := time.Now().Add(15 * time.Second)
			for round := 0; len(seen) < n && round < 200 && time.Now().Before(deadline); round++ {
				var wg sync.WaitGroup
				for range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if pid, err := get(client, "http://worker/"); err == nil {
							mu.Lock()
							seen[pid] = true
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
			}
			if len(seen) != n {
				t.Errorf("%d distinct workers answered, want %d", len(seen), n)
			}
			p.signal(syscall.SIGTERM)
			if code := p.wait(20 * time.Second); code != 0 {
				t.Fatalf("exit %d, want 0", code)
			}
		})
	}
}

// TestWorkersAutoHonoursCPUQuota runs goinit in a real cgroup with a quota
// of one CPU: --workers=auto must start 1 worker, not one per host CPU.
func TestWorkersAutoHonoursCPUQuota(t *testing.T) {
	requireRoot(t)
	cg := fmt.Sprintf("/sys/fs/cgroup/cpu/goinit-test-auto-%d", os.Getpid())
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatalf("create cpu cgroup: %v", err)
	}
	defer os.Remove(cg)
	for file, v := range map[string]string{"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"} {
		if err := os.WriteFile(filepath.Join(cg, file), []byte(v), 0); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	script := fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec %s --workers=auto -- %s`, cg, goinitBin(t), workerBin(t))
	p := start(t, runOpts{env: []string{"REPORT_DIR=" + dir}}, "--", "sh", "-c", script)
	eventually(t, 20*time.Second, "a worker to report", func() bool { return len(reports(t, dir)) >= 1 })
	eventually(t, 10*time.Second, "the auto log line", func() bool { return strings.Contains(p.errText(), "--workers=auto: 1 workers") })
	if !strings.Contains(p.errText(), "100000") {
		t.Errorf("the log does not say how the count was derived: %s", p.errText())
	}
	p.signal(syscall.SIGTERM)
	p.wait(20 * time.Second)
	if n := strings.Count(p.errText(), " started"); n != 1 {
		t.Fatalf("%d workers started, want 1", n)
	}
}

// TestWorkerKilledUnderLoadNoErrors SIGKILLs workers while a client keeps
// opening connections: because goinit holds the listening socket, new
// connections wait in the kernel's queue until a worker (the sibling or the
// replacement) accepts them, and not one request fails. With one worker
// there is no sibling at all while it restarts. The kill lands between two
// requests: a request already inside the killed process is lost by nature,
// which is not what is tested here; TestNoRefusedConnectionsUnderLoad counts
// refused connections under concurrent load.
func TestWorkerKilledUnderLoadNoErrors(t *testing.T) {
	requireRoot(t)
	for _, workers := range []int{1, 2} {
		for _, balance := range []string{"shared", "reuseport"} {
			t.Run(fmt.Sprintf("%d-%s", workers, balance), func(t *testing.T) {
				addr := fmt.Sprintf("127.0.0.1:%d", testbin.FreePort(t))
				p := start(t, runOpts{pid1: true}, "--workers="+strconv.Itoa(workers), "--listen="+addr,
					"--balance="+balance, "--restart-delay=50ms", "--", workerBin(t))
				client := newClient("tcp", addr)
				eventually(t, 20*time.Second, "the workers to serve", func() bool { _, err := get(client, "http://w/"); return err == nil })
				killed := 0
				pids := map[int]bool{}
				for i := range 300 {
					pid, err := get(client, "http://w/")
					if err != nil {
						t.Fatalf("request %d after %d kills: %v", i, killed, err)
					}
					pids[pid] = true
					if i%100 == 50 {
						host := hostPid(t, p.cmd.Process.Pid, pid)
						if err := syscall.Kill(host, syscall.SIGKILL); err != nil {
							t.Fatal(err)
						}
						killed++
					}
				}
				if killed != 3 || len(pids) < workers+1 {
					t.Fatalf("killed %d, %d distinct pids answered: no replacement served", killed, len(pids))
				}
				if n := strings.Count(p.errText(), "killed by signal 9 (KILL)"); n != 3 {
					t.Errorf("%d kill log lines, want 3", n)
				}
			})
		}
	}
}

// hostPid maps a pid inside goinit's PID namespace to the host's, by
// NSpid in /proc.
func hostPid(t *testing.T, goinit, nsPid int) int {
	t.Helper()
	pid := hostPidOrZero(goinit, nsPid)
	if pid == 0 {
		t.Fatalf("no process with pid %d in goinit's namespace", nsPid)
	}
	return pid
}

// hostPidOrZero is hostPid for a process that may be gone: 0 then.
func hostPidOrZero(goinit, nsPid int) int {
	for pid := range descendants(goinit) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "NSpid:" && f[2] == strconv.Itoa(nsPid) {
				return pid
			}
		}
	}
	return 0
}

// TestNoRefusedConnectionsUnderLoad kills a worker in the middle of a
// steady concurrent load: no connection is ever refused or fails to open.
func TestNoRefusedConnectionsUnderLoad(t *testing.T) {
	requireRoot(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testbin.FreePort(t))
	dir := t.TempDir()
	p := start(t, runOpts{pid1: true, env: []string{"REPORT_DIR=" + dir}}, "--workers=2", "--listen="+addr, "--restart-delay=50ms", "--", workerBin(t))
	eventually(t, 20*time.Second, "2 workers", func() bool { return len(reports(t, dir)) == 2 })
	pid, _ := strconv.Atoi(reports(t, dir)[0]["pid"])
	refused, answered, lost := loadWhileKilling(t, p, addr, map[int]bool{pid: true})
	t.Logf("%d answered, %d refused or failed to connect, %d lost inside the killed worker", answered, refused, lost)
	if refused != 0 {
		t.Fatalf("%d connections refused while a worker restarted", refused)
	}
	eventually(t, 10*time.Second, "the replacement to report", func() bool { return len(reports(t, dir)) == 3 })
}

// startTimes reads goinit's JSON log for the start times of worker id.
func startTimes(t *testing.T, log string, id int) []time.Time {
	t.Helper()
	var out []time.Time
	for _, line := range strings.Split(log, "\n") {
		var rec struct {
			Time   time.Time `json:"time"`
			Msg    string    `json:"msg"`
			Worker *int      `json:"worker"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Worker == nil || *rec.Worker != id || !strings.HasSuffix(rec.Msg, " started") {
			continue
		}
		out = append(out, rec.Time)
	}
	return out
}

// TestBackoffScheduleAndCrashLoop runs a worker that always fails: starts
// follow the doubling schedule (±20% jitter, with tolerance), and after
// --max-restarts goinit gives up with the worker's status and a bounded
// number of starts.
func TestBackoffScheduleAndCrashLoop(t *testing.T) {
	requireRoot(t)
	code, stderr := runToEnd(t, runOpts{pid1: true, env: []string{"EXIT_CODE=3"}},
		"--log-format=json", "--workers=1", "--restart-delay=100ms", "--restart-delay-max=400ms",
		"--max-restarts=4", "--restart-window=1m", "--", workerBin(t))
	if code != 3 {
		t.Fatalf("exit %d, want the worker's 3; log:\n%s", code, stderr)
	}
	starts := startTimes(t, stderr, 0)
	if len(starts) != 5 {
		t.Fatalf("%d starts, want 5 (1 + 4 restarts); log:\n%s", len(starts), stderr)
	}
	want := []time.Duration{100, 200, 400, 400}
	for i, w := range want {
		gap := starts[i+1].Sub(starts[i])
		d := w * time.Millisecond
		t.Logf("restart %d after %s (schedule %s ±20%%)", i+1, gap, d)
		if gap < d*8/10 || gap > d*12/10+250*time.Millisecond {
			t.Errorf("restart %d came %s after the previous start, want %s ±20%% (+ start-up time)", i+1, gap, d)
		}
	}
	if !strings.Contains(stderr, "crash-looping") {
		t.Errorf("no crash-loop line in the log:\n%s", stderr)
	}
}

func TestRestartPolicies(t *testing.T) {
	requireRoot(t)
	t.Run("never", func(t *testing.T) {
		dir := t.TempDir()
		// Worker 0 fails at once and stays down; worker 1 serves until
		// TERM; goinit then exits with the first failure's status.
		p := start(t, runOpts{pid1: true, env: []string{"REPORT_DIR=" + dir, "EXIT_CODE_0=3"}}, "--workers=2", "--restart=never", "--", workerBin(t))
		eventually(t, 20*time.Second, "the failure to be logged", func() bool { return strings.Contains(p.errText(), "not restarting (restart=never)") })
		eventually(t, 20*time.Second, "both workers to report", func() bool { return len(reports(t, dir)) == 2 })
		p.signal(syscall.SIGTERM)
		if code := p.wait(20 * time.Second); code != 3 {
			t.Fatalf("exit %d, want 3", code)
		}
		if n := strings.Count(p.errText(), " started"); n != 2 {
			t.Fatalf("%d starts, want 2: restart=never restarts nothing", n)
		}
	})
	t.Run("on-failure-clean-exit", func(t *testing.T) {
		code, stderr := runToEnd(t, runOpts{pid1: true, env: []string{"EXIT_CODE=0"}}, "--workers=2", "--", workerBin(t))
		if code != 0 || strings.Count(stderr, "started") != 2 {
			t.Fatalf("exit %d; a clean exit is not restarted by default:\n%s", code, stderr)
		}
	})
	t.Run("always", func(t *testing.T) {
		dir := t.TempDir()
		p := start(t, runOpts{pid1: true, env: []string{"REPORT_DIR=" + dir, "EXIT_CODE=0"}}, "--workers=1", "--restart=always", "--restart-delay=10ms", "--max-restarts=0", "--", workerBin(t))
		eventually(t, 20*time.Second, "3 starts", func() bool { return len(reports(t, dir)) >= 3 })
		p.signal(syscall.SIGTERM)
		if code := p.wait(20 * time.Second); code != 0 {
			t.Fatalf("exit %d, want 0", code)
		}
	})
	t.Run("single-command-restart", func(t *testing.T) {
		dir := t.TempDir()
		p := start(t, runOpts{pid1: true, env: []string{"REPORT_DIR=" + dir, "EXIT_CODE=1"}}, "--restart=on-failure", "--restart-delay=10ms", "--max-restarts=2", "--", workerBin(t))
		if code := p.wait(20 * time.Second); code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		if n := len(reports(t, dir)); n != 3 {
			t.Fatalf("%d starts, want 3", n)
		}
	})
	t.Run("permanent-exit-code", func(t *testing.T) {
		dir := t.TempDir()
		code, stderr := runToEnd(t, runOpts{pid1: true, env: []string{"REPORT_DIR=" + dir, "EXIT_CODE_1=125"}},
			"--workers=2", "--permanent-exit-codes=3,125", "--stop-timeout=5s", "--", workerBin(t))
		if code != 125 || !strings.Contains(stderr, "permanent") {
			t.Fatalf("exit %d, want 125:\n%s", code, stderr)
		}
		// Count starts from the log: worker 0 may be stopped before it
		// writes its report.
		if n := strings.Count(stderr, " started"); n != 2 {
			t.Fatalf("%d starts, want 2: a permanent exit is never retried", n)
		}
	})
}

// TestWorkersIgnoringTermAreKilled checks the shutdown escalation with
// workers: exit status is the first failure, SIGKILL's 137.
func TestWorkersIgnoringTermAreKilled(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	p := start(t, runOpts{pid1: true, env: []string{"REPORT_DIR=" + dir, "IGNORE_TERM=1"}}, "--workers=2", "--stop-timeout=1s", "--", workerBin(t))
	eventually(t, 20*time.Second, "2 workers", func() bool { return len(reports(t, dir)) == 2 })
	sent := time.Now()
	p.signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 137 {
		t.Fatalf("exit %d, want 137", code)
	}
	t.Logf("stopped in %s with --stop-timeout=1s", time.Since(sent))
}

// TestOOMScoreAdj checks that workers are more likely OOM victims than
// goinit.
func TestOOMScoreAdj(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	p := start(t, runOpts{pid1: true, env: []string{"REPORT_DIR=" + dir}}, "--workers=1", "--", workerBin(t))
	eventually(t, 20*time.Second, "a worker", func() bool { return len(reports(t, dir)) == 1 })
	own, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", p.cmd.Process.Pid))
	o, _ := strconv.Atoi(strings.TrimSpace(string(own)))
	w, _ := strconv.Atoi(reports(t, dir)[0]["oom_score_adj"])
	if w != min(o+500, 1000) {
		t.Fatalf("worker oom_score_adj %d, goinit %d: want goinit+500", w, o)
	}
}

// TestClusterBadInput checks start-up errors: exit 2, one line, and no
// worker ever started.
func TestClusterBadInput(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cases := []struct {
		args []string
		msg  string
	}{
		{[]string{"--workers=0"}, "--workers"},
		{[]string{"--workers=abc"}, "--workers"},
		{[]string{"--workers=2", "--listen=" + busy.Addr().String()}, "address already in use"},
		{[]string{"--workers=2", "--listen=ftp://x"}, `unsupported scheme "ftp"`},
		{[]string{"--workers=2", "--listen=127.0.0.1:99999"}, "--listen"},
		{[]string{"--balance=random"}, "--balance"},
	}
	for _, c := range cases {
		dir := t.TempDir()
		args := append(c.args, "--", workerBin(t))
		code, stderr := runToEnd(t, runOpts{env: []string{"REPORT_DIR=" + dir}}, args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line with %q", c.args, code, stderr, c.msg)
		}
		if n := len(reports(t, dir)); n != 0 {
			t.Errorf("%v: %d workers started before the error", c.args, n)
		}
	}
}

// TestSignalsReachEveryWorker checks that a signal goinit forwards reaches
// every worker, and that the stop signal is --stop-signal.
func TestSignalsReachEveryWorker(t *testing.T) {
	requireRoot(t)
	p := start(t, runOpts{pid1: true}, "--workers=3", "--stop-signal=INT", "--", sigrecord(t))
	eventually(t, 20*time.Second, "3 workers to be ready", func() bool { return strings.Count(p.stdout(), "ready") == 3 })
	// USR1, not HUP: with --workers HUP reloads the workers.
	p.signal(syscall.SIGUSR1)
	eventually(t, 10*time.Second, "3 workers to get USR1", func() bool { return strings.Count(p.stdout(), "got USR1") == 3 })
	p.signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	if n, m := strings.Count(p.stdout(), "got INT"), strings.Count(p.stdout(), "got TERM"); n != 3 || m != 0 {
		t.Fatalf("%d workers got INT and %d TERM; want --stop-signal=INT for all 3", n, m)
	}
}
