package main

import (
	"encoding/json"
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

// answer is one reply of the bindserver.
type answer struct {
	Pid     int    `json:"pid"`
	Worker  string `json:"worker"`
	Version string `json:"version"`
}

// load keeps 4 clients sending requests, each on a new connection, to addr
// until stop is called (or 60 s pass), and counts what happened to them.
type load struct {
	mu       sync.Mutex
	refused  int      // connect failed: the port was not accepting
	failed   []string // connected, but no complete answer
	answered int
	seen     map[answer]bool

	stopc chan struct{}
	wg    sync.WaitGroup
}

func startLoad(addr string) *load {
	l := &load{seen: map[answer]bool{}, stopc: make(chan struct{})}
	deadline := time.Now().Add(60 * time.Second)
	for range 4 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for time.Now().Before(deadline) {
				select {
				case <-l.stopc:
					return
				default:
				}
				l.one(addr)
			}
		}()
	}
	return l
}

func (l *load) one(addr string) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		l.mu.Lock()
		l.refused++
		l.mu.Unlock()
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.0\r\n\r\n")
	b, err := io.ReadAll(conn)
	var a answer
	ok := err == nil && strings.HasPrefix(string(b), "HTTP/1.0 200") && strings.Contains(string(b), "\r\n\r\n")
	if ok {
		ok = json.Unmarshal([]byte(string(b)[strings.Index(string(b), "\r\n\r\n")+4:]), &a) == nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !ok {
		l.failed = append(l.failed, fmt.Sprintf("%v %q %s", err, b, conn.LocalAddr()))
		return
	}
	l.answered++
	l.seen[a] = true
}

// stop ends the load and returns its counts.
func (l *load) stop(t *testing.T) {
	t.Helper()
	close(l.stopc)
	l.wg.Wait()
	t.Logf("load: %d answered, %d refused, %d failed %v", l.answered, l.refused, len(l.failed), l.failed)
}

// versionsSeen is what the load saw since reset, by version.
func (l *load) since(version string) map[answer]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[answer]bool{}
	for a := range l.seen {
		if a.Version == version {
			out[a] = true
		}
	}
	return out
}

// writeRelease writes the command script the workers run: exec the bindserver
// as version v, or body instead when it is not empty (a broken release).
func writeRelease(t *testing.T, script, v, body string) {
	t.Helper()
	if body == "" {
		body = fmt.Sprintf("APP_VERSION=%s exec %s", v, bindServer(t))
	}
	tmp := script + ".tmp"
	if err := os.WriteFile(tmp, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, script); err != nil {
		t.Fatal(err)
	}
}

// startScript starts goinit as PID 1 with args (workers and other flags;
// "--listen=ADDR" given as "--listen=" gets the address) running release
// 1 of a script that serves APP_ADDR, a free loopback address, and waits
// until workers distinct pids answer there. The script is for
// writeRelease.
func startScript(t *testing.T, workers int, args ...string) (p *proc, script, addr string) {
	t.Helper()
	addr = fmt.Sprintf("127.0.0.1:%d", testbin.FreePort(t))
	script = filepath.Join(t.TempDir(), "serve")
	writeRelease(t, script, "1", "")
	for i, a := range args {
		if a == "--listen=" {
			args[i] += addr
		}
	}
	args = append([]string{fmt.Sprintf("--workers=%d", workers)}, args...)
	p = start(t, runOpts{pid1: true, env: []string{"APP_ADDR=" + addr}}, append(args, "--", script)...)
	t.Cleanup(func() { p.cmd.Process.Signal(syscall.SIGKILL) })
	answeringPids(t, "tcp", addr, workers)
	return p, script, addr
}

// waitLogN waits until goinit's stderr has had n lines containing s.
func waitLogN(t *testing.T, p *proc, s string, n int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%d log line(s) %q", n, s), func() bool { return strings.Count(p.errText(), s) >= n })
}

// TestReloadUnderLoad reloads 2 workers under a steady load, sharing the
// port the server binds itself and with --listen in both balance modes,
// and with --reload-surge=2 (both replaced at once): no connection is
// refused, no request fails, every worker is replaced, ids are kept, and
// the new code on disk is what serves afterwards.
func TestReloadUnderLoad(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct {
		name   string
		listen bool
		args   []string
		surge  bool // the replacements take a second to listen, and overlap
	}{
		{"shared port", false, nil, false},
		{"listen shared", true, []string{"--balance=shared"}, false},
		{"listen reuseport", true, []string{"--balance=reuseport"}, false},
		{"surge 2", false, []string{"--reload-surge=2"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"--stop-timeout=10s"}, c.args...)
			if c.listen {
				args = append(args, "--listen=")
			}
			p, script, addr := startScript(t, 2, args...)
			old := answeringPids(t, "tcp", addr, 2)

			l := startLoad(addr)
			eventually(t, 10*time.Second, "the load to be running", func() bool {
				l.mu.Lock()
				defer l.mu.Unlock()
				return l.answered >= 100
			})
			if c.surge {
				writeRelease(t, script, "", "sleep 1; APP_VERSION=2 exec "+bindServer(t))
			} else {
				writeRelease(t, script, "2", "")
			}
			p.signal(syscall.SIGHUP)
			waitLogN(t, p, "reload complete: 2 worker(s) replaced", 1, 30*time.Second)
			if c.surge {
				// Both replacements started before either was ready.
				log := p.errText()
				log = log[strings.Index(log, "reloading:"):]
				second := strings.Index(log, "worker 1: started its replacement")
				if first := strings.Index(log, "worker 0: started its replacement"); first < 0 || second < 0 {
					t.Fatalf("no replacement lines after the reload line:\n%s", log)
				}
				if ready := strings.Index(log, "is ready ("); ready < second {
					t.Fatalf("with --reload-surge=2 the second replacement started after the first was ready:\n%s", log)
				}
			}
			eventually(t, 10*time.Second, "version 2 answering from both workers", func() bool {
				ids := map[string]bool{}
				for a := range l.since("2") {
					ids[a.Worker] = true
				}
				return ids["0"] && ids["1"]
			})
			l.stop(t)
			if l.refused != 0 || len(l.failed) != 0 {
				t.Fatalf("reload under load: %d refused, %d failed", l.refused, len(l.failed))
			}
			for a := range l.since("2") {
				if old[a.Pid] {
					t.Errorf("pid %d served version 2: not replaced", a.Pid)
				}
			}
			p.signal(syscall.SIGTERM)
			if code := p.wait(20 * time.Second); code != 0 {
				t.Fatalf("exit %d", code)
			}
		})
	}
}

// TestReloadRollsBack reloads to a release that exits at start and to one
// that never becomes ready: each time the reload stops with one line that
// says what failed and how to retry, the old workers keep serving every
// request, and goinit stays up; after the code is fixed, a reload succeeds.
func TestReloadRollsBack(t *testing.T) {
	requireRoot(t)
	p, script, addr := startScript(t, 2, "--ready-timeout=2s")
	l := startLoad(addr)

	writeRelease(t, script, "", "echo broken release >&2; exit 3")
	p.signal(syscall.SIGHUP)
	waitLogN(t, p, "reload failed", 1, 30*time.Second)
	if !strings.Contains(p.errText(), "exited with code 3 before it was ready") || !strings.Contains(p.errText(), "rolled back") ||
		!strings.Contains(p.errText(), "reload again") {
		t.Fatalf("the failure line does not say what failed and how to retry:\n%s", p.errText())
	}

	writeRelease(t, script, "", "exec sleep 1000") // runs, never listens
	p.signal(syscall.SIGHUP)
	waitLogN(t, p, "reload failed", 2, 30*time.Second)
	if !strings.Contains(p.errText(), "was not ready within 2s (--ready-timeout") {
		t.Fatalf("the failure line does not name the timeout:\n%s", p.errText())
	}

	writeRelease(t, script, "3", "")
	p.signal(syscall.SIGHUP)
	waitLogN(t, p, "reload complete", 1, 30*time.Second)
	eventually(t, 10*time.Second, "version 3 answering", func() bool { return len(l.since("3")) >= 1 })
	l.stop(t)
	if l.refused != 0 || len(l.failed) != 0 {
		t.Fatalf("%d refused, %d failed across two failed reloads and a good one", l.refused, len(l.failed))
	}
	if len(l.since("")) != 0 {
		t.Fatal("a broken release answered")
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d: goinit must not fail because a reload did", code)
	}
}

// TestScaleBySignals adds a worker with SIGTTIN and removes one with
// SIGTTOU (gunicorn's signals) under load: no request fails.
func TestScaleBySignals(t *testing.T) {
	requireRoot(t)
	port := testbin.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p := start(t, runOpts{pid1: true, env: []string{"APP_ADDR=" + addr, "APP_VERSION=1"}}, "--workers=1", "--", bindServer(t))
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	answeringPids(t, "tcp", addr, 1)
	l := startLoad(addr)
	// One at a time: two SIGTTIN sent at once may arrive as one.
	p.signal(syscall.SIGTTIN)
	waitLogN(t, p, "scaled from 1 to 2 worker(s)", 1, 10*time.Second)
	p.signal(syscall.SIGTTIN)
	waitLogN(t, p, "scaled from 2 to 3 worker(s)", 1, 10*time.Second)
	eventually(t, 10*time.Second, "3 workers answering", func() bool {
		ids := map[string]bool{}
		for a := range l.since("1") {
			ids[a.Worker] = true
		}
		return len(ids) == 3
	})
	p.signal(syscall.SIGTTOU)
	waitLogN(t, p, "scaled from 3 to 2 worker(s)", 1, 10*time.Second)
	waitLogN(t, p, "worker 2 (pid", 1, 10*time.Second)
	l.stop(t)
	if l.refused != 0 || len(l.failed) != 0 {
		t.Fatalf("scaling under load: %d refused, %d failed", l.refused, len(l.failed))
	}
}

// TestRollbackRunsThePinnedBinary replaces the workers' binary in place
// (a rename, as deploys do) with a broken one: the reload fails, and a
// worker killed afterwards restarts the binary it ran before, which goinit
// holds open, not the broken file now at its path. The worker does not
// inherit that descriptor.
func TestRollbackRunsThePinnedBinary(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "server")
	b, err := os.ReadFile(bindServer(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	port := testbin.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p := start(t, runOpts{pid1: true, env: []string{"APP_ADDR=" + addr, "APP_VERSION=1"}}, "--workers=2", "--restart-delay=20ms", "--", bin)
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	pids := answeringPids(t, "tcp", addr, 2)

	broken := bin + ".new"
	if err := os.WriteFile(broken, []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(broken, bin); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGHUP)
	waitLogN(t, p, "reload failed", 1, 20*time.Second)
	for pid := range pids {
		host := hostPid(t, p.cmd.Process.Pid, pid)
		if got := pinned(host, bin); len(got) != 0 {
			t.Errorf("worker pid %d holds its own binary open: %v", pid, got)
		}
		syscall.Kill(host, syscall.SIGKILL)
		break
	}
	waitLogN(t, p, "killed by signal 9 (KILL)", 1, 10*time.Second)
	waitLogN(t, p, "started\" prog=goinit worker=", 3, 10*time.Second) // 2, then the restart
	answeringPids(t, "tcp", addr, 2)
	if strings.Contains(p.errText(), "crash-looping") {
		t.Fatalf("the restart ran the broken file:\n%s", p.errText())
	}
	// The rolled-back release is let go; the one the workers run is kept.
	goinit := p.cmd.Process.Pid
	if got := pinned(goinit, bin); got[bin] != 0 || got[bin+" (deleted)"] != 1 {
		t.Fatalf("after the rollback goinit holds %v, want only the replaced first binary", got)
	}

	// A fixed release reloads; the first binary, deleted, is let go too.
	if err := os.WriteFile(broken, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(broken, bin); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGHUP)
	waitLogN(t, p, "reload complete", 1, 20*time.Second)
	if got := pinned(goinit, bin); got[bin] != 1 || got[bin+" (deleted)"] != 0 {
		t.Fatalf("after a reload goinit holds %v, want only the release the workers run", got)
	}
}

// pinned counts process pid's descriptors by target, for the targets that
// start with path (a deleted file's ends in " (deleted)").
func pinned(pid int, path string) map[string]int {
	got := map[string]int{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); strings.HasPrefix(target, path) {
			got[target]++
		}
	}
	return got
}

// TestScriptWorkerKeepsItsName checks that a script run as a worker sees
// its own name as $0, as wrappers that dispatch on it (pyenv's shims)
// need: goinit runs scripts by path, binaries by their pinned descriptor.
func TestScriptWorkerKeepsItsName(t *testing.T) {
	requireRoot(t)
	tool := filepath.Join(t.TempDir(), "mytool")
	if err := os.WriteFile(tool, []byte("#!/bin/sh\necho \"name=${0##*/}\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := start(t, runOpts{pid1: true}, "--workers=1", "--restart=never", "--", tool)
	if c := p.wait(10 * time.Second); c != 0 {
		t.Fatalf("exit %d", c)
	}
	if !p.hasLine("name=mytool") {
		t.Fatalf("the script saw another $0:\n%s", p.stdout())
	}
}

// TestWorkerProcessName checks that a worker's process name (comm, what
// ps, top and pgrep show) is its command's, before and after a reload.
func TestWorkerProcessName(t *testing.T) {
	requireRoot(t)
	p := start(t, runOpts{pid1: true}, "--workers=1", "--", "sleep", "1000")
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	comm := func() string {
		for pid := range descendants(p.cmd.Process.Pid) {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil {
				return strings.TrimSpace(string(b))
			}
		}
		return ""
	}
	eventually(t, 10*time.Second, "the worker named sleep", func() bool { return comm() == "sleep" })
	p.signal(syscall.SIGHUP)
	waitLogN(t, p, "reload complete", 1, 10*time.Second)
	eventually(t, 10*time.Second, "the new worker named sleep", func() bool { return comm() == "sleep" })
}
