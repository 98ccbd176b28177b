package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOrphanStormAsPID1 has the child leave hundreds of orphans to goinit
// and checks from /proc, while the child still runs, that every one of them
// is reaped: no zombie is left.
func TestOrphanStormAsPID1(t *testing.T) {
	requireRoot(t)
	testOrphanStorm(t, true)
}

// TestOrphanStormAsSubreaper is the same with goinit not PID 1.
func TestOrphanStormAsSubreaper(t *testing.T) {
	testOrphanStorm(t, false)
}

func testOrphanStorm(t *testing.T, pid1 bool) {
	const n = 500
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do (sleep 0.1 &); i=$((i+1)); done; echo spawned; read line`, n)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	p := start(t, runOpts{pid1: pid1, stdin: r}, "--", "sh", "-c", script)
	r.Close()
	p.waitLine("spawned", 30*time.Second)
	goinitPid := p.cmd.Process.Pid
	eventually(t, 30*time.Second, "every orphan to be reaped", func() bool {
		procs := descendants(goinitPid)
		// Left: the shell, blocked in read. Nothing else, and no zombie.
		return len(procs) == 1
	})
	for pid, st := range descendants(goinitPid) {
		if st == "Z" {
			t.Errorf("zombie %d left", pid)
		}
	}
	w.Write([]byte("done\n"))
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestStopTimeoutEscalates checks that a child ignoring SIGTERM is
// SIGKILLed after --stop-timeout, and how long that took.
func TestStopTimeoutEscalates(t *testing.T) {
	requireRoot(t)
	p := start(t, runOpts{pid1: true}, "--stop-timeout=1s", "--", "sh", "-c", `trap '' TERM; echo ready; while :; do sleep 0.05; done`)
	p.waitLine("ready", 10*time.Second)
	sent := time.Now()
	p.signal(syscall.SIGTERM)
	code := p.wait(15 * time.Second)
	elapsed := time.Since(sent)
	if code != 137 {
		t.Fatalf("exit %d, want 137 (child SIGKILLed)", code)
	}
	t.Logf("SIGTERM to exit: %s with --stop-timeout=1s", elapsed)
	if elapsed < time.Second || elapsed > 5*time.Second {
		t.Fatalf("goinit took %s to escalate with --stop-timeout=1s", elapsed)
	}
	if !strings.Contains(p.errText(), "sending SIGKILL") {
		t.Errorf("no log line about the SIGKILL: %s", p.errText())
	}
}

// TestShutdownKillsWholeTree checks that goinit, on shutdown, waits for
// and then kills orphans that ignore SIGTERM, and exits with the child's
// status only when nothing is left.
func TestShutdownKillsWholeTree(t *testing.T) {
	// A job in the child's group and an orphan, both ignoring TERM, with
	// their pids on stdout; the child itself exits 0 on TERM.
	script := `(trap '' TERM; exec sleep 1000 >/dev/null) & echo "left $!"
(trap '' TERM; sleep 1000 >/dev/null & echo "left $!")
trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done`
	for _, pid1 := range []bool{true, false} {
		t.Run(fmt.Sprintf("pid1=%v", pid1), func(t *testing.T) {
			p := start(t, runOpts{pid1: pid1}, "--stop-timeout=1s", "--", "sh", "-c", script)
			p.waitLine("ready", 10*time.Second)
			sent := time.Now()
			p.signal(syscall.SIGTERM)
			if code := p.wait(15 * time.Second); code != 0 {
				t.Fatalf("exit %d, want the child's 0", code)
			}
			if held := time.Since(sent); held < time.Second {
				t.Fatalf("goinit exited %s after TERM, before the 1s stop timeout: it did not wait for the leftovers", held)
			}
			if pid1 {
				return // their pids are the namespace's; the kernel ended the namespace anyway
			}
			// Not PID 1: nothing would have killed them but goinit.
			for _, line := range strings.Split(p.stdout(), "\n") {
				var pid int
				if _, err := fmt.Sscanf(line, "left %d", &pid); err == nil {
					if err := syscall.Kill(pid, 0); err == nil {
						syscall.Kill(pid, syscall.SIGKILL)
						t.Errorf("process %d outlived goinit's shutdown", pid)
					}
				}
			}
		})
	}
}

// TestChildExitCleansUp checks --orphans after the child exits by itself.
func TestChildExitCleansUp(t *testing.T) {
	requireRoot(t)
	// Not PID 1, so that a leftover goinit failed to end would still be
	// there afterwards (as PID 1 the kernel ends the namespace anyway).
	leftover := func(t *testing.T, p *proc) {
		t.Helper()
		var pid int
		if _, err := fmt.Sscanf(p.waitLine("left ", time.Second), "left %d", &pid); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, 0); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("leftover %d outlived goinit", pid)
		}
	}
	t.Run("terminate", func(t *testing.T) {
		p := start(t, runOpts{}, "--", "sh", "-c", `sleep 1000 >/dev/null & echo "left $!"; exit 3`)
		if code := p.wait(10 * time.Second); code != 3 {
			t.Fatalf("exit %d; stderr: %s", code, p.errText())
		}
		leftover(t, p)
	})
	t.Run("terminate-escalates", func(t *testing.T) {
		p := start(t, runOpts{}, "--stop-timeout=500ms", "--", "sh", "-c", `(trap '' TERM; exec sleep 1000 >/dev/null) & echo "left $!"; exit 4`)
		if code := p.wait(10 * time.Second); code != 4 || !strings.Contains(p.errText(), "SIGKILL") {
			t.Fatalf("exit %d; stderr: %s", code, p.errText())
		}
		leftover(t, p)
	})
	t.Run("wait", func(t *testing.T) {
		start := time.Now()
		code, stderr := runToEnd(t, runOpts{pid1: true}, "--orphans=wait", "--", "sh", "-c", `sleep 1 & exit 5`)
		if code != 5 || time.Since(start) < time.Second {
			t.Fatalf("exit %d after %s (want 5, after the 1 s orphan); stderr: %s", code, time.Since(start), stderr)
		}
	})
	t.Run("ignore", func(t *testing.T) {
		// Not PID 1: the orphan outlives goinit and is re-parented on.
		p := start(t, runOpts{}, "--orphans=ignore", "--", "sh", "-c", `sleep 1000 >/dev/null 2>&1 & echo $!; exit 6`)
		line := p.waitLine("", 10*time.Second)
		if code := p.wait(10 * time.Second); code != 6 {
			t.Fatalf("exit %d, want 6", code)
		}
		pid, _ := strconv.Atoi(line)
		defer syscall.Kill(pid, syscall.SIGKILL)
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("orphan %d is gone: --orphans=ignore should leave it: %v", pid, err)
		}
	})
}

// TestPreStopDelay checks that a stop signal is held for --pre-stop-delay,
// that other signals still pass meanwhile, and that a second stop signal
// skips the rest of the delay.
func TestPreStopDelay(t *testing.T) {
	requireRoot(t)
	t.Run("held", func(t *testing.T) {
		p := start(t, runOpts{pid1: true}, "--pre-stop-delay=1s", "--", sigrecord(t))
		p.waitLine("ready", 10*time.Second)
		sent := time.Now()
		p.signal(syscall.SIGTERM)
		p.signal(syscall.SIGUSR1)
		p.waitLine("got USR1", 5*time.Second)
		if p.hasLine("got TERM") {
			t.Fatal("TERM arrived during the pre-stop delay")
		}
		p.waitLine("got TERM", 10*time.Second)
		held := time.Since(sent)
		t.Logf("TERM held for %s with --pre-stop-delay=1s", held)
		if held < time.Second {
			t.Fatalf("TERM held only %s", held)
		}
		p.wait(10 * time.Second)
	})
	t.Run("second-signal-skips", func(t *testing.T) {
		p := start(t, runOpts{pid1: true}, "--pre-stop-delay=60s", "--", sigrecord(t))
		p.waitLine("ready", 10*time.Second)
		p.signal(syscall.SIGTERM)
		eventually(t, 5*time.Second, "the hold to be logged", func() bool { return strings.Contains(p.errText(), "holding") })
		p.signal(syscall.SIGINT)
		// The held TERM, not the INT, is what the child gets.
		p.waitLine("got TERM", 10*time.Second)
		if code := p.wait(10 * time.Second); code != 0 {
			t.Fatalf("exit %d", code)
		}
	})
}

// TestUser checks --user: uid, gid, supplementary groups and HOME.
func TestUser(t *testing.T) {
	requireRoot(t)
	cases := []struct{ spec, want string }{
		{"nobody", "65534 65534 /nonexistent"},
		{"65534", "65534 65534 /nonexistent"},
		{"daemon:nogroup", "1 65534 /usr/sbin"},
		{"4242:4343", "4242 4343 /"},
	}
	for _, c := range cases {
		p := start(t, runOpts{pid1: true}, "--user="+c.spec, "--", "sh", "-c", `echo "$(id -u) $(id -g) $HOME"`)
		if code := p.wait(10 * time.Second); code != 0 {
			t.Fatalf("--user=%s: exit %d: %s", c.spec, code, p.errText())
		}
		if got := p.stdout(); got != c.want {
			t.Errorf("--user=%s: got %q, want %q", c.spec, got, c.want)
		}
	}
	// Supplementary groups come from /etc/group: root's include 0 only,
	// so check a user listed in a group as a member, if any exists here.
	p := start(t, runOpts{pid1: true}, "--user=root", "--", "id", "-G")
	p.wait(10 * time.Second)
	if got := p.stdout(); got != "0" {
		t.Errorf("--user=root groups %q, want 0", got)
	}
}

// TestNoFdLeak checks that fds goinit inherits above 2 do not reach the
// child.
func TestNoFdLeak(t *testing.T) {
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := start(t, runOpts{extraFiles: []*os.File{f, f, f}}, "--", "sh", "-c", `ls /proc/self/fd/ | sort -n | tr '\n' ' '`)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	// ls itself opens one fd (3) to read the directory.
	if got := strings.TrimSpace(p.stdout()); got != "0 1 2 3" {
		t.Fatalf("child fds %q, want only 0 1 2 (and ls's own 3)", got)
	}
}

// TestWorkingDirectory checks that the child runs in goinit's working
// directory (dumb-init's cwd test).
func TestWorkingDirectory(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(goinitBin(t), "--", "pwd")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != dir {
		t.Fatalf("child cwd %q, want %q", got, dir)
	}
}

// TestWorkingDirectoryNotHeld checks dumb-init's rule that PID 1 must not
// keep its start directory busy: goinit itself moves to /, the worker runs
// in the start directory, and a restart after that directory is removed
// fails with a line that names it.
func TestWorkingDirectoryNotHeld(t *testing.T) {
	t.Run("pid1", func(t *testing.T) { testWorkingDirectoryNotHeld(t, true) })
	t.Run("subreaper", func(t *testing.T) { testWorkingDirectoryNotHeld(t, false) })
}

func testWorkingDirectoryNotHeld(t *testing.T, pid1 bool) {
	dir := t.TempDir()
	work := filepath.Join(dir, "app")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	p := start(t, runOpts{dir: work, pid1: pid1}, "--workers=1", "--restart=always", "--max-restarts=1", "--restart-delay=10ms",
		"--", "sh", "-c", "echo ready; exec sleep 1000")
	p.waitLine("ready", 10*time.Second)
	waitForExec(t, p, "sleep")
	goinitPid := p.cmd.Process.Pid
	if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", goinitPid)); cwd != "/" {
		t.Errorf("goinit's working directory is %q, want /", cwd)
	}
	var worker int
	for pid := range descendants(goinitPid) {
		worker = pid
		if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); cwd != work {
			t.Errorf("worker's working directory is %q, want %q", cwd, work)
		}
	}
	if err := os.Remove(work); err != nil {
		t.Fatalf("remove the start directory while goinit runs: %v", err)
	}
	syscall.Kill(worker, syscall.SIGKILL)
	eventually(t, 10*time.Second, "a log line naming the removed directory", func() bool {
		return strings.Contains(p.errText(), "cannot start sh in "+work+", the directory goinit was started in")
	})
	p.wait(10 * time.Second)
}

// TestPdeathsig checks that --pdeathsig turns the death of goinit's parent
// into a signal goinit forwards as usual.
func TestPdeathsig(t *testing.T) {
	// The parent shell starts goinit in the background, reports its pid
	// and exits when the test closes its stdin; goinit then gets TERM and
	// stops its child.
	script := fmt.Sprintf(`%s --pdeathsig=TERM -- sleep 1000 >/dev/null 2>&1 & echo $!; read x`, goinitBin(t))
	sh := exec.Command("sh", "-c", script)
	stdin, err := sh.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sh.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Fscan(out, &pid); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	eventually(t, 10*time.Second, "goinit to start sleep", func() bool { return len(descendants(pid)) == 1 })
	stdin.Close()
	_ = sh.Wait() // read fails at EOF: exit 1 is expected

	eventually(t, 10*time.Second, "goinit to exit after its parent died", func() bool {
		return syscall.Kill(pid, 0) != nil
	})
}

// TestLogReaped checks that --log-reaped (tini -w) reports every reaped
// orphan at warn level, which the default log level shows, and that
// without it nothing is said at that level.
func TestLogReaped(t *testing.T) {
	requireRoot(t)
	// The subshell's sleep is orphaned at once and exits 0.1 s later,
	// while the command still runs.
	script := `(sleep 0.1 &); (sleep 0.1 &); sleep 1`
	for _, c := range []struct {
		name string
		pid1 bool
		args []string
		env  []string
		want int
	}{
		{"pid1", true, []string{"--log-reaped"}, nil, 2},
		{"subreaper", false, []string{"--log-reaped"}, nil, 2},
		{"variable", true, nil, []string{"GOINIT_LOG_REAPED=true"}, 2},
		{"off", true, nil, nil, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append(c.args, "--", "sh", "-c", script)
			code, stderr := runToEnd(t, runOpts{pid1: c.pid1, env: c.env}, args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			got := strings.Count(stderr, "level=WARN msg=\"reaped zombie process ")
			if got != c.want {
				t.Fatalf("%d warn lines for reaped orphans, want %d:\n%s", got, c.want, stderr)
			}
		})
	}
}
