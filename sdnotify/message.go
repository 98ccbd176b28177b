package sdnotify

import (
	"strconv"
	"strings"
)

// Event is one accepted datagram's assignments that goinit acts on.
type Event[K comparable] struct {
	// Key names the process, as given to [Hub.Open].
	Key K
	// PID is the sender's pid, as the kernel reported it.
	PID int
	// Ready: READY=1, the process is ready (or done reloading).
	Ready bool
	// Reloading: RELOADING=1, the process is reloading its configuration.
	Reloading bool
	// Stopping: STOPPING=1, the process is shutting down.
	Stopping bool
	// Watchdog: WATCHDOG=1, a heartbeat.
	Watchdog bool
	// WatchdogTrigger: WATCHDOG=trigger, the process asks to be treated as
	// hung.
	WatchdogTrigger bool
	// Status is STATUS=, a line for people; StatusSet tells an empty
	// STATUS= (which clears it) from none.
	Status    string
	StatusSet bool
	// MainPID is MAINPID=, once checked to be the process or a
	// descendant; 0 when absent or refused.
	MainPID int
	// Errno is ERRNO=, the error the process failed with; ErrnoSet tells
	// ERRNO=0 from none.
	Errno    int
	ErrnoSet bool
}

// fields is what one datagram assigns; barrier is not an event field, as
// it is answered here.
type fields struct {
	ready, reloading, stopping, watchdog, trigger, barrier bool
	status                                                 string
	statusSet                                              bool
	mainPID                                                int
	errno                                                  int
	errnoSet                                               bool
}

// parse reads KEY=VALUE lines the way systemd does: unknown keys and bad
// values are ignored, the last assignment of a key wins.
func parse(msg string) fields {
	var f fields
	for line := range strings.SplitSeq(msg, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch k {
		case "READY":
			f.ready = v == "1"
		case "RELOADING":
			f.reloading = v == "1"
		case "STOPPING":
			f.stopping = v == "1"
		case "WATCHDOG":
			f.watchdog = v == "1"
			f.trigger = v == "trigger"
		case "BARRIER":
			f.barrier = v == "1"
		case "STATUS":
			f.status, f.statusSet = v, true
		case "MAINPID":
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				f.mainPID = n
			}
		case "ERRNO":
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				f.errno, f.errnoSet = n, true
			}
		}
	}
	return f
}

// event reports whether f holds anything for the supervisor.
func (f fields) event() bool {
	return f.ready || f.reloading || f.stopping || f.watchdog || f.trigger || f.statusSet || f.mainPID != 0 || f.errnoSet
}
