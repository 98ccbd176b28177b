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
//	DIR/child-oom-ID  removed, then a child "limitworker alloc" runs; when it
//	                  ends the worker prints "worker ID child ended: STATUS"
//	                  and keeps serving
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

// allocReserve is what alloc reserves: above every memory limit the tests
// set (512Mi at most), below the VM's 1 GiB, so that the kernel's
// overcommit heuristic grants it.
const allocReserve = 768 << 20

// alloc touches one page after another of a single reservation, so that
// its memory is really charged, until the OOM killer ends it. One
// reservation, not a heap grown 1 MiB at a time: growing takes the mmap
// lock for writing over and over, and a victim killed while it holds the
// lock cannot be reaped at once; on a slow machine the kernel then gives
// up on it and kills the next process of the cgroup, its parent.
func alloc() {
	b := make([]byte, allocReserve)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
		if i%(64<<20) == 0 && i > 0 {
			fmt.Fprintf(os.Stderr, "limitworker: %d MiB allocated and still alive\n", i>>20)
		}
	}
	fmt.Fprintf(os.Stderr, "limitworker: all %d MiB allocated and never killed: no memory limit below that\n", allocReserve>>20)
	os.Exit(3)
}
