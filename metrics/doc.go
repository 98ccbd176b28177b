// Package metrics writes a [state.Snapshot] in the Prometheus text
// exposition format (version 0.0.4), the body of goinit's /metrics.
//
// It is a hand-written writer, not a client library: goinit's metrics are
// all derived from one immutable snapshot at scrape time, so there is no
// registry, no locking and nothing to update on the supervisor's hot path.
// The format is small: a "# HELP" and a "# TYPE" line per family, then one
// "name{label="value"} number" line per series.
//
// Every name starts with goinit_. Series that describe one process carry
// the labels role (command, worker, agent) and worker (the worker id, or the
// role name for the command and the agent); states, reasons and results are
// labels too, and every known value is written, with 0 where nothing
// matches, so that alerts on a rate or an absence work from the first
// scrape. The list of families is in the README ("Operating goinit") and in
// [Write]'s source, which is the single place that names them.
//
// This package never reads the supervisor's state or /proc: the caller
// passes the snapshot and the accept queue lengths ([state.ListenQueues]).
package metrics
