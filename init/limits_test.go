package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/cgroup"
	"github.com/goinit/goinit/internal/testbin"
	"github.com/goinit/goinit/reaper"
)

// These tests run goinit with per-worker cgroup limits on this machine's
// cgroup v1 hierarchies (e2e/vm does the same on cgroup v2) and check what
// the kernel did: the OOM killer fired and goinit said so, the CPU quota
// held, fork failed at the pids limit, and every cgroup goinit made is gone
// after it exits.

// limitworker returns the path of the limit tests' worker program.
func limitworker(t *testing.T) string {
	t.Helper()
	return testbin.Build(t, "./init/testdata/limitworker")
}

// requireCgroupV1 skips a test that needs to create cgroup v1 cgroups,
// except in CI, whose machines are cgroup v1 hosts where it runs as root.
func requireCgroupV1(t *testing.T) {
	t.Helper()
	var why string
	if os.Geteuid() != 0 {
		why = "not root"
	} else if _, err := v1Mount("memory"); err != nil {
		why = err.Error()
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("cgroup v1 limit test cannot run (%s), and CI must run it", why)
	}
	t.Skipf("needs root on a cgroup v1 host: %s", why)
}

// mountInfo is one cgroup v1 mount from /proc/self/mountinfo.
type mountInfo struct {
	root, dir string
}

// v1Mount finds the mount of the cgroup v1 hierarchy holding controller.
func v1Mount(controller string) (mountInfo, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return mountInfo{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 || g[0] != "cgroup" {
			continue
		}
		for _, opt := range strings.Split(g[2], ",") {
			if opt == controller {
				return mountInfo{root: f[3], dir: f[4]}, nil
			}
		}
	}
	return mountInfo{}, fmt.Errorf("no cgroup v1 %s hierarchy is mounted", controller)
}

// v1Dir is the directory of pid's cgroup in controller's v1 hierarchy.
func v1Dir(t *testing.T, pid int, controller string) string {
	t.Helper()
	m, err := v1Mount(controller)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			if c == controller {
				rel, _ := filepath.Rel(m.root, f[2])
				return filepath.Join(m.dir, rel)
			}
		}
	}
	t.Fatalf("pid %d has no cgroup for %s:\n%s", pid, controller, b)
	return ""
}

// readInt reads a number from a cgroup or proc file.
func readInt(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}

// goinitCgroups lists the directories under /sys/fs/cgroup that the goinit
// with this pid made ("goinit-<pid>" and anything below).
func goinitCgroups(pid int) []string {
	var found []string
	name := "goinit-" + strconv.Itoa(pid)
	_ = filepath.WalkDir("/sys/fs/cgroup", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // removed while walking
		}
		if d.IsDir() && d.Name() == name {
			found = append(found, path)
			return filepath.SkipDir
		}
		return nil
	})
	return found
}

// startLimited starts goinit like start, and makes sure that when t ends,
// even failed half-way, goinit has stopped and its cgroups are gone: the
// harness ends a goinit still running with SIGKILL, which leaves them
// behind on the host. t.Cleanup runs this before the harness's own cleanup.
// A goinit that had exited by then, on its own or as the test asked, must
// have removed every cgroup it made: t fails if it left one.
func startLimited(t *testing.T, args ...string) *proc {
	t.Helper()
	p := start(t, runOpts{}, args...)
	t.Cleanup(func() {
		select {
		case <-p.done:
			if left := goinitCgroups(p.cmd.Process.Pid); len(left) > 0 {
				t.Errorf("goinit left cgroups behind: %v", left)
			}
		default:
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
		removeCgroups(t, goinitCgroups(p.cmd.Process.Pid))
	})
	return p
}

// removeCgroups kills what is left in the cgroup trees dirs and removes
// them, deepest first.
func removeCgroups(t *testing.T, dirs []string) {
	for _, top := range dirs {
		var all []string
		_ = filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				all = append(all, path)
			}
			return nil
		})
		deadline := time.Now().Add(5 * time.Second)
		for i := len(all) - 1; i >= 0; i-- {
			for {
				b, _ := os.ReadFile(filepath.Join(all[i], "cgroup.procs"))
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
				err := os.Remove(all[i])
				if err == nil || errors.Is(err, fs.ErrNotExist) {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("cannot remove leftover cgroup %s: %v", all[i], err)
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
}

// logLine returns the first line of goinit's log (its stderr) so far that
// contains substr, or "". After p.wait the log is complete.
func logLine(p *proc, substr string) string {
	for _, l := range strings.Split(p.errText(), "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}

// waitLog waits until goinit's log (its stderr) has a line containing
// substr and returns that line. Once goinit has exited it waits at most 2s
// more: the harness copies stderr in the background, so the last lines
// may arrive after the exit is seen.
func waitLog(t *testing.T, p *proc, substr string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	exited := false
	for {
		for _, l := range strings.Split(p.errText(), "\n") {
			if strings.Contains(l, substr) {
				return l
			}
		}
		select {
		case <-p.done:
			if !exited {
				exited = true
				if d := time.Now().Add(2 * time.Second); d.Before(deadline) {
					deadline = d
				}
			}
		default:
		}
		if time.Now().After(deadline) {
			if exited {
				t.Fatalf("goinit exited (%d) without logging %q", p.code, substr)
			}
			t.Fatalf("goinit logged no %q within %s", substr, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// servingPid waits for "serving worker ID pid PID" on stdout, skipping
// pids in not, and returns PID.
func servingPid(t *testing.T, p *proc, id int, not ...int) int {
	t.Helper()
	prefix := fmt.Sprintf("serving worker %d pid ", id)
	var pid int
	eventually(t, 15*time.Second, "worker "+strconv.Itoa(id)+" to serve", func() bool {
		for _, l := range strings.Split(p.stdout(), "\n") {
			if n, err := strconv.Atoi(strings.TrimPrefix(l, prefix)); err == nil && strings.HasPrefix(l, prefix) {
				fresh := true
				for _, o := range not {
					fresh = fresh && n != o
				}
				if fresh {
					pid = n
					return true
				}
			}
		}
		return false
	})
	return pid
}

// TestLimitsOOM runs two workers under --memory-limit=64Mi. Worker 1 is
// told to outgrow the limit: the kernel kills it, goinit reports the OOM
// killer rather than a bare signal 9 and restarts it, and worker 0 answers
// throughout with the same pid. Then a child of worker 0 outgrows the limit
// while worker 0 survives, and goinit's periodic check reports that too.
// Workers are placed in their slot's cgroups and made likelier OOM victims
// than goinit; nothing is left in /sys/fs/cgroup after goinit exits.
func TestLimitsOOM(t *testing.T) {
	requireCgroupV1(t)
	t.Parallel()
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	p := startLimited(t, "--workers=2", "--listen=unix://"+sock, "--memory-limit=64Mi",
		"--", limitworker(t), "serve", dir)
	gpid := p.cmd.Process.Pid
	w0, w1 := servingPid(t, p, 0), servingPid(t, p, 1)
	waitLog(t, p, "per-worker limits: memory 64MiB (cgroup v1)", 5*time.Second)

	for id, pid := range []int{w0, w1} {
		want := fmt.Sprintf("/goinit-%d/worker-%d", gpid, id)
		for _, c := range []string{"memory", "pids", "cpuacct"} {
			if d := v1Dir(t, pid, c); !strings.HasSuffix(d, want) {
				t.Errorf("worker %d (pid %d) is in %s cgroup %s, want .../%s", id, pid, c, d, want)
			}
		}
		if got := readInt(t, v1Dir(t, pid, "memory")+"/memory.limit_in_bytes"); got != 64<<20 {
			t.Errorf("worker %d memory.limit_in_bytes = %d, want %d", id, got, 64<<20)
		}
		own := readInt(t, fmt.Sprintf("/proc/%d/oom_score_adj", gpid))
		if got := readInt(t, fmt.Sprintf("/proc/%d/oom_score_adj", pid)); got != min(own+500, 1000) {
			t.Errorf("worker %d oom_score_adj = %d, goinit's %d: want %d, so the kernel picks a worker before goinit",
				id, got, own, min(own+500, 1000))
		}
	}
	testbin.Answers(t, sock, 10*time.Second, fmt.Sprintf("worker 0 pid %d", w0), fmt.Sprintf("worker 1 pid %d", w1))

	// Worker 1 outgrows its limit.
	if err := os.WriteFile(filepath.Join(dir, "oom-1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	line := waitLog(t, p, fmt.Sprintf("worker 1 (pid %d) ", w1), 15*time.Second)
	re := regexp.MustCompile(`worker 1 \(pid \d+\) killed by the OOM killer \(memory limit 64MiB\) after [0-9.]+m?s; restarting in \d+ms \(restart 1 of 10 in 5m0s\)`)
	if !re.MatchString(line) {
		t.Errorf("OOM kill logged as\n\t%s\nwant it to match %s", line, re)
	}
	w1b := servingPid(t, p, 1, w1)
	testbin.Answers(t, sock, 10*time.Second, fmt.Sprintf("worker 0 pid %d", w0), fmt.Sprintf("worker 1 pid %d", w1b))

	// A child of worker 0 outgrows the limit; worker 0 lives on.
	if err := os.WriteFile(filepath.Join(dir, "child-oom-0"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p.waitLine("worker 0 child ended: signal: killed", 15*time.Second)
	line = waitLog(t, p, "worker 0: ", oomCheckInterval+5*time.Second)
	if want := "worker 0: a process inside it was killed by the OOM killer (memory limit 64MiB); the worker itself is still running"; !strings.Contains(line, want) {
		t.Errorf("child OOM logged as\n\t%s\nwant %q", line, want)
	}
	testbin.Answers(t, sock, 10*time.Second, fmt.Sprintf("worker 0 pid %d", w0))
	if strings.Contains(p.errText(), "worker 0 (pid") {
		t.Errorf("worker 0 exited; it should have outlived its child")
	}

	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Errorf("goinit exit code %d after SIGTERM, want 0", code)
	}
}

// TestLimitsOOMThenExit kills a child of the command for the memory limit;
// the command then exits 1 on its own, and goinit's account of that exit
// names the OOM kill behind it.
func TestLimitsOOMThenExit(t *testing.T) {
	requireCgroupV1(t)
	t.Parallel()
	p := startLimited(t, "--log-level=debug", "--memory-limit=64Mi", "--", "sh", "-c", limitworker(t)+" alloc; exit 1")
	if code := p.wait(30 * time.Second); code != 1 {
		t.Errorf("goinit exit code %d, want the command's 1", code)
	}
	line := logLine(p, "child sh (pid ")
	re := regexp.MustCompile(`child sh \(pid \d+\) exited with code 1 \(a process inside it was killed by the OOM killer, memory limit 64MiB\) after `)
	if !re.MatchString(line) {
		t.Errorf("exit logged as\n\t%s\nwant it to match %s", line, re)
	}
}

// TestLimitsCPU holds a worker that spins to --cpu-limit=0.2, measured from
// the CPU time its own cgroup was charged (cpuacct.usage).
func TestLimitsCPU(t *testing.T) {
	requireCgroupV1(t)
	t.Parallel()
	lw := limitworker(t)
	p := startLimited(t, "--cpu-limit=0.2", "--", lw, "spin")
	var pid int
	eventually(t, 10*time.Second, "the spinning worker", func() bool {
		for k := range descendants(p.cmd.Process.Pid) {
			// Not goinit's shim, whose argv also ends in "spin".
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", k)); string(b) == lw+"\x00spin\x00" {
				pid = k
				return true
			}
		}
		return false
	})
	dir := v1Dir(t, pid, "cpuacct")
	if want := fmt.Sprintf("/goinit-%d/worker-0", p.cmd.Process.Pid); !strings.HasSuffix(dir, want) {
		t.Fatalf("worker's cpuacct cgroup is %s, want .../%s", dir, want)
	}
	cpuDir := v1Dir(t, pid, "cpu")
	if q, per := readInt(t, cpuDir+"/cpu.cfs_quota_us"), readInt(t, cpuDir+"/cpu.cfs_period_us"); q != 20000 || per != 100000 {
		t.Errorf("cpu.cfs_quota_us/period = %d/%d, want 20000/100000", q, per)
	}
	// A measurement window, not a wait for a condition: 2s is 20 CFS
	// periods, enough to average out where in a period it starts.
	u0, t0 := readInt(t, dir+"/cpuacct.usage"), time.Now()
	time.Sleep(2 * time.Second)
	u1, t1 := readInt(t, dir+"/cpuacct.usage"), time.Now()
	cpus := float64(u1-u0) / float64(t1.Sub(t0).Nanoseconds())
	t.Logf("worker used %.3f CPUs over %s", cpus, t1.Sub(t0).Round(time.Millisecond))
	// The upper bound is the point. The lower one only shows it ran; a
	// busy test machine may give it less than its quota.
	if cpus > 0.3 || cpus < 0.05 {
		t.Errorf("worker used %.3f CPUs under --cpu-limit=0.2, want about 0.2", cpus)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 143 {
		t.Errorf("goinit exit code %d, want 143 (the spinner dies of SIGTERM)", code)
	}
}

// TestLimitsPlacedBeforeStart checks that the command runs in its slot's
// cgroups from its first instruction: cat reads /proc/self/cgroup as soon
// as it starts. On cgroup v1 goinit's shim holds the worker until goinit
// has placed it; memory charged before that would never move.
func TestLimitsPlacedBeforeStart(t *testing.T) {
	requireCgroupV1(t)
	t.Parallel()
	p := startLimited(t, "--memory-limit=64Mi", "--cpu-limit=1", "--pids-limit=100", "--", "cat", "/proc/self/cgroup")
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("goinit exit code %d, want 0", code)
	}
	want := fmt.Sprintf("/goinit-%d/worker-0", p.cmd.Process.Pid)
	placed := map[string]bool{}
	for _, line := range strings.Split(p.stdout(), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && strings.HasSuffix(f[2], want) {
			for _, c := range strings.Split(f[1], ",") {
				placed[c] = true
			}
		}
	}
	for _, c := range []string{"memory", "cpu", "cpuacct", "pids"} {
		if !placed[c] {
			t.Errorf("the command did not start in its %s cgroup .../%s; /proc/self/cgroup:\n%s", c, want, p.stdout())
		}
	}
}

// TestLimitsMemoryHighOnV1 checks that --memory-high, which cgroup v1
// cannot do, is refused at start with one line, not silently ignored.
func TestLimitsMemoryHighOnV1(t *testing.T) {
	requireCgroupV1(t)
	t.Parallel()
	p := startLimited(t, "--memory-high=32Mi", "--", "echo", "ran")
	code := p.wait(30 * time.Second)
	errText := p.errText()
	want := "goinit: cannot apply --memory-high: the memory-high limit needs cgroup v2, but /sys/fs/cgroup is cgroup v1; "
	if code != 2 || strings.Count(errText, "\n") != 1 || !strings.HasPrefix(errText, want) ||
		!strings.HasSuffix(errText, ", drop --memory-high, or set --cgroup=optional to run without limits\n") {
		t.Errorf("--memory-high on cgroup v1: exit %d, stderr:\n%s\nwant exit 2 and one line starting %q", code, errText, want)
	}
}

// forkBomb starts background sleeps until fork fails, which a shell
// reports ("Cannot fork", "can't fork") before exiting 2.
const forkBomb = `n=0; while [ $n -lt 100 ]; do sleep 30 & n=$((n+1)); echo "started $n"; done; echo "no fork failed"`

// TestLimitsPids stops a fork bomb at --pids-limit=8: the shell and seven
// sleeps fit, the eighth fork fails.
func TestLimitsPids(t *testing.T) {
	requireCgroupV1(t)
	t.Parallel()
	p := startLimited(t, "--pids-limit=8", "--", "sh", "-c", forkBomb)
	code := p.wait(30 * time.Second)
	out, errText := p.stdout(), p.errText()
	// dash says "Cannot fork", busybox "can't fork".
	if code != 2 || !strings.HasSuffix(out, "started 7") || !strings.Contains(strings.ToLower(errText), "fork") {
		t.Errorf("fork bomb under --pids-limit=8: exit %d, stdout ends %q, stderr:\n%s\nwant exit 2 after 7 sleeps and a fork failure",
			code, out[max(0, len(out)-40):], errText)
	}
}

// TestLimitsBadValues checks that a limit goinit cannot parse is one line
// naming the flag, and exit status 2, before anything runs.
func TestLimitsBadValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		env  []string
		want string
	}{
		{args: []string{"--memory-limit=lots"}, want: `goinit: invalid --memory-limit: invalid size "lots": use bytes or a number with a unit like 256Mi or 1G`},
		{args: []string{"--memory-limit=256m"}, want: `goinit: invalid --memory-limit: invalid size "256m": use 256Mi for mebibytes or 256M for megabytes`},
		{env: []string{"GOINIT_MEMORY_LIMIT=lots"}, want: `goinit: invalid $GOINIT_MEMORY_LIMIT (--memory-limit): invalid size "lots"`},
		{args: []string{"--cpu-limit=-1"}, want: `goinit: invalid --cpu-limit: invalid CPU count "-1": use a number of CPUs like 0.5 or 2, or millicores like 500m`},
		{args: []string{"--cpu-limit=0.001"}, want: `goinit: invalid --cpu-limit: invalid CPU count "0.001": the kernel minimum is 0.01 CPUs (10m)`},
		{args: []string{"--pids-limit=0"}, want: `goinit: invalid --pids-limit "0": use a whole number of processes from 1 up`},
		{args: []string{"--memory-limit=64Mi", "--memory-high=128Mi"}, want: `goinit: invalid limits: memory-high 128MiB is above the memory limit 64MiB`},
		{args: []string{"--cgroup=maybe", "--memory-limit=64Mi"}, want: `goinit: invalid --cgroup "maybe"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(append(tt.env, tt.args...), " "), func(t *testing.T) {
			t.Parallel()
			args := append(append([]string{}, tt.args...), "--", "sh", "-c", "echo ran")
			p := start(t, runOpts{env: tt.env}, args...)
			code := p.wait(10 * time.Second)
			errText := strings.TrimSuffix(p.errText(), "\n")
			if code != 2 || strings.Contains(errText, "\n") || !strings.HasPrefix(errText, tt.want) || p.stdout() != "" {
				t.Errorf("goinit %s: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and one line starting %q",
					strings.Join(args, " "), code, p.stdout(), errText, tt.want)
			}
		})
	}
}

// TestLimitsReadOnlyCgroupfs runs goinit where the memory controller's
// cgroupfs is read-only, as in a container by default: --memory-limit is
// one line naming the cause and the fixes, exit 2, and with
// --cgroup=optional one warning and the command runs without limits. The
// read-only remount happens in a private mount namespace; the host's
// mounts are never touched.
func TestLimitsReadOnlyCgroupfs(t *testing.T) {
	requireCgroupV1(t)
	t.Parallel()
	m, err := v1Mount("memory")
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		// Go makes "/" recursively private in the new namespace before
		// sh runs, so the remount cannot propagate to the host.
		cmd := exec.CommandContext(ctx, "sh", append([]string{"-c",
			`mount -o remount,bind,ro "$0" && exec "$@"`, m.dir, goinitBin(t)}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), stdout.String(), strings.TrimSuffix(stderr.String(), "\n")
	}

	code, out, errText := run("--memory-limit=64Mi", "--", "echo", "ran")
	re := regexp.MustCompile(`^goinit: cannot apply --memory-limit: cgroup memory controller is not writable at /sys/fs/cgroup/\S+/goinit-\d+: read-only file system; mount the cgroup filesystem read-write \(.*\), drop --memory-limit, or set --cgroup=optional to run without limits$`)
	if code != 2 || out != "" || !re.MatchString(errText) {
		t.Errorf("read-only cgroupfs: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and one line matching %s", code, out, errText, re)
	}

	code, out, errText = run("--memory-limit=64Mi", "--cgroup=optional", "--", "echo", "ran")
	lines := strings.Split(errText, "\n")
	if code != 0 || out != "ran\n" || len(lines) != 1 ||
		!strings.Contains(lines[0], "level=WARN") ||
		!strings.Contains(lines[0], "running without per-worker limits (--cgroup=optional): cannot apply --memory-limit: cgroup memory controller is not writable at ") {
		t.Errorf("read-only cgroupfs with --cgroup=optional: exit %d, stdout %q, stderr:\n%s\nwant exit 0, \"ran\" and one warning", code, out, errText)
	}

	// The remount stayed in its namespace.
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fl := strings.Fields(sc.Text()); len(fl) > 5 && fl[4] == m.dir && strings.Contains(","+fl[5]+",", ",ro,") {
			t.Errorf("the host's %s is now read-only: %s", m.dir, sc.Text())
		}
	}
}

// fakeOOM is a slot's OOM counters, set by the test.
type fakeOOM struct {
	kills, limit uint64
	v2           bool
}

func (f *fakeOOM) OOMKills() (uint64, error) { return f.kills, nil }

func (f *fakeOOM) LimitOOMs() (uint64, bool, error) { return f.limit, f.v2, nil }

// TestLimiterOOMAccounting plays the orders in which the kernel's OOM
// counters, the 2s check and a worker's exit can come, without cgroups.
func TestLimiterOOMAccounting(t *testing.T) {
	t.Parallel()
	var logBuf bytes.Buffer
	l := newLimiter(&cgroup.Hierarchy{}, slog.New(slog.NewTextHandler(&logBuf, nil)))
	name := func(id int) string { return fmt.Sprintf("worker %d", id) }
	logged := func() string {
		s := logBuf.String()
		logBuf.Reset()
		return s
	}
	sigkill, exit1 := reaper.SignalStatus(syscall.SIGKILL), reaper.ExitStatus(1)
	c := &fakeOOM{kills: 3} // kills of an earlier worker in the slot
	l.started(0, 100, c, nil)

	// The kernel counts the worker's OOM kill; a check runs before the
	// worker is reaped, and another after it was restarted.
	c.kills++
	l.check(name)
	if got := l.explain(0, 100, sigkill); got != "killed by the OOM killer (cgroup memory limit)" {
		t.Errorf("OOM-killed worker whose kill a check saw first explained as %q", got)
	}
	l.started(0, 101, c, nil)
	l.check(name)
	if out := logged(); out != "" {
		t.Errorf("the worker's own OOM kill was also logged as a surviving child's:\n%s", out)
	}

	// A child is killed; the worker lives on. The first check to see it
	// waits, the second reports it, the third has nothing new.
	c.kills++
	l.check(name)
	if out := logged(); out != "" {
		t.Errorf("first check after the kill logged:\n%s", out)
	}
	l.check(name)
	if out := logged(); !strings.Contains(out, "worker 0: a process inside it was killed by the OOM killer (cgroup memory limit); the worker itself is still running") {
		t.Errorf("second check after a child's kill logged:\n%s", out)
	}
	l.check(name)
	if out := logged(); out != "" {
		t.Errorf("third check after the kill logged:\n%s", out)
	}
	// The worker is then killed by something else: not the OOM killer's
	// doing, whose kill was the child's and already told.
	if got := l.explain(0, 101, sigkill); got != "" {
		t.Errorf("SIGKILL after a reported child OOM kill explained as %q, want the bare signal", got)
	}
	// No worker runs in the slot: a kill there is nobody's to report.
	c.kills++
	l.check(name)
	l.check(name)
	if out := logged(); out != "" {
		t.Errorf("check reported a slot without a running worker:\n%s", out)
	}

	// A child is killed and the worker exits 1 before a check reports it.
	l.started(0, 102, c, nil)
	c.kills++
	l.check(name)
	if got := l.explain(0, 102, exit1); got != "exited with code 1 (a process inside it was killed by the OOM killer, cgroup memory limit)" {
		t.Errorf("exit 1 after a child's OOM kill explained as %q", got)
	}
	l.check(name)
	if out := logged(); out != "" {
		t.Errorf("a kill explained at the exit was logged again:\n%s", out)
	}

	// cgroup v2 tells the slot's own limit from one above it.
	v2 := &fakeOOM{v2: true}
	l.started(1, 200, v2, nil)
	v2.kills++
	if got := l.explain(1, 200, sigkill); got != "killed by the OOM killer (a memory limit above the worker's, such as the container's)" {
		t.Errorf("v2 kill without an own limit event explained as %q", got)
	}
	l.started(1, 201, v2, nil)
	v2.kills, v2.limit = v2.kills+2, v2.limit+1
	l.check(name)
	l.check(name)
	if out := logged(); !strings.Contains(out, "worker 1: 2 processes inside it were killed by the OOM killer (cgroup memory limit)") {
		t.Errorf("v2 kills at the slot's own limit logged as:\n%s", out)
	}

	if got := l.OOMKills(); got[0] != 3 || got[1] != 3 || len(got) != 2 {
		t.Errorf("OOMKills() = %v, want map[0:3 1:3]", got)
	}
}

// TestMemoryRecycle checks --memory-recycle: a worker whose cgroup memory
// passes the size is replaced gracefully, before --memory-limit would
// OOM-kill it: its successor starts first and the old one drains.
func TestMemoryRecycle(t *testing.T) {
	requireCgroupV1(t)
	testbin.Tool(t, "python3")
	script := `import time; b = bytearray(40 << 20); print("allocated", flush=True); time.sleep(1000)`
	p := start(t, runOpts{pid1: true}, "--workers=1", "--ready=exec", "--memory-limit=96Mi", "--memory-recycle=24Mi",
		"--", "python3", "-c", script)
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	p.waitLine("allocated", 20*time.Second)
	waitLogN(t, p, "recycling (its memory passed 24MiB (--memory-recycle))", 1, 15*time.Second)
	waitLogN(t, p, "replaced by pid", 1, 15*time.Second)
	if strings.Contains(p.errText(), "OOM killer") {
		t.Fatalf("the worker was OOM-killed instead of recycled:\n%s", p.errText())
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestMemoryRecycleIgnoresPageCache checks that --memory-recycle counts the
// working set, not the page cache of files a worker merely reads: a worker
// that reads a 64 MiB file (charged to its cgroup as cache) is not
// recycled at 24 MiB.
func TestMemoryRecycleIgnoresPageCache(t *testing.T) {
	requireCgroupV1(t)
	f, err := os.CreateTemp(testbin.CacheDir(t), "pagecache-*")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(make([]byte, 64<<20)); err != nil {
		t.Fatal(err)
	}
	// Out of the page cache, so that the worker's reads charge its cgroup.
	f.Sync()
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	f.Close()
	script := fmt.Sprintf(`cat %s > /dev/null; echo read; exec sleep 1000`, f.Name())
	p := start(t, runOpts{pid1: true}, "--workers=1", "--ready=exec", "--memory-limit=256Mi", "--memory-recycle=24Mi",
		"--", "sh", "-c", script)
	defer p.cmd.Process.Signal(syscall.SIGKILL)
	p.waitLine("read", 20*time.Second)
	// The cache is the worker's: its cgroup's usage is over the size, so
	// counting usage would recycle it.
	mem, err := v1Mount("memory")
	if err != nil {
		t.Fatal(err)
	}
	var usage int64
	eventually(t, 10*time.Second, "the worker's cgroup usage", func() bool {
		for pid := range descendants(p.cmd.Process.Pid) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.SplitN(line, ":", 3); len(f) == 3 && strings.Contains(","+f[1]+",", ",memory,") {
					rel, _ := filepath.Rel(mem.root, f[2])
					v, _ := os.ReadFile(filepath.Join(mem.dir, rel, "memory.usage_in_bytes"))
					usage, _ = strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
				}
			}
		}
		return usage > 0
	})
	if usage <= 24<<20 {
		t.Fatalf("the worker's cgroup uses %d bytes: the file's cache was not charged to it, so this test proves nothing", usage)
	}
	// Three checks of --memory-recycle (every 2 s) see the cache.
	deadline := time.Now().Add(7 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(p.errText(), "recycling") {
			t.Fatalf("a worker was recycled for its page cache:\n%s", p.errText())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReplacementHasItsOwnCgroup checks that a reload's replacement does
// not share its slot's cgroup with the old process it takes over from:
// it starts in a sibling (worker-0.1) with the same limits, so that both
// have the slot's full memory and pids limits during the handover, and
// the next reload's replacement goes back to the emptied worker-0.
func TestReplacementHasItsOwnCgroup(t *testing.T) {
	requireCgroupV1(t)
	p, script, _ := startScript(t, 1, "--memory-limit=64Mi")
	server := bindServer(t)
	// memoryDir is the memory cgroup of the one descendant of goinit
	// whose argv starts with argv0.
	memoryDir := func(argv0 string) string {
		var pids []int
		eventually(t, 10*time.Second, "one process "+argv0, func() bool {
			pids = pids[:0]
			for k := range descendants(p.cmd.Process.Pid) {
				if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", k)); strings.Split(string(b), "\x00")[0] == argv0 {
					pids = append(pids, k)
				}
			}
			return len(pids) == 1
		})
		return v1Dir(t, pids[0], "memory")
	}
	for i, want := range []string{"worker-0.1", "worker-0"} {
		// The replacement sleeps before it serves: the old worker keeps
		// serving meanwhile, in its own cgroup.
		writeRelease(t, script, "", fmt.Sprintf("sleep 1; APP_VERSION=%d exec %s", i+2, server))
		old := memoryDir(server)
		p.signal(syscall.SIGHUP)
		next := memoryDir("sleep")
		if filepath.Base(next) != want || filepath.Dir(next) != filepath.Dir(old) {
			t.Fatalf("reload %d: the replacement runs in %s beside the old worker's %s, want %s", i+1, next, old, want)
		}
		for _, d := range []string{old, next} {
			if n := readInt(t, d+"/memory.limit_in_bytes"); n != 64<<20 {
				t.Errorf("%s/memory.limit_in_bytes = %d, want 64Mi", d, n)
			}
		}
		waitLogN(t, p, "reload complete", i+1, 20*time.Second)
	}
}

// TestLimiterPlacement runs real processes in real cgroups through the
// limiter: a replacement started beside its slot's running process gets a
// sibling cgroup, a restart goes where the slot's last process ran, and
// the slot's CPU time is read over all its cgroups, so that it never goes
// back when a replacement in another cgroup takes over.
func TestLimiterPlacement(t *testing.T) {
	requireCgroupV1(t)
	var logBuf bytes.Buffer
	h, err := cgroup.Open(cgroup.Options{Prefix: fmt.Sprintf("goinit-limiter-test-%d", os.Getpid()), Limits: cgroup.Limits{Memory: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l := newLimiter(h, slog.New(slog.NewTextHandler(&logBuf, nil)))
	// run starts argv in the cgroup the limiter gives slot 0, as the
	// spawner does on v1: the process waits until it has been placed.
	run := func(argv string) (*exec.Cmd, string) {
		t.Helper()
		sc, err := l.slot(0)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "-c", "read x; exec "+argv)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		if err := sc.Add(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		sc.Started(cmd.Process.Pid)
		io.WriteString(in, "go\n")
		return cmd, filepath.Base(sc.(placement).Path())
	}
	spinner, dir := run(limitworker(t) + " spin")
	if dir != "worker-0" {
		t.Fatalf("the first process of slot 0 runs in %s, want worker-0", dir)
	}
	var spun time.Duration
	eventually(t, 10*time.Second, "200ms of CPU in worker-0", func() bool {
		u, ok := l.usage(0, spinner.Process.Pid)
		spun = u.CPUTime
		return ok && spun >= 200*time.Millisecond
	})
	next, dir := run("sleep 1000")
	if dir != "worker-0.1" {
		t.Fatalf("a replacement beside the running process runs in %s, want worker-0.1", dir)
	}
	spinner.Process.Kill()
	spinner.Wait()
	l.explain(0, spinner.Process.Pid, reaper.SignalStatus(syscall.SIGKILL))
	if u, ok := l.usage(0, next.Process.Pid); !ok || u.CPUTime < spun {
		t.Fatalf("slot 0's CPU time once its replacement took over: %s (%v), want at least the %s used before", u.CPUTime, ok, spun)
	}
	next.Process.Kill()
	next.Wait()
	l.explain(0, next.Process.Pid, reaper.SignalStatus(syscall.SIGKILL))
	if _, dir := run("sleep 1000"); dir != "worker-0.1" {
		t.Fatalf("a restart runs in %s, want worker-0.1, where the slot's last process ran", dir)
	}
}
