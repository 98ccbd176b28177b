// Command bindserver is an unmodified-style Go server for goinit's
// port-sharing and reload tests: it binds APP_ADDR (default ":3000")
// itself with net.Listen, as most servers do (with LISTEN_FDS, from goinit
// --listen, it serves fd 3 instead), and answers every HTTP request with
// {"pid":..,"worker":"..","port":..,"version":".."}: the port getsockname
// reports and $APP_VERSION.
//
// On SIGTERM it stops the way a careful server does, so that a test can
// count every failed request against goinit: it stops accepting, answers
// every connection it accepted, and exits 0. It is a tiny hand-written
// HTTP/1.0 responder rather than net/http, whose Shutdown can close a
// connection accepted at the moment it is called.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/goinit/goinit/listen"
)

func main() {
	addr := os.Getenv("APP_ADDR")
	if addr == "" {
		addr = ":3000"
	}
	var l net.Listener
	if os.Getenv("LISTEN_FDS") != "" {
		ls, err := listen.Listeners()
		if err != nil || len(ls) == 0 {
			fmt.Fprintf(os.Stderr, "bindserver: LISTEN_FDS: %v\n", err)
			os.Exit(1)
		}
		l = ls[0]
	} else {
		var err error
		if l, err = net.Listen("tcp", addr); err != nil {
			fmt.Fprintf(os.Stderr, "bindserver: %v\n", err)
			os.Exit(1)
		}
	}
	port := l.Addr().(*net.TCPAddr).Port
	body, _ := json.Marshal(struct {
		Pid     int    `json:"pid"`
		Worker  string `json:"worker"`
		Port    int    `json:"port"`
		Version string `json:"version"`
	}{os.Getpid(), os.Getenv("GOINIT_WORKER_ID"), port, os.Getenv("APP_VERSION")})
	reply := fmt.Sprintf("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)

	var conns sync.WaitGroup
	accepting := make(chan struct{})
	go func() {
		defer close(accepting)
		for {
			c, err := l.Accept()
			if err != nil {
				return // closed: stopping
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				// Read the request head, then answer.
				tp := textproto.NewReader(bufio.NewReader(c))
				if _, err := tp.ReadLine(); err != nil {
					return
				}
				if _, err := tp.ReadMIMEHeader(); err != nil {
					return
				}
				c.Write([]byte(reply))
			}()
		}
	}()
	fmt.Printf("listening %d\n", port)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	<-sigs
	l.Close()
	<-accepting
	conns.Wait()
}
