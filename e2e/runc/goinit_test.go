package runc_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/goinit/goinit/e2e/runc"
)

// These tests run the real goinit binary as PID 1 of a runc container and
// check its contract from the outside: the container's exit status (which
// runc returns as its own), what the child prints, and how long shutdown
// takes. Every wait has a deadline; none of them sleeps and hopes.

// exitTimeout bounds how long a container may take to exit once it should.
const exitTimeout = 15 * time.Second

// goinit returns Options running `/goinit --log-level=debug ARGS...`, with
// debug logs so a failure shows what goinit did.
func goinit(args ...string) runc.Options {
	return runc.Options{
		Goinit: true,
		Args:   append([]string{runc.GoinitPath, "--log-level=debug"}, args...),
	}
}

func TestExitCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		args  []string
		files map[string]runc.File
		want  int
	}{
		{name: "zero", args: []string{"--", "true"}, want: 0},
		{name: "passthrough", args: []string{"--", "sh", "-c", "exit 3"}, want: 3},
		{name: "high", args: []string{"--", "sh", "-c", "exit 200"}, want: 200},
		{name: "not found", args: []string{"--", "/nonexistent"}, want: 127},
		{name: "not found on PATH", args: []string{"--", "no-such-command"}, want: 127},
		{
			name:  "not executable",
			args:  []string{"--", "/not-executable"},
			files: map[string]runc.File{"/not-executable": {Content: []byte("#!/bin/sh\necho ran\n"), Mode: 0o644}},
			want:  126,
		},
		{name: "unknown flag", args: []string{"--no-such-flag", "--", "true"}, want: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := goinit(tt.args...)
			opts.Files = tt.files
			c := runc.Start(t, opts)
			if code := c.Wait(exitTimeout); code != tt.want {
				t.Errorf("goinit %s: exit code %d, want %d", strings.Join(tt.args, " "), code, tt.want)
			}
		})
	}
}

// reapScript orphans many short-lived processes to PID 1, then waits, with a
// deadline, until none of them is left running or as a zombie. It prints
// how many orphans PID 1 had adopted (proof the test exercised reaping) and
// the final zombie count, and exits 0 only if that count reached 0.
const reapScript = `
n=200
for i in $(seq $n); do (sleep 1 &); done
# Double fork through a process that exits at once, the other common way
# daemons orphan themselves.
for i in $(seq 20); do sh -c 'sh -c "sleep 1" & exit 0'; done
# /proc/PID/stat is "pid (comm) state ppid ..."; comm has no spaces here.
adopted=$(cat /proc/[0-9]*/stat 2>/dev/null | grep -c '^[0-9]* (sleep) [A-Z] 1 ' || true)
echo "adopted=$adopted"
end=$(( $(date +%s) + 15 ))
while :; do
	zombies=$(cat /proc/[0-9]*/stat 2>/dev/null | sed 's/.*) //' | cut -d' ' -f1 | grep -c '^Z$' || true)
	sleeps=$(cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^sleep$' || true)
	if [ "$zombies" -eq 0 ] && [ "$sleeps" -eq 0 ]; then
		echo "zombies=0"
		exit 0
	fi
	if [ "$(date +%s)" -ge "$end" ]; then
		echo "zombies=$zombies sleeps=$sleeps"
		cat /proc/[0-9]*/stat 2>/dev/null
		exit 1
	fi
	sleep 0.1
done
`

func TestReapsOrphans(t *testing.T) {
	t.Parallel()
	c := runc.Start(t, goinit("--", "sh", "-c", reapScript))
	code := c.Wait(20 * time.Second)
	if !c.HasLine("zombies=0") {
		t.Errorf("orphans were not all reaped within the script's deadline; stdout:\n%s", c.Stdout())
	}
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	// The count of adopted orphans proves PID 1 really had children to
	// reap; without it a broken script could pass vacuously.
	adopted := -1
	for _, l := range strings.Split(c.Stdout(), "\n") {
		if v, ok := strings.CutPrefix(l, "adopted="); ok {
			adopted, _ = strconv.Atoi(v)
		}
	}
	if adopted <= 0 {
		t.Errorf("no orphan was adopted by PID 1 (adopted=%d); the test did not exercise reaping", adopted)
	}
	t.Logf("PID 1 had adopted %d sleeping orphans when the script looked", adopted)
}

func TestForwardsSignals(t *testing.T) {
	t.Parallel()
	c := runc.Start(t, goinit("--", "sh", "-c", `
		n=0
		trap 'n=$((n+1)); echo got-usr1-$n' USR1
		trap 'echo got-term; exit 42' TERM
		echo ready
		while :; do sleep 1 & wait $!; done`))
	c.WaitOutput("ready", 10*time.Second)

	c.Kill("USR1")
	c.WaitOutput("got-usr1-1", 10*time.Second)
	// USR1 must not stop anything: the child is still looping, so the
	// container is still running and a second USR1 is forwarded too.
	if st := c.Status(); st != "running" {
		t.Fatalf("after USR1 the container is %q, want running", st)
	}
	c.Kill("USR1")
	c.WaitOutput("got-usr1-2", 10*time.Second)

	c.Kill("TERM")
	if code := c.Wait(exitTimeout); code != 42 {
		t.Errorf("exit code %d, want 42 (the child's exit status from its TERM trap)", code)
	}
	c.WaitOutput("got-term", time.Second)
}

func TestChildKilledBySignal(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sig  string
		want int
	}{
		{"TERM", 128 + 15},
		{"INT", 128 + 2},
		{"HUP", 128 + 1},
	} {
		t.Run(tc.sig, func(t *testing.T) {
			t.Parallel()
			// sleep is not PID 1, so the kernel's PID-1 exemption from
			// default-fatal signals does not protect it: it dies of the
			// forwarded signal and goinit reports 128+N.
			c := runc.Start(t, goinit("--", "sleep", "1000"))
			waitForProcess(t, c, "sleep")
			c.Kill(tc.sig)
			if code := c.Wait(exitTimeout); code != tc.want {
				t.Errorf("exit code %d, want %d (child killed by SIG%s)", code, tc.want, tc.sig)
			}
		})
	}
}

// waitForProcess waits until a process named name runs in the container, so
// a signal reaches the program and not goinit before it has started it.
func waitForProcess(t *testing.T, c *runc.Container, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := c.Exec("pidof", name)
		if err == nil && strings.TrimSpace(out) != "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no process %s in the container after 10s: %q, %v", name, out, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStopTimeoutEscalation(t *testing.T) {
	t.Parallel()
	const stopTimeout = time.Second
	c := runc.Start(t, goinit(fmt.Sprintf("--stop-timeout=%v", stopTimeout), "--", "sh", "-c", `
		trap '' TERM
		echo ready
		while :; do sleep 1; done`))
	c.WaitOutput("ready", 10*time.Second)
	start := time.Now()
	c.Kill("TERM")
	code := c.Wait(exitTimeout)
	elapsed := time.Since(start)
	t.Logf("container exited %v after SIGTERM with --stop-timeout=%v", elapsed.Round(time.Millisecond), stopTimeout)
	if code != 137 {
		t.Errorf("exit code %d, want 137 (child SIGKILLed after the stop timeout)", code)
	}
	// The child ignores TERM, so it can only be gone because goinit
	// SIGKILLed it, and goinit must first have granted the full grace
	// period. The small allowance covers clock granularity only.
	if elapsed < stopTimeout-50*time.Millisecond {
		t.Errorf("exited after %v, before the %v stop timeout: goinit did not wait", elapsed, stopTimeout)
	}
	if elapsed > stopTimeout+5*time.Second {
		t.Errorf("exited after %v, long after the %v stop timeout", elapsed, stopTimeout)
	}
}

// TestShutdownKillsWholeTree checks that a process left behind that ignores
// SIGTERM cannot hold the container up: after the main child exits on TERM,
// goinit ends within the stop timeout plus slack, with the child's status.
// Who kills the straggler is not observable from outside: goinit SIGKILLs
// it at the deadline, and the kernel would kill it anyway once PID 1 exits;
// the test catches a goinit that waits for it forever or reports its death.
func TestShutdownKillsWholeTree(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		spawn  string
		reason string
	}{
		{
			name:   "same process group",
			spawn:  `sh -c 'trap "" TERM; echo orphan-ready; exec sleep 1000' &`,
			reason: "the orphan gets the forwarded TERM and ignores it",
		},
		{
			name:   "own session",
			spawn:  `setsid sh -c 'trap "" TERM; echo orphan-ready; exec sleep 1000' &`,
			reason: "the orphan is outside the child's process group and never sees TERM",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const stopTimeout = time.Second
			c := runc.Start(t, goinit(fmt.Sprintf("--stop-timeout=%v", stopTimeout), "--", "sh", "-c", tc.spawn+`
				trap 'echo got-term; exit 0' TERM
				echo ready
				while :; do sleep 1 & wait $!; done`))
			c.WaitOutput("ready", 10*time.Second)
			c.WaitOutput("orphan-ready", 10*time.Second)
			start := time.Now()
			c.Kill("TERM")
			code := c.Wait(exitTimeout)
			t.Logf("container exited %v after SIGTERM (%s)", time.Since(start).Round(time.Millisecond), tc.reason)
			if code != 0 {
				t.Errorf("exit code %d, want 0 (the main child's status)", code)
			}
			if !c.HasLine("got-term") {
				t.Errorf("main child never got TERM")
			}
		})
	}
}

// TestOrphansTerminatedOnExit checks --orphans=terminate, the default: when
// the child exits on its own, goinit sends the stop signal to the processes
// it left behind, lets them clean up, and exits with the child's status as
// soon as they are gone rather than at the stop timeout.
func TestOrphansTerminatedOnExit(t *testing.T) {
	t.Parallel()
	const stopTimeout = 10 * time.Second
	c := runc.Start(t, goinit(fmt.Sprintf("--stop-timeout=%v", stopTimeout), "--", "sh", "-c", `
		setsid sh -c '
			trap "echo cleaned > /e2e/orphan-term; exit 0" TERM
			touch /tmp/orphan-ready
			while :; do sleep 1 & wait $!; done' &
		i=0
		while [ ! -e /tmp/orphan-ready ]; do
			i=$((i+1)); [ $i -gt 200 ] && exit 99
			sleep 0.05
		done
		echo child-exiting
		exit 5`))
	c.WaitOutput("child-exiting", 15*time.Second)
	start := time.Now()
	code := c.Wait(exitTimeout)
	elapsed := time.Since(start)
	t.Logf("container exited %v after the child", elapsed.Round(time.Millisecond))
	if code != 5 {
		t.Errorf("exit code %d, want 5 (the child's status)", code)
	}
	if b, err := os.ReadFile(filepath.Join(c.Shared, "orphan-term")); err != nil || string(b) != "cleaned\n" {
		t.Errorf("the orphan never got SIGTERM to clean up (marker %q, %v)", b, err)
	}
	if elapsed > stopTimeout/2 {
		t.Errorf("goinit took %v to exit though the orphan left at once on SIGTERM", elapsed)
	}
}
