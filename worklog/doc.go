// Package worklog carries the workers' stdout and stderr to goinit's own
// for --worker-logs=prefix and --worker-logs=json. (With the default,
// inherit, workers write to the container's stdout and stderr directly and
// this package is not used.)
//
// Each worker stream gets a pipe ([Logs.Open]); one goroutine per pipe
// reads it and cuts it into lines, and one goroutine per destination
// (goinit's stdout, goinit's stderr) writes whole lines, so lines from
// different workers never interleave mid-line. goinit's own log lines can
// share the destination through [Logs.Stderr] without interleaving either.
//
//	prefix: [worker 2] listening on :8080
//	json:   {"time":"2026-11-25T10:00:00.123Z","worker":2,"pid":41,"stream":"stdout","msg":"listening on :8080"}
//
// The agent is "[agent] " and "role":"agent" (no "worker") in JSON.
//
// # Bounds
//
//   - A line longer than [MaxLine] (16 KiB) is cut into pieces of at most
//     MaxLine bytes (at a UTF-8 boundary), each written as its own line.
//     A last line without a newline is written when the stream ends.
//   - Each stream has its own queue of at most Options.QueueBytes (default
//     256 KiB). The reader never stops reading, so a worker never blocks on
//     its output because goinit's stdout is slow; when its queue is full,
//     new lines of that stream are dropped and counted, and once there is
//     room again one line says how many were lost:
//     "[worker 2] goinit: dropped 1234 lines (stdout could not keep up)".
//   - The destination writer takes from the queues in turn, a batch each,
//     so a flooding worker gets its share of the output and no more: its
//     siblings' lines keep flowing.
//
// In JSON mode invalid UTF-8 becomes U+FFFD, as encoding/json does.
//
// This package never starts or signals a process; it only owns the pipes
// it made and the goroutines that drain them.
package worklog
