package main

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// kernelSigaction is struct sigaction as the rt_sigaction system call takes
// it on Linux (amd64, arm64 and the other generic layouts).
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

// resetIgnoredReserved gives the child default dispositions for the signals
// the Go runtime leaves alone (32 and 34 are reserved for libc, so the
// runtime installs no handler and os/signal cannot catch them). An
// inherited SIG_IGN for them would otherwise survive goinit's exec into the
// command; every other signal reaches the command with its default
// disposition, because goinit catches it and exec resets caught signals.
func resetIgnoredReserved() {
	for _, sig := range []uintptr{32, 34} {
		var old kernelSigaction
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, sig, 0, uintptr(unsafe.Pointer(&old)), 8, 0, 0); e != 0 {
			continue
		}
		if old.handler != 1 { // SIG_IGN
			continue
		}
		dfl := kernelSigaction{} // SIG_DFL
		unix.RawSyscall6(unix.SYS_RT_SIGACTION, sig, uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0)
	}
}
