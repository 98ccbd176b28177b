package main

import (
	"fmt"
	"io"

	"github.com/spf13/pflag"
)

// printHelp prints usage, every flag with its variable and default.
func printHelp(w io.Writer, f *flags) {
	fmt.Fprint(w, `goinit: a container init that reaps zombies, forwards signals and runs a pool of workers.

Usage:
  goinit [flags] -- COMMAND [ARG...]

Every flag can also be set by the variable GOINIT_<FLAG> (--stop-timeout: GOINIT_STOP_TIMEOUT);
a flag given on the command line wins. Repeatable flags take a comma-separated variable.

Flags:
`)
	f.fs.VisitAll(func(fl *pflag.Flag) {
		name := "--" + fl.Name
		if fl.Shorthand != "" {
			name = "-" + fl.Shorthand + ", " + name
		}
		head := "  " + name
		if fl.Name != "help" && fl.Name != "version" {
			head += "  $" + envName(fl.Name)
		}
		if fl.DefValue != "" && fl.DefValue != "[]" && fl.DefValue != "false" && fl.DefValue != "0s" {
			head += "  (default " + fl.DefValue + ")"
		}
		fmt.Fprintf(w, "%s\n        %s\n", head, fl.Usage)
	})
	fmt.Fprint(w, `
Exit status: the command's own; 128+N when a signal N killed it; 127 command not found;
126 command not executable; 2 bad flag or variable; 125 goinit itself failed.
`)
}
