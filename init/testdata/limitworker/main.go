// Command limitworker is the worker of goinit's cgroup limit tests, on the
// host (cgroup v1), in the cgroup v2 VM and in runc containers.
//
//	limitworker serve DIR   serve HTTP on the socket-activated listener
//	limitworker alloc       allocate and touch memory until killed
//	limitworker spin        burn one CPU forever
//
// serve answers every request with "worker ID pid PID" (ID from
// GOINIT_WORKER_ID) and prints "serving worker ID pid PID" once listening.
// Every 20ms it looks in DIR for trigger files the test creates:
//
//	DIR/oom-ID        removed, then the worker itself allocates until killed
//	DIR/child-oom-ID  removed, then the worker makes itself unkillable by the
//	                  OOM killer and a child "limitworker alloc" runs; when
//	                  it ends the worker prints "worker ID child ended:
//	                  STATUS" and keeps serving
//	DIR/grow-ID       removed, then the worker allocates and touches 48 MiB,
//	                  keeps it, prints "worker ID grew 48 MiB" and keeps
//	                  serving (a leak that --memory-recycle should catch)
//
// Removing the trigger first means the restarted worker serves normally.
package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/goinit/goinit/listen"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: limitworker serve DIR | alloc | spin")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: limitworker serve DIR")
			os.Exit(2)
		}
		serve(os.Args[2])
	case "alloc":
		alloc()
	case "spin":
		for {
		}
	default:
		fmt.Fprintf(os.Stderr, "limitworker: unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
}

func serve(dir string) {
	id, pid := os.Getenv("GOINIT_WORKER_ID"), os.Getpid()
	ls, err := listen.Listeners()
	if err != nil || len(ls) != 1 {
		fmt.Fprintf(os.Stderr, "limitworker: want one activated listener, got %d (%v)\n", len(ls), err)
		os.Exit(1)
	}
	go func() {
		for range time.Tick(20 * time.Millisecond) {
			if os.Remove(filepath.Join(dir, "oom-"+id)) == nil {
				alloc()
			}
			if os.Remove(filepath.Join(dir, "grow-"+id)) == nil {
				grown = append(grown, touched(growMiB)...)
				fmt.Printf("worker %s grew %d MiB\n", id, growMiB)
			}
			if os.Remove(filepath.Join(dir, "child-oom-"+id)) == nil {
				// The worker is never the OOM killer's choice, only
				// its child: otherwise, once the kernel has given up
				// waiting for a slow victim to exit (it then skips it),
				// a second OOM of the still full cgroup takes the
				// worker, as a loaded VM showed about 1 run in 10.
				// The child raises its own score again (alloc).
				_ = os.WriteFile("/proc/self/oom_score_adj", []byte("-1000"), 0)
				go func() {
					err := exec.Command("/proc/self/exe", "alloc").Run()
					fmt.Printf("worker %s child ended: %v\n", id, err)
				}()
			}
		}
	}()
	fmt.Printf("serving worker %s pid %d\n", id, pid)
	err = http.Serve(ls[0], http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "worker %s pid %d\n", id, pid)
	}))
	fmt.Fprintf(os.Stderr, "limitworker: %v\n", err)
	os.Exit(1)
}

// growMiB is how much the grow trigger allocates: well above the tests'
// --memory-recycle sizes, well below their --memory-limit.
const growMiB = 48

// grown holds what the grow trigger allocated. A package variable, so that
// it stays reachable: a local one that is never read again could be
// collected.
var grown [][]byte

// touched returns n MiB of heap, every page written so that it is really
// charged to the cgroup, not only reserved.
func touched(n int) [][]byte {
	keep := make([][]byte, 0, n)
	for range n {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		keep = append(keep, b)
	}
	return keep
}

// alloc grows the heap 1 MiB at a time, touching every page so it is
// really charged, and keeps it all reachable until the OOM killer ends it.
// It makes itself the OOM killer's first choice (oom_score_adj 1000, which
// any process may raise), so that the kernel ends it rather than the
// process that started it.
func alloc() {
	_ = os.WriteFile("/proc/self/oom_score_adj", []byte("1000"), 0)
	debug.SetGCPercent(-1)
	var keep [][]byte
	for {
		keep = append(keep, touched(1)...)
		if len(keep)%1024 == 0 {
			fmt.Fprintf(os.Stderr, "limitworker: %d MiB allocated and still alive\n", len(keep))
		}
	}
}
