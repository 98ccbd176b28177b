// Package control is goinit's control socket: the server goinit runs
// (--control), the protocol, and the client that `goinit status`, `reload`,
// `scale`, `restart`, `signal` and `top` are.
//
// # Socket
//
// A unix stream socket, by default /run/goinit/control.sock ([DefaultPath]).
// goinit makes the directory (mode 0700) and the socket (mode 0600); when
// the directory cannot be made, as on a read-only root without a volume at
// /run/goinit, the socket is off and goinit says so in one debug line.
// --control=PATH chooses another path (then a failure is an error), and
// --control=off disables it. Every connection's peer credentials
// (SO_PEERCRED) are checked: only root and goinit's own uid are served;
// anything else gets an error line, is closed and is logged.
//
// # Protocol, version 1
//
// One connection carries one request: a single JSON object on one line, at
// most [MaxRequestBytes] bytes, sent within 5 s of connecting. Every object
// carries "v": 1; a request with another version is refused, and fields a
// version does not know are ignored, so new optional fields do not need a
// new version.
//
//	{"v":1,"cmd":"status"}
//	{"v":1,"cmd":"reload","wait":true}
//	{"v":1,"cmd":"scale","workers":4}
//	{"v":1,"cmd":"restart","target":"2"}      target: a worker id, "agent" or "all"
//	{"v":1,"cmd":"signal","signal":"HUP","target":"all"}   target defaults to "all"
//	{"v":1,"cmd":"top","interval_ms":1000}
//
// goinit answers with one JSON line and closes the connection:
//
//	{"v":1,"ok":true,"message":"scaling from 2 to 4 workers"}
//	{"v":1,"ok":false,"error":"no worker 7 (workers are 0 to 3)"}
//	{"v":1,"ok":true,"result":"succeeded","message":"..."}     reload with wait
//	{"v":1,"ok":false,"result":"rolled-back","error":"..."}    reload with wait
//	{"v":1,"ok":true,"status":{...}}                           status: see [state.Snapshot]
//
// top is the one stream: goinit writes a status line every interval (at
// least 200 ms) until the client closes the connection.
//
// reload without wait is answered as soon as the reload has started (or has
// been queued behind a running one); with wait, when it has finished, with
// "result" "succeeded" or "rolled-back". restart replaces the named
// processes gracefully, one at a time, as a reload does.
//
// # Bounds
//
// The server never lets a client slow the supervisor: status and top are
// answered from the latest published [state.Snapshot], without asking the
// supervisor; other commands go to it as a [Request] on a channel that it
// selects on, and it answers on a reply channel with room for its one
// [Response], so it never waits either. Per connection there are deadlines
// for the request and for every write (a client that never reads is closed
// when its write times out), and at most [DefaultMaxClients] connections are
// served at once; the next one gets an error line at once. A reload --wait
// client that closes its connection (not one that only half-closes it after
// the request) gives its slot back within half a second.
//
// # Client
//
// [RunCLI] is the whole command line: goinit's main calls it when its first
// argument is one of [Commands]. Its exit codes are [ExitOK] and the other
// Exit constants.
package control
