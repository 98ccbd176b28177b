// Command orphanstorm makes thousands of processes become orphans of the
// supervisor above it and then exit all at once, for the reaping benchmark.
//
// Run under a supervisor that is PID 1 of its namespace (or a child
// subreaper), it works in three steps, talking to the harness over stdio:
//
//  1. It starts -spawners spawner processes (itself, with -spawn), each of
//     which starts its share of -n orphans and exits without waiting for them.
//     The orphans are "cat" processes reading a pipe whose only writer this
//     process holds, so they block. Their parents gone, the kernel re-parents
//     them to the supervisor. It then prints "ready N".
//  2. When a line arrives on stdin it closes the pipe: every orphan reads EOF
//     and exits at the same moment, and the supervisor must reap them all. It
//     prints "released".
//  3. It stays alive until stdin closes (or -timeout passes), because most
//     supervisors exit as soon as their main child does, which would end the
//     measurement.
//
// The orphans are cat rather than copies of this program because a thousand Go
// runtimes would cost far more memory and start-up time than the thing being
// measured.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"
)

// options are the command-line settings of both roles.
type options struct {
	orphans  int
	spawners int
	spawn    bool
	timeout  time.Duration
}

func main() {
	var o options
	flag.IntVar(&o.orphans, "n", 1000, "number of orphans (in spawn mode: how many this spawner starts)")
	flag.IntVar(&o.spawners, "spawners", 2, "number of spawner processes")
	flag.BoolVar(&o.spawn, "spawn", false, "internal: act as a spawner, starting -n orphans on stdin's pipe and exiting")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up and exit after this time")
	flag.Parse()
	var err error
	if o.spawn {
		err = spawn(o.orphans)
	} else {
		err = storm(o)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "orphanstorm: %v\n", err)
		os.Exit(1)
	}
}

// spawn starts n orphans that read stdin and returns without waiting for
// them, so that they outlive this process.
func spawn(n int) error {
	cat, err := exec.LookPath("cat")
	if err != nil {
		return fmt.Errorf("find cat: %w", err)
	}
	for i := 0; i < n; i++ {
		cmd := exec.Command(cat)
		cmd.Stdin = os.Stdin
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start orphan %d of %d: %w", i+1, n, err)
		}
	}
	return nil
}

// storm runs the three steps described in the package comment.
func storm(o options) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	release, hold, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("create release pipe: %w", err)
	}
	defer hold.Close()
	spawners := max(1, min(o.spawners, o.orphans))
	var cmds []*exec.Cmd
	for i := 0; i < spawners; i++ {
		share := o.orphans / spawners
		if i < o.orphans%spawners {
			share++
		}
		cmd := exec.Command(self, "-spawn", "-n", fmt.Sprint(share))
		cmd.Stdin = release
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start spawner %d: %w", i, err)
		}
		cmds = append(cmds, cmd)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("spawner %d: %w", i, err)
		}
	}
	// Only hold keeps the orphans blocked now.
	if err := release.Close(); err != nil {
		return fmt.Errorf("close read end: %w", err)
	}
	fmt.Printf("ready %d\n", o.orphans)

	lines := make(chan error, 2)
	in := bufio.NewReader(os.Stdin)
	go func() {
		_, err := in.ReadString('\n')
		lines <- err
		_, err = io.Copy(io.Discard, in)
		lines <- err
	}()
	deadline := time.After(o.timeout)
	select {
	case err := <-lines:
		if err != nil {
			return fmt.Errorf("stdin closed before the release line: %w", err)
		}
	case <-deadline:
		return errors.New("no release line before the timeout")
	}
	if err := hold.Close(); err != nil {
		return fmt.Errorf("release orphans: %w", err)
	}
	fmt.Println("released")
	select {
	case <-lines:
	case <-deadline:
	}
	return nil
}
