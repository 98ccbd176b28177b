package control

import (
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/signals"
	"github.com/goinit/goinit/state"
)

// Version is the protocol version this package speaks.
const Version = 1

// MaxRequestBytes bounds one request line, newline included.
const MaxRequestBytes = 4096

// Cmd names a control command.
type Cmd string

// The commands of protocol version 1.
const (
	CmdStatus  Cmd = "status"
	CmdReload  Cmd = "reload"
	CmdScale   Cmd = "scale"
	CmdRestart Cmd = "restart"
	CmdSignal  Cmd = "signal"
	CmdTop     Cmd = "top"
)

// Commands lists the commands, which are also goinit's subcommands.
var Commands = []Cmd{CmdStatus, CmdReload, CmdScale, CmdRestart, CmdSignal, CmdTop}

// Target names the processes restart and signal act on: a worker id in
// decimal, [TargetAgent] or [TargetAll].
type Target string

// The targets that are not a worker id.
const (
	TargetAll   Target = "all"
	TargetAgent Target = "agent"
)

// Worker returns the worker id t names, and false when t is "all" or
// "agent".
func (t Target) Worker() (int, bool) {
	n, err := strconv.Atoi(string(t))
	return n, err == nil
}

func parseTarget(s string) (Target, error) {
	switch t := Target(s); t {
	case TargetAll, TargetAgent:
		return t, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return Target(strconv.Itoa(n)), nil
	}
	return "", fmt.Errorf("target %q: want a worker id (0, 1, ...), agent or all", s)
}

// MaxWorkers bounds scale: a typo must not fork a million processes.
const MaxWorkers = 4096

// ReloadResult is how a finished reload ended.
type ReloadResult string

// The results of a reload.
const (
	ReloadSucceeded  ReloadResult = "succeeded"
	ReloadRolledBack ReloadResult = "rolled-back"
)

// Args are a command's arguments, validated by the server.
type Args struct {
	// Wait (reload): answer when the reload has finished, not when it
	// has started.
	Wait bool
	// Workers (scale): the number of worker slots wanted, 1..MaxWorkers.
	Workers int
	// Target (restart, signal).
	Target Target
	// Signal (signal): what to send.
	Signal unix.Signal
}

// Request is a command for the supervisor, which receives it on the
// channel given as Options.Requests.
type Request struct {
	Cmd  Cmd
	Args Args
	// Reply has room for one Response: send exactly one, with Respond,
	// and the supervisor never blocks on it even when the client is gone.
	Reply chan<- Response
}

// Respond sends resp on r.Reply without ever blocking: a second answer is
// dropped.
func (r Request) Respond(resp Response) {
	select {
	case r.Reply <- resp:
	default:
	}
}

// Response is the supervisor's answer to a Request.
type Response struct {
	// Err is set when the command was refused or failed; its text goes
	// to the client ("no worker 7 (workers are 0 to 3)").
	Err error
	// Message says what was done, for the user ("reloading 4 workers").
	Message string
	// Result (reload with Wait) is how the reload ended.
	Result ReloadResult
}

// wireRequest is a request line.
type wireRequest struct {
	V          int    `json:"v"`
	Cmd        Cmd    `json:"cmd"`
	Wait       bool   `json:"wait,omitempty"`
	Workers    int    `json:"workers,omitempty"`
	Target     string `json:"target,omitempty"`
	Signal     string `json:"signal,omitempty"`
	IntervalMS int    `json:"interval_ms,omitempty"`
}

// wireResponse is a response line.
type wireResponse struct {
	V       int             `json:"v"`
	OK      bool            `json:"ok"`
	Error   string          `json:"error,omitempty"`
	Message string          `json:"message,omitempty"`
	Result  ReloadResult    `json:"result,omitempty"`
	Status  *state.Snapshot `json:"status,omitempty"`
}

// minTopInterval bounds how often top may ask for a frame.
const minTopInterval = 200 * time.Millisecond

// validate checks a decoded request and returns what the supervisor gets
// (for the commands it answers) and top's interval.
func (w wireRequest) validate() (Args, time.Duration, error) {
	if w.V != Version {
		return Args{}, 0, fmt.Errorf("protocol version %d is not supported; this goinit speaks version %d", w.V, Version)
	}
	var a Args
	switch w.Cmd {
	case CmdStatus:
	case CmdTop:
		iv := time.Duration(w.IntervalMS) * time.Millisecond
		if iv == 0 {
			iv = time.Second
		}
		return a, max(iv, minTopInterval), nil
	case CmdReload:
		a.Wait = w.Wait
	case CmdScale:
		if w.Workers < 1 || w.Workers > MaxWorkers {
			return a, 0, fmt.Errorf("scale %d: the number of workers must be from 1 to %d", w.Workers, MaxWorkers)
		}
		a.Workers = w.Workers
	case CmdRestart:
		t, err := parseTarget(w.Target)
		if err != nil {
			return a, 0, fmt.Errorf("restart: %w", err)
		}
		a.Target = t
	case CmdSignal:
		sig, err := signals.Parse(w.Signal)
		if err != nil {
			return a, 0, fmt.Errorf("signal: %w", err)
		}
		a.Signal, a.Target = sig, TargetAll
		if w.Target != "" {
			if a.Target, err = parseTarget(w.Target); err != nil {
				return a, 0, fmt.Errorf("signal: %w", err)
			}
		}
	default:
		return a, 0, fmt.Errorf("unknown command %q; commands are status, reload, scale, restart, signal, top", w.Cmd)
	}
	return a, 0, nil
}
