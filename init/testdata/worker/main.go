// Command worker is the test worker for goinit's cluster tests. It reports
// what goinit gave it, then behaves as its environment says:
//
//	REPORT_DIR=dir       write dir/<worker>-<pid>.json with its pid and the
//	                     socket-activation and worker variables it got
//	EXIT_CODE=n          exit with n right after reporting (a crashing worker)
//	EXIT_CODE_<id>=n     the same, for worker <id> only
//	IGNORE_TERM=1        ignore SIGTERM (a worker that will not stop)
//
// With sockets (LISTEN_FDS) it serves HTTP on every one of them: GET /
// answers {"pid":..,"worker":".."}. It exits 0 on SIGTERM.
package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/goinit/goinit/listen"
)

func main() {
	id := os.Getenv("GOINIT_WORKER_ID")
	report := map[string]string{"pid": strconv.Itoa(os.Getpid())}
	for _, k := range []string{"GOINIT_WORKER_ID", "GOINIT_WORKERS", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "PORT"} {
		report[k] = os.Getenv(k)
	}
	if b, err := os.ReadFile("/proc/self/oom_score_adj"); err == nil {
		report["oom_score_adj"] = strings.TrimSpace(string(b))
	}
	if dir := os.Getenv("REPORT_DIR"); dir != "" {
		b, _ := json.Marshal(report)
		name := filepath.Join(dir, fmt.Sprintf("%s-%d.json", id, os.Getpid()))
		if err := os.WriteFile(name+".tmp", b, 0o644); err == nil {
			os.Rename(name+".tmp", name)
		}
	}
	for _, k := range []string{"EXIT_CODE_" + id, "EXIT_CODE"} {
		if v := os.Getenv(k); v != "" {
			n, _ := strconv.Atoi(v)
			os.Exit(n)
		}
	}
	sigs := make(chan os.Signal, 1)
	if os.Getenv("IGNORE_TERM") != "" {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(sigs, syscall.SIGTERM)
	}
	ls, err := listen.Listeners()
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
	body := fmt.Sprintf(`{"pid":%d,"worker":%q}`, os.Getpid(), id)
	for _, l := range ls {
		go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, body)
		}))
	}
	// The timer keeps the runtime from calling a worker that ignores TERM
	// and serves nothing a deadlock.
	select {
	case <-sigs:
	case <-time.After(time.Hour):
	}
}
