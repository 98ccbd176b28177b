package reaper

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Status is how a process ended, as wait4 reports it.
type Status unix.WaitStatus

// ExitStatus builds the Status of a process that exited with code.
func ExitStatus(code int) Status { return Status(code&0xff) << 8 }

// SignalStatus builds the Status of a process killed by sig.
func SignalStatus(sig unix.Signal) Status { return Status(sig & 0x7f) }

// Ended reports whether the process is gone: it exited or a signal killed
// it. A stopped or continued process has not ended.
func (s Status) Ended() bool { return s.Exited() || s.Signaled() }

// Stopped reports whether a signal stopped the process (it still exists).
func (s Status) Stopped() bool { return unix.WaitStatus(s).Stopped() }

// StopSignal is the signal that stopped the process, or 0.
func (s Status) StopSignal() unix.Signal {
	if !s.Stopped() {
		return 0
	}
	return unix.WaitStatus(s).StopSignal()
}

// Continued reports whether a stopped process was resumed by SIGCONT.
func (s Status) Continued() bool { return unix.WaitStatus(s).Continued() }

// Exited reports whether the process exited by itself.
func (s Status) Exited() bool { return unix.WaitStatus(s).Exited() }

// Signaled reports whether a signal killed the process.
func (s Status) Signaled() bool { return unix.WaitStatus(s).Signaled() }

// Signal is the signal that killed the process, or 0.
func (s Status) Signal() unix.Signal {
	if !s.Signaled() {
		return 0
	}
	return unix.WaitStatus(s).Signal()
}

// CoreDump reports whether the process dumped core.
func (s Status) CoreDump() bool { return unix.WaitStatus(s).CoreDump() }

// Code is the status as a shell reports it: the exit code, or 128+N for a
// process killed by signal N.
func (s Status) Code() int {
	if s.Signaled() {
		return 128 + int(s.Signal())
	}
	return unix.WaitStatus(s).ExitStatus()
}

// Success reports whether the process exited with code 0.
func (s Status) Success() bool { return s.Exited() && s.Code() == 0 }

// String reads like a log line: "exited with code 3" or "killed by signal 9
// (KILL)".
func (s Status) String() string {
	switch {
	case s.Stopped():
		return fmt.Sprintf("stopped by signal %d", int(s.StopSignal()))
	case s.Continued():
		return "continued"
	}
	if s.Signaled() {
		name := unix.SignalName(s.Signal())
		if len(name) > 3 {
			name = name[3:]
		}
		core := ""
		if s.CoreDump() {
			core = ", core dumped"
		}
		return fmt.Sprintf("killed by signal %d (%s%s)", int(s.Signal()), name, core)
	}
	return fmt.Sprintf("exited with code %d", s.Code())
}
