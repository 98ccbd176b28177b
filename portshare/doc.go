// Package portshare lets goinit's workers share the ports that unmodified
// servers bind for themselves. It owns the seccomp filter installed in
// every worker, the notification loops that answer the worker's bind,
// listen and shutdown calls, and the table of listening sockets goinit
// holds; it never starts, signals or reaps a process.
package portshare
