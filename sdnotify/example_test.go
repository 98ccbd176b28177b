package sdnotify_test

import (
	"fmt"
	"log"
	"os"
	"os/exec"

	"github.com/goinit/goinit/sdnotify"
)

// One start of a worker whose shell reports readiness with Debian's
// systemd-notify. The supervisor would select on hub.Events() among its
// other channels.
func ExampleHub_Open() {
	hub := sdnotify.NewHub[int](sdnotify.Options{})
	sock, err := hub.Open(0) // worker 0, before it starts
	if err != nil {
		log.Fatal(err)
	}
	defer sock.Close()
	cmd := exec.Command("/bin/sh", "-c", `systemd-notify --ready --status="listening" && exec sleep 1`)
	cmd.Env = append(os.Environ(), sock.Env())
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	sock.SetPID(cmd.Process.Pid)
	ev := <-hub.Events()
	fmt.Printf("worker %d ready=%v status=%q\n", ev.Key, ev.Ready, ev.Status)
	cmd.Wait()
}
