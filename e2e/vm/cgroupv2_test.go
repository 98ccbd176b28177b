package vm_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
	"github.com/goinit/goinit/internal/vmtest"
)

// TestCgroupV2 boots one VM and runs every scenario of testdata/cgroupv2.sh:
// the cgroup package's own tests on a real v2 kernel, then goinit with
// per-worker limits in a container-like cgroup (/ctr, alone in it): the
// command starts inside its slot's cgroup; goinit moves itself into a leaf
// and enables the controllers; the limits reach the
// kernel's files; a spinning worker is held to --cpu-limit; a worker that
// outgrows --memory-limit is reported as killed by the OOM killer and
// restarted while its sibling keeps answering; a child's OOM kill is
// reported while its worker lives on; workers are likelier OOM victims than
// goinit; a fork bomb stops at --pids-limit; a read-only cgroupfs, a shared
// cgroup and an undelegated controller are each one clear line and exit 2
// (a warning with --cgroup=optional); and after every run nothing of
// goinit's is left. --memory-recycle replaces a worker whose working set
// grows past it, gracefully, and not one whose cgroup holds only the page
// cache of what it read.
func TestCgroupV2(t *testing.T) {
	script, err := os.ReadFile(filepath.Join("testdata", "cgroupv2.sh"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"/bin/goinit":      testbin.Goinit(t),
		"/bin/limitworker": testbin.Build(t, "./init/testdata/limitworker"),
		"/bin/cgroup.test": testBinary(t, "./cgroup"),
	}
	// The page-cache scenario's RAM disk: Debian builds every block device
	// as a module, and the VM has no disk (its files are in memory charged
	// to their writer).
	switch brd, err := vmtest.Prepare(t).KernelModule("kernel/drivers/block/brd.ko"); {
	case err == nil:
		files["/lib/modules/brd.ko"] = brd
	case errors.Is(err, vmtest.ErrNoKernelPackage):
		t.Logf("%v: the page-cache scenario fails unless that kernel has brd built in", err)
	default:
		t.Fatal(err)
	}
	res, err := vmtest.Run(context.Background(), t, vmtest.Config{
		Files:   files,
		Script:  string(script),
		Timeout: 170 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot %s, total %s", res.BootTime.Round(time.Millisecond), res.Elapsed.Round(time.Millisecond))
	if res.ExitCode != 0 {
		t.Errorf("script exit code = %d, want 0", res.ExitCode)
	}
	res.Report(t,
		"cgroup-library", "cgroup-library-cleanup",
		"placed", "cleanup-placed", "leaf", "controllers", "limits-written", "memory-high", "cpu-limit", "cleanup-spin",
		"oom-score", "workers-answer", "oom-kill-reported", "oom-restart", "child-oom-reported", "cleanup-workers",
		"container-oom", "cleanup-container-oom",
		"memory-recycle", "memory-recycle-graceful", "cleanup-recycle", "page-cache", "cleanup-page-cache",
		"pids-limit", "cleanup-pids",
		"readonly", "readonly-optional", "cleanup-readonly",
		"busy", "cleanup-busy", "not-delegated", "cleanup-not-delegated",
	)
}

// testBinary compiles the tests of package pkg (relative to the repository
// root) into a static test binary that runs inside the VM.
func testBinary(t *testing.T, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg)+".test")
	cmd := exec.Command("go", "test", "-c", "-o", out, pkg)
	cmd.Dir = testbin.Root()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go test -c %s: %v\n%s", pkg, err, b)
	}
	return out
}
