package listen_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"

	"github.com/goinit/goinit/listen"
)

func ExampleParseAddr() {
	for _, s := range []string{"8080", "tcp6://[::]:443#https", "unix:///run/app.sock", "ftp://x"} {
		a, err := listen.ParseAddr(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%s %s name=%s\n", a.Network, a.Address, a.Name)
	}
	// Output:
	// tcp :8080 name=tcp-8080
	// tcp6 [::]:443 name=https
	// unix /run/app.sock name=unix-app.sock
	// invalid --listen "ftp://x": unsupported scheme "ftp"; use tcp://, tcp4://, tcp6://, udp://, udp4://, udp6:// or unix:// (or host:port, or a bare port)
}

// The parent side: open the sockets once, then start a worker that gets them
// as descriptors 3, 4, ... The shell sets LISTEN_PID to its own pid and execs
// the worker, which keeps that pid.
func ExampleEnv() {
	var addrs []listen.Addr
	var files []*os.File
	for _, s := range []string{"127.0.0.1:0#http", "udp4://127.0.0.1:0"} {
		a, err := listen.ParseAddr(s)
		if err != nil {
			log.Fatal(err)
		}
		f, err := listen.Open(context.Background(), a, false)
		if err != nil {
			log.Fatal(err) // e.g. cannot listen on tcp://:8080: address already in use
		}
		addrs, files = append(addrs, a), append(files, f)
	}
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ exec "$0"`, "./server")
	cmd.Env = append(os.Environ(), listen.Env(addrs, files)...)
	cmd.ExtraFiles = files // files[i] becomes descriptor 3+i
	_ = cmd                // cmd.Start() in real code
}

// The worker side: serve HTTP on every socket-activated stream socket, or on
// :8080 when started by hand.
func ExampleListeners() {
	ls, err := listen.Listeners()
	if err != nil {
		log.Fatal(err)
	}
	if len(ls) == 0 {
		l, err := net.Listen("tcp", ":8080")
		if err != nil {
			log.Fatal(err)
		}
		ls = append(ls, l)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	for _, l := range ls {
		go srv.Serve(l)
	}
}
