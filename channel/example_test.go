package channel_test

import (
	"fmt"
	"log"
	"os"
	"os/exec"

	"github.com/goinit/goinit/channel"
)

// A worker in any language: this one is a shell that says it is ready on
// its channel, descriptor 3 here (with LISTEN_FDS sockets it comes after
// them), and asks for a message to be routed to the agent.
func ExampleHub_Open() {
	hub := channel.NewHub[string](channel.Options{})
	conn, childEnd, err := hub.Open("worker 0")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	cmd := exec.Command("/bin/sh", "-c", `echo '"ready"' >&$GOINIT_IPC_FD; echo '{"to":"agent","data":{"hits":3}}' >&$GOINIT_IPC_FD`)
	cmd.ExtraFiles = []*os.File{childEnd}
	cmd.Env = append(os.Environ(), channel.Env(3)...)
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	childEnd.Close() // or the child's exit is never seen
	for {
		ev := <-hub.Events()
		switch ev.Kind {
		case channel.Message:
			fmt.Println(ev.Key, ev.Kind, string(ev.To), string(ev.Data))
		default:
			fmt.Println(ev.Key, ev.Kind)
		}
		if ev.Kind == channel.Closed {
			break
		}
	}
	cmd.Wait()
	// Output:
	// worker 0 ready
	// worker 0 message "agent" {"hits":3}
	// worker 0 closed
}
