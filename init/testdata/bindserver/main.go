// Command bindserver is an unmodified-style Go server for goinit's
// port-sharing tests: it binds APP_ADDR (default ":3000") itself with
// net.Listen, as most servers do, and answers every request with
// {"pid":..,"worker":"..","port":..}, the port being what getsockname says.
// It exits 0 on SIGTERM.
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	addr := os.Getenv("APP_ADDR")
	if addr == "" {
		addr = ":3000"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bindserver: %v\n", err)
		os.Exit(1)
	}
	port := l.Addr().(*net.TCPAddr).Port
	reply, _ := json.Marshal(struct {
		Pid    int    `json:"pid"`
		Worker string `json:"worker"`
		Port   int    `json:"port"`
	}{os.Getpid(), os.Getenv("GOINIT_WORKER_ID"), port})
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		<-c
		os.Exit(0)
	}()
	fmt.Printf("listening %d\n", port)
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(reply) }))
}
