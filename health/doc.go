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
// The server only reads published snapshots ([state.Publisher.Load]); it
// never talks to the supervisor, so a slow or malicious client cannot
// delay it. It is bounded: header, read, write and idle timeouts, a header
// size limit and a cap on concurrent connections.
package health
