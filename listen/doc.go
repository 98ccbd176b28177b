// Package listen owns the listening sockets of cluster mode and both sides of
// the systemd socket-activation protocol.
//
// # Parent side (goinit)
//
// [ParseAddr] turns each --listen value into an [Addr]; [Open] binds it and
// returns the socket as an *os.File. goinit keeps that file for as long as the
// listener exists: because the kernel's accept queue belongs to the socket, not
// to any worker, connections queued while a worker restarts are not lost (the
// property systemd describes as keeping "the very same sockets"). [Sets] keeps
// the sockets of a pool of workers: one set for all, or one SO_REUSEPORT set
// per worker slot, which can be closed while no worker uses it (a scale-down)
// and bound again (a scale-up).
//
// A worker receives the sockets by the systemd protocol:
//
//   - the i-th socket (in --listen order) is file descriptor 3+i, with
//     close-on-exec cleared (exec.Cmd.ExtraFiles does this);
//   - LISTEN_FDS is the number of sockets, LISTEN_FDNAMES their names joined
//     by ':' ([Env] builds both, and PORT when there is exactly one TCP socket);
//   - LISTEN_PID is the worker's own pid. It can only be set after fork, so a
//     small shim that sets it and then execs the program is needed; this
//     package does not set it.
//
// # Worker side (Go programs)
//
// [Files] and [Listeners] read the protocol the way sd_listen_fds(1) does: the
// variables are honoured only when LISTEN_PID is the calling process, the
// descriptors are marked close-on-exec, and the variables are removed so that
// the program's own children do not mistake the sockets for theirs.
//
// # What this package never does
//
// It never accepts connections, never closes a socket it has returned (but
// those [Sets] holds, when told to), never writes sysctls, never chmods or
// chowns socket files, and never creates directories. It removes a
// Unix socket file only when nothing is accepting connections on it.
package listen
