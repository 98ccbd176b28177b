// Command pdeathsig prints its own parent-death signal, as the kernel
// keeps it for the process's main thread ("pdeathsig N"), then waits to be
// killed. The signal belongs to a thread, so it is read during package
// initialization, which Go runs on the main thread.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

var sig int32

func init() {
	if err := unix.Prctl(unix.PR_GET_PDEATHSIG, uintptr(unsafe.Pointer(&sig)), 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "pdeathsig: %v\n", err)
		os.Exit(1)
	}
}

func main() {
	fmt.Printf("pdeathsig %d\n", sig)
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	<-c
}
