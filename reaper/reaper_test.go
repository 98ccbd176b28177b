package reaper

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain makes the test process a subreaper, so that the orphans the tests
// create are re-parented to it, as they are to goinit.
func TestMain(m *testing.M) {
	if err := BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func startReaper(t *testing.T) *Reaper {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := New(nil)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return r
}

// waitExits collects exits until the supervised pids in want have all been
// seen or the deadline passes.
func waitExits(t *testing.T, r *Reaper, want map[int]bool) map[int]Status {
	t.Helper()
	got := map[int]Status{}
	deadline := time.After(20 * time.Second)
	for len(want) > 0 {
		select {
		case e := <-r.Exits():
			if e.Supervised {
				if !want[e.Pid] {
					t.Fatalf("exit of unknown supervised pid %d", e.Pid)
				}
				delete(want, e.Pid)
				got[e.Pid] = e.Status
			}
		case <-deadline:
			t.Fatalf("timed out; still waiting for %d children", len(want))
		}
	}
	return got
}

func TestExitCodes(t *testing.T) {
	r := startReaper(t)
	cases := map[string]int{"exit 0": 0, "exit 3": 3, "exit 255": 255, "kill -TERM $$": 143, "kill -KILL $$": 137, "kill -USR1 $$": 138}
	want := map[int]bool{}
	codes := map[int]int{}
	for script, code := range cases {
		cmd := exec.Command("sh", "-c", script)
		if err := r.Start(cmd); err != nil {
			t.Fatal(err)
		}
		want[cmd.Process.Pid] = true
		codes[cmd.Process.Pid] = code
	}
	for pid, st := range waitExits(t, r, want) {
		if st.Code() != codes[pid] {
			t.Errorf("pid %d: code %d (%s), want %d", pid, st.Code(), st, codes[pid])
		}
	}
}

// TestSupervisedNeverLost races fast-exiting supervised children against an
// orphan storm: every supervised exit must reach its owner with its own code.
func TestSupervisedNeverLost(t *testing.T) {
	r := startReaper(t)
	storm := exec.Command("sh", "-c", `i=0; while [ $i -lt 200 ]; do (sh -c 'exit 7' &); i=$((i+1)); done`)
	if err := r.Start(storm); err != nil {
		t.Fatal(err)
	}
	want := map[int]bool{storm.Process.Pid: true}
	codes := map[int]int{storm.Process.Pid: 0}
	for i := range 100 {
		cmd := exec.Command("sh", "-c", fmt.Sprintf("exit %d", i%50))
		if err := r.Start(cmd); err != nil {
			t.Fatal(err)
		}
		want[cmd.Process.Pid] = true
		codes[cmd.Process.Pid] = i % 50
	}
	for pid, st := range waitExits(t, r, want) {
		if st.Code() != codes[pid] {
			t.Errorf("pid %d: code %d, want %d", pid, st.Code(), codes[pid])
		}
	}
	waitNoChildren(t, r)
}

// TestOrphanStorm leaves hundreds of orphans to the reaper and checks from
// /proc that not one zombie is left.
func TestOrphanStorm(t *testing.T) {
	r := startReaper(t)
	const n = 500
	cmd := exec.Command("sh", "-c", fmt.Sprintf(`i=0; while [ $i -lt %d ]; do (sleep 0.05 &); i=$((i+1)); done`, n))
	if err := r.Start(cmd); err != nil {
		t.Fatal(err)
	}
	orphans := 0
	deadline := time.After(60 * time.Second)
	for HasChildren() || len(r.Exits()) > 0 {
		select {
		case e := <-r.Exits():
			if !e.Supervised {
				orphans++
			}
		case <-deadline:
			t.Fatalf("children still present after deadline; %d orphans reaped", orphans)
		case <-time.After(100 * time.Millisecond):
			// HasChildren is re-checked: the last exit may have been
			// delivered before the loop condition ran.
		}
	}
	// Each iteration's subshell exits after forking its sleep, so both the
	// subshell and the sleep may end up with us; at least n sleeps must.
	if orphans < n {
		t.Errorf("reaped %d orphans, want at least %d", orphans, n)
	}
	if z := zombies(t); len(z) > 0 {
		t.Errorf("zombies left: %v", z)
	}
}

// waitNoChildren drains exits (the reaper blocks when nobody reads them)
// until no child is left or the deadline passes.
func waitNoChildren(t *testing.T, r *Reaper) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for HasChildren() {
		select {
		case <-r.Exits():
		case <-deadline:
			t.Fatalf("children left: %v", zombies(t))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// zombies lists our children in state Z.
func zombies(t *testing.T) []int {
	t.Helper()
	pids, err := Descendants()
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		s := string(b)
		if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) > 0 && f[0] == "Z" {
			out = append(out, p)
		}
	}
	return out
}

func TestDescendantsAndSignalAll(t *testing.T) {
	r := startReaper(t)
	// A child with a grandchild that ignores nothing: both must be found
	// and both must die from SignalAll.
	cmd := exec.Command("sh", "-c", "sleep 1000 & echo $!; wait")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(cmd); err != nil {
		t.Fatal(err)
	}
	var grandchild int
	if _, err := fmt.Fscan(out, &grandchild); err != nil {
		t.Fatal(err)
	}
	pids, err := Descendants()
	if err != nil {
		t.Fatal(err)
	}
	found := map[int]bool{}
	for _, p := range pids {
		found[p] = true
	}
	if !found[cmd.Process.Pid] || !found[grandchild] {
		t.Fatalf("Descendants() = %v, want both %d and %d", pids, cmd.Process.Pid, grandchild)
	}
	if n, err := SignalAll(unix.SIGKILL); err != nil || n < 2 {
		t.Fatalf("SignalAll = %d, %v", n, err)
	}
	st := waitExits(t, r, map[int]bool{cmd.Process.Pid: true})[cmd.Process.Pid]
	if st.Signal() != unix.SIGKILL {
		t.Errorf("child status %s, want killed by KILL", st)
	}
	for deadline := time.Now().Add(10 * time.Second); HasChildren(); {
		if time.Now().After(deadline) {
			t.Fatal("grandchild survived SignalAll")
		}
		select {
		case <-r.Exits():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestStatus(t *testing.T) {
	cases := []struct {
		st   Status
		code int
		str  string
	}{
		{ExitStatus(0), 0, "exited with code 0"},
		{ExitStatus(42), 42, "exited with code 42"},
		{SignalStatus(unix.SIGTERM), 143, "killed by signal 15 (TERM)"},
		{SignalStatus(unix.SIGKILL), 137, "killed by signal 9 (KILL)"},
	}
	for _, c := range cases {
		if c.st.Code() != c.code || c.st.String() != c.str {
			t.Errorf("%#x: Code %d String %q; want %d %q", int(c.st), c.st.Code(), c.st, c.code, c.str)
		}
	}
}
