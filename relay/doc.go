// Package relay decides where a message between goinit's processes goes and
// what each recipient receives. It is pure logic: no I/O, no goroutine, no
// clock; randomness is injected, so every decision is tested exactly.
//
// # The protocol
//
// A process (the agent or a worker) writes one JSON object per line on its
// channel (package channel):
//
//	{"to": TARGET, "data": ANY}
//
// where TARGET is
//
//	"agent"     the agent
//	"workers"   every live worker except the sender
//	"all"       the agent and every live worker, except the sender
//	"random"    one live worker other than the sender, chosen at random
//	N           the worker whose GOINIT_WORKER_ID is N (a JSON integer >= 0),
//	            the sender itself included if it names itself
//
// and each recipient receives one line, the envelope
//
//	{"from": "agent"|N|"goinit", "data": ANY}
//
// with data exactly as sent (null when absent). goinit itself sends pool
// events as "goinit" ([Router.Event]):
//
//	{"from":"goinit","data":{"event":"worker-start","id":2,"pid":41}}
//	{"from":"goinit","data":{"event":"worker-ready","id":2,"pid":41}}
//	{"from":"goinit","data":{"event":"worker-exit","id":2,"pid":41,"code":1}}
//	{"from":"goinit","data":{"event":"worker-exit","id":2,"pid":41,"signal":"SIGKILL"}}
//	{"from":"goinit","data":{"event":"agent-start","pid":40}}
//	{"from":"goinit","data":{"event":"agent-ready","pid":40}}
//	{"from":"goinit","data":{"event":"agent-exit","pid":40,"code":0}}
//
// to every live process except the one the event is about.
//
// # Live recipients, and what is dropped
//
// The caller passes, with each message, the processes that can receive one
// now ([Live]): the agent if it runs and has a channel, and the workers that
// run and have one. A worker that is restarting is not live, so a message
// for it is dropped, not kept for its successor: the successor is a new
// process that never asked for it, and it is told it exists by worker-start
// and worker-ready, after which the sender can send again. A message is
// dropped and counted by [Reason] when its target is not one of the above,
// when no live process matches it, or when its data is not JSON.
//
// # What this package never does
//
// It never reads or writes a channel, never queues, and never limits sizes:
// package channel bounds line lengths and per-recipient queues.
package relay
