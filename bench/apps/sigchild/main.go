// Command sigchild is the child of the signal-latency benchmark.
//
// It prints "ready" once its SIGTERM handler is installed, then waits. When
// SIGTERM arrives it prints the CLOCK_MONOTONIC time at which its handler ran,
// in nanoseconds, and exits 0. The harness reads the same clock just before it
// signals the supervisor, so the difference is the time the supervisor took
// to forward the signal plus the child's own signal delivery, which is the
// same for every supervisor compared. It gives up after -timeout, so a
// supervisor that never forwards cannot hang the benchmark.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	timeout := flag.Duration("timeout", 30*time.Second, "exit 3 if no SIGTERM arrives within this time")
	flag.Parse()
	os.Exit(run(*timeout))
}

func run(timeout time.Duration) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	fmt.Println("ready")
	select {
	case <-sigs:
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			fmt.Fprintf(os.Stderr, "sigchild: clock_gettime: %v\n", err)
			return 1
		}
		fmt.Println(ts.Nano())
		return 0
	case <-time.After(timeout):
		fmt.Fprintln(os.Stderr, "sigchild: no SIGTERM arrived; the supervisor did not forward it")
		return 3
	}
}
