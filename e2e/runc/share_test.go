package runc_test

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/goinit/goinit/e2e/runc"
	"github.com/goinit/goinit/internal/testbin"
)

// These tests run two workers of a Go server that binds its own port
// (net.Listen(":8080"), no --listen, no LISTEN_FDS) under goinit as PID 1
// of a container. The port is in the container's own network namespace,
// so the clients run in there too, with `runc exec` of the same program.

// shareServer is where the port-sharing tests' program sits in the rootfs.
const shareServer = "/shareserver"

// sharePort is the port the workers bind, inside the container.
const sharePort = "8080"

// shareOptions returns the container running goinit with two workers of
// shareserver on sharePort.
func shareOptions(t *testing.T) runc.Options {
	opts := goinit("--workers=2", "--", shareServer, "serve", sharePort)
	opts.Files = map[string]runc.File{shareServer: {HostPath: testbin.Build(t, "./e2e/runc/testdata/shareserver")}}
	return opts
}

// TestSharePortInContainer: with Docker's default capabilities (no
// CAP_SYS_PTRACE) and no seccomp profile, goinit reads its workers' binds
// (they run as its own user, and are its descendants) and both workers
// answer on the one port. A SIGKILLed worker is replaced, and while it is
// gone no client is refused: the port stays open in goinit.
func TestSharePortInContainer(t *testing.T) {
	t.Parallel()
	c := runc.Start(t, shareOptions(t))
	w0, w1 := servingWorker(t, c, 0, 0), servingWorker(t, c, 1, 0)
	waitStderr(t, c, `msg="sharing [::]:`+sharePort+` between the workers; goinit holds it"`, 5*time.Second)

	addr := "127.0.0.1:" + sharePort
	out, err := c.Exec(shareServer, "ask", addr, "2")
	want := []string{fmt.Sprintf("worker 0 pid %d", w0), fmt.Sprintf("worker 1 pid %d", w1)}
	if got := strings.Fields(out); err != nil || !sameReplies(out, want) {
		t.Fatalf("shareserver ask %s in the container: %v, %q; want replies %q", addr, err, got, want)
	}

	out, err = c.Exec(shareServer, "kill", addr, "1", strconv.Itoa(w1))
	if err != nil {
		t.Fatalf("shareserver kill in the container: %v\n%s", err, out)
	}
	t.Logf("SIGKILL of worker 1 under load:\n%s", out)
	w1b := servingWorker(t, c, 1, w1)
	m := regexp.MustCompile(`(?m)^ok (\d+) refused (\d+) failed (\d+)$`).FindStringSubmatch(out)
	if m == nil || m[2] != "0" || !strings.Contains(out, fmt.Sprintf("replaced by %d\n", w1b)) {
		t.Errorf("under load while worker 1 (pid %d) was killed:\n%s\nwant 0 refused and replies from its replacement (pid %d)", w1, out, w1b)
	}
	if st := c.Status(); st != "running" {
		t.Errorf("container is %q after a worker's SIGKILL, want running", st)
	}

	c.Kill("TERM")
	if code := c.Wait(exitTimeout); code != 0 {
		t.Errorf("exit code %d after TERM, want 0", code)
	}
}

// TestSharePortDockerSeccomp runs the same container under the part of
// Docker's default seccomp profile that matters here: without
// CAP_SYS_PTRACE it answers pidfd_getfd (and kcmp, process_madvise) with
// EPERM, and goinit cannot take a copy of a worker's socket. Sharing then
// runs in reduced mode: one warning naming the cause, what is lost and the
// fix, and both workers still answer on the one port goinit holds.
func TestSharePortDockerSeccomp(t *testing.T) {
	t.Parallel()
	opts := shareOptions(t)
	opts.EditSpec = func(spec map[string]any) {
		spec["linux"].(map[string]any)["seccomp"] = dockerPtraceRule()
	}
	c := runc.Start(t, opts)
	const reduced = "pidfd_getfd is refused: ports are shared in reduced mode"
	line := waitStderr(t, c, reduced, 10*time.Second)
	if !strings.Contains(line, "level=WARN") || !strings.Contains(line, "operation not permitted") || !strings.Contains(line, "--cap-add=SYS_PTRACE") {
		t.Errorf("warning\n\t%s\nwant a WARN naming EPERM and --cap-add=SYS_PTRACE", line)
	}
	w0, w1 := servingWorker(t, c, 0, 0), servingWorker(t, c, 1, 0)
	waitStderr(t, c, `msg="sharing [::]:`+sharePort+` between the workers; goinit holds it (reduced mode`, 5*time.Second)

	addr := "127.0.0.1:" + sharePort
	out, err := c.Exec(shareServer, "ask", addr, "2")
	want := []string{fmt.Sprintf("worker 0 pid %d", w0), fmt.Sprintf("worker 1 pid %d", w1)}
	if got := strings.Fields(out); err != nil || !sameReplies(out, want) {
		t.Fatalf("shareserver ask %s in the container: %v, %q; want replies %q", addr, err, got, want)
	}
	stderr := c.Stderr()
	if n := strings.Count(stderr, reduced); n != 1 {
		t.Errorf("the reduced-mode warning was logged %d times, want once", n)
	}
	if strings.Contains(stderr, "address already in use") || strings.Contains(stderr, "are not shared") {
		t.Errorf("a worker bound for itself:\n%s", stderr)
	}
	c.Kill("TERM")
	if code := c.Wait(exitTimeout); code != 0 {
		t.Errorf("exit code %d after TERM, want 0", code)
	}
}

// dockerPtraceRule is an OCI seccomp section that allows everything except
// what moby's profiles/seccomp/default.json allows only with
// CAP_SYS_PTRACE (and not otherwise): kcmp, pidfd_getfd and
// process_madvise fail with EPERM, its defaultErrnoRet.
func dockerPtraceRule() map[string]any {
	return map[string]any{
		"defaultAction": "SCMP_ACT_ALLOW",
		"syscalls": []any{map[string]any{
			"names":    []string{"kcmp", "pidfd_getfd", "process_madvise"},
			"action":   "SCMP_ACT_ERRNO",
			"errnoRet": 1,
		}},
	}
}

// sameReplies reports whether out holds exactly the lines in want, in any
// order.
func sameReplies(out string, want []string) bool {
	got := strings.Split(strings.TrimSpace(out), "\n")
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			return false
		}
	}
	return true
}
