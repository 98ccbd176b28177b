package vmtest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
	"github.com/goinit/goinit/internal/vmtest"
)

// TestSmoke boots a VM and checks the three things every cgroup v2 test
// relies on: the controllers are there, a host binary runs, and the script's
// exit status comes back.
func TestSmoke(t *testing.T) {
	hello := testbin.Build(t, "./internal/vmtest/testdata/hello")
	res, err := vmtest.Run(context.Background(), t, vmtest.Config{
		Files: map[string]string{"/usr/local/bin/hello": hello},
		Script: `
echo "cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
echo "kernel: $(uname -r), cpus: $(nproc), mounts:"
grep -E ' (/sys/fs/cgroup|/proc|/dev|/tmp) ' /proc/mounts
for c in cpu memory pids; do
	if grep -qw "$c" /sys/fs/cgroup/cgroup.controllers; then
		pass "controller-$c"
	else
		fail "controller-$c" "not in $(cat /sys/fs/cgroup/cgroup.controllers)"
	fi
done
out=$(/usr/local/bin/hello one two)
case "$out" in
"hello from pid "*'on linux/amd64, args ["one" "two"]') pass hello "$out" ;;
*) fail hello "unexpected output: $out" ;;
esac
check failing-check-detected sh -c '! /usr/local/bin/hello exit3'
exit 7
`,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot %s, total %s", res.BootTime.Round(1e6), res.Elapsed.Round(1e6))
	for _, line := range strings.Split(res.Output, "\n") {
		if strings.HasPrefix(line, "cgroup.controllers:") {
			t.Log(line)
		}
	}
	if res.ExitCode != 7 {
		t.Errorf("script exit code = %d, want 7", res.ExitCode)
	}
	res.Report(t, "controller-cpu", "controller-memory", "controller-pids", "hello", "failing-check-detected")
}

// TestMemoryMaxEnforced proves the VM can host the cgroup v2 tests: a process
// that outgrows memory.max is killed by the OOM killer and memory.events
// counts it, while the same process under a roomier limit survives.
func TestMemoryMaxEnforced(t *testing.T) {
	res, err := vmtest.Run(context.Background(), t, vmtest.Config{
		Script: `
cg=/sys/fs/cgroup/memtest
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
mkdir "$cg"
echo 32M > "$cg/memory.max"
echo 0 > "$cg/memory.swap.max"

# dd's 64 MiB block buffer is faulted in by the read from /dev/zero.
sh -c "echo \$\$ > $cg/cgroup.procs && exec dd if=/dev/zero of=/dev/null bs=64M count=1" 2>/dev/null
rc=$?
kills=$(awk '$1 == "oom_kill" { print $2 }' "$cg/memory.events")
echo "memory.events:"; cat "$cg/memory.events"
dmesg | grep -i 'out of memory' | head -n 3
if [ "$rc" = 137 ] && [ "$kills" = 1 ]; then
	pass oom-kill "dd exit $rc, oom_kill $kills"
else
	fail oom-kill "dd exit $rc (want 137, SIGKILL), oom_kill $kills (want 1)"
fi

sh -c "echo \$\$ > $cg/cgroup.procs && exec dd if=/dev/zero of=/dev/null bs=16M count=1" 2>/dev/null
rc=$?
kills=$(awk '$1 == "oom_kill" { print $2 }' "$cg/memory.events")
if [ "$rc" = 0 ] && [ "$kills" = 1 ]; then
	pass under-limit "dd exit $rc, oom_kill still $kills"
else
	fail under-limit "dd exit $rc (want 0), oom_kill $kills (want 1)"
fi
`,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot %s, total %s", res.BootTime.Round(1e6), res.Elapsed.Round(1e6))
	if res.ExitCode != 0 {
		t.Errorf("script exit code = %d, want 0", res.ExitCode)
	}
	res.Report(t, "oom-kill", "under-limit")
}

// TestScriptTimeout checks that a script that never finishes is cut off at
// Config.Timeout with an error and the output so far.
func TestScriptTimeout(t *testing.T) {
	const timeout = 10 * time.Second // boot takes ~2s under emulation
	res, err := vmtest.Run(context.Background(), t, vmtest.Config{
		Script:  "echo sleeping; sleep 600",
		Timeout: timeout,
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run error = %v, want context.DeadlineExceeded", err)
	}
	if res == nil || res.Output != "sleeping\n" {
		t.Fatalf("Result = %+v, want Output %q", res, "sleeping\n")
	}
	if res.Elapsed > timeout+10*time.Second {
		t.Errorf("Run took %s, want about %s", res.Elapsed, timeout)
	}
}
