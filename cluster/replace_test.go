package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/reaper"
)

// releases is a fakeStarts that records the release of every start.
type releases struct {
	fakeStarts
	rel map[int]int // pid -> release
}

func (r *releases) start(id, release int) (int, error) {
	pid, err := r.fakeStarts.start(id, release)
	if err == nil {
		if r.rel == nil {
			r.rel = map[int]int{}
		}
		r.rel[pid] = release
	}
	return pid, err
}

// reloadPool is a 3-worker pool that waits for listen() after the first
// start, the way a server behaves under --ready=auto.
func reloadPool(t *testing.T, f *releases, events *[]Event) *Pool {
	t.Helper()
	next := 0
	p := New(Config{
		Workers: 3, Policy: testPolicy(), Start: f.start, Rand: func() float64 { return 0.5 },
		Ready:       Readiness{Mode: ReadyAuto, Timeout: time.Minute},
		StopTimeout: 10 * time.Second,
		Release:     func() (int, error) { next++; return next, nil },
		OnEvent:     func(e Event) { *events = append(*events, e) },
	})
	if err := p.Start(t0); err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Slots() {
		p.Ready(s.Pid, Listened, t0) // a server: it listens
	}
	return p
}

func kinds(events []Event, k EventKind) int {
	n := 0
	for _, e := range events {
		if e.Kind == k {
			n++
		}
	}
	return n
}

func TestReadyAutoAtExecUntilSomeoneListens(t *testing.T) {
	f := &fakeStarts{}
	p := New(Config{Workers: 2, Policy: testPolicy(), Start: f.start, Ready: Readiness{Mode: ReadyAuto, Timeout: time.Minute}})
	p.Start(t0)
	for _, s := range p.Slots() {
		if s.State != Running {
			t.Fatalf("first start of a pool that never listened: slot %d is %s, want running (ready at exec)", s.ID, s.State)
		}
	}
	p.Ready(1001, Listened, t0)
	p.HandleExit(1002, reaper.ExitStatus(1), t0.Add(time.Second))
	next, _ := p.NextDeadline()
	p.Due(next)
	if s := p.Slots()[1]; s.State != Starting {
		t.Fatalf("restart after the pool listened: %s, want starting until it listens", s.State)
	}
	p.Ready(s1Pid(p), Listened, next)
	if p.Slots()[1].State != Running {
		t.Fatal("listen did not make it ready")
	}
}

func s1Pid(p *Pool) int { return p.Slots()[1].Pid }

func TestReadyModes(t *testing.T) {
	for _, c := range []struct {
		mode  ReadyMode
		sig   Signal
		ready bool
	}{
		{ReadyListen, Listened, true}, {ReadyListen, Messaged, false},
		{ReadyMessage, Messaged, true}, {ReadyMessage, Listened, false},
		{ReadyNotify, Notified, true}, {ReadyNotify, Messaged, false},
		{ReadyAuto, Notified, false},
	} {
		f := &fakeStarts{}
		p := New(Config{Workers: 1, Policy: testPolicy(), Start: f.start, Ready: Readiness{Mode: c.mode}})
		p.signalled = true // past the pool's first start
		p.Start(t0)
		p.Ready(1001, c.sig, t0)
		if got := p.Slots()[0].State == Running; got != c.ready {
			t.Errorf("%s after %s: ready %v, want %v", c.mode, c.sig, got, c.ready)
		}
	}
}

func TestReadyDelayAndTimeout(t *testing.T) {
	f := &fakeStarts{}
	p := New(Config{Workers: 1, Policy: testPolicy(), Start: f.start, Ready: Readiness{Mode: ReadyDelay, Delay: 2 * time.Second}})
	p.Start(t0)
	if next, ok := p.NextDeadline(); !ok || !next.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("next deadline %s %v, want the delay", next, ok)
	}
	p.Due(t0.Add(2 * time.Second))
	if p.Slots()[0].State != Running {
		t.Fatal("not ready after the delay")
	}

	f = &fakeStarts{}
	p = New(Config{Workers: 1, Policy: testPolicy(), Start: f.start, Ready: Readiness{Mode: ReadyMessage, Timeout: 5 * time.Second}})
	p.Start(t0)
	p.Due(t0.Add(5 * time.Second)) // SIGKILLs pid 1001, which does not exist: ESRCH is ignored
	p.HandleExit(1001, reaper.SignalStatus(9), t0.Add(5*time.Second))
	if s := p.Slots()[0]; s.State != BackingOff {
		t.Fatalf("a worker not ready in time: %s, want backing-off (a failed start is retried)", s.State)
	}
}

func TestReloadReplacesOneAtATime(t *testing.T) {
	f := &releases{}
	var ev []Event
	p := reloadPool(t, f, &ev)
	if p.Reload(t0) != ReloadStarted {
		t.Fatal("reload not started")
	}
	now := t0
	for id := range 3 {
		s := p.Slots()[id]
		if s.Successor == 0 || p.Live() != 4 {
			t.Fatalf("slot %d: successor %d live %d, want one replacement next to 3 workers", id, s.Successor, p.Live())
		}
		for _, other := range p.Slots()[id+1:] {
			if other.Successor != 0 {
				t.Fatalf("slot %d is replaced at the same time as %d", other.ID, id)
			}
		}
		old, succ := s.Pid, s.Successor
		if p.Reload(now) != ReloadQueued {
			t.Fatal("a reload during a reload is not queued")
		}
		p.Ready(succ, Listened, now)
		if s := p.Slots()[id]; s.Pid != succ || s.Release != 1 || f.rel[succ] != 1 {
			t.Fatalf("slot %d after its successor is ready: %+v", id, s)
		}
		if d := p.Draining(); len(d) != 1 || d[0] != old {
			t.Fatalf("draining %v, want the old %d", d, old)
		}
		now = now.Add(time.Second)
		p.HandleExit(old, reaper.SignalStatus(15), now)
	}
	if kinds(ev, ReloadDone) != 1 {
		t.Fatalf("events %v", ev)
	}
	// The queued reload followed.
	if !p.Reloading() || p.Slots()[0].Successor == 0 {
		t.Fatal("the queued reload did not start")
	}
	if !p.Result().Success() {
		t.Fatalf("drained workers dying of SIGTERM made the result %s", p.Result())
	}
}

func TestReloadRollsBackWhenAReplacementExits(t *testing.T) {
	f := &releases{}
	var ev []Event
	p := reloadPool(t, f, &ev)
	p.Reload(t0)
	s0 := p.Slots()[0]
	p.Ready(s0.Successor, Listened, t0) // slot 0 replaced
	p.HandleExit(s0.Pid, reaper.SignalStatus(15), t0)
	s1 := p.Slots()[1]
	p.HandleExit(s1.Successor, reaper.ExitStatus(3), t0.Add(time.Second)) // the new release exits at start
	if p.Reloading() {
		t.Fatal("the reload goes on after a failed replacement")
	}
	slots := p.Slots()
	if slots[1].Pid != s1.Pid || slots[1].State != Running || slots[1].Release != 0 || slots[1].Successor != 0 {
		t.Fatalf("slot 1 after the failure: %+v, want the old process still serving", slots[1])
	}
	if slots[2].Successor != 0 || slots[2].Release != 0 {
		t.Fatalf("slot 2 was replaced after the failure: %+v", slots[2])
	}
	if slots[0].Release != 1 {
		t.Fatalf("slot 0 lost its replacement: %+v", slots[0])
	}
	if kinds(ev, ReloadFailed) != 1 || p.Failure() != nil {
		t.Fatalf("events %v failure %v", ev, p.Failure())
	}
	var msg string
	for _, e := range ev {
		if e.Kind == ReloadFailed {
			msg = e.Reason
		}
	}
	for _, want := range []string{"worker 1", "exited with code 3 before it was ready", "rolled back", "pid " + fmt.Sprint(s1.Pid), "worker(s) 2 were not replaced", "reload again"} {
		if !strings.Contains(msg, want) {
			t.Errorf("reload failure %q does not say %q", msg, want)
		}
	}
	// Slots 1 and 2 restart release 0 after a crash, slot 0 release 1.
	if !p.NeedsRelease(0) || !p.NeedsRelease(1) {
		t.Fatalf("after the rollback: needs release 0 %v, 1 %v; want both", p.NeedsRelease(0), p.NeedsRelease(1))
	}
	// Fixed: a second reload succeeds.
	p.Reload(t0.Add(2 * time.Second))
	if !p.NeedsRelease(2) {
		t.Fatal("the release of the reload in progress is not needed")
	}
	for range 3 {
		for _, s := range p.Slots() {
			if s.Successor != 0 {
				old := s.Pid
				p.Ready(s.Successor, Listened, t0)
				p.HandleExit(old, reaper.SignalStatus(15), t0)
			}
		}
	}
	if kinds(ev, ReloadDone) != 1 {
		t.Fatalf("second reload: events %v", ev)
	}
	if p.NeedsRelease(0) || p.NeedsRelease(1) || !p.NeedsRelease(2) {
		t.Fatalf("after the reload: needs releases 0, 1, 2: %v %v %v; want only 2",
			p.NeedsRelease(0), p.NeedsRelease(1), p.NeedsRelease(2))
	}
}

func TestReloadRollsBackWhenNotReadyInTime(t *testing.T) {
	f := &releases{}
	var ev []Event
	p := reloadPool(t, f, &ev)
	p.Reload(t0)
	s0 := p.Slots()[0]
	p.Due(t0.Add(time.Minute)) // the replacement never listened
	if p.Reloading() || kinds(ev, ReloadFailed) != 1 {
		t.Fatalf("reload after a timeout: reloading %v events %v", p.Reloading(), ev)
	}
	if s := p.Slots()[0]; s.Pid != s0.Pid || s.State != Running {
		t.Fatalf("slot 0: %+v, want the old process", s)
	}
	// Its exit after the kill is only logged.
	p.HandleExit(s0.Successor, reaper.SignalStatus(9), t0.Add(time.Minute))
	if p.Slots()[0].State != Running || p.Failure() != nil {
		t.Fatal("the killed replacement's exit changed the slot")
	}
}

func TestReloadOldWorkerCrashWhileReplacementStarts(t *testing.T) {
	f := &releases{}
	var ev []Event
	p := reloadPool(t, f, &ev)
	p.Reload(t0)
	s0 := p.Slots()[0]
	p.HandleExit(s0.Pid, reaper.ExitStatus(1), t0)
	p.HandleExit(s0.Successor, reaper.ExitStatus(1), t0) // and the new one fails
	if s := p.Slots()[0]; s.State != BackingOff || s.Release != 0 {
		t.Fatalf("slot 0: %+v, want a restart of the previous release", s)
	}
	next, _ := p.NextDeadline()
	p.Due(next)
	if s := p.Slots()[0]; f.rel[s.Pid] != 0 {
		t.Fatalf("restarted release %d, want the previous one", f.rel[s.Pid])
	}
}

func TestDrainDeadlineKills(t *testing.T) {
	f := &releases{}
	var ev []Event
	p := reloadPool(t, f, &ev)
	p.Reload(t0)
	s0 := p.Slots()[0]
	p.Ready(s0.Successor, Listened, t0)
	next, ok := p.NextDeadline()
	if !ok || !next.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("next deadline %s, want the drain's SIGKILL at the stop timeout", next)
	}
}

func TestWatchdogAndLifetime(t *testing.T) {
	f := &fakeStarts{}
	p := New(Config{Workers: 1, Policy: testPolicy(), Start: f.start, Ready: Readiness{Mode: ReadyExec},
		Watchdog: 10 * time.Second, WatchdogGrace: time.Second, Rand: func() float64 { return 0.5 }})
	p.Start(t0)
	p.Heartbeat(1001, t0.Add(5*time.Second))
	if next, _ := p.NextDeadline(); !next.Equal(t0.Add(15 * time.Second)) {
		t.Fatalf("watchdog due %s, want 10s after the last heartbeat", next)
	}
	p.Due(t0.Add(15 * time.Second)) // hung: SIGABRT
	if next, _ := p.NextDeadline(); !next.Equal(t0.Add(16 * time.Second)) {
		t.Fatalf("kill due %s, want the grace after SIGABRT", next)
	}
	p.HandleExit(1001, reaper.SignalStatus(6), t0.Add(15*time.Second))
	if s := p.Slots()[0]; s.State != BackingOff {
		t.Fatalf("a hung worker's exit: %s, want restarted although goinit sent the signal", s.State)
	}

	f = &fakeStarts{}
	p = New(Config{Workers: 1, Policy: testPolicy(), Start: f.start, Ready: Readiness{Mode: ReadyExec},
		MaxLifetime: time.Hour, Rand: func() float64 { return 1 }}) // +10%
	p.Start(t0)
	if next, _ := p.NextDeadline(); !next.Equal(t0.Add(66 * time.Minute)) {
		t.Fatalf("recycle due %s, want max-lifetime +10%%", next)
	}
	p.Due(t0.Add(66 * time.Minute))
	// ReadyExec: the replacement was ready at once and took over; the
	// old process drains.
	if s := p.Slots()[0]; s.Pid == 1001 || fmt.Sprint(p.Draining()) != "[1001]" {
		t.Fatalf("after max-lifetime: slot %+v draining %v, want a replacement and 1001 draining", s, p.Draining())
	}
}

func TestScale(t *testing.T) {
	f := &fakeStarts{}
	p := New(Config{Workers: 2, Policy: testPolicy(), Start: f.start})
	p.Start(t0)
	if err := p.Scale(4, t0); err != nil || p.Workers() != 4 || p.Live() != 4 {
		t.Fatalf("scale up: %v workers %d live %d", err, p.Workers(), p.Live())
	}
	if err := p.Scale(1, t0); err != nil || p.Workers() != 1 {
		t.Fatalf("scale down: %v workers %d", err, p.Workers())
	}
	if d := p.Draining(); len(d) != 3 {
		t.Fatalf("draining %v, want the 3 highest ids", d)
	}
	for _, pid := range p.Draining() {
		p.HandleExit(pid, reaper.SignalStatus(15), t0)
	}
	if p.Live() != 1 || p.Slots()[0].ID != 0 || !p.Result().Success() {
		t.Fatalf("after scale down: live %d slots %+v", p.Live(), p.Slots())
	}
	if err := p.Scale(0, t0); err == nil {
		t.Fatal("scale to 0 accepted")
	}
}

func TestParseReadyMode(t *testing.T) {
	for in, want := range map[string]ReadyMode{"auto": ReadyAuto, "exec": ReadyExec, "listen": ReadyListen,
		"message": ReadyMessage, "notify": ReadyNotify, "delay:2s": ReadyDelay} {
		r, err := ParseReadyMode(in)
		if err != nil || r.Mode != want || r.Timeout != DefaultReadyTimeout {
			t.Errorf("%q: %+v %v", in, r, err)
		}
	}
	for _, bad := range []string{"", "ready", "delay:", "delay:-1s", "delay:x"} {
		if _, err := ParseReadyMode(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestReloadAbortStopsTheReplacingLoop: with replacements ready at once
// (exec), a failure deep in the promote/advance chain must end the reload
// there, not let the outer loop go on replacing workers.
func TestReloadAbortStopsTheReplacingLoop(t *testing.T) {
	f := &releases{}
	var ev []Event
	starts := 0
	start := func(id, release int) (int, error) {
		if release == 1 {
			starts++
			if starts == 3 {
				return 0, &StartError{Code: 127, Err: fmt.Errorf("gone")}
			}
		}
		return f.start(id, release)
	}
	next := 0
	p := New(Config{Workers: 4, Policy: testPolicy(), Start: start, Ready: Readiness{Mode: ReadyExec},
		Release: func() (int, error) { next++; return next, nil }, OnEvent: func(e Event) { ev = append(ev, e) }})
	p.Start(t0)
	p.Reload(t0)
	if kinds(ev, ReloadFailed) != 1 || p.Reloading() {
		t.Fatalf("events %v", ev)
	}
	for _, s := range p.Slots()[2:] {
		if s.Release != 0 {
			t.Fatalf("slot %d runs release %d after the reload failed at slot 2", s.ID, s.Release)
		}
	}
}

// TestScaleAfterReloadRunsTheNewRelease: a slot added after a reload runs
// the release the others run, not the one goinit started with.
func TestScaleAfterReloadRunsTheNewRelease(t *testing.T) {
	f := &releases{}
	next := 0
	p := New(Config{Workers: 1, Policy: testPolicy(), Start: f.start, Ready: Readiness{Mode: ReadyExec},
		Release: func() (int, error) { next++; return next, nil }})
	p.Start(t0)
	p.Reload(t0)
	p.Scale(2, t0)
	if s := p.Slots()[1]; s.Release != 1 || f.rel[s.Pid] != 1 {
		t.Fatalf("new slot runs release %d, want 1", f.rel[s.Pid])
	}
}

// TestNoWatchdogWhileStopping: a worker that stops its heartbeats while it
// drains after the stop signal is not killed as hung.
func TestNoWatchdogWhileStopping(t *testing.T) {
	f := &fakeStarts{}
	p := New(Config{Workers: 1, Policy: testPolicy(), Start: f.start, Ready: Readiness{Mode: ReadyExec}, Watchdog: time.Second})
	p.Start(t0)
	p.Stop(unix.SIGTERM, false)
	if next, ok := p.NextDeadline(); ok {
		t.Fatalf("a deadline at %s while stopping", next)
	}
}

// A reload with --reload-surge=2 that rolls back at one slot leaves the
// other slot's replacement starting: its release is still needed, since
// that slot runs it once the replacement is ready.
func TestNeedsReleaseOfAStartingSuccessor(t *testing.T) {
	f := &releases{}
	var ev []Event
	next := 0
	p := New(Config{
		Workers: 2, Policy: testPolicy(), Start: f.start, Rand: func() float64 { return 0.5 },
		Ready:       Readiness{Mode: ReadyAuto, Timeout: time.Minute},
		StopTimeout: 10 * time.Second, Surge: 2,
		Release: func() (int, error) { next++; return next, nil },
		OnEvent: func(e Event) { ev = append(ev, e) },
	})
	if err := p.Start(t0); err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Slots() {
		p.Ready(s.Pid, Listened, t0)
	}
	p.Reload(t0)
	slots := p.Slots()
	if slots[0].Successor == 0 || slots[1].Successor == 0 {
		t.Fatalf("--reload-surge=2 started replacements %d and %d, want both", slots[0].Successor, slots[1].Successor)
	}
	p.HandleExit(slots[0].Successor, reaper.ExitStatus(3), t0.Add(time.Second))
	if kinds(ev, ReloadFailed) != 1 {
		t.Fatalf("events %v, want the reload rolled back", ev)
	}
	if !p.NeedsRelease(1) {
		t.Fatal("release 1 let go while slot 1's replacement still starts with it")
	}
	p.Ready(slots[1].Successor, Listened, t0.Add(2*time.Second))
	if got := p.Slots()[1].Release; got != 1 || !p.NeedsRelease(1) {
		t.Fatalf("slot 1 runs release %d after its replacement was ready; needs release 1: %v", got, p.NeedsRelease(1))
	}
}
