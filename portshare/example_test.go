package portshare_test

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"

	"github.com/goinit/goinit/portshare"
)

// The supervisor's side of one worker start. The shim (here the program
// "shim") receives the handoff as fd 3 and calls portshare.InstallFilter(3)
// before it execs the command.
func Example() {
	policy, err := portshare.ParsePolicy("auto")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := portshare.Available(); err != nil {
		fmt.Fprintf(os.Stderr, "goinit: cannot share ports: %v; %s\n", err, portshare.Fix)
		os.Exit(2)
	}
	s, err := portshare.New(portshare.Config{Policy: policy, Logger: slog.Default()})
	if err != nil {
		panic(err)
	}
	defer s.Close()

	h, err := portshare.NewHandoff()
	if err != nil {
		panic(err)
	}
	cmd := exec.Command("shim", "node", "app.js")
	cmd.ExtraFiles = []*os.File{h.Child()} // fd 3 in the shim
	if err := cmd.Start(); err != nil {
		h.Close()
		return
	}
	s.AttachHandoff(0, cmd.Process.Pid, h, 0) // returns at once

	for e := range s.Events() { // in goinit: one case of the supervisor's select
		if e.Kind == portshare.Shared {
			slog.Info(e.String())
		}
	}
}
