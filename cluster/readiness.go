package cluster

import (
	"fmt"
	"strings"
	"time"
)

// ReadyMode says which event makes a started worker ready.
type ReadyMode int

const (
	// ReadyAuto: the first listen() on a shared port or "ready" message;
	// until some worker of the pool has sent either, a worker is ready
	// once it runs. So a pool's first start is never delayed, and a
	// reload of a server waits until the new worker really listens
	// (Node cluster's default).
	ReadyAuto ReadyMode = iota
	// ReadyExec: ready once the command runs.
	ReadyExec
	// ReadyListen: ready once the worker calls listen() on a shared port
	// (Node cluster's and pm2's "listening").
	ReadyListen
	// ReadyMessage: ready once the worker says so on its channel
	// (pm2's wait_ready: process.send('ready')).
	ReadyMessage
	// ReadyNotify: ready on sd_notify's READY=1 (systemd's Type=notify).
	ReadyNotify
	// ReadyDelay: ready a fixed time after the start.
	ReadyDelay
)

// DefaultReadyTimeout is how long a started worker may take to become
// ready. Not ready by then is a failed start, never "ready anyway": pm2's
// 3 s listen_timeout that does the latter turns a broken release into an
// outage reported as a success.
const DefaultReadyTimeout = 60 * time.Second

// Readiness configures when a worker counts as ready.
type Readiness struct {
	// Mode is the event awaited.
	Mode ReadyMode
	// Delay is the wait for ReadyDelay.
	Delay time.Duration
	// Timeout fails a start that is not ready in time; 0 waits forever.
	Timeout time.Duration
}

// ParseReadyMode reads --ready: auto, exec, listen, message, notify or
// delay:DUR.
func ParseReadyMode(s string) (Readiness, error) {
	r := Readiness{Timeout: DefaultReadyTimeout}
	if d, ok := strings.CutPrefix(s, "delay:"); ok {
		dur, err := time.ParseDuration(d)
		if err != nil || dur <= 0 {
			return r, fmt.Errorf("ready mode %q: the delay must be a positive duration like delay:2s", s)
		}
		r.Mode, r.Delay = ReadyDelay, dur
		return r, nil
	}
	for m := ReadyAuto; m < ReadyDelay; m++ {
		if m.String() == s {
			r.Mode = m
			return r, nil
		}
	}
	return r, fmt.Errorf("unknown ready mode %q; use auto, exec, listen, message, notify or delay:DUR", s)
}

func (m ReadyMode) String() string {
	switch m {
	case ReadyAuto:
		return "auto"
	case ReadyExec:
		return "exec"
	case ReadyListen:
		return "listen"
	case ReadyMessage:
		return "message"
	case ReadyNotify:
		return "notify"
	case ReadyDelay:
		return "delay"
	}
	return fmt.Sprintf("ReadyMode(%d)", int(m))
}

// Signal is an event a worker sends that may make it ready.
type Signal int

const (
	// Listened: the worker called listen() on a shared port.
	Listened Signal = iota
	// Messaged: the worker sent "ready" on its channel.
	Messaged
	// Notified: the worker sent READY=1 to its NOTIFY_SOCKET.
	Notified
)

func (s Signal) String() string {
	switch s {
	case Listened:
		return "listening"
	case Messaged:
		return "said ready"
	case Notified:
		return "sent READY=1"
	}
	return fmt.Sprintf("Signal(%d)", int(s))
}

// accepts reports whether sig makes a worker ready in this mode.
func (r Readiness) accepts(sig Signal) bool {
	switch r.Mode {
	case ReadyAuto:
		return sig == Listened || sig == Messaged
	case ReadyListen:
		return sig == Listened
	case ReadyMessage:
		return sig == Messaged
	case ReadyNotify:
		return sig == Notified
	}
	return false
}
