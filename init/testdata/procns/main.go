// Command procns runs a command as PID 1 with a /proc of its own PID
// namespace, as a container runtime does: started in new PID and mount
// namespaces, it makes every mount private, mounts a fresh procfs on
// /proc and execs the command, which keeps PID 1. Without it a test's
// goinit would see the host's /proc, where its own pids mean other
// processes.
//
//	procns COMMAND [ARG...]
package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: procns COMMAND [ARG...]")
		os.Exit(2)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fmt.Fprintf(os.Stderr, "procns: make mounts private: %v\n", err)
		os.Exit(125)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		fmt.Fprintf(os.Stderr, "procns: mount /proc: %v\n", err)
		os.Exit(125)
	}
	err := unix.Exec(os.Args[1], os.Args[1:], os.Environ())
	fmt.Fprintf(os.Stderr, "procns: exec %s: %v\n", os.Args[1], err)
	os.Exit(127)
}
