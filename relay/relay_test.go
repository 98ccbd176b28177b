package relay

import (
	"encoding/json"
	"reflect"
	"testing"
)

// fixed returns an intN that always picks index i, and records n.
func fixed(i int, n *int) func(int) int {
	return func(m int) int { *n = m; return i }
}

func TestRoute(t *testing.T) {
	all := Live{Agent: true, Workers: []int{0, 1, 2}}
	for _, tc := range []struct {
		name     string
		from     Peer
		to, data string
		live     Live
		pick     int // index "random" picks
		wantN    int // the n "random" chooses among; 0 when not asked
		rcpt     []Peer
		envelope string
		dropped  Reason
	}{
		{"worker to agent", Worker(1), `"agent"`, `{"x":1}`, all, 0, 0,
			[]Peer{Agent()}, `{"from":1,"data":{"x":1}}`, 0},
		{"agent to workers", Agent(), `"workers"`, `"cfg"`, all, 0, 0,
			[]Peer{Worker(0), Worker(1), Worker(2)}, `{"from":"agent","data":"cfg"}`, 0},
		{"worker to workers skips the sender", Worker(1), `"workers"`, `1`, all, 0, 0,
			[]Peer{Worker(0), Worker(2)}, `{"from":1,"data":1}`, 0},
		{"worker to all: agent and the other workers", Worker(2), `"all"`, `[true]`, all, 0, 0,
			[]Peer{Agent(), Worker(0), Worker(1)}, `{"from":2,"data":[true]}`, 0},
		{"agent to all skips the agent", Agent(), `"all"`, `null`, all, 0, 0,
			[]Peer{Worker(0), Worker(1), Worker(2)}, `{"from":"agent","data":null}`, 0},
		{"goinit to all", Goinit(), `"all"`, `{}`, all, 0, 0,
			[]Peer{Agent(), Worker(0), Worker(1), Worker(2)}, `{"from":"goinit","data":{}}`, 0},
		{"agent to random", Agent(), `"random"`, `"job"`, all, 2, 3,
			[]Peer{Worker(2)}, `{"from":"agent","data":"job"}`, 0},
		{"worker to random never picks itself", Worker(0), `"random"`, `"job"`, all, 0, 2,
			[]Peer{Worker(1)}, `{"from":0,"data":"job"}`, 0},
		{"to a worker id", Agent(), `1`, `{"a":[1,2]}`, all, 0, 0,
			[]Peer{Worker(1)}, `{"from":"agent","data":{"a":[1,2]}}`, 0},
		{"to itself by id", Worker(1), `1`, `"me"`, all, 0, 0,
			[]Peer{Worker(1)}, `{"from":1,"data":"me"}`, 0},
		{"data absent is null", Worker(0), `"agent"`, ``, all, 0, 0,
			[]Peer{Agent()}, `{"from":0,"data":null}`, 0},
		{"data kept as sent, spaces and all", Worker(0), ` "agent" `, `{ "k" : "v\u2028" }`, all, 0, 0,
			[]Peer{Agent()}, `{"from":0,"data":{ "k" : "v\u2028" }}`, 0},
		{"data spanning lines is compacted", Worker(0), `"agent"`, "{\n\"k\": 1\n}", all, 0, 0,
			[]Peer{Agent()}, `{"from":0,"data":{"k":1}}`, 0},

		{"no agent", Worker(0), `"agent"`, `1`, Live{Workers: []int{0, 1}}, 0, 0, nil, "", NoRecipient},
		{"worker restarting", Agent(), `2`, `1`, Live{Agent: true, Workers: []int{0, 1}}, 0, 0, nil, "", NoRecipient},
		{"only worker to workers", Worker(0), `"workers"`, `1`, Live{Workers: []int{0}}, 0, 0, nil, "", NoRecipient},
		{"only worker to random", Worker(0), `"random"`, `1`, Live{Agent: true, Workers: []int{0}}, 0, 0, nil, "", NoRecipient},
		{"random with no worker", Agent(), `"random"`, `1`, Live{Agent: true}, 0, 0, nil, "", NoRecipient},
		{"all with nobody else", Agent(), `"all"`, `1`, Live{Agent: true}, 0, 0, nil, "", NoRecipient},

		{"unknown name", Worker(0), `"app"`, `1`, all, 0, 0, nil, "", BadTarget},
		{"id as a string", Worker(0), `"1"`, `1`, all, 0, 0, nil, "", BadTarget},
		{"negative id", Worker(0), `-1`, `1`, all, 0, 0, nil, "", BadTarget},
		{"fraction", Worker(0), `1.0`, `1`, all, 0, 0, nil, "", BadTarget},
		{"exponent", Worker(0), `1e0`, `1`, all, 0, 0, nil, "", BadTarget},
		{"leading zero", Worker(0), `01`, `1`, all, 0, 0, nil, "", BadTarget},
		{"null", Worker(0), `null`, `1`, all, 0, 0, nil, "", BadTarget},
		{"list", Worker(0), `[1,2]`, `1`, all, 0, 0, nil, "", BadTarget},
		{"case matters", Worker(0), `"Agent"`, `1`, all, 0, 0, nil, "", BadTarget},
		{"data not JSON", Worker(0), `"agent"`, `{x}`, all, 0, 0, nil, "", BadData},
		{"no sender", Peer{}, `"agent"`, `1`, all, 0, 0, nil, "", BadSender},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n int
			r := NewRouter(fixed(tc.pick, &n))
			d := r.Route(tc.from, json.RawMessage(tc.to), json.RawMessage(tc.data), tc.live)
			if !reflect.DeepEqual(d.To, tc.rcpt) || string(d.Envelope) != tc.envelope || d.Dropped != tc.dropped {
				t.Fatalf("Route = {%v %s %v}, want {%v %s %v}", d.To, d.Envelope, d.Dropped, tc.rcpt, tc.envelope, tc.dropped)
			}
			if n != tc.wantN {
				t.Fatalf("random chose among %d, want %d", n, tc.wantN)
			}
			if d.Envelope != nil && !json.Valid(d.Envelope) {
				t.Fatalf("envelope %s is not JSON", d.Envelope)
			}
			s := r.Stats()
			want := Stats{Dropped: map[Reason]uint64{BadTarget: 0, NoRecipient: 0, BadData: 0, BadSender: 0}}
			if tc.dropped == 0 {
				want.Relayed, want.Deliveries = 1, uint64(len(tc.rcpt))
			} else {
				want.Dropped[tc.dropped] = 1
			}
			if !reflect.DeepEqual(s, want) {
				t.Fatalf("Stats = %+v, want %+v", s, want)
			}
		})
	}
}

func TestEvent(t *testing.T) {
	all := Live{Agent: true, Workers: []int{0, 1, 2}}
	for _, tc := range []struct {
		ev       PoolEvent
		live     Live
		rcpt     []Peer
		envelope string
		dropped  Reason
	}{
		{PoolEvent{Kind: Started, Subject: Worker(1), PID: 41}, all,
			[]Peer{Agent(), Worker(0), Worker(2)}, `{"from":"goinit","data":{"event":"worker-start","id":1,"pid":41}}`, 0},
		{PoolEvent{Kind: BecameReady, Subject: Worker(0), PID: 40}, all,
			[]Peer{Agent(), Worker(1), Worker(2)}, `{"from":"goinit","data":{"event":"worker-ready","id":0,"pid":40}}`, 0},
		{PoolEvent{Kind: Exited, Subject: Worker(2), PID: 42, ExitCode: 1}, Live{Agent: true, Workers: []int{0, 1}},
			[]Peer{Agent(), Worker(0), Worker(1)}, `{"from":"goinit","data":{"event":"worker-exit","id":2,"pid":42,"code":1}}`, 0},
		{PoolEvent{Kind: Exited, Subject: Worker(2), PID: 42, Signal: "SIGKILL"}, all,
			[]Peer{Agent(), Worker(0), Worker(1)}, `{"from":"goinit","data":{"event":"worker-exit","id":2,"pid":42,"signal":"SIGKILL"}}`, 0},
		{PoolEvent{Kind: Started, Subject: Agent(), PID: 7}, all,
			[]Peer{Worker(0), Worker(1), Worker(2)}, `{"from":"goinit","data":{"event":"agent-start","pid":7}}`, 0},
		{PoolEvent{Kind: BecameReady, Subject: Agent(), PID: 7}, all,
			[]Peer{Worker(0), Worker(1), Worker(2)}, `{"from":"goinit","data":{"event":"agent-ready","pid":7}}`, 0},
		{PoolEvent{Kind: Exited, Subject: Agent(), PID: 7, ExitCode: 0}, Live{Workers: []int{0}},
			[]Peer{Worker(0)}, `{"from":"goinit","data":{"event":"agent-exit","pid":7,"code":0}}`, 0},
		{PoolEvent{Kind: BecameReady, Subject: Agent(), PID: 7}, Live{Agent: true}, nil, "", NoRecipient},
		{PoolEvent{Kind: 9, Subject: Agent(), PID: 7}, all, nil, "", BadData},
		{PoolEvent{Kind: Started, Subject: Goinit(), PID: 1}, all, nil, "", BadData},
	} {
		r := NewRouter(nil)
		d := r.Event(tc.ev, tc.live)
		if !reflect.DeepEqual(d.To, tc.rcpt) || string(d.Envelope) != tc.envelope || d.Dropped != tc.dropped {
			t.Errorf("Event(%+v) = {%v %s %v}, want {%v %s %v}", tc.ev, d.To, d.Envelope, d.Dropped, tc.rcpt, tc.envelope, tc.dropped)
		}
	}
}

func TestPeerString(t *testing.T) {
	for p, want := range map[Peer]string{Agent(): "agent", Worker(3): "worker 3", Goinit(): "goinit", {}: "nobody"} {
		if got := p.String(); got != want {
			t.Errorf("%#v.String() = %q, want %q", p, got, want)
		}
	}
}

// Counters add up over many calls, by reason.
func TestStatsAccumulate(t *testing.T) {
	r := NewRouter(nil)
	live := Live{Agent: true, Workers: []int{0, 1}}
	r.Route(Agent(), json.RawMessage(`"workers"`), nil, live)
	r.Route(Agent(), json.RawMessage(`"workers"`), nil, live)
	r.Route(Agent(), json.RawMessage(`7`), nil, live)
	r.Route(Agent(), json.RawMessage(`"x"`), nil, live)
	r.Event(PoolEvent{Kind: Started, Subject: Worker(0), PID: 9}, live)
	want := Stats{Relayed: 3, Deliveries: 6, Dropped: map[Reason]uint64{BadTarget: 1, NoRecipient: 1, BadData: 0, BadSender: 0}}
	if got := r.Stats(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}
