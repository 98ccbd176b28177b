package relay

import (
	"encoding/json"
)

// EventKind is what happened to a process, in a pool event.
type EventKind int

// The kinds. With the subject's role they name the event: "worker-start",
// "worker-ready", "worker-exit", "agent-start", "agent-ready", "agent-exit".
const (
	// Started: the process was started (forked and exec'd).
	Started EventKind = iota + 1
	// BecameReady: the process became ready (per --ready).
	BecameReady
	// Exited: the process ended; it is no longer live.
	Exited
)

// PoolEvent is something that happened to the agent or a worker, told to
// the other processes.
type PoolEvent struct {
	// Kind is what happened.
	Kind EventKind
	// Subject is the process it happened to: Agent() or Worker(id).
	Subject Peer
	// PID is the subject's pid.
	PID int
	// ExitCode is the exit code of an Exited subject that exited; ignored
	// when Signal is set.
	ExitCode int
	// Signal is the name of the signal that killed an Exited subject
	// ("SIGKILL"), or "" when it exited.
	Signal string
}

// Name returns the event's name, such as "worker-ready"; "" when Kind or
// Subject is not one of the documented ones.
func (e PoolEvent) Name() string {
	var who, what string
	switch e.Subject.Role {
	case RoleAgent:
		who = "agent"
	case RoleWorker:
		who = "worker"
	default:
		return ""
	}
	switch e.Kind {
	case Started:
		what = "start"
	case BecameReady:
		what = "ready"
	case Exited:
		what = "exit"
	default:
		return ""
	}
	return who + "-" + what
}

// eventData is the "data" of a pool event; field order is the wire order.
type eventData struct {
	Event  string `json:"event"`
	ID     *int   `json:"id,omitempty"`
	PID    int    `json:"pid"`
	Code   *int   `json:"code,omitempty"`
	Signal string `json:"signal,omitempty"`
}

// Data returns the event's "data" object, such as
// {"event":"worker-exit","id":2,"pid":41,"code":1}; nil when Name is "".
func (e PoolEvent) Data() json.RawMessage {
	name := e.Name()
	if name == "" {
		return nil
	}
	d := eventData{Event: name, PID: e.PID}
	if e.Subject.Role == RoleWorker {
		d.ID = &e.Subject.ID
	}
	if e.Kind == Exited {
		if e.Signal != "" {
			d.Signal = e.Signal
		} else {
			d.Code = &e.ExitCode
		}
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil // cannot happen: only ints and strings
	}
	return b
}

// Event routes pool event e from goinit to every live process except its
// subject. An event that is not one of the documented ones is dropped as
// BadData.
func (r *Router) Event(e PoolEvent, live Live) Delivery {
	data := e.Data()
	if data == nil {
		return r.drop(BadData)
	}
	// "all" as if from the subject: everyone live but the subject.
	rcpt, why := r.recipients(e.Subject, json.RawMessage(`"all"`), live)
	if why != 0 {
		return r.drop(why)
	}
	env, _ := envelope(Goinit(), data)
	return r.deliver(rcpt, env)
}
