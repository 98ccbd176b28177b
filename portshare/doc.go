// Package portshare lets goinit's workers share the ports that unmodified
// servers bind for themselves (Node's listen(3000), Go's net.Listen,
// Python's socketserver), the way Node's cluster module does inside one
// runtime, but from outside the process and for any language.
//
// It owns three things: the seccomp filter each worker runs under
// ([InstallFilter]), the notification loops that answer the worker's
// intercepted calls ([Sharer]), and the table of listening sockets goinit
// holds. It never starts, signals or reaps a process, and it never
// touches a connection: the kernel hands connections from a held socket's
// accept queue straight to whichever worker accepts.
//
// # Protocol
//
// For each worker start the supervisor creates a [Handoff] (a unix
// socketpair) and passes its child end to goinit's shim, the worker's
// first moments between fork and exec. The shim calls [InstallFilter] on
// a locked OS thread: it sets no_new_privs, installs a classic BPF filter
// that turns bind(2), listen(2) and shutdown(2) with how != SHUT_WR into
// user notifications (every other call, and every call of a foreign ABI,
// is allowed in the kernel without leaving it), sends the filter's
// notification descriptor over the socketpair (SCM_RIGHTS), closes both,
// and then execs the command on the same thread, which is how the filter
// and no_new_privs reach the command. Descendants inherit the filter.
//
// The supervisor gives the descriptor to [Sharer.Attach] (or lets
// [Sharer.AttachHandoff] receive it). A worker that binds before that
// simply waits. One goroutine per worker then polls the descriptor and,
// for each notification:
//
//   - bind: reads the sockaddr from the caller's memory (/proc/TID/mem),
//     takes a copy of the caller's socket (pidfd_getfd on the thread
//     group; see Reduced mode for when it is refused) and reads its
//     family, type, protocol (Go >= 1.24 listens with MPTCP),
//     IPV6_V6ONLY, O_NONBLOCK and close-on-exec flag, then checks
//     that the notification is still valid (SECCOMP_IOCTL_NOTIF_ID_VALID)
//     before it trusts any of it. A TCP bind to a shared port gets the held
//     socket of exactly its (family, address, port, protocol, v6only), if
//     there is one: goinit installs it at the caller's descriptor number
//     (SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SETFD, keeping its
//     close-on-exec flag), which closes the caller's own socket, and
//     answers 0. If there is none, goinit binds the caller's own socket
//     (through its copy, with the caller's sockaddr) and answers with that
//     bind's result, exactly the kernel's, and notes the socket as bound
//     to a shared address. Binding it itself rather than letting the call
//     go on (SECCOMP_USER_NOTIF_FLAG_CONTINUE) decides the binds of one
//     address one after the other, under the table's lock: a second bind
//     of that address that the kernel refuses (EADDRINUSE) because the
//     first socket is bound but not listening yet is given that socket,
//     which goinit then holds. With SO_REUSEADDR on both, both binds
//     succeed, and the second to listen is given the first's socket. A
//     bind goinit makes is checked by any LSM or cgroup BPF program as
//     goinit's, not the worker's; the privileged-port check is the
//     worker's (below). Everything else is answered SECCOMP_USER_NOTIF_FLAG_CONTINUE: the
//     kernel runs the bind as if goinit were not there.
//   - listen on a socket noted at bind: goinit takes a copy of it, listens
//     on it with the larger of the worker's backlog and its own, and holds
//     it from then on: the first listener's own socket is the held socket
//     of its address. Only a socket that listens is held, so a client that
//     binds a fixed local port before connect, or a bind-and-close probe of
//     a free port, is not affected, unless another worker's bind of that
//     address would fail because of it.
//   - listen on a held socket: the backlog becomes the largest anyone asked
//     for, never smaller, and the answer is 0. Both are reported as
//     [Listening], the worker's readiness on that address.
//   - shutdown(SHUT_RD or SHUT_RDWR) on a held socket is answered 0 and not
//     done: on a listener it would stop accepting for every worker.
//
// The loop ends when no process using the filter is left (POLLHUP) and
// reports [Detached]. Held sockets stay open until [Sharer.Close], that is
// for goinit's whole life, so a worker that dies costs no refused
// connection: its queue survives and its replacement's bind gets the same
// socket.
//
// # Rules
//
//   - Only TCP (and MPTCP) binds to a shared port other than 0 are shared.
//     Port 0, other ports, UDP, unix sockets, sockets bound to a device
//     (SO_BINDTODEVICE), sockets of another network namespace, and a
//     privileged port the worker itself may not bind are the kernel's.
//   - An AF_INET bind never gets an AF_INET6 socket: a dual-stack [::]
//     socket would give the worker sockaddr_in6 client addresses where it
//     expects sockaddr_in. A bind that finds no held socket of its exact
//     key is the kernel's, judged against the held sockets, which are
//     bound and listening: AF_INET 0.0.0.0:P next to a dual-stack [::]:P
//     is EADDRINUSE, as between two processes without goinit; 0.0.0.0:P
//     and a v6only [::]:P are two held sockets. TCP and MPTCP are one
//     address space, so a worker of either gets a socket held for the
//     other.
//   - The held socket is the first listener's own (or the first binder's,
//     when a second worker's bind would have failed), with every option it
//     set. A later worker's socket is replaced by it at bind, so options
//     that worker set before bind are lost; options set after bind apply
//     to the held socket itself, shared by all. O_NONBLOCK belongs to the
//     shared open socket: each binder sets it as it had it, as with
//     LISTEN_FDS.
//
// # Reduced mode
//
// Docker's (moby's) default seccomp profile, and containerd's
// RuntimeDefault, allow pidfd_getfd only with CAP_SYS_PTRACE, which
// `docker run` does not grant. goinit then cannot take a copy of the
// worker's socket, and shares ports in reduced mode instead of not at all:
// it binds a held socket of its own at the first bind of a shared address
// (so a client's fixed-port bind or a probe is held too).
// [New] logs it once as a warning naming what is lost and the fix
// (--cap-add=SYS_PTRACE, or a profile that allows pidfd_getfd);
// [Sharer.Reduced] reports it, and [Event.Reduced] marks the binds it
// decided. What /proc shows without a copy is used as is:
//
//   - the family and protocol from the socket's sockfs name (getxattr of
//     system.sockprotoname through /proc/TID/fd/FD: "TCP", "TCPv6",
//     "MPTCP", "MPTCPv6"; anything else, UDP included, is the kernel's),
//     so a Go server still gets MPTCP and an AF_INET bind still never gets
//     an AF_INET6 socket;
//   - O_NONBLOCK and close-on-exec from /proc/TID/fdinfo/FD;
//   - the inode from /proc/TID/fd/FD, as in full mode.
//
// IPV6_V6ONLY and the options are visible nowhere (an unbound socket is in
// no hash table, so neither sock_diag nor /proc/net lists it), so:
//
//   - an AF_INET6 bind gets the held socket of its address whatever its
//     v6only; a new one is v6only as net.ipv6.bindv6only says (0 unless
//     changed), which is what Node (dual-stack by default) and Go (which
//     sets 0 for ":P") ask for. The exception is [::]:P while goinit holds
//     an IPv4 socket of port P: a dual-stack socket could only fail there,
//     so it is v6only (nginx's "listen 80; listen [::]:80").
//   - of the options set before bind only SO_REUSEADDR is kept, always on,
//     as Go, Node, Python's socketserver and nginx set it; the others,
//     SO_REUSEPORT and buffer sizes included, are at the kernel's defaults.
//
// What changes for a worker: a v6only [::]:P with no IPv4 socket of P
// held becomes dual-stack (under the default sysctl), and one that is
// dual-stack after an IPv4 0.0.0.0:P is bound v6only where it would fail
// with EADDRINUSE; a second bind() of an already bound socket, or one of
// a socket tied to a device (SO_BINDTODEVICE), gets the held socket where
// the kernel would have said EINVAL or bound it to that device.
//
// # Limits
//
//   - no_new_privs is inherited: a setuid or file-capability binary run by
//     a worker runs without its privilege (no error at exec, the wrong
//     euid later). --share-ports=off is the way out.
//   - io_uring's IORING_OP_BIND (Linux 6.11) does not pass through
//     seccomp; such binds are not shared.
//   - If goinit dies while a worker lives (goinit not PID 1), the worker's
//     next bind, listen or trapped shutdown fails with ENOSYS. Workers must
//     not outlive goinit.
//   - goinit must be allowed to ptrace its workers (/proc/TID/mem):
//     root with CAP_SYS_PTRACE, or the workers' own user. Docker's default
//     capabilities lack CAP_SYS_PTRACE, so there workers running as
//     another user (--user) are not shared (one warning).
//   - Where pidfd_getfd is refused (Docker's and containerd's default
//     seccomp profiles without CAP_SYS_PTRACE, or a kernel older than
//     5.6), sharing runs in reduced mode (above): the worker's IPV6_V6ONLY
//     and socket options are not read. --cap-add=SYS_PTRACE, or a profile
//     that allows pidfd_getfd, gives full fidelity.
//   - Needs Linux 5.9 (SECCOMP_IOCTL_NOTIF_ADDFD), and a seccomp profile
//     that allows seccomp(2); [Available] checks both.
package portshare
