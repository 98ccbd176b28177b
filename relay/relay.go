package relay

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
)

// Role is what a process is to goinit.
type Role uint8

// The roles. The zero Role is no process.
const (
	RoleAgent Role = iota + 1
	RoleWorker
	RoleGoinit
)

// Peer names a sender or a recipient. Workers are named by their worker id
// (GOINIT_WORKER_ID), which a restart keeps; ID is 0 for the others.
type Peer struct {
	Role Role
	ID   int
}

// Agent returns the agent's name.
func Agent() Peer { return Peer{Role: RoleAgent} }

// Worker returns the name of worker id.
func Worker(id int) Peer { return Peer{Role: RoleWorker, ID: id} }

// Goinit returns goinit's own name, the sender of pool events.
func Goinit() Peer { return Peer{Role: RoleGoinit} }

// String returns "agent", "worker N" or "goinit", for log lines.
func (p Peer) String() string {
	switch p.Role {
	case RoleAgent:
		return "agent"
	case RoleWorker:
		return "worker " + strconv.Itoa(p.ID)
	case RoleGoinit:
		return "goinit"
	}
	return "nobody"
}

// from returns p as the envelope's "from" value.
func (p Peer) from() []byte {
	switch p.Role {
	case RoleAgent:
		return []byte(`"agent"`)
	case RoleWorker:
		return strconv.AppendInt(nil, int64(p.ID), 10)
	}
	return []byte(`"goinit"`)
}

// Live is who can receive a message now.
type Live struct {
	// Agent is true when the agent runs and has a channel.
	Agent bool
	// Workers are the ids of the workers that run and have a channel, in
	// the order "workers" and "all" deliver to them.
	Workers []int
}

// Reason says why a message was dropped.
type Reason int

// The reasons. The zero Reason means delivered.
const (
	// BadTarget: "to" is none of the documented values.
	BadTarget Reason = iota + 1
	// NoRecipient: no live process matches "to" (no agent, that worker
	// is not up, the sender is the only worker).
	NoRecipient
	// BadData: "data" is not JSON.
	BadData
	// BadSender: the sender is the zero Peer, a caller's mistake.
	BadSender
	numReasons
)

func (r Reason) String() string {
	switch r {
	case 0:
		return "delivered"
	case BadTarget:
		return `"to" is not "agent", "workers", "all", "random" or a worker id`
	case NoRecipient:
		return "no live recipient"
	case BadData:
		return `"data" is not JSON`
	case BadSender:
		return "no sender"
	}
	return "unknown reason"
}

// Delivery is what to send, and to whom.
type Delivery struct {
	// To are the recipients; empty when the message is dropped.
	To []Peer
	// Envelope is the line each recipient gets, without its newline. It is
	// shared: the channel sends the same bytes to every recipient.
	Envelope []byte
	// Dropped is why nothing is sent; 0 when To is not empty.
	Dropped Reason
}

// Stats are the router's counters, for metrics. Every field only grows.
type Stats struct {
	// Relayed counts messages delivered to at least one recipient, pool
	// events included.
	Relayed uint64
	// Deliveries counts envelopes handed out: one per recipient.
	Deliveries uint64
	// Dropped counts dropped messages by reason, indexed by Reason.
	Dropped map[Reason]uint64
}

// Router routes messages and counts what it did. Route and Event are meant
// for one goroutine (the supervisor's); Stats may be called from any.
type Router struct {
	intN       func(n int) int
	relayed    atomic.Uint64
	deliveries atomic.Uint64
	dropped    [numReasons]atomic.Uint64
}

// NewRouter returns a Router that picks "random" recipients with intN, which
// returns a number in [0, n); nil means math/rand/v2.IntN.
func NewRouter(intN func(n int) int) *Router {
	if intN == nil {
		intN = rand.IntN
	}
	return &Router{intN: intN}
}

// Stats returns the counters.
func (r *Router) Stats() Stats {
	s := Stats{Relayed: r.relayed.Load(), Deliveries: r.deliveries.Load(), Dropped: map[Reason]uint64{}}
	for i := Reason(1); i < numReasons; i++ {
		s.Dropped[i] = r.dropped[i].Load()
	}
	return s
}

// Route decides where the message {"to": to, "data": data} from sender goes
// among live, and returns the envelope to send there. to and data are the
// raw JSON values (package channel's Event.To and Event.Data); a nil data is
// null.
func (r *Router) Route(sender Peer, to, data json.RawMessage, live Live) Delivery {
	if sender.Role == 0 {
		return r.drop(BadSender)
	}
	env, ok := envelope(sender, data)
	if !ok {
		return r.drop(BadData)
	}
	rcpt, why := r.recipients(sender, to, live)
	if why != 0 {
		return r.drop(why)
	}
	return r.deliver(rcpt, env)
}

// deliver counts a delivery of env to rcpt.
func (r *Router) deliver(rcpt []Peer, env []byte) Delivery {
	r.relayed.Add(1)
	r.deliveries.Add(uint64(len(rcpt)))
	return Delivery{To: rcpt, Envelope: env}
}

// recipients returns who among live gets a message to target from sender,
// or why nobody does.
func (r *Router) recipients(sender Peer, target json.RawMessage, live Live) ([]Peer, Reason) {
	var rcpt []Peer
	switch t := string(bytes.TrimSpace(target)); t {
	case `"agent"`:
		if live.Agent {
			rcpt = []Peer{Agent()}
		}
	case `"workers"`, `"all"`:
		if t == `"all"` && live.Agent && sender.Role != RoleAgent {
			rcpt = append(rcpt, Agent())
		}
		for _, id := range live.Workers {
			if w := Worker(id); w != sender {
				rcpt = append(rcpt, w)
			}
		}
	case `"random"`:
		others := make([]int, 0, len(live.Workers))
		for _, id := range live.Workers {
			if Worker(id) != sender {
				others = append(others, id)
			}
		}
		if len(others) > 0 {
			rcpt = []Peer{Worker(others[r.intN(len(others))])}
		}
	default:
		id, ok := workerID(t)
		if !ok {
			return nil, BadTarget
		}
		for _, w := range live.Workers {
			if w == id {
				rcpt = []Peer{Worker(id)}
				break
			}
		}
	}
	if len(rcpt) == 0 {
		return nil, NoRecipient
	}
	return rcpt, 0
}

func (r *Router) drop(why Reason) Delivery {
	r.dropped[why].Add(1)
	return Delivery{Dropped: why}
}

// workerID parses a target that is a worker id: a JSON integer >= 0, with
// no fraction or exponent (3.0 is no worker's id).
func workerID(t string) (int, bool) {
	if t == "" || t[0] == '-' || t[0] == '+' {
		return 0, false
	}
	id, err := strconv.Atoi(t)
	if err != nil || (len(t) > 1 && t[0] == '0') {
		return 0, false
	}
	return id, true
}

// envelope builds {"from":...,"data":...} around data, which must be JSON.
// Data is copied in as it is, only compacted if it spans lines (a line from
// a channel never does).
func envelope(from Peer, data json.RawMessage) ([]byte, bool) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	if !json.Valid(data) {
		return nil, false
	}
	f := from.from()
	b := make([]byte, 0, len(`{"from":,"data":}`)+len(f)+len(data))
	b = append(b, `{"from":`...)
	b = append(b, f...)
	b = append(b, `,"data":`...)
	if bytes.IndexByte(data, '\n') >= 0 {
		var c bytes.Buffer
		if json.Compact(&c, data) != nil {
			return nil, false
		}
		data = c.Bytes()
	}
	b = append(b, data...)
	return append(b, '}'), true
}
