package runc_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/goinit/goinit/e2e/runc"
)

// These tests check the harness itself with busybox sh as PID 1, no goinit,
// so a failure here means runc or the host is broken, not goinit.

func TestHarnessExitCodeAndOutput(t *testing.T) {
	t.Parallel()
	c := runc.Start(t, runc.Options{
		Args: []string{"sh", "-c", `
			echo "pid=$$"
			if touch /rootfs-is-writable 2>/dev/null; then echo rootfs=rw; else echo rootfs=ro; fi
			echo hello > /e2e/marker
			echo oops >&2
			exit 3`},
		Files: map[string]runc.File{"/data/file.txt": {Content: []byte("x"), Mode: 0o600}},
	})
	if code := c.Wait(10 * time.Second); code != 3 {
		t.Errorf("exit code = %d, want 3", code)
	}
	for _, line := range []string{"pid=1", "rootfs=ro"} {
		if !c.HasLine(line) {
			t.Errorf("stdout has no line %q", line)
		}
	}
	if !strings.Contains(c.Stderr(), "oops") {
		t.Errorf("stderr %q does not contain oops", c.Stderr())
	}
	if b, err := os.ReadFile(filepath.Join(c.Shared, "marker")); err != nil || string(b) != "hello\n" {
		t.Errorf("shared marker = %q, %v; want hello", b, err)
	}
	if fi, err := os.Stat(filepath.Join(c.Bundle, "rootfs", "data", "file.txt")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("extra file: %v, %v; want mode 0600", fi, err)
	}
}

func TestHarnessKillAndExec(t *testing.T) {
	t.Parallel()
	c := runc.Start(t, runc.Options{
		Args: []string{"sh", "-c", `trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 1 & wait $!; done`},
	})
	c.WaitOutput("ready", 10*time.Second)
	if st := c.Status(); st != "running" {
		t.Errorf("status = %q, want running", st)
	}
	out, err := c.Exec("cat", "/proc/1/cmdline")
	if err != nil || !strings.HasPrefix(out, "sh\x00-c\x00") {
		t.Errorf("exec cat /proc/1/cmdline = %q, %v", out, err)
	}
	c.Kill("TERM")
	if code := c.Wait(10 * time.Second); code != 42 {
		t.Errorf("exit code = %d, want 42", code)
	}
	c.WaitOutput("got-term", time.Second)
}

// TestHarnessCgroupOptions checks the options the cgroup-limit tests rely
// on: the memory limit is applied, and with a read-write cgroup mount and
// a cgroup namespace the container can create a child cgroup below its own.
func TestHarnessCgroupOptions(t *testing.T) {
	t.Parallel()
	const limit = 64 << 20
	c := runc.Start(t, runc.Options{
		MemoryLimit: limit,
		Cgroup:      runc.CgroupReadWrite,
		CgroupNS:    true,
		Args: []string{"sh", "-c", `
			set -e
			if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
				echo "limit=$(cat /sys/fs/cgroup/memory.max)"
				mkdir /sys/fs/cgroup/child
			else
				echo "limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
				mkdir /sys/fs/cgroup/memory/child
			fi
			echo "self=$(grep memory /proc/self/cgroup || cat /proc/self/cgroup)"
			echo made-child`},
	})
	if code := c.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code = %d, want 0", code)
	}
	if !c.HasLine("limit=67108864") {
		t.Errorf("memory limit not applied; stdout:\n%s", c.Stdout())
	}
	if !c.HasLine("made-child") {
		t.Errorf("could not create a child cgroup; stdout:\n%s", c.Stdout())
	}
	t.Logf("stdout:\n%s", c.Stdout())
}
