// Package state holds the snapshot of goinit's supervisor that everything
// outside the supervisor loop reads: the health and metrics endpoints, the
// control socket's status and top commands, and through them `goinit status`.
//
// The supervisor is one goroutine that owns every slot, counter and phase.
// Nothing else may read those while it runs. Instead, after each change the
// supervisor builds a new [Snapshot] (a plain value it never touches again)
// and hands it to a [Publisher], which swaps one atomic pointer. Readers call
// [Publisher.Load] and get a consistent, immutable picture that may be a few
// milliseconds old. Publishing costs one allocation and never blocks, so the
// loop stays as fast as before.
//
// Values that change without any supervisor event, such as the length of a
// listening socket's accept queue, are not in the snapshot: readers fetch
// them when they need them with [ListenQueues], keyed by the socket's inode
// ([SocketInode]), which the snapshot carries.
//
// This package never starts a goroutine, never reads the supervisor's own
// structures and never changes a process: it is data, plus one reader of
// /proc/net/tcp and /proc/net/tcp6.
package state
