package vmtest_test

import (
	"context"
	"testing"

	"github.com/goinit/goinit/internal/testbin"
	"github.com/goinit/goinit/internal/vmtest"
)

// One boot runs several scenarios; each reports a verdict, and Report turns
// them into subtests. The script runs as root in the root cgroup of a fresh
// cgroup v2 hierarchy with no controllers enabled for children yet.
func ExampleRun() {
	var t *testing.T // the test's *testing.T
	res, err := vmtest.Run(context.Background(), t, vmtest.Config{
		Files: map[string]string{"/bin/goinit": testbin.Goinit(t)},
		Script: `
echo "+cpu +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
check goinit-version /bin/goinit --version
if grep -qw memory /sys/fs/cgroup/cgroup.subtree_control; then
	pass memory-delegated
else
	fail memory-delegated "subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
fi
`,
	})
	if err != nil {
		t.Fatal(err)
	}
	res.Report(t, "goinit-version", "memory-delegated")
}
