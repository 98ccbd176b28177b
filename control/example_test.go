package control_test

import (
	"fmt"

	"github.com/goinit/goinit/control"
)

// The supervisor's side: a case in its select loop that answers at once.
// Respond never blocks, so a client that went away costs nothing.
func ExampleRequest_Respond() {
	requests := make(chan control.Request, 4)
	reply := make(chan control.Response, 1)
	requests <- control.Request{Cmd: control.CmdScale, Args: control.Args{Workers: 4}, Reply: reply}

	// In goinit this is one case of the supervisor's select.
	r := <-requests
	switch r.Cmd {
	case control.CmdScale:
		r.Respond(control.Response{Message: fmt.Sprintf("scaling from 2 to %d workers", r.Args.Workers)})
	default:
		r.Respond(control.Response{Err: fmt.Errorf("%s is not supported yet", r.Cmd)})
	}
	fmt.Println((<-reply).Message)
	// Output: scaling from 2 to 4 workers
}
