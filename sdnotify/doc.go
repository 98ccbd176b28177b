// Package sdnotify owns goinit's side of systemd's notify protocol
// (sd_notify(3)): one datagram socket per started process, whose address
// the process gets as NOTIFY_SOCKET, and the messages received on it.
//
// # The protocol
//
// [Hub.Open] creates the socket before the process starts, in the abstract
// namespace, as @goinit-<goinit's pid>-<random>: nothing on disk to clean up
// or to chown for a worker running as another user, and a name no one can
// guess. [Socket.Env] is the NOTIFY_SOCKET entry for the child's
// environment. Once the child runs, [Socket.SetPID] names it; nothing is read
// before, so no message can be judged against an unknown pid (the kernel
// keeps early datagrams in the socket's buffer).
//
// A datagram is newline-separated KEY=VALUE assignments. [Event] carries
// READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1 (and WATCHDOG=trigger),
// STATUS=, MAINPID= and ERRNO=; BARRIER=1 is answered here; other keys
// (FDSTORE=, EXTEND_TIMEOUT_USEC=, ...) are ignored.
//
// # Who may speak for a process
//
// The socket has SO_PASSCRED, so the kernel attaches the sender's pid to
// every datagram. A datagram is accepted when that pid is the process
// given to SetPID, the MAINPID it announced, or a descendant of either
// (found by walking PPid in /proc/PID/stat): a worker's shell and the
// systemd-notify it runs speak for it, another worker cannot. Anything else
// is rejected, counted and logged (at warning level at most once a second
// per socket).
//
// The walk needs the sender to exist when the datagram is read. systemd's
// own tools make sure it does: systemd-notify (and sd_notify_barrier) sends
// BARRIER=1 with one end of a pipe after its message and waits until the
// receiver closes it, so each datagram is fully handled (checked, and its
// event handed to the supervisor) before the descriptors that came with it
// are closed, and only then is the next one read. A sender that did not wait
// and is gone by then (systemd-notify --no-block, a short-lived helper
// calling sd_notify) cannot be told apart from a stranger whose pid was
// recycled, and is rejected with a line that says so; the process itself
// (or its MAINPID) is accepted even after it exited, since its pid cannot
// have been reused while goinit has not reaped it. As root with
// CAP_SYS_ADMIN a process may put any pid in its credentials (that is how
// systemd-notify reports its parent's): the check stops workers that lack
// it, which is what container runtimes grant by default.
//
// Every descriptor received with a datagram is closed, accepted or not;
// they arrive close-on-exec, so none leaks into a child meanwhile.
//
// # Bounds
//
// A datagram longer than [MaxDatagram] (systemd's own limit) is dropped.
// Events of every socket arrive on one channel ([Hub.Events]); a reader
// whose event the supervisor has not taken yet waits (a dropped READY=1
// would fail the start) and holds back only its own socket, whose senders
// then wait in the kernel, so goinit holds at most [Options.Events] events.
//
// # What this package never does
//
// It never starts, signals or waits for a process, never decides what an
// event means for a worker (the supervisor does), and never creates files.
package sdnotify
