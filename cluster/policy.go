package cluster

import (
	"fmt"
	"slices"
	"time"

	"github.com/goinit/goinit/reaper"
)

// Restart says which worker exits lead to a restart.
type Restart int

const (
	// RestartNever leaves an exited worker down.
	RestartNever Restart = iota
	// RestartOnFailure restarts after a non-zero exit or a death by a
	// signal that the supervisor did not send.
	RestartOnFailure
	// RestartAlways restarts after every exit not caused by a stop.
	RestartAlways
)

// ParseRestart reads "never", "on-failure" or "always".
func ParseRestart(s string) (Restart, error) {
	switch s {
	case "never":
		return RestartNever, nil
	case "on-failure":
		return RestartOnFailure, nil
	case "always":
		return RestartAlways, nil
	}
	return 0, fmt.Errorf("unknown restart policy %q; use always, on-failure or never", s)
}

func (r Restart) String() string {
	switch r {
	case RestartNever:
		return "never"
	case RestartOnFailure:
		return "on-failure"
	case RestartAlways:
		return "always"
	}
	return fmt.Sprintf("Restart(%d)", int(r))
}

// Defaults of Policy, shared by the flags and the documentation.
const (
	DefaultRestartDelay    = 100 * time.Millisecond
	DefaultRestartDelayMax = 30 * time.Second
	DefaultMinUptime       = 10 * time.Second
	DefaultMaxRestarts     = 10
	// DefaultRestartWindow must outlast the backoff: with 100 ms doubling
	// to 30 s, a worker that dies at once is restarted for the 10th time
	// after 81 s, so a 60 s window would never see more than 9 restarts
	// and a broken worker would be retried forever. Five minutes lets
	// the 11th restart of such a worker, at about 111 s, end goinit.
	DefaultRestartWindow = 5 * time.Minute
	// DefaultJitter spreads restarts of workers that crashed together, so
	// they do not hammer a shared dependency in lock step.
	DefaultJitter = 0.2
)

// Policy decides what happens when a worker exits.
type Policy struct {
	// Restart selects which exits are followed by a restart.
	Restart Restart
	// Delay is the wait before the first restart of a slot.
	Delay time.Duration
	// MaxDelay caps the doubling of Delay.
	MaxDelay time.Duration
	// MinUptime is how long a worker must stay up for its slot's backoff
	// to start again from Delay.
	MinUptime time.Duration
	// MaxRestarts is how many restarts of one slot are allowed within
	// Window; one more is a crash loop. 0 means no limit.
	MaxRestarts int
	// Window is the sliding window MaxRestarts counts in.
	Window time.Duration
	// PermanentCodes are exit codes that mean "do not retry": the pool
	// shuts down and goinit exits with that code.
	PermanentCodes []int
	// Jitter is the ± fraction applied to each delay (0.2 = ±20%).
	Jitter float64
}

// DefaultPolicy returns the documented defaults with restart r.
func DefaultPolicy(r Restart) Policy {
	return Policy{
		Restart: r, Delay: DefaultRestartDelay, MaxDelay: DefaultRestartDelayMax,
		MinUptime: DefaultMinUptime, MaxRestarts: DefaultMaxRestarts,
		Window: DefaultRestartWindow, Jitter: DefaultJitter,
	}
}

// wantsRestart applies the restart mode to one exit. stopped is true when
// the supervisor had sent the worker a stop signal.
func (p Policy) wantsRestart(st reaper.Status, stopped bool) bool {
	if stopped {
		return false
	}
	switch p.Restart {
	case RestartAlways:
		return true
	case RestartOnFailure:
		return !st.Success()
	}
	return false
}

func (p Policy) permanent(st reaper.Status) bool {
	return st.Exited() && slices.Contains(p.PermanentCodes, st.Code())
}

// jittered spreads d by ±Jitter; r is uniform in [0, 1).
func (p Policy) jittered(d time.Duration, r float64) time.Duration {
	return time.Duration(float64(d) * (1 + p.Jitter*(2*r-1)))
}
