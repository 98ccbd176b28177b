// Command goserver is the example Go worker for goinit cluster mode. It serves
// HTTP on the sockets goinit passes by socket activation (LISTEN_FDS), or on
// $HOST:$PORT (default :8080) when run on its own.
//
//	GET /         a greeting naming the worker (GOINIT_WORKER_ID) and pid
//	GET /healthz  200 "ok"
//	GET /stats    {"pid":41,"worker":"2","requests":17}; requests counts GET /
//
// SIGTERM or SIGINT stops accepting, lets in-flight requests finish for up to
// drainTimeout and exits 0 (1 if the drain timed out).
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/goinit/goinit/listen"
)

// drainTimeout stays below goinit's default stop timeout, so the server
// finishes on its own before it would be killed.
const drainTimeout = 20 * time.Second

func main() {
	log.SetFlags(0)
	log.SetPrefix("goserver: ")
	worker, pid := os.Getenv("GOINIT_WORKER_ID"), os.Getpid()

	ls, err := listen.Listeners()
	if err != nil {
		log.Fatal(err)
	}
	if len(ls) == 0 { // not socket-activated: run alone
		l, err := net.Listen("tcp", net.JoinHostPort(os.Getenv("HOST"), cmp.Or(os.Getenv("PORT"), "8080")))
		if err != nil {
			log.Fatal(err)
		}
		ls = append(ls, l)
	}

	var requests atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		fmt.Fprintf(w, "hello from goserver worker=%s pid=%d\n", worker, pid)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"pid": pid, "worker": worker, "requests": requests.Load()})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	failed := make(chan error, len(ls))
	for _, l := range ls {
		log.Printf("worker %q (pid %d) serving on %s", worker, pid, l.Addr())
		go func() { failed <- srv.Serve(l) }()
	}
	select {
	case err := <-failed:
		log.Fatal(err)
	case <-ctx.Done():
	}
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Fatalf("worker %q (pid %d): drain not finished after %s: %v", worker, pid, drainTimeout, err)
	}
	log.Printf("worker %q (pid %d) drained, exiting", worker, pid)
}
