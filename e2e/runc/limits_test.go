package runc_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/goinit/goinit/e2e/runc"
	"github.com/goinit/goinit/internal/testbin"
)

// These tests run goinit with per-worker limits as PID 1 of a container,
// where it must find its own cgroup (the container's) through the cgroup
// namespace and create the workers' cgroups below it.

// limitWorker is where the limit tests' worker program sits in the rootfs.
const limitWorker = "/limitworker"

// hostCgroup finds the host directory of the container's cgroup in the
// hierarchy of controller: /sys/fs/cgroup/<controller>/<cgroupsPath> on
// cgroup v1, /sys/fs/cgroup/<cgroupsPath> on v2.
func hostCgroup(t *testing.T, c *runc.Container, controller string) string {
	t.Helper()
	for _, dir := range []string{
		filepath.Join("/sys/fs/cgroup", controller, "goinit-e2e-"+c.ID),
		filepath.Join("/sys/fs/cgroup", "goinit-e2e-"+c.ID),
	} {
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err == nil {
			return dir
		}
	}
	t.Fatalf("no %s cgroup of container %s on the host", controller, c.ID)
	return ""
}

// servingWorker waits for the container to print "serving worker ID pid
// PID" with a pid other than old, and returns PID.
func servingWorker(t *testing.T, c *runc.Container, id int, old int) int {
	t.Helper()
	re := regexp.MustCompile(fmt.Sprintf(`(?m)^serving worker %d pid (\d+)$`, id))
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, m := range re.FindAllStringSubmatch(c.Stdout(), -1) {
			if pid, _ := strconv.Atoi(m[1]); pid != old {
				return pid
			}
		}
		select {
		case <-c.Done():
			t.Fatalf("container exited before worker %d served", id)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker %d did not serve (again) within 15s", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitStderr waits for a line of goinit's log containing substr.
func waitStderr(t *testing.T, c *runc.Container, substr string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, l := range strings.Split(c.Stderr(), "\n") {
			if strings.Contains(l, substr) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("goinit logged no %q within %s", substr, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWorkerLimitsInContainer runs two workers under --memory-limit=64Mi
// in a container limited to 512MiB with a writable cgroup mount and its
// own cgroup namespace. goinit creates the workers' cgroups below the
// container's; worker 1 outgrows its limit and is reported as killed by the
// OOM killer and restarted, while worker 0 keeps answering and the
// container keeps running.
func TestWorkerLimitsInContainer(t *testing.T) {
	t.Parallel()
	c := runc.Start(t, runc.Options{
		Goinit: true,
		Args: []string{runc.GoinitPath, "--workers=2", "--listen=unix://" + runc.SharedPath + "/s.sock",
			"--memory-limit=64Mi", "--", limitWorker, "serve", runc.SharedPath},
		Files:       map[string]runc.File{limitWorker: {HostPath: testbin.Build(t, "./init/testdata/limitworker")}},
		MemoryLimit: 512 << 20,
		Cgroup:      runc.CgroupReadWrite,
		CgroupNS:    true,
	})
	sock := filepath.Join(c.Shared, "s.sock")
	w0, w1 := servingWorker(t, c, 0, 0), servingWorker(t, c, 1, 0)
	waitStderr(t, c, "per-worker limits: memory 64MiB (cgroup v", 5*time.Second)

	// PID 1 is goinit, so its prefix is plain "goinit", right below the
	// container's cgroup.
	mem := hostCgroup(t, c, "memory")
	limitFile, eventsFile := "memory.limit_in_bytes", "memory.oom_control"
	if _, err := os.Stat(filepath.Join(mem, "memory.max")); err == nil {
		limitFile, eventsFile = "memory.max", "memory.events"
	}
	for id := range 2 {
		b, err := os.ReadFile(filepath.Join(mem, "goinit", fmt.Sprintf("worker-%d", id), limitFile))
		if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(64<<20) {
			t.Errorf("worker %d's %s = %q, %v; want %d below the container's cgroup %s", id, limitFile, b, err, 64<<20, mem)
		}
	}
	testbin.Answers(t, sock, 10*time.Second, fmt.Sprintf("worker 0 pid %d", w0), fmt.Sprintf("worker 1 pid %d", w1))

	if err := os.WriteFile(filepath.Join(c.Shared, "oom-1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	line := waitStderr(t, c, fmt.Sprintf("worker 1 (pid %d) ", w1), 15*time.Second)
	if want := fmt.Sprintf("worker 1 (pid %d) killed by the OOM killer (memory limit 64MiB) after ", w1); !strings.Contains(line, want) ||
		!strings.Contains(line, "; restarting in ") {
		t.Errorf("OOM kill logged as\n\t%s\nwant %q...\"; restarting in\"", line, want)
	}
	w1b := servingWorker(t, c, 1, w1)
	testbin.Answers(t, sock, 10*time.Second, fmt.Sprintf("worker 0 pid %d", w0), fmt.Sprintf("worker 1 pid %d", w1b))
	if st := c.Status(); st != "running" {
		t.Errorf("container is %q after a worker's OOM kill, want running", st)
	}
	// The kill was counted in worker 1's own cgroup, where goinit read
	// it. oom_kill counts kills whatever limit ran out, so this does not
	// tell the worker's limit from the container's; the message above
	// does on cgroup v2 (memory.events "oom"), and v1 cannot tell.
	b, _ := os.ReadFile(filepath.Join(mem, "goinit", "worker-1", eventsFile))
	if !regexp.MustCompile(`(?m)^oom_kill 1$`).Match(b) {
		t.Errorf("worker-1 %s:\n%s\nwant oom_kill 1", eventsFile, b)
	}

	c.Kill("TERM")
	if code := c.Wait(exitTimeout); code != 0 {
		t.Errorf("exit code %d after TERM, want 0", code)
	}
}

// TestWorkerLimitsReadOnlyCgroup runs goinit with --memory-limit in a
// container whose cgroup mount is read-only, Docker's default, with and
// without a cgroup namespace: one line naming the cause and the fixes, and
// exit 2; with --cgroup=optional a warning and the command runs.
func TestWorkerLimitsReadOnlyCgroup(t *testing.T) {
	t.Parallel()
	for _, ns := range []bool{true, false} {
		t.Run(fmt.Sprintf("cgroupns=%v", ns), func(t *testing.T) {
			t.Parallel()
			c := runc.Start(t, runc.Options{
				Goinit:   true,
				Args:     []string{runc.GoinitPath, "--memory-limit=64Mi", "--", "echo", "ran"},
				CgroupNS: ns,
			})
			code := c.Wait(exitTimeout)
			stderr := strings.TrimSuffix(c.Stderr(), "\n")
			re := regexp.MustCompile(`^goinit: cannot apply --memory-limit: cgroup memory controller is not writable at /sys/fs/cgroup/\S*goinit: read-only file system; mount the cgroup filesystem read-write \(.*\), drop --memory-limit, or set --cgroup=optional to run without limits$`)
			if code != 2 || c.Stdout() != "" || !re.MatchString(stderr) {
				t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant exit 2 and one line matching %s", code, c.Stdout(), stderr, re)
			}

			c = runc.Start(t, runc.Options{
				Goinit:   true,
				Args:     []string{runc.GoinitPath, "--memory-limit=64Mi", "--cgroup=optional", "--", "echo", "ran"},
				CgroupNS: ns,
			})
			code = c.Wait(exitTimeout)
			stderr = strings.TrimSuffix(c.Stderr(), "\n")
			if code != 0 || c.Stdout() != "ran\n" || strings.Count(stderr, "\n") != 0 ||
				!strings.Contains(stderr, `level=WARN msg="running without per-worker limits (--cgroup=optional): cannot apply --memory-limit: `) {
				t.Errorf("with --cgroup=optional: exit %d, stdout %q, stderr:\n%s\nwant exit 0, \"ran\" and one warning", code, c.Stdout(), stderr)
			}
		})
	}
}
