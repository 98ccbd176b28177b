// Command agent is the Go agent of the agent example: one process beside the
// workers, for the work that must happen once per machine. Here that work is
// a timer that stands for a config service: every INTERVAL_MS (default 500)
// it makes a new config version and broadcasts it to every worker, and it
// pushes the current version to each worker that becomes ready.
//
//	goinit --workers=2 --ready=message --agent=./agent -- ./app
//
// It talks to goinit on the channel at descriptor $GOINIT_IPC_FD, one JSON
// value per line each way, with nothing but the standard library:
//
//	writes  "ready"                                  once it has a config
//	        {"to":"workers","data":{"config":C}}     on every tick
//	        {"to":ID,"data":{"config":C}}            when worker ID is ready
//	reads   {"from":"goinit","data":{"event":"worker-ready","id":ID,"pid":P}}, ...
//
// C is {"version":N,"agent":PID,"at":TIME}: a counter that starts at 1 with
// each agent process, the agent's pid, and when the version was made.
// SIGTERM or SIGINT exits 0.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// config is what the agent hands out; the app has the same type.
type config struct {
	Version int    `json:"version"`
	Agent   int    `json:"agent"`
	At      string `json:"at"`
}

// message is a line the agent writes: To is "workers" or a worker id.
type message struct {
	To   any `json:"to"`
	Data any `json:"data"`
}

// envelope is a line goinit delivers; From is "goinit", "agent" or a
// worker id, so it stays raw.
type envelope struct {
	From json.RawMessage `json:"from"`
	Data json.RawMessage `json:"data"`
}

// poolEvent is the data of an envelope from goinit.
type poolEvent struct {
	Event  string `json:"event"`
	ID     int    `json:"id"`
	PID    int    `json:"pid"`
	Code   *int   `json:"code"`
	Signal string `json:"signal"`
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("agent: ")
	interval := 500 * time.Millisecond
	if s := os.Getenv("INTERVAL_MS"); s != "" {
		ms, err := strconv.Atoi(s)
		if err != nil || ms <= 0 {
			log.Fatalf("INTERVAL_MS=%q is not a positive number of milliseconds", s)
		}
		interval = time.Duration(ms) * time.Millisecond
	}
	ch, err := openChannel()
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	events := make(chan poolEvent)
	go func() {
		// A closed channel means goinit is gone: nothing left to do.
		err := readEvents(ch, events)
		log.Fatalf("channel to goinit: %v", err)
	}()

	// Only this goroutine writes, so lines never interleave.
	enc := json.NewEncoder(ch)
	send := func(v any) {
		if err := enc.Encode(v); err != nil {
			log.Fatalf("channel to goinit: %v", err)
		}
	}
	pid := os.Getpid()
	cur := config{Version: 1, Agent: pid, At: time.Now().UTC().Format(time.RFC3339Nano)}
	send(message{To: "workers", Data: map[string]any{"config": cur}})
	send("ready")
	log.Printf("pid %d ready, config version %d, a new one every %s", pid, cur.Version, interval)

	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			cur = config{Version: cur.Version + 1, Agent: pid, At: time.Now().UTC().Format(time.RFC3339Nano)}
			send(message{To: "workers", Data: map[string]any{"config": cur}})
		case ev := <-events:
			switch ev.Event {
			case "worker-ready":
				send(message{To: ev.ID, Data: map[string]any{"config": cur}})
			case "worker-exit":
				how := ev.Signal
				if ev.Code != nil {
					how = fmt.Sprintf("code %d", *ev.Code)
				}
				log.Printf("worker %d (pid %d) exited (%s)", ev.ID, ev.PID, how)
			}
		case <-ctx.Done():
			log.Printf("pid %d stopping at config version %d", pid, cur.Version)
			return
		}
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

// readEvents sends goinit's pool events from r to out until r fails.
// Messages from other processes are ignored: workers send the agent none.
func readEvents(r io.Reader, out chan<- poolEvent) error {
	dec := json.NewDecoder(r)
	for {
		var e envelope
		if err := dec.Decode(&e); err != nil {
			return err
		}
		if string(e.From) != `"goinit"` {
			continue
		}
		var ev poolEvent
		if err := json.Unmarshal(e.Data, &ev); err != nil {
			log.Printf("unexpected data from goinit %s: %v", e.Data, err)
			continue
		}
		out <- ev
	}
}
