// Command shareserver is the worker and the client of the runc port-sharing
// tests: a Go server that binds its own port, as unmodified servers do, and
// a loopback client run inside the container's network namespace with
// `runc exec`.
//
//	shareserver serve PORT         net.Listen("tcp", ":PORT") and serve HTTP
//	shareserver ask ADDR N         ask until N distinct replies came back
//	shareserver kill ADDR ID PID   load ADDR, SIGKILL worker ID's PID, go
//	                               on until its replacement answers
//
// serve answers every request with "worker ID pid PID" (ID from
// GOINIT_WORKER_ID) and prints "serving worker ID pid PID" once listening.
// ask prints each distinct reply on a line of its own. kill runs four
// clients, a new connection per request, SIGKILLs PID once 100 requests
// have been answered, and stops 100 answers after the first reply from
// worker ID with a pid other than PID; it prints "replaced by PID2",
// then "ok N refused N failed N" and the first failure of each kind. Both
// clients give up after 15 seconds (exit 1), so a test never hangs on them.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// deadline bounds every client mode.
const deadline = 15 * time.Second

func main() {
	args := map[string]int{"serve": 3, "ask": 4, "kill": 5}
	if len(os.Args) < 2 || args[os.Args[1]] != len(os.Args) {
		fail("usage: shareserver serve PORT | ask ADDR N | kill ADDR ID PID")
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2])
	case "ask":
		n, err := strconv.Atoi(os.Args[3])
		if err != nil {
			fail("shareserver ask: N: %v", err)
		}
		ask(os.Args[2], n)
	case "kill":
		pid, err := strconv.Atoi(os.Args[4])
		if err != nil {
			fail("shareserver kill: PID: %v", err)
		}
		kill(os.Args[2], os.Args[3], pid)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func serve(port string) {
	id, pid := os.Getenv("GOINIT_WORKER_ID"), os.Getpid()
	l, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fail("shareserver: worker %s pid %d: %v", id, pid, err)
	}
	fmt.Printf("serving worker %s pid %d\n", id, pid)
	err = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "worker %s pid %d\n", id, pid)
	}))
	fail("shareserver: %v", err)
}

var client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// get makes one request on a new connection and returns the reply's line.
func get(addr string) (string, error) {
	resp, err := client.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return strings.TrimSpace(string(b)), nil
}

// ask asks in bursts of four concurrent requests: with one shared socket
// an idle worker that wins one accept tends to win every sequential one.
func ask(addr string, n int) {
	seen := map[string]bool{}
	var mu sync.Mutex
	end := time.Now().Add(deadline)
	for len(seen) < n {
		if time.Now().After(end) {
			fail("shareserver ask: %d distinct replies within %s, want %d: %v", len(seen), deadline, n, seen)
		}
		var wg sync.WaitGroup
		var errs []error
		for range 4 {
			wg.Go(func() {
				reply, err := get(addr)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				if !seen[reply] {
					seen[reply] = true
					fmt.Println(reply)
				}
			})
		}
		wg.Wait()
		if len(errs) > 0 {
			fail("shareserver ask: %v", errors.Join(errs...))
		}
	}
}

// kill loads addr while it SIGKILLs worker id's pid victim, and counts
// what clients saw.
func kill(addr, id string, victim int) {
	var (
		mu                   sync.Mutex
		ok, refused, failed  int
		firstRefused, firstF error
		killed               bool
		replacedBy           string
		afterReplace         int
	)
	prefix := "worker " + id + " pid "
	done := make(chan struct{})
	var stopOnce sync.Once
	end := time.Now().Add(deadline)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				reply, err := get(addr)
				mu.Lock()
				switch {
				case errors.Is(err, syscall.ECONNREFUSED):
					refused++
					firstRefused = cmpErr(firstRefused, err)
				case err != nil:
					failed++
					firstF = cmpErr(firstF, err)
				default:
					ok++
					if pid, found := strings.CutPrefix(reply, prefix); found && killed && replacedBy == "" && pid != strconv.Itoa(victim) {
						replacedBy = pid
					}
					if replacedBy != "" {
						afterReplace++
					}
				}
				if !killed && ok >= 100 {
					killed = true
					if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
						mu.Unlock()
						fail("shareserver kill: kill %d: %v", victim, err)
					}
				}
				stop := afterReplace >= 100 || time.Now().After(end)
				mu.Unlock()
				if stop {
					stopOnce.Do(func() { close(done) })
					return
				}
			}
		})
	}
	wg.Wait()
	if replacedBy == "" {
		fmt.Printf("not replaced\n")
	} else {
		fmt.Printf("replaced by %s\n", replacedBy)
	}
	fmt.Printf("ok %d refused %d failed %d\n", ok, refused, failed)
	if firstRefused != nil {
		fmt.Printf("first refused: %v\n", firstRefused)
	}
	if firstF != nil {
		fmt.Printf("first failure: %v\n", firstF)
	}
}

// cmpErr keeps the first error seen.
func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
