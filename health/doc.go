// Package health serves goinit's HTTP endpoints for orchestrators and
// monitoring (--health-addr): /healthz for liveness, /readyz for readiness
// and /metrics in the Prometheus text format.
//
//   - /healthz answers 200 while goinit runs and no slot is crash-looping,
//     503 otherwise. It stays 200 during a graceful shutdown: a liveness
//     failure then would make the kubelet kill the pod mid-drain. With
//     [Options.MaxSnapshotAge] it also answers 503 when the supervisor has
//     published nothing for that long, so a wedged supervisor loop is
//     restarted.
//   - /readyz answers 200 when goinit is in its running phase and at least
//     --min-ready workers (or the single command) are ready; 503 before
//     that and from the moment a stop signal arrives, so that the endpoint
//     is taken out of the Service while --pre-stop-delay runs and the
//     workers drain.
//   - /metrics writes [metrics.Write] of the latest snapshot.
//
// Bodies are one line of plain text saying why, for `curl` and for the
// kubelet's event log.
//
// The server is a small HTTP/1.0 and 1.1 responder on a net.Listener, not
// net/http: probes and a Prometheus scrape need GET and HEAD of three
// fixed paths, and net/http (which links crypto/tls) would add about 3 MiB
// to the binary of every container's PID 1. Each connection carries one
// request and gets one complete answer with its Content-Length and
// Connection: close; no keep-alive, no request body, no compression
// (Accept-Encoding is ignored, which RFC 9110 allows). Other methods are a
// 405 with Allow: GET, HEAD, other paths a 404, a malformed head a 400 and
// one larger than 8 KiB a 431. The query string is ignored.
//
// The server only reads published snapshots ([state.Publisher.Load]); it
// never talks to the supervisor, so a slow or malicious client cannot
// delay it. It is bounded: a deadline for the whole request head
// ([Options.ReadHeaderTimeout], so a half-sent request is cut off), a
// write deadline, the 8 KiB head and a cap on concurrent connections
// ([Options.MaxConns]).
//
// Clients that connect and send nothing, or trickle a head that never
// ends, cannot use up the cap to keep probes out until their deadline:
// when every slot is taken, a new connection evicts the one that has
// waited longest without completing its request head, closing it
// unanswered. The kubelet and Prometheus send their request as soon as
// they connect, so theirs is read within moments of its accept, and the
// connections that lose their slot are those that have had the longest to
// send a head and have not. A connection whose head has arrived is being
// answered and is never evicted; only while every slot is answering do new
// connections wait for one to finish, which takes at most
// [Options.WriteTimeout] and half a second of lingering close.
package health
