package signals_test

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/signals"
)

// A supervisor reads --rewrite rules once and applies them to every signal
// it is about to forward.
func ExampleRewrite() {
	r := signals.Rewrite{}
	for _, rule := range []string{"TERM:QUIT", "WINCH:NONE"} {
		if err := r.ParseRule(rule); err != nil {
			fmt.Println(err)
			return
		}
	}
	for _, sig := range []unix.Signal{unix.SIGTERM, unix.SIGWINCH, unix.SIGHUP} {
		fmt.Printf("%s -> %s\n", signals.Name(sig), signals.Name(r.Apply(sig)))
	}
	// Output:
	// TERM -> QUIT
	// WINCH -> NONE
	// HUP -> HUP
}
