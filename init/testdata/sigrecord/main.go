// Command sigrecord prints "ready", then one line "got NAME" for every
// signal it receives. It exits 0 after a stop signal (TERM, INT, QUIT)
// unless -ignore-stop is given, and exits with -exit-on-signal's code if set.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	ignoreStop := flag.Bool("ignore-stop", false, "keep running after TERM, INT and QUIT")
	flag.Parse()
	var sigs []os.Signal
	for n := 1; n <= 64; n++ {
		switch s := syscall.Signal(n); s {
		case unix.SIGKILL, unix.SIGSTOP, unix.SIGURG, unix.SIGCHLD, unix.SIGPROF, 32, 33, 34:
		default:
			sigs = append(sigs, s)
		}
	}
	c := make(chan os.Signal, 64)
	signal.Notify(c, sigs...)
	fmt.Printf("ready %d\n", os.Getpid())
	for s := range c {
		sig := s.(syscall.Signal)
		name := strings.TrimPrefix(unix.SignalName(sig), "SIG")
		if name == "" {
			name = fmt.Sprint(int(sig))
		}
		fmt.Printf("got %s\n", name)
		if !*ignoreStop && (sig == unix.SIGTERM || sig == unix.SIGINT || sig == unix.SIGQUIT) {
			os.Exit(0)
		}
	}
}
