package cluster

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/reaper"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func testPolicy() Policy {
	p := DefaultPolicy(RestartOnFailure)
	p.Jitter = 0
	return p
}

// crash runs the slot through a start and an exit after uptime.
func crash(s *Slot, p Policy, at time.Time, uptime time.Duration, st reaper.Status) Decision {
	s.started(1, at)
	s.State = Running
	return s.exited(st, at.Add(uptime), p, 0.5, false)
}

func TestBackoffDoublesToCap(t *testing.T) {
	p := testPolicy()
	p.MaxRestarts = 0
	s := &Slot{}
	now := t0
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000}
	for i, w := range want {
		d := crash(s, p, now, time.Millisecond, reaper.ExitStatus(1))
		if d.Outcome != Restarting || d.Delay != w*time.Millisecond {
			t.Fatalf("restart %d: %+v, want delay %s", i+1, d, w*time.Millisecond)
		}
		if s.State != BackingOff || !s.NextStart.Equal(now.Add(time.Millisecond+d.Delay)) {
			t.Fatalf("restart %d: state %s next %s", i+1, s.State, s.NextStart)
		}
		now = s.NextStart
	}
}

func TestBackoffResetsAfterMinUptime(t *testing.T) {
	p := testPolicy()
	s := &Slot{}
	crash(s, p, t0, time.Millisecond, reaper.ExitStatus(1))
	d := crash(s, p, t0.Add(time.Second), time.Millisecond, reaper.ExitStatus(1))
	if d.Delay != 200*time.Millisecond {
		t.Fatalf("second quick crash delay %s, want 200ms", d.Delay)
	}
	d = crash(s, p, t0.Add(2*time.Second), p.MinUptime, reaper.ExitStatus(1))
	if d.Delay != p.Delay {
		t.Fatalf("crash after min uptime: delay %s, want reset to %s", d.Delay, p.Delay)
	}
}

func TestJitter(t *testing.T) {
	p := DefaultPolicy(RestartAlways)
	for _, c := range []struct {
		r    float64
		want time.Duration
	}{{0, 80 * time.Millisecond}, {0.5, 100 * time.Millisecond}, {0.999999, 120 * time.Millisecond}} {
		s := &Slot{}
		s.started(1, t0)
		d := s.exited(reaper.ExitStatus(1), t0, p, c.r, false)
		if diff := d.Delay - c.want; diff < -time.Microsecond || diff > time.Microsecond {
			t.Errorf("r=%v: delay %s, want %s", c.r, d.Delay, c.want)
		}
	}
}

func TestCrashLoop(t *testing.T) {
	p := testPolicy() // 10 restarts within 60 s
	s := &Slot{}
	now := t0
	for i := 1; i <= 10; i++ {
		d := crash(s, p, now, time.Millisecond, reaper.ExitStatus(3))
		if d.Outcome != Restarting || d.InWindow != i {
			t.Fatalf("crash %d: %+v", i, d)
		}
		now = s.NextStart
	}
	d := crash(s, p, now, time.Millisecond, reaper.ExitStatus(3))
	if d.Outcome != CrashLoop || s.State != Failed || s.Last.Code() != 3 {
		t.Fatalf("11th crash: %+v, state %s", d, s.State)
	}
}

func TestCrashWindowSlides(t *testing.T) {
	p := testPolicy()
	p.MaxRestarts = 2
	p.Window = 10 * time.Second
	s := &Slot{}
	crash(s, p, t0, time.Millisecond, reaper.ExitStatus(1))
	crash(s, p, t0.Add(time.Second), time.Millisecond, reaper.ExitStatus(1))
	// The first restart has left the window by now.
	d := crash(s, p, t0.Add(10*time.Second), time.Millisecond, reaper.ExitStatus(1))
	if d.Outcome != Restarting || d.InWindow != 2 {
		t.Fatalf("after the window slid: %+v", d)
	}
}

func TestRestartModes(t *testing.T) {
	ok, fail, killed := reaper.ExitStatus(0), reaper.ExitStatus(1), reaper.SignalStatus(unix.SIGSEGV)
	cases := []struct {
		mode Restart
		st   reaper.Status
		want Outcome
	}{
		{RestartNever, fail, Finished}, {RestartNever, ok, Finished},
		{RestartOnFailure, ok, Finished}, {RestartOnFailure, fail, Restarting}, {RestartOnFailure, killed, Restarting},
		{RestartAlways, ok, Restarting}, {RestartAlways, fail, Restarting},
	}
	for _, c := range cases {
		p := testPolicy()
		p.Restart = c.mode
		if d := crash(&Slot{}, p, t0, time.Second, c.st); d.Outcome != c.want {
			t.Errorf("%s after %s: %v, want %v", c.mode, c.st, d.Outcome, c.want)
		}
	}
}

func TestStoppedWorkerNotRestarted(t *testing.T) {
	p := testPolicy()
	p.Restart = RestartAlways
	s := &Slot{}
	s.started(1, t0)
	s.State = Stopping
	if d := s.exited(reaper.SignalStatus(unix.SIGTERM), t0.Add(time.Second), p, 0.5, false); d.Outcome != Finished || s.State != Done {
		t.Fatalf("stopped worker: %+v state %s", d, s.State)
	}
}

func TestPermanentExitCode(t *testing.T) {
	p := testPolicy()
	p.PermanentCodes = []int{3, 125}
	s := &Slot{}
	if d := crash(s, p, t0, time.Second, reaper.ExitStatus(125)); d.Outcome != Permanent || s.State != Failed {
		t.Fatalf("exit 125: %+v", d)
	}
	if d := crash(&Slot{}, p, t0, time.Second, reaper.ExitStatus(4)); d.Outcome != Restarting {
		t.Fatalf("exit 4: %+v", d)
	}
}

func TestParseRestart(t *testing.T) {
	for _, s := range []string{"always", "on-failure", "never"} {
		r, err := ParseRestart(s)
		if err != nil || r.String() != s {
			t.Errorf("ParseRestart(%q) = %v, %v", s, r, err)
		}
	}
	if _, err := ParseRestart("sometimes"); err == nil {
		t.Error("ParseRestart(sometimes) succeeded")
	}
}
