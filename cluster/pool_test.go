package cluster

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/reaper"
)

// fakeStarts records starts without processes: the pool's bookkeeping is
// pure, and the real-process behaviour is tested end to end in init/.
type fakeStarts struct {
	next int
	fail error
	ids  []int
}

func (f *fakeStarts) start(id, _ int) (int, error) {
	if f.fail != nil {
		return 0, f.fail
	}
	f.next++
	f.ids = append(f.ids, id)
	return 1000 + f.next, nil
}

func TestPoolStartsEverySlot(t *testing.T) {
	f := &fakeStarts{}
	p := New(Config{Workers: 3, Policy: testPolicy(), Start: f.start})
	if err := p.Start(t0); err != nil {
		t.Fatal(err)
	}
	if p.Live() != 3 || fmt.Sprint(f.ids) != "[0 1 2]" {
		t.Fatalf("live %d ids %v", p.Live(), f.ids)
	}
	for i, s := range p.Slots() {
		if s.ID != i || s.State != Running || s.Pid != 1001+i {
			t.Errorf("slot %d: %+v", i, s)
		}
	}
}

func TestPoolRestartKeepsSlotID(t *testing.T) {
	f := &fakeStarts{}
	p := New(Config{Workers: 2, Policy: testPolicy(), Start: f.start, Rand: func() float64 { return 0.5 }})
	p.Start(t0)
	if !p.HandleExit(1002, reaper.ExitStatus(1), t0.Add(time.Second)) {
		t.Fatal("pid 1002 not known")
	}
	if p.HandleExit(4242, reaper.ExitStatus(1), t0) {
		t.Fatal("unknown pid accepted")
	}
	next, ok := p.NextStart()
	if !ok || !next.Equal(t0.Add(time.Second+100*time.Millisecond)) {
		t.Fatalf("next start %s %v", next, ok)
	}
	p.Due(next.Add(-time.Millisecond))
	if p.Live() != 1 {
		t.Fatal("restarted before its delay")
	}
	p.Due(next)
	if p.Live() != 2 || f.ids[len(f.ids)-1] != 1 || p.Slots()[1].Restarts != 1 {
		t.Fatalf("after Due: live %d ids %v", p.Live(), f.ids)
	}
}

func TestPoolStopAndResult(t *testing.T) {
	f := &fakeStarts{}
	p := New(Config{Workers: 3, Policy: testPolicy(), Start: f.start})
	p.Start(t0)
	p.HandleExit(1003, reaper.ExitStatus(1), t0.Add(time.Second)) // backing off
	p.Stop(unix.SIGTERM, false)
	if p.Active() != 2 || p.Live() != 2 {
		t.Fatalf("after Stop: active %d live %d", p.Active(), p.Live())
	}
	p.HandleExit(1001, reaper.SignalStatus(unix.SIGTERM), t0.Add(2*time.Second))
	p.HandleExit(1002, reaper.ExitStatus(0), t0.Add(2*time.Second))
	if p.Live() != 0 || p.Active() != 0 {
		t.Fatal("workers left")
	}
	// The crash that was being retried does not count; a death by a
	// signal other than the stop signal would.
	if r := p.Result(); !r.Success() {
		t.Fatalf("result %s, want success", r)
	}
}

func TestPoolResultFirstFailure(t *testing.T) {
	p := New(Config{Workers: 2, Policy: testPolicy(), Start: (&fakeStarts{}).start})
	p.Start(t0)
	p.Stop(unix.SIGTERM, true)
	p.HandleExit(1001, reaper.SignalStatus(unix.SIGKILL), t0)
	p.HandleExit(1002, reaper.ExitStatus(3), t0)
	if r := p.Result(); r.Code() != 137 {
		t.Fatalf("result %s, want the first failure, killed by KILL", r)
	}
}

func TestPoolCrashLoopFails(t *testing.T) {
	f := &fakeStarts{}
	pol := testPolicy()
	pol.MaxRestarts = 2
	p := New(Config{Workers: 1, Policy: pol, Start: f.start})
	p.Start(t0)
	now := t0
	for range 3 {
		pid := 1000 + f.next
		p.HandleExit(pid, reaper.ExitStatus(7), now)
		if next, ok := p.NextStart(); ok {
			now = next
			p.Due(now)
		}
	}
	fl := p.Failure()
	if fl == nil || fl.Status.Code() != 7 || len(f.ids) != 3 {
		t.Fatalf("failure %+v after %d starts", fl, len(f.ids))
	}
	if p.Result().Code() != 7 {
		t.Fatalf("result %s", p.Result())
	}
}

func TestPoolRestartStartFailureCountsAsCrash(t *testing.T) {
	f := &fakeStarts{}
	pol := testPolicy()
	pol.MaxRestarts = 1
	p := New(Config{Workers: 1, Policy: pol, Start: f.start})
	p.Start(t0)
	p.HandleExit(1001, reaper.ExitStatus(1), t0)
	f.fail = &StartError{Code: 127, Err: errors.New("gone")}
	next, _ := p.NextStart()
	p.Due(next)
	if fl := p.Failure(); fl == nil || fl.Status.Code() != 127 {
		t.Fatalf("failure %+v", fl)
	}
}

// TestPoolSignalsRealProcessGroups checks Signal and Stop against real
// processes, each leading its own group as goinit starts them.
func TestPoolSignalsRealProcessGroups(t *testing.T) {
	var cmds []*exec.Cmd
	start := func(id, _ int) (int, error) {
		c := exec.Command("sleep", "1000")
		c.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			return 0, err
		}
		cmds = append(cmds, c)
		return c.Process.Pid, nil
	}
	p := New(Config{Workers: 2, Policy: testPolicy(), Start: start})
	if err := p.Start(time.Now()); err != nil {
		t.Fatal(err)
	}
	p.Stop(unix.SIGTERM, true)
	for _, c := range cmds {
		err := c.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != unix.SIGTERM {
			t.Fatalf("worker ended with %v, want SIGTERM", err)
		}
		p.HandleExit(c.Process.Pid, reaper.Status(ee.Sys().(syscall.WaitStatus)), time.Now())
	}
	if !p.Result().Success() {
		t.Fatalf("result %s: a death by the stop signal is clean", p.Result())
	}
}

// Explain is asked once per exit, with the exiting pid, and its text is
// both the exit's log line and the event's Reason: an explanation that can
// only be given once (an OOM kill counted from a cgroup) reaches both.
func TestExplainOncePerExit(t *testing.T) {
	f := &fakeStarts{}
	var asked []int
	var reasons []string
	p := New(Config{Workers: 1, Policy: testPolicy(), Start: f.start, Rand: func() float64 { return 0.5 },
		Explain: func(id, pid int, st reaper.Status) string {
			asked = append(asked, pid)
			if len(asked) > 1 {
				return "" // already told
			}
			return "killed by the OOM killer (memory limit 64MiB)"
		},
		OnEvent: func(e Event) {
			if e.Kind == WorkerExited {
				reasons = append(reasons, e.Reason)
			}
		},
	})
	p.Start(t0)
	p.HandleExit(1001, reaper.SignalStatus(unix.SIGKILL), t0.Add(time.Second))
	if len(asked) != 1 || asked[0] != 1001 {
		t.Fatalf("Explain asked for pids %v, want [1001]", asked)
	}
	if len(reasons) != 1 || !strings.Contains(reasons[0], "OOM killer") {
		t.Fatalf("exit reasons %q, want the OOM explanation", reasons)
	}
}

// CurrentOf names only a slot's current process: neither its successor
// while it starts nor the old process once the successor took over.
func TestCurrentOf(t *testing.T) {
	f := &releases{}
	var ev []Event
	p := reloadPool(t, f, &ev)
	old := p.Slots()[0].Pid
	if id, ok := p.CurrentOf(old); !ok || id != 0 {
		t.Fatalf("CurrentOf(worker 0's pid) = %d, %v", id, ok)
	}
	p.Reload(t0)
	next := p.Slots()[0].Successor
	if _, ok := p.CurrentOf(next); ok {
		t.Fatal("a starting successor is the current process")
	}
	p.Ready(next, Listened, t0)
	if _, ok := p.CurrentOf(old); ok {
		t.Fatal("a draining process is the current one")
	}
	if id, ok := p.CurrentOf(next); !ok || id != 0 {
		t.Fatalf("CurrentOf(the promoted successor) = %d, %v", id, ok)
	}
}
