// Command procns runs a command as PID 1 with a /proc of its own PID
// namespace, as a container runtime does: started in new PID and mount
// namespaces, it makes every mount private, mounts a fresh procfs on
// /proc and execs the command, which keeps PID 1. Without it a test's
// goinit would see the host's /proc, where its own pids mean other
// processes.
//
//	procns COMMAND [ARG...]
//
// Started in a new network namespace as well, it sets it up as a runtime
// does, as its environment says (and removes these variables first, so the
// command does not see them):
//
//	PROCNS_LOOPBACK=up           bring lo up
//	PROCNS_SYSCTL=NAME=VALUE,..  write each sysctl under the fresh /proc, e.g.
//	                             net.ipv4.tcp_migrate_req=1 (docker run --sysctl)
package main

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/internal/netns"
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
	if err := setUpNetwork(); err != nil {
		fmt.Fprintf(os.Stderr, "procns: %v\n", err)
		os.Exit(125)
	}
	err := unix.Exec(os.Args[1], os.Args[1:], os.Environ())
	fmt.Fprintf(os.Stderr, "procns: exec %s: %v\n", os.Args[1], err)
	os.Exit(127)
}

// setUpNetwork does what PROCNS_LOOPBACK and PROCNS_SYSCTL ask, after /proc
// is this namespace's: the sysctls are written through it.
func setUpNetwork() error {
	lo, sysctls := os.Getenv("PROCNS_LOOPBACK"), os.Getenv("PROCNS_SYSCTL")
	os.Unsetenv("PROCNS_LOOPBACK")
	os.Unsetenv("PROCNS_SYSCTL")
	switch lo {
	case "":
	case "up":
		if err := netns.LoopbackUp(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("PROCNS_LOOPBACK=%q: want up", lo)
	}
	for _, kv := range strings.Split(sysctls, ",") {
		if kv == "" {
			continue
		}
		if err := netns.WriteSysctl(kv); err != nil {
			return err
		}
	}
	return nil
}
