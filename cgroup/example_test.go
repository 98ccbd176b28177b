package cgroup_test

import (
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"syscall"

	"github.com/goinit/goinit/cgroup"
)

// Example shows the whole life of a worker slot: open goinit's hierarchy,
// get the slot, place the worker in it before it runs, and recognise an OOM
// kill when it exits.
func Example() {
	h, err := cgroup.Open(cgroup.Options{
		Limits: cgroup.Limits{Memory: 256 << 20, CPU: 0.5, Pids: 64},
		Logger: slog.Default(),
	})
	if errors.Is(err, cgroup.ErrUnavailable) {
		// One line saying what is wrong and how to fix it.
		log.Printf("running without cgroup limits: %v", err)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close() // kills what is left in the slots, removes the cgroups

	slot, err := h.Slot(0) // same slot again on every restart of worker 0
	if err != nil {
		log.Fatal(err)
	}

	// The worker must be in the slot before it allocates anything, so
	// it starts as a shim that waits for a line on fd 3 and then execs
	// the real server. On v2 that wait is not needed, but harmless.
	r, w, err := os.Pipe()
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `read _ <&3; exec 3<&-; exec "$0" "$@"`, "/usr/bin/myserver", "--port=8080")
	cmd.ExtraFiles = []*os.File{r} // fd 3
	fd, v2 := slot.FD()
	if v2 {
		// cgroup v2: clone3 starts the process directly in the slot.
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	}
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	r.Close()
	if !v2 {
		// cgroup v1: move the waiting shim in, then let it go.
		if err := slot.Add(cmd.Process.Pid); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Fprintln(w, "go")
	w.Close()

	before, _ := slot.OOMKills()
	_ = cmd.Wait() // in goinit the reaper waits, not the caller
	// Compare counts rather than looking at the exit signal: the OOM
	// killer may pick a child of the worker while the worker exits 0.
	if after, _ := slot.OOMKills(); after > before {
		log.Printf("worker 0 (pid %d) killed by the OOM killer (memory limit %s)",
			cmd.Process.Pid, cgroup.FormatBytes(slot.Limits().Memory))
	}
}

// ExampleHierarchy_NamedSlot gives goinit's agent a cgroup of its own with
// its own limits, beside workers that have none: declared to Open, so that
// a limit the host cannot apply fails before anything starts.
func ExampleHierarchy_NamedSlot() {
	h, err := cgroup.Open(cgroup.Options{
		Named: map[string]cgroup.Limits{"agent": {Memory: 128 << 20, CPU: 0.25}},
	})
	var ue *cgroup.UnavailableError
	if errors.As(err, &ue) && ue.Slot == "agent" {
		log.Fatalf("cannot apply the agent's %s limit: %s; %s", ue.Limit, ue.Cause, ue.Fix)
	}
	if err != nil {
		log.Fatal(err)
	}
	defer h.Close()

	agent, err := h.NamedSlot("agent") // the same slot on every restart
	if err != nil {
		log.Fatal(err)
	}
	// Place the agent exactly like a worker: FD on v2, Add on v1.
	log.Printf("agent in %s with %s", agent, agent.Limits())
}

func ExampleParseSize() {
	for _, s := range []string{"256Mi", "1G", "1048576", "256m"} {
		n, err := cgroup.ParseSize(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(n, cgroup.FormatBytes(n))
	}
	// Output:
	// 268435456 256MiB
	// 1000000000 1GB
	// 1048576 1MiB
	// invalid size "256m": use 256Mi for mebibytes or 256M for megabytes
}

func ExampleAvailableCPUs() {
	c, err := cgroup.AvailableCPUs()
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("--workers=auto: %d workers (%s)", c.N, c.How)
}

func ExampleLimits_String() {
	l := cgroup.Limits{Memory: 256 << 20, CPU: 0.5, Pids: 64}
	fmt.Println(l)
	// Output: memory 256MiB, cpu 0.5, pids 64
}
