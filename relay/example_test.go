package relay_test

import (
	"encoding/json"
	"fmt"

	"github.com/goinit/goinit/relay"
)

// The agent broadcasts a config; worker 1 is restarting, so it is not live
// and gets nothing (it will hear worker-ready for its successor).
func ExampleRouter_Route() {
	r := relay.NewRouter(nil)
	live := relay.Live{Agent: true, Workers: []int{0, 2}}
	d := r.Route(relay.Agent(), json.RawMessage(`"workers"`), json.RawMessage(`{"color":"blue"}`), live)
	fmt.Println(d.To, string(d.Envelope))

	d = r.Route(relay.Worker(0), json.RawMessage(`1`), json.RawMessage(`"hi"`), live)
	fmt.Println(d.Dropped)

	d = r.Event(relay.PoolEvent{Kind: relay.BecameReady, Subject: relay.Worker(1), PID: 41}, relay.Live{Agent: true, Workers: []int{0, 1, 2}})
	fmt.Println(d.To, string(d.Envelope))
	// Output:
	// [worker 0 worker 2] {"from":"agent","data":{"color":"blue"}}
	// no live recipient
	// [agent worker 0 worker 2] {"from":"goinit","data":{"event":"worker-ready","id":1,"pid":41}}
}
