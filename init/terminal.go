package main

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// terminal is goinit's controlling terminal, lent to a single command as a
// shell lends it to its foreground job.
type terminal struct {
	// sigc is goinit's signal channel: SIGTTOU is taken off it while the
	// terminal changes hands.
	sigc chan<- os.Signal
}

// foreground reports whether goinit's process group owns the terminal.
func (t *terminal) foreground() bool {
	pgrp, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}

// give makes pgid the terminal's foreground process group. A process in the
// background that does this gets SIGTTOU unless it ignores the signal, and
// goinit catches every signal to forward it, so SIGTTOU is ignored for the
// moment of the call.
func (t *terminal) give(pgid int) {
	signal.Ignore(unix.SIGTTOU)
	_ = unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, pgid)
	signal.Notify(t.sigc, unix.SIGTTOU)
}
