// Package channel owns the message channel between goinit and each process
// it supervises (a worker or the agent): one unix stream socketpair per
// process, carrying newline-delimited JSON both ways.
//
// # The protocol
//
// goinit keeps one end of the pair (close-on-exec); the child receives the
// other as a descriptor the caller chooses, right after the LISTEN_FDS
// sockets, and [Env] names it three times:
//
//	GOINIT_IPC_FD=N                        for any language
//	NODE_CHANNEL_FD=N                      so Node's process.send() and
//	NODE_CHANNEL_SERIALIZATION_MODE=json   process.on('message') need no library
//
// Each line is one JSON value followed by "\n", in both directions. That is
// exactly what Node writes for process.send(v) in json mode
// (JSON.stringify(v)+"\n", so process.send('ready') arrives as the line
// "ready"), and what it reads: Node parses every line it receives and throws
// on one that is not JSON, ending the worker, so goinit only ever writes lines
// that are valid JSON ([Conn.Send] checks). Node also swallows, as its own,
// objects whose "cmd" starts with "NODE_"; goinit's envelopes have no "cmd".
//
// A line read from a child is classified ([Kind]):
//
//	"ready"  or {"ready": true}            Ready: the process is ready
//	"ping"   or {"ping": true}             Ping: a watchdog heartbeat
//	{"to": ..., "data": ...}               Message: to route (package relay)
//	anything else that is JSON             unknown: logged at debug, dropped
//
// An object with a "to" field is a Message whatever else it holds.
//
// # Limits and what is dropped
//
// A line longer than [MaxLine] bytes is dropped and counted, and reading
// resumes after its newline; a line that is not JSON is dropped and counted.
// Neither ends the connection.
//
// Sending never blocks: each connection has a queue bounded by
// [Options.QueueLen] messages and [Options.QueueBytes] bytes, emptied by a
// writer goroutine. When it is full the oldest queued message is dropped and
// counted: messages on this channel are mostly state (a pushed config, a pool
// event) where the newest supersedes the older, so a reader that stalls and
// recovers gets what is current rather than what is stale. A process that
// never reads costs goinit at most the queue bound, and blocks nobody else.
//
// Events from every connection of a [Hub] arrive on one channel
// ([Hub.Events]), in order per connection. A reader goroutine whose event
// cannot be taken waits for the supervisor rather than dropping it (a lost
// "ready" would fail a start): the wait holds back only that connection, whose
// writes then stay in the kernel's socket buffer and the child's own memory,
// so goinit's memory stays bounded by [Options.Events] events.
//
// # What this package never does
//
// It never interprets a message's "to" or "data" (package relay does), never
// starts or signals a process, and never touches a descriptor other than the
// two ends of the pairs it created. It does not close the child's end it
// returns: the caller closes it once the child has started.
package channel
