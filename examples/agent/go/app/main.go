// Command app is a worker of the Go agent example: an HTTP service that binds
// its own port with net.Listen (goinit shares it between the workers) and
// serves the last config the agent sent it, so every worker serves the same
// value.
//
//	goinit --workers=2 --ready=message --agent=./agent -- ./app
//
//	GET /         "worker ID pid PID: config version V from agent pid A"
//	GET /config   {"worker":"0","pid":41,"config":{"version":7,"agent":12,"at":"..."}}
//	              (config is null until the agent's first message)
//	GET /healthz  200 "ok"
//
// The config arrives on the channel at descriptor $GOINIT_IPC_FD as the line
// {"from":"agent","data":{"config":C}}; the app writes "ready" on it once it
// listens (--ready=message). While the agent restarts, the app keeps serving
// the last config it got. $HOST:$PORT (default :3000) is the address.
// SIGTERM or SIGINT stops accepting, lets requests in flight finish and
// exits 0 (1 if they did not within drainTimeout).
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// drainTimeout stays below goinit's default stop timeout.
const drainTimeout = 10 * time.Second

// config is what the agent hands out; the agent has the same type.
type config struct {
	Version int    `json:"version"`
	Agent   int    `json:"agent"`
	At      string `json:"at"`
}

// envelope is a line goinit delivers; From is "goinit", "agent" or a
// worker id, so it stays raw.
type envelope struct {
	From json.RawMessage `json:"from"`
	Data json.RawMessage `json:"data"`
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("app: ")
	worker, pid := os.Getenv("GOINIT_WORKER_ID"), os.Getpid()
	ch, err := openChannel()
	if err != nil {
		log.Fatal(err)
	}
	var cur atomic.Pointer[config]
	go func() {
		err := readConfigs(ch, &cur, worker)
		log.Fatalf("worker %s: channel to goinit: %v", worker, err)
	}()

	l, err := net.Listen("tcp", net.JoinHostPort(os.Getenv("HOST"), cmp.Or(os.Getenv("PORT"), "3000")))
	if err != nil {
		log.Fatalf("worker %q (pid %d): %v", worker, pid, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		what := "no config yet"
		if c := cur.Load(); c != nil {
			what = fmt.Sprintf("config version %d from agent pid %d", c.Version, c.Agent)
		}
		fmt.Fprintf(w, "worker %s pid %d: %s\n", worker, pid, what)
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(struct {
			Worker string  `json:"worker"`
			PID    int     `json:"pid"`
			Config *config `json:"config"`
		}{worker, pid, cur.Load()})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	failed := make(chan error, 1)
	go func() { failed <- srv.Serve(l) }()
	log.Printf("worker %q (pid %d) serving on %s", worker, pid, l.Addr())
	// The only write on the channel, so no lock is needed.
	if _, err := ch.Write([]byte("\"ready\"\n")); err != nil {
		log.Fatalf("worker %s: channel to goinit: %v", worker, err)
	}
	select {
	case err := <-failed:
		log.Fatal(err)
	case <-ctx.Done():
	}
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Printf("worker %s: drain: %v", worker, err)
		os.Exit(1)
	}
}

// openChannel returns the channel goinit gave this process.
func openChannel() (*os.File, error) {
	s := os.Getenv("GOINIT_IPC_FD")
	fd, err := strconv.Atoi(s)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("GOINIT_IPC_FD=%q: no channel to goinit; run me as goinit --workers=N --agent=./agent -- ./app", s)
	}
	return os.NewFile(uintptr(fd), "goinit-channel"), nil
}

// readConfigs stores in cur each config the agent sends on r, until r
// fails, and logs the agent's exit, which goinit announces.
func readConfigs(r io.Reader, cur *atomic.Pointer[config], worker string) error {
	dec := json.NewDecoder(r)
	for {
		var e envelope
		if err := dec.Decode(&e); err != nil {
			return err
		}
		switch string(e.From) {
		case `"agent"`:
			var d struct {
				Config *config `json:"config"`
			}
			if err := json.Unmarshal(e.Data, &d); err == nil && d.Config != nil {
				cur.Store(d.Config)
			}
		case `"goinit"`:
			var ev struct {
				Event string `json:"event"`
				PID   int    `json:"pid"`
			}
			if json.Unmarshal(e.Data, &ev) == nil && ev.Event == "agent-exit" {
				v := 0
				if c := cur.Load(); c != nil {
					v = c.Version
				}
				log.Printf("worker %s: the agent (pid %d) exited; serving config version %d until its successor sends one", worker, ev.PID, v)
			}
		}
	}
}
