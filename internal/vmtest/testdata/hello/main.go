// Command hello is a tiny static program that vmtest's smoke test copies into
// the VM to prove host binaries run there.
package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	fmt.Printf("hello from pid %d on %s/%s, args %q\n", os.Getpid(), runtime.GOOS, runtime.GOARCH, os.Args[1:])
	if len(os.Args) > 1 && os.Args[1] == "exit3" {
		os.Exit(3)
	}
}
