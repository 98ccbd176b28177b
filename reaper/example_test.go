package reaper_test

import (
	"context"
	"fmt"
	"os/exec"

	"github.com/goinit/goinit/reaper"
)

// A supervisor starts its children through the Reaper and learns how each
// one ended from Exits; orphans re-parented to it come on the same channel.
func ExampleReaper() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := reaper.New(nil)
	go r.Run(ctx)

	cmd := exec.Command("sh", "-c", "exit 3")
	if err := r.Start(cmd); err != nil { // never cmd.Start, never cmd.Wait
		fmt.Println(err)
		return
	}
	for e := range r.Exits() {
		if e.Supervised && e.Pid == cmd.Process.Pid {
			fmt.Println(e.Status, "->", e.Status.Code())
			return
		}
	}
	// Output:
	// exited with code 3 -> 3
}
