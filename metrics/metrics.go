package metrics

import (
	"bufio"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/goinit/goinit/state"
)

// ContentType is the media type of what [Write] produces, for the
// Content-Type header of a /metrics response.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Write writes every goinit metric derived from s to w. queues maps a
// socket inode to the length of its accept queue, as [state.ListenQueues]
// returns it; sockets without an entry (unix sockets) get no queue series.
// queues may be nil.
func Write(w io.Writer, s *state.Snapshot, queues map[uint64]uint64) error {
	e := &encoder{w: bufio.NewWriter(w)}

	e.family("goinit_build_info", "gauge", "Always 1; the labels say which goinit is running.")
	e.sample("goinit_build_info", 1, "version", s.Version, "goversion", s.GoVersion)

	e.family("goinit_start_time_seconds", "gauge", "When goinit started, in seconds since the Unix epoch.")
	e.sample("goinit_start_time_seconds", unixSeconds(s.Started))

	e.family("goinit_phase", "gauge", "1 for goinit's current phase (starting, running, delaying, stopping, draining, killing), 0 for the others.")
	for _, p := range state.Phases {
		e.sample("goinit_phase", bool01(s.Phase == p), "phase", string(p))
	}

	e.family("goinit_processes", "gauge", "Supervised process slots by role and state.")
	for _, role := range roles(s) {
		counts := map[state.ProcState]int{}
		for _, p := range s.Processes {
			if p.Role == role {
				counts[p.State]++
			}
		}
		for _, st := range state.ProcStates {
			e.sample("goinit_processes", float64(counts[st]), "role", string(role), "state", string(st))
		}
	}

	e.family("goinit_ready_workers", "gauge", "Workers (or the single command) that are ready; /readyz needs goinit_min_ready_workers of them.")
	e.sample("goinit_ready_workers", float64(s.ReadyWorkers()))
	e.family("goinit_min_ready_workers", "gauge", "--min-ready: ready workers needed for /readyz to answer 200.")
	e.sample("goinit_min_ready_workers", float64(s.Pool.MinReady))
	e.family("goinit_desired_workers", "gauge", "Worker slots wanted (--workers, changed by goinit scale); 0 for a single command.")
	e.sample("goinit_desired_workers", float64(s.Pool.Workers))
	e.family("goinit_crash_looping", "gauge", "1 once a slot restarted more than --max-restarts times within --restart-window.")
	e.sample("goinit_crash_looping", bool01(s.Pool.CrashLooping))
	e.family("goinit_reloading", "gauge", "1 while a rolling reload is in progress.")
	e.sample("goinit_reloading", bool01(s.Pool.Reloading))

	// One series per slot: a process draining after its replacement took
	// the slot over has the slot's labels too, and is left out here
	// (goinit_processes counts it under state="draining").
	slots := make([]state.Process, 0, len(s.Processes))
	for _, p := range s.Processes {
		if p.State != state.StateDraining {
			slots = append(slots, p)
		}
	}
	e.family("goinit_process_ready", "gauge", "1 when the process in this slot is ready.")
	for _, p := range slots {
		e.sample("goinit_process_ready", bool01(p.Ready), procLabels(p)...)
	}
	e.family("goinit_process_start_time_seconds", "gauge", "When the live process in this slot started, in seconds since the Unix epoch.")
	for _, p := range slots {
		if p.PID != 0 && !p.Started.IsZero() {
			e.sample("goinit_process_start_time_seconds", unixSeconds(p.Started), procLabels(p)...)
		}
	}
	e.family("goinit_process_restarts_total", "counter", "Restarts of this slot by why the previous process ended: exit, signal, oom, hung (--watchdog), recycle (--max-lifetime, --memory-recycle).")
	for _, p := range slots {
		for _, c := range p.Restarts.ByReason() {
			e.sample("goinit_process_restarts_total", float64(c.Value), append(procLabels(p), "reason", c.Label)...)
		}
	}
	e.family("goinit_process_oom_kills_total", "counter", "OOM kills in the cgroups of this slot's processes, including children of the process.")
	for _, p := range slots {
		e.sample("goinit_process_oom_kills_total", float64(p.OOMKills), procLabels(p)...)
	}
	e.family("goinit_process_memory_bytes", "gauge", "Memory used by the cgroup of this slot's current process (only with per-worker cgroups).")
	for _, p := range slots {
		if p.HasCgroup {
			e.sample("goinit_process_memory_bytes", float64(p.MemoryBytes), procLabels(p)...)
		}
	}
	e.family("goinit_process_cpu_seconds_total", "counter", "CPU time, user and system, used by this slot's cgroups, its replacements' included (only with per-worker cgroups).")
	for _, p := range slots {
		if p.HasCgroup {
			e.sample("goinit_process_cpu_seconds_total", p.CPUSeconds, procLabels(p)...)
		}
	}

	e.family("goinit_orphans_reaped_total", "counter", "Re-parented (orphan) processes goinit has reaped.")
	e.sample("goinit_orphans_reaped_total", float64(s.OrphansReaped))
	e.family("goinit_reloads_total", "counter", "Finished rolling reloads by result: succeeded, or rolled-back (a replacement failed and the old version kept serving).")
	e.sample("goinit_reloads_total", float64(s.Reloads.Succeeded), "result", "succeeded")
	e.sample("goinit_reloads_total", float64(s.Reloads.RolledBack), "result", "rolled-back")
	e.family("goinit_messages_relayed_total", "counter", "Messages goinit delivered between processes.")
	e.sample("goinit_messages_relayed_total", float64(s.Messages.Relayed))
	e.family("goinit_messages_dropped_total", "counter", "Messages goinit dropped, by reason.")
	for _, c := range s.Messages.Dropped() {
		e.sample("goinit_messages_dropped_total", float64(c.Value), "reason", c.Label)
	}
	e.family("goinit_worker_log_lines_dropped_total", "counter", "Worker log lines dropped because goinit's stdout or stderr could not keep up (--worker-logs=prefix|json).")
	e.sample("goinit_worker_log_lines_dropped_total", float64(s.LogLinesDropped))

	e.family("goinit_socket_accept_queue_length", "gauge", "Connections waiting in a listening TCP socket's accept queue that no worker has accepted yet.")
	for _, sk := range s.Sockets {
		if n, ok := queues[sk.Inode]; ok {
			owner := "shared"
			if sk.Worker >= 0 {
				owner = strconv.Itoa(sk.Worker)
			}
			e.sample("goinit_socket_accept_queue_length", float64(n), "address", sk.Address, "worker", owner)
		}
	}

	e.family("goinit_snapshot_age_seconds", "gauge", "Age of the supervisor snapshot these metrics were written from.")
	age := 0.0
	if !s.Taken.IsZero() {
		age = math.Max(0, time.Since(s.Taken).Seconds())
	}
	e.sample("goinit_snapshot_age_seconds", age)

	if e.err != nil {
		return e.err
	}
	return e.w.Flush()
}

// roles lists the roles to count in goinit_processes: those present, and
// worker whenever the pool has slots (so a pool scaled to nothing still
// reports zeros).
func roles(s *state.Snapshot) []state.Role {
	seen := map[state.Role]bool{}
	if s.Pool.Workers > 0 {
		seen[state.RoleWorker] = true
	}
	for _, p := range s.Processes {
		seen[p.Role] = true
	}
	var out []state.Role
	for _, r := range []state.Role{state.RoleCommand, state.RoleWorker, state.RoleAgent} {
		if seen[r] {
			out = append(out, r)
		}
	}
	return out
}

// procLabels are the labels that name one slot. A fresh slice each call,
// so callers may append to it.
func procLabels(p state.Process) []string {
	id := string(p.Role)
	if p.Role == state.RoleWorker {
		id = strconv.Itoa(p.ID)
	}
	return []string{"role", string(p.Role), "worker", id}
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// encoder writes the text format, keeping the first write error.
type encoder struct {
	w   *bufio.Writer
	err error
}

func (e *encoder) family(name, typ, help string) {
	e.put("# HELP ", name, " ", helpEscaper.Replace(help), "\n# TYPE ", name, " ", typ, "\n")
}

// sample writes one series; labels are name, value pairs.
func (e *encoder) sample(name string, v float64, labels ...string) {
	e.put(name)
	for i := 0; i+1 < len(labels); i += 2 {
		sep := ","
		if i == 0 {
			sep = "{"
		}
		e.put(sep, labels[i], `="`, labelEscaper.Replace(labels[i+1]), `"`)
	}
	if len(labels) > 0 {
		e.put("}")
	}
	e.put(" ", formatValue(v), "\n")
}

func (e *encoder) put(parts ...string) {
	for _, p := range parts {
		if e.err != nil {
			return
		}
		_, e.err = e.w.WriteString(p)
	}
}

// formatValue writes integers without an exponent (1e+06 is valid but
// hard to read) and anything else in the shortest exact form.
func formatValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// The text format's escapes: HELP text escapes backslash and newline,
// label values also the double quote.
var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)
