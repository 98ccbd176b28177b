package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/signals"
	"github.com/goinit/goinit/state"
)

// Exit codes of [RunCLI].
const (
	// ExitOK: done; for reload --wait, the reload succeeded.
	ExitOK = 0
	// ExitFailed: goinit refused or failed the command (no such worker,
	// goinit is stopping, a reload is not possible).
	ExitFailed = 1
	// ExitUsage: the command line was wrong; nothing was sent.
	ExitUsage = 2
	// ExitUnavailable: goinit could not be reached: no socket, permission
	// denied, no answer in time.
	ExitUnavailable = 3
	// ExitRolledBack: reload --wait: a replacement failed, the reload was
	// rolled back and the old version keeps serving.
	ExitRolledBack = 4
)

// EnvControl is the variable that names the socket, like --control.
const EnvControl = "GOINIT_CONTROL"

// defaultCallTimeout bounds every command except reload --wait and top.
const defaultCallTimeout = 30 * time.Second

// IsCommand reports whether arg, goinit's first argument, is a control
// subcommand rather than the start of a command to run.
func IsCommand(arg string) bool {
	for _, c := range Commands {
		if string(c) == arg {
			return true
		}
	}
	return false
}

// usages are the synopses, for errors and --help.
var usages = map[Cmd]string{
	CmdStatus:  "goinit status [--json]",
	CmdReload:  "goinit reload [--wait] [--timeout=DUR]",
	CmdScale:   "goinit scale N",
	CmdRestart: "goinit restart ID|agent|all",
	CmdSignal:  "goinit signal SIG [ID|agent|all]",
	CmdTop:     "goinit top [--interval=DUR]",
}

// RunCLI runs one control subcommand and returns goinit's exit code. args
// starts with the subcommand (os.Args[1:]); every subcommand also takes
// --control=PATH, else getenv(EnvControl), else DefaultPath. Output goes to
// stdout, errors to stderr as one line "goinit: ...". top runs until ctx
// ends (Ctrl-C), which is a clean exit.
func RunCLI(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 || !IsCommand(args[0]) {
		fmt.Fprintln(stderr, "goinit: no control command; commands are status, reload, scale, restart, signal, top")
		return ExitUsage
	}
	cmd := Cmd(args[0])
	fs := pflag.NewFlagSet("goinit "+args[0], pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SetInterspersed(true)
	control := fs.String("control", "", "control socket (default $"+EnvControl+", else "+DefaultPath+")")
	asJSON := fs.Bool("json", false, "status: print the snapshot as JSON")
	wait := fs.Bool("wait", false, "reload: wait until it has finished; exit 0 if it succeeded, 4 if it was rolled back")
	timeout := fs.Duration("timeout", 0, "reload --wait: give up after DUR (default: wait as long as goinit does)")
	interval := fs.Duration("interval", time.Second, "top: refresh every DUR")
	help := fs.BoolP("help", "h", false, "this help")
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "goinit: %s %s; usage: %s\n", cmd, msg, usages[cmd])
		return ExitUsage
	}
	if err := fs.Parse(args[1:]); err != nil {
		return usage(err.Error())
	}
	if *help {
		fmt.Fprintf(stdout, "Usage: %s [--control=PATH]\n\n%s", usages[cmd], fs.FlagUsages())
		return ExitOK
	}
	rest := fs.Args()
	wantArgs := map[Cmd][2]int{CmdStatus: {0, 0}, CmdReload: {0, 0}, CmdScale: {1, 1}, CmdRestart: {1, 1}, CmdSignal: {1, 2}, CmdTop: {0, 0}}[cmd]
	if len(rest) < wantArgs[0] || len(rest) > wantArgs[1] {
		return usage(fmt.Sprintf("takes %s", plural(wantArgs)))
	}

	path := *control
	if path == "" {
		path = getenv(EnvControl)
	}
	if path == "off" {
		fmt.Fprintf(stderr, "goinit: the control socket is off (--control=off or %s=off), so goinit cannot be asked\n", EnvControl)
		return ExitUnavailable
	}
	c := &Client{Path: path}

	callCtx, cancel := ctx, context.CancelFunc(func() {})
	switch {
	case cmd == CmdTop:
	case cmd == CmdReload && *wait:
		if *timeout > 0 {
			callCtx, cancel = context.WithTimeout(ctx, *timeout)
		}
	default:
		callCtx, cancel = context.WithTimeout(ctx, defaultCallTimeout)
	}
	defer cancel()

	var msg string
	var err error
	switch cmd {
	case CmdStatus:
		var snap *state.Snapshot
		if snap, err = c.Status(callCtx); err == nil {
			if *asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				err = enc.Encode(snap)
			} else {
				_, err = stdout.Write(renderStatus(snap, time.Now()))
			}
		}
	case CmdTop:
		if *interval < minTopInterval {
			return usage(fmt.Sprintf("--interval %s is below the minimum %s", *interval, minTopInterval))
		}
		err = top(ctx, c, *interval, stdout)
		if ctx.Err() != nil {
			return ExitOK
		}
	case CmdReload:
		msg, err = c.Reload(callCtx, *wait)
	case CmdScale:
		n, perr := strconv.Atoi(rest[0])
		if perr != nil || n < 1 || n > MaxWorkers {
			return usage(fmt.Sprintf("%q: N must be a number of workers from 1 to %d", rest[0], MaxWorkers))
		}
		msg, err = c.Scale(callCtx, n)
	case CmdRestart:
		t, perr := parseTarget(rest[0])
		if perr != nil {
			return usage(perr.Error())
		}
		msg, err = c.Restart(callCtx, t)
	case CmdSignal:
		sig, perr := signals.Parse(rest[0])
		if perr != nil {
			return usage(perr.Error())
		}
		t := TargetAll
		if len(rest) == 2 {
			if t, perr = parseTarget(rest[1]); perr != nil {
				return usage(perr.Error())
			}
		}
		msg, err = c.Signal(callCtx, sig, t)
	}
	return report(stdout, stderr, cmd, msg, err)
}

func plural(n [2]int) string {
	switch {
	case n[1] == 0:
		return "no arguments"
	case n[0] == n[1]:
		return "one argument"
	}
	return fmt.Sprintf("%d to %d arguments", n[0], n[1])
}

// report prints the outcome and maps it to an exit code.
func report(stdout, stderr io.Writer, cmd Cmd, msg string, err error) int {
	var remote *RemoteError
	var unavailable *UnavailableError
	switch {
	case err == nil:
		if msg != "" {
			fmt.Fprintln(stdout, msg)
		}
		return ExitOK
	case errors.As(err, &remote):
		fmt.Fprintf(stderr, "goinit: %s: %s\n", cmd, remote.Msg)
		if remote.Result == ReloadRolledBack {
			return ExitRolledBack
		}
		return ExitFailed
	case errors.As(err, &unavailable):
		fmt.Fprintf(stderr, "goinit: %s\n", unavailable)
	case errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintf(stderr, "goinit: %s: no answer from goinit in time\n", cmd)
	default:
		fmt.Fprintf(stderr, "goinit: %s: %v\n", cmd, err)
	}
	return ExitUnavailable
}

// clearScreen moves the cursor home and clears the terminal (ANSI), for
// top's frames on a terminal; elsewhere frames are separated by a line.
const clearScreen = "\x1b[H\x1b[2J"

func top(ctx context.Context, c *Client, interval time.Duration, w io.Writer) error {
	tty := isTerminal(w)
	return c.Top(ctx, interval, func(s *state.Snapshot) error {
		var b bytes.Buffer
		if tty {
			b.WriteString(clearScreen)
		} else {
			fmt.Fprintf(&b, "--- %s\n", time.Now().Format(time.TimeOnly))
		}
		b.Write(renderStatus(s, time.Now()))
		if tty {
			fmt.Fprintf(&b, "\nrefreshed every %s; Ctrl-C to quit\n", interval)
		}
		_, err := w.Write(b.Bytes())
		return err
	})
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// renderStatus is `goinit status`: a summary line, a table of processes and
// the counters, as plain text.
func renderStatus(s *state.Snapshot, now time.Time) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "goinit %s (%s), pid %d, %s for %s", s.Version, s.GoVersion, s.PID, s.Phase, since(s.Started, now))
	if s.Pool.Workers > 0 {
		fmt.Fprintf(&b, "; %d of %d workers ready (--min-ready %d)", s.ReadyWorkers(), s.Pool.Workers, s.Pool.MinReady)
	}
	if s.Pool.Reloading {
		b.WriteString("; reloading")
	}
	if s.Pool.CrashLooping {
		b.WriteString("; CRASH LOOP")
	}
	b.WriteString("\n\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tID\tPID\tSTATE\tREADY\tUPTIME\tRESTARTS\tMEMORY\tCPU\tLAST EXIT")
	for _, p := range s.Processes {
		id, pid, up, mem, cpu := "-", "-", "-", "-", "-"
		if p.Role == state.RoleWorker {
			id = strconv.Itoa(p.ID)
		}
		if p.PID != 0 {
			pid = strconv.Itoa(p.PID)
			up = since(p.Started, now)
		}
		if p.HasCgroup && p.PID != 0 {
			mem, cpu = bytesIEC(p.MemoryBytes), strconv.FormatFloat(p.CPUSeconds, 'f', 2, 64)+"s"
		}
		last := "-"
		if p.LastExit != "" {
			last = p.LastExit
			if p.LastReason != "" && p.LastReason != p.LastExit {
				last += ": " + p.LastReason
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", p.Role, id, pid, p.State, yesNo(p.Ready), up,
			p.Restarts.Total(), mem, cpu, last)
	}
	tw.Flush()
	dropped := uint64(0)
	for _, c := range s.Messages.Dropped() {
		dropped += c.Value
	}
	fmt.Fprintf(&b, "\nreloads: %d succeeded, %d rolled back; orphans reaped: %d; messages: %d relayed, %d dropped",
		s.Reloads.Succeeded, s.Reloads.RolledBack, s.OrphansReaped, s.Messages.Relayed, dropped)
	if s.LogLinesDropped > 0 {
		fmt.Fprintf(&b, "; log lines dropped: %d", s.LogLinesDropped)
	}
	b.WriteString("\n")
	if len(s.Sockets) > 0 {
		// The client runs in goinit's network namespace (kubectl exec),
		// so it can read the accept queues itself.
		queues, _ := state.ListenQueues()
		var parts []string
		for _, sk := range s.Sockets {
			p := sk.Address
			if sk.Worker >= 0 {
				p += " (worker " + strconv.Itoa(sk.Worker) + ")"
			}
			if n, ok := queues[sk.Inode]; ok {
				p += fmt.Sprintf(" accept queue %d", n)
			}
			parts = append(parts, p)
		}
		fmt.Fprintf(&b, "sockets: %s\n", strings.Join(parts, "; "))
	}
	return b.Bytes()
}

func since(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// bytesIEC prints a size the way --memory-limit takes it: 64.0MiB.
func bytesIEC(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + "B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
