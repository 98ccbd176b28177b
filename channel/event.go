package channel

import (
	"bytes"
	"encoding/json"
)

// Kind says what a line from a child means.
type Kind int

const (
	// Ready: the line "ready" or {"ready": true}.
	Ready Kind = iota + 1
	// Ping: the line "ping" or {"ping": true}, a watchdog heartbeat.
	Ping
	// Message: an object with a "to" field, for package relay.
	Message
	// Closed: the child closed its end (or the connection failed). It is
	// the connection's last event, and is not sent for [Conn.Close].
	Closed
)

func (k Kind) String() string {
	switch k {
	case Ready:
		return "ready"
	case Ping:
		return "ping"
	case Message:
		return "message"
	case Closed:
		return "closed"
	}
	return "unknown"
}

// Event is something a child said, or its channel closing.
type Event[K comparable] struct {
	// Key names the process, as given to [Hub.Open].
	Key K
	// Kind says what happened.
	Kind Kind
	// To and Data are the raw "to" and "data" values of a Message; Data
	// is nil when the message has none. Both are owned by the receiver.
	To, Data json.RawMessage
	// Err is why a Closed connection ended; nil at a clean end of file.
	Err error
}

// classify returns the kind of one valid JSON line, and for a Message its
// "to" and "data" values. Unknown lines return 0.
func classify(line []byte) (k Kind, to, data json.RawMessage) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return 0, nil, nil
	}
	switch line[0] {
	case '"':
		var s string
		if json.Unmarshal(line, &s) != nil {
			return 0, nil, nil
		}
		switch s {
		case "ready":
			return Ready, nil, nil
		case "ping":
			return Ping, nil, nil
		}
	case '{':
		// A map, not a struct: encoding/json matches struct fields without
		// regard to case, and "TO" is not "to".
		var m map[string]json.RawMessage
		if json.Unmarshal(line, &m) != nil {
			return 0, nil, nil
		}
		if to, ok := m["to"]; ok {
			return Message, to, m["data"]
		}
		if isTrue(m["ready"]) {
			return Ready, nil, nil
		}
		if isTrue(m["ping"]) {
			return Ping, nil, nil
		}
	}
	return 0, nil, nil
}

func isTrue(v json.RawMessage) bool { return string(v) == "true" }
