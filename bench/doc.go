// Package bench measures goinit against the tools people would use instead:
// tini and dumb-init as PID 1, Node's cluster module and pm2 as cluster
// managers, and N processes sharing a port with SO_REUSEPORT and no
// supervisor at all as the ceiling.
//
// Run builds what it needs (goinit itself, the small programs in apps/ and
// the Go example server) into the cache directory, measures every figure on
// this machine in one go, alternating the contenders so that drift in the
// machine's speed hits them all alike, and renders one Markdown table in
// which each figure is a median over repeated runs, with its spread and its
// ratio to goinit's figure from the same run. README.md explains each figure.
//
// The package owns every process it starts: each contender runs in its own
// process group and, when the kernel allows it, as PID 1 of a fresh PID
// namespace, exactly as in a container, so that killing it ends everything
// under it; cluster contenders also get a mount namespace with a /proc of
// their PID namespace, as a container runtime gives them. It never signals a process it did not start, except pm2 daemons
// whose PM2_HOME is one of its own temporary directories. It writes no file
// outside the cache and its temporary directory: the reload figures run a
// copy of the Node app there, and a bad release replaces that copy. All network traffic
// goes to 127.0.0.1, and every loop is bounded in count and in time.
//
// It is a benchmark, not a test: nothing here asserts on a timing. The test
// in this package runs the whole harness once in Tiny mode to check that it
// still works and produces a well-formed table.
package bench
