package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mattn/go-shellwords"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/goinit/goinit/cgroup"
	"github.com/goinit/goinit/cluster"
	"github.com/goinit/goinit/health"
	"github.com/goinit/goinit/portshare"
	"github.com/goinit/goinit/signals"
	"github.com/goinit/goinit/worklog"
)

// envPrefix prefixes the environment variable of every flag:
// --stop-timeout is GOINIT_STOP_TIMEOUT.
const envPrefix = "GOINIT_"

// Defaults that are not the cluster package's.
const (
	// defaultStopTimeout fits inside Kubernetes' default 30 s grace period,
	// leaving goinit time to SIGKILL and reap before the kubelet does.
	defaultStopTimeout = 25 * time.Second
)

// workerVars are the variables goinit sets for its workers. They describe
// the pool a process belongs to, not a setting: a goinit run by a worker
// reads neither GOINIT_WORKER_ID nor (then) GOINIT_WORKERS as --workers.
var workerVars = map[string]bool{"GOINIT_WORKER_ID": true, "GOINIT_WORKERS": true, "GOINIT_IPC_FD": true, "GOINIT_ROLE": true}

// usageError is a bad flag, variable or value: goinit exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// config is everything goinit was asked to do, validated.
type config struct {
	command []string
	path    string // command[0] resolved in PATH

	workers     int
	workersHow  string // how the count was derived, for the log
	clusterMode bool   // --workers given: N supervised workers, restart on failure
	listen      []string
	balance     string
	sharePorts  portshare.Policy

	policy     cluster.Policy
	stopSignal unix.Signal

	// ready says when a worker is ready; ipc gives workers a channel to
	// goinit; reloadSignal (signals.None: none) reloads the workers.
	ready        cluster.Readiness
	ipc          bool
	reloadSignal unix.Signal
	reloadSurge  int
	watchdog     time.Duration
	maxLifetime  time.Duration
	// memoryRecycle replaces a worker whose cgroup uses more; 0 = never.
	memoryRecycle int64

	// agent is the agent's command (--agent), split by shell word rules;
	// nil without one. agentPath is agent[0] resolved in PATH.
	agent       []string
	agentPath   string
	agentReady  cluster.Readiness
	agentLimits cgroup.Limits

	// control is --control ("" = the default path when it can be made,
	// "off"); healthAddr the health server's address, "" = off.
	control    string
	healthAddr string
	minReady   int
	workerLogs worklog.Mode

	stopTimeout  time.Duration
	preStopDelay time.Duration
	groupScope   bool
	rewrite      signals.Rewrite
	orphans      string
	exitMap      map[int]int
	pdeathsig    unix.Signal
	user         *credential

	limits     cgroup.Limits
	cgroupMode string

	logFormat string
	logLevel  string
	logReaped bool
}

// credential is a resolved --user.
type credential struct {
	uid, gid uint32
	groups   []uint32
	home     string
	name     string
}

// flags holds the raw values as pflag parses them.
type flags struct {
	fs *pflag.FlagSet

	workers                                                string
	listenAddrs                                            []string
	balance, restart                                       string
	restartDelay, restartDelayMax, minUptime, restartWin   time.Duration
	maxRestarts                                            int
	permanentCodes                                         []string
	stopSignal                                             string
	stopTimeout, preStopDelay                              time.Duration
	scope, orphans, pdeathsig, user, logFormat, logLevel   string
	rewrites, exitMaps                                     []string
	memoryLimit, memoryHigh, cpuLimit, pidsLimit, cgroupMd string
	memoryRecycle                                          string
	sharePorts                                             string
	ready, ipc, reloadSignal                               string
	agent, agentReady                                      string
	agentMemory, agentCPU, agentPids                       string
	control, healthAddr, workerLogs                        string
	minReady                                               int
	readyTimeout, watchdog, maxLifetime                    time.Duration
	reloadSurge                                            int
	version, help, logReaped                               bool

	// fromEnv maps a flag to the variable that set it, so that a later
	// validation error names what the user actually wrote.
	fromEnv map[string]string
}

func newFlags() *flags {
	f := &flags{fs: pflag.NewFlagSet("goinit", pflag.ContinueOnError), fromEnv: map[string]string{}}
	fs := f.fs
	fs.SetOutput(io.Discard)
	// The child's own flags come after the command and are never ours.
	fs.SetInterspersed(false)
	fs.SortFlags = false

	fs.StringVar(&f.workers, "workers", "", "run N copies of the command as supervised workers; \"auto\" = CPUs this container may use")
	fs.StringArrayVar(&f.listenAddrs, "listen", nil, "bind ADDR and pass it to the workers by socket activation (repeatable): :8080, tcp6://[::]:8080, unix:///run/app.sock, udp://:5353")
	fs.StringVar(&f.balance, "balance", "shared", "shared: one socket for all workers; reuseport: one SO_REUSEPORT socket per worker")
	fs.StringVar(&f.sharePorts, "share-ports", "", "share the TCP ports workers bind themselves: auto (every port; default with --workers), off (default for one command), or a list 3000,tcp:8443")
	fs.StringVar(&f.restart, "restart", "", "always, on-failure or never (default never for a single command, on-failure with --workers)")
	fs.StringVar(&f.agent, "agent", "", "run this command as the agent, one process beside the workers, started and ready before them (shell word rules, no shell)")
	fs.StringVar(&f.agentReady, "agent-ready", "", "when the agent is ready, as --ready (default: --ready)")
	fs.StringVar(&f.agentMemory, "agent-memory-limit", "", "the agent's memory limit, as --memory-limit")
	fs.StringVar(&f.agentCPU, "agent-cpu-limit", "", "the agent's CPU limit, as --cpu-limit")
	fs.StringVar(&f.agentPids, "agent-pids-limit", "", "the agent's limit on processes and threads, as --pids-limit")
	fs.StringVar(&f.ready, "ready", "auto", "when a worker is ready: auto (listen or message; exec until a worker ever listened), exec, listen, message, notify, delay:DUR")
	fs.DurationVar(&f.readyTimeout, "ready-timeout", cluster.DefaultReadyTimeout, "a worker not ready by then is a failed start (0 = wait forever)")
	fs.StringVar(&f.ipc, "ipc", "on", "on: each worker gets a JSON-lines channel to goinit (GOINIT_IPC_FD, Node's process.send); off")
	fs.StringVar(&f.reloadSignal, "reload-signal", "HUP", "signal that reloads the workers one at a time (with --workers); NONE forwards it instead")
	fs.IntVar(&f.reloadSurge, "reload-surge", 1, "replacements a reload starts at once")
	fs.DurationVar(&f.watchdog, "watchdog", 0, "a ready worker silent this long (no WATCHDOG=1 or \"ping\") is hung: SIGABRT, SIGKILL, restart (0 = off)")
	fs.DurationVar(&f.maxLifetime, "max-lifetime", 0, "replace a worker gracefully after it ran this long, ±10% (0 = never)")
	fs.DurationVar(&f.restartDelay, "restart-delay", cluster.DefaultRestartDelay, "first restart delay; doubles per crash, ±20% jitter")
	fs.DurationVar(&f.restartDelayMax, "restart-delay-max", cluster.DefaultRestartDelayMax, "cap on the restart delay")
	fs.DurationVar(&f.minUptime, "min-uptime", cluster.DefaultMinUptime, "uptime after which a worker's backoff starts again from --restart-delay")
	fs.IntVar(&f.maxRestarts, "max-restarts", cluster.DefaultMaxRestarts, "restarts of one worker within --restart-window before goinit gives up (0 = no limit)")
	fs.DurationVar(&f.restartWin, "restart-window", cluster.DefaultRestartWindow, "window for --max-restarts")
	fs.StringSliceVar(&f.permanentCodes, "permanent-exit-codes", nil, "worker exit codes that are never retried: goinit exits with the code")
	fs.StringVar(&f.stopSignal, "stop-signal", "TERM", "signal that stops workers (and leftover processes) on shutdown")
	fs.DurationVar(&f.stopTimeout, "stop-timeout", defaultStopTimeout, "grace period after the stop signal before SIGKILL")
	fs.DurationVar(&f.preStopDelay, "pre-stop-delay", 0, "hold a stop signal this long before forwarding it (load balancer drain)")
	fs.StringVar(&f.scope, "signal-scope", "group", "group: signal the child's whole process group; child: the child alone")
	fs.StringArrayVar(&f.rewrites, "rewrite", nil, "rewrite a signal before forwarding, FROM:TO (repeatable): TERM:QUIT, 15:3, WINCH:NONE")
	fs.StringVar(&f.orphans, "orphans", "terminate", "after the child exits, re-parented processes are: terminate (signal, then kill), wait (up to --stop-timeout), ignore")
	fs.StringArrayVar(&f.exitMaps, "exit-code-map", nil, "map the child's exit code FROM:TO (repeatable): 143:0")
	fs.StringVar(&f.pdeathsig, "pdeathsig", "", "signal goinit receives when its parent dies (when not PID 1)")
	fs.StringVar(&f.user, "user", "", "run the command as NAME|UID[:GROUP|GID]")
	fs.StringVar(&f.memoryLimit, "memory-limit", "", "per-worker memory limit: 256Mi, 1G, bytes")
	fs.StringVar(&f.memoryRecycle, "memory-recycle", "", "replace a worker gracefully once its cgroup memory passes SIZE, before --memory-limit kills it: 200Mi")
	fs.StringVar(&f.memoryHigh, "memory-high", "", "per-worker memory throttling threshold (cgroup v2): 200Mi")
	fs.StringVar(&f.cpuLimit, "cpu-limit", "", "per-worker CPU limit in CPUs: 0.5, 2, 500m")
	fs.StringVar(&f.pidsLimit, "pids-limit", "", "per-worker limit on processes and threads")
	fs.StringVar(&f.cgroupMd, "cgroup", "required", "required: limits that cannot be applied are an error; optional: warn and run without")
	fs.StringVar(&f.control, "control", "", "control socket for goinit status/reload/scale/...: PATH, or off (default /run/goinit/control.sock when /run/goinit can be made)")
	fs.StringVar(&f.healthAddr, "health-addr", "", "serve /healthz, /readyz and /metrics on HOST:PORT (a port alone is 127.0.0.1:PORT; default off)")
	fs.IntVar(&f.minReady, "min-ready", 1, "ready workers /readyz needs for 200")
	fs.StringVar(&f.workerLogs, "worker-logs", "inherit", "workers' stdout/stderr: inherit (straight through), prefix ([worker 2] ...), json (one object per line)")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&f.logReaped, "log-reaped", false, "log every reaped orphan (zombie) at warn level, like tini -w")
	fs.BoolVarP(&f.version, "version", "V", false, "print the version and exit")
	fs.BoolVarP(&f.help, "help", "h", false, "print this help and exit")
	return f
}

// envName is the variable that stands for a flag.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// parse reads args (without the program name) and environ. Flags win over
// their variables. It returns errHelp or errVersion for those flags.
func (f *flags) parse(args, environ []string) error {
	if err := f.fs.Parse(args); err != nil {
		return usagef("%s", flagError(err))
	}
	if f.help || f.version {
		return nil
	}
	known := map[string]*pflag.Flag{}
	f.fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Name != "help" && fl.Name != "version" {
			known[envName(fl.Name)] = fl
		}
	})
	var names []string
	vals := map[string]string{}
	isWorker := false
	for _, kv := range environ {
		if strings.HasPrefix(kv, "GOINIT_WORKER_ID=") {
			isWorker = true
		}
	}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, envPrefix) || k == "GOINIT_WORKER_ID" || (isWorker && workerVars[k]) {
			continue
		}
		if _, ok := known[k]; !ok {
			return usagef("unknown variable %s; goinit reads only the GOINIT_* variables that match its flags (see goinit --help)", k)
		}
		names = append(names, k)
		vals[k] = v
	}
	sort.Strings(names)
	for _, k := range names {
		fl := known[k]
		if fl.Changed {
			continue
		}
		parts := []string{vals[k]}
		if fl.Value.Type() == "stringArray" {
			parts = strings.Split(vals[k], ",")
		}
		for _, v := range parts {
			if err := f.fs.Set(fl.Name, v); err != nil {
				return usagef("invalid value %q for $%s (--%s): %s", vals[k], k, fl.Name, valueError(err))
			}
		}
		f.fromEnv[fl.Name] = k
	}
	return nil
}

// name names the source of a flag's value in an error: "--stop-signal", or
// "$GOINIT_STOP_SIGNAL (--stop-signal)" when it came from the environment.
func (f *flags) name(flag string) string {
	if v, ok := f.fromEnv[flag]; ok {
		return "$" + v + " (--" + flag + ")"
	}
	return "--" + flag
}

// flagError makes a pflag parse error one helpful line.
func flagError(err error) string {
	msg := err.Error()
	if strings.HasPrefix(msg, "unknown") {
		return msg + "; run goinit --help for the flags, and put the command after --"
	}
	return msg
}

// valueError keeps the reason of a pflag Set error without its prefix.
func valueError(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "flag: "); i >= 0 {
		return msg[i+len("flag: "):]
	}
	return msg
}

// config validates the parsed flags into a config. cpus derives
// --workers=auto.
func (f *flags) config(cpus func() (int, string, error)) (*config, error) {
	c := &config{
		command:      f.fs.Args(),
		listen:       f.listenAddrs,
		stopTimeout:  f.stopTimeout,
		preStopDelay: f.preStopDelay,
		rewrite:      signals.Rewrite{},
		exitMap:      map[int]int{},
		logFormat:    f.logFormat,
		logLevel:     f.logLevel,
		logReaped:    f.logReaped,
		cgroupMode:   f.cgroupMd,
	}
	if len(c.command) == 0 {
		return nil, usagef("no command given; usage: goinit [flags] -- COMMAND [ARG...]")
	}
	if err := oneOf(f, "log-format", f.logFormat, "text", "json"); err != nil {
		return nil, err
	}
	if err := oneOf(f, "log-level", f.logLevel, "debug", "info", "warn", "error"); err != nil {
		return nil, err
	}
	if err := oneOf(f, "signal-scope", f.scope, "group", "child"); err != nil {
		return nil, err
	}
	c.groupScope = f.scope == "group"
	if err := oneOf(f, "orphans", f.orphans, "terminate", "wait", "ignore"); err != nil {
		return nil, err
	}
	c.orphans = f.orphans
	if err := oneOf(f, "balance", f.balance, "shared", "reuseport"); err != nil {
		return nil, err
	}
	c.balance = f.balance
	if err := oneOf(f, "cgroup", f.cgroupMd, "required", "optional"); err != nil {
		return nil, err
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"stop-timeout", f.stopTimeout}, {"pre-stop-delay", f.preStopDelay}, {"restart-delay", f.restartDelay},
		{"restart-delay-max", f.restartDelayMax}, {"min-uptime", f.minUptime}, {"restart-window", f.restartWin}} {
		if d.v < 0 {
			return nil, usagef("invalid %s %q: must not be negative", f.name(d.name), d.v)
		}
	}
	if f.restartDelayMax < f.restartDelay {
		return nil, usagef("invalid %s %s: must be at least --restart-delay (%s)", f.name("restart-delay-max"), f.restartDelayMax, f.restartDelay)
	}
	if f.maxRestarts < 0 {
		return nil, usagef("invalid %s %d: must be 0 (no limit) or more", f.name("max-restarts"), f.maxRestarts)
	}
	for _, r := range f.rewrites {
		if err := c.rewrite.ParseRule(r); err != nil {
			return nil, usagef("invalid %s: %v", f.name("rewrite"), err)
		}
	}
	for _, m := range f.exitMaps {
		from, to, err := parseCodePair(m)
		if err != nil {
			return nil, usagef("invalid %s %q: %v", f.name("exit-code-map"), m, err)
		}
		c.exitMap[from] = to
	}
	sig, err := signals.Parse(f.stopSignal)
	if err != nil {
		return nil, usagef("invalid %s: %v", f.name("stop-signal"), err)
	}
	c.stopSignal = sig
	if f.pdeathsig != "" {
		if c.pdeathsig, err = signals.Parse(f.pdeathsig); err != nil {
			return nil, usagef("invalid %s: %v", f.name("pdeathsig"), err)
		}
	}
	if err := f.workerConfig(c, cpus); err != nil {
		return nil, err
	}
	share := f.sharePorts
	if share == "" {
		share = "off"
		if c.clusterMode {
			share = "auto"
		}
	}
	if c.sharePorts, err = portshare.ParsePolicy(share); err != nil {
		if v, ok := f.fromEnv["share-ports"]; ok {
			return nil, usagef("$%s: %v", v, err)
		}
		return nil, usagef("%v", err)
	}
	if err := f.readyConfig(c); err != nil {
		return nil, err
	}
	if err := f.agentConfig(c); err != nil {
		return nil, err
	}
	if err := f.operateConfig(c); err != nil {
		return nil, err
	}
	if c.limits, err = f.limits(); err != nil {
		return nil, err
	}
	if f.memoryRecycle != "" {
		if c.memoryRecycle, err = cgroup.ParseSize(f.memoryRecycle); err != nil {
			return nil, usagef("invalid %s: %v", f.name("memory-recycle"), err)
		}
		if c.limits.Memory == 0 || c.memoryRecycle >= c.limits.Memory {
			return nil, usagef("invalid %s %s: it must come with a larger --memory-limit, whose cgroup goinit reads the worker's memory from (e.g. --memory-limit=256Mi --memory-recycle=200Mi)", f.name("memory-recycle"), f.memoryRecycle)
		}
	}
	if f.user != "" {
		if c.user, err = lookupUser(f.user); err != nil {
			return nil, usagef("invalid %s %q: %v", f.name("user"), f.user, err)
		}
	}
	return c, nil
}

// workerConfig validates --workers, --restart and the restart policy.
func (f *flags) workerConfig(c *config, cpus func() (int, string, error)) error {
	c.workers = 1
	if f.fs.Changed("workers") {
		c.clusterMode = true
		if f.workers == "auto" {
			n, how, err := cpus()
			if err != nil {
				return fmt.Errorf("--workers=auto: cannot count the CPUs this container may use: %w", err)
			}
			c.workers, c.workersHow = n, how
		} else {
			n, err := strconv.Atoi(f.workers)
			if err != nil || n < 1 {
				return usagef("invalid %s %q: use a number of workers from 1 up, or auto", f.name("workers"), f.workers)
			}
			c.workers = n
		}
	}
	restart := cluster.RestartNever
	if c.clusterMode {
		restart = cluster.RestartOnFailure
	}
	if f.restart != "" {
		r, err := cluster.ParseRestart(f.restart)
		if err != nil {
			return usagef("invalid %s: %v", f.name("restart"), err)
		}
		restart = r
	}
	c.policy = cluster.Policy{
		Restart: restart, Delay: f.restartDelay, MaxDelay: f.restartDelayMax, MinUptime: f.minUptime,
		MaxRestarts: f.maxRestarts, Window: f.restartWin, Jitter: cluster.DefaultJitter,
	}
	for _, s := range f.permanentCodes {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 || n > 255 {
			return usagef("invalid %s %q: use exit codes from 0 to 255, comma-separated", f.name("permanent-exit-codes"), s)
		}
		c.policy.PermanentCodes = append(c.policy.PermanentCodes, n)
	}
	return nil
}

// readyConfig validates readiness, the channel, reloads and recycling.
func (f *flags) readyConfig(c *config) error {
	r, err := cluster.ParseReadyMode(f.ready)
	if err != nil {
		return usagef("invalid %s: %v", f.name("ready"), err)
	}
	if f.readyTimeout < 0 {
		return usagef("invalid %s %s: must not be negative", f.name("ready-timeout"), f.readyTimeout)
	}
	r.Timeout = f.readyTimeout
	c.ready = r
	if err := oneOf(f, "ipc", f.ipc, "on", "off"); err != nil {
		return err
	}
	c.ipc = f.ipc == "on" && c.clusterMode
	if r.Mode == cluster.ReadyMessage && !c.ipc {
		return usagef("invalid %s: --ready=message needs the channel to goinit, which --ipc=off (or a single command) turns off", f.name("ready"))
	}
	if c.reloadSignal, err = signals.ParseTarget(f.reloadSignal); err != nil {
		return usagef("invalid %s: %v", f.name("reload-signal"), err)
	}
	if f.reloadSurge < 1 {
		return usagef("invalid %s %d: at least 1", f.name("reload-surge"), f.reloadSurge)
	}
	c.reloadSurge = f.reloadSurge
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"watchdog", f.watchdog}, {"max-lifetime", f.maxLifetime}} {
		if d.v < 0 {
			return usagef("invalid %s %s: must not be negative", f.name(d.name), d.v)
		}
	}
	c.watchdog, c.maxLifetime = f.watchdog, f.maxLifetime
	if c.watchdog > 0 && !c.ipc && r.Mode != cluster.ReadyNotify {
		return usagef("invalid %s: the watchdog needs heartbeats: --ready=notify (WATCHDOG=1) or the channel (\"ping\", --ipc=on with --workers)", f.name("watchdog"))
	}
	return nil
}

// agentConfig validates --agent and --agent-ready.
func (f *flags) agentConfig(c *config) error {
	if f.agent == "" {
		for _, name := range []string{"agent-ready", "agent-memory-limit", "agent-cpu-limit", "agent-pids-limit"} {
			if f.fs.Changed(name) || f.fromEnv[name] != "" {
				return usagef("invalid %s: there is no --agent", f.name(name))
			}
		}
		return nil
	}
	if !c.clusterMode {
		return usagef("invalid %s: an agent runs beside workers; add --workers", f.name("agent"))
	}
	words, err := shellwords.Parse(f.agent)
	if err != nil || len(words) == 0 {
		why := "it is empty"
		if err != nil {
			why = err.Error()
		}
		return usagef("invalid %s %q: %s; give a command as a shell would split it, e.g. --agent='node agent.js --port 7000'", f.name("agent"), f.agent, why)
	}
	c.agent = words
	c.agentReady = c.ready
	if f.agentReady != "" {
		r, err := cluster.ParseReadyMode(f.agentReady)
		if err != nil {
			return usagef("invalid %s: %v", f.name("agent-ready"), err)
		}
		r.Timeout = c.ready.Timeout
		c.agentReady = r
	}
	if c.agentLimits, err = f.limitsOf("agent-memory-limit", f.agentMemory, "agent-cpu-limit", f.agentCPU, "agent-pids-limit", f.agentPids); err != nil {
		return err
	}
	if c.agentReady.Mode == cluster.ReadyListen {
		return usagef("invalid %s: the agent's binds are not shared, so it never listens on a shared port; use message, notify, exec or delay:DUR", f.name("agent-ready"))
	}
	return nil
}

// operateConfig validates the control socket, health server and worker
// logs.
func (f *flags) operateConfig(c *config) error {
	c.control = f.control
	if c.control != "" && c.control != "off" && !strings.HasPrefix(c.control, "/") {
		return usagef("invalid %s %q: use an absolute path such as /run/goinit/control.sock, or off", f.name("control"), f.control)
	}
	addr, err := health.ParseAddr(f.healthAddr)
	if err != nil {
		return usagef("invalid %s: %v", f.name("health-addr"), err)
	}
	c.healthAddr = addr
	if f.minReady < 0 {
		return usagef("invalid %s %d: 0 or more", f.name("min-ready"), f.minReady)
	}
	c.minReady = f.minReady
	if c.workerLogs, err = worklog.ParseMode(f.workerLogs); err != nil {
		return usagef("invalid %s: %v", f.name("worker-logs"), err)
	}
	return nil
}

// limits reads the per-worker limit flags.
func (f *flags) limits() (cgroup.Limits, error) {
	l, err := f.limitsOf("memory-limit", f.memoryLimit, "cpu-limit", f.cpuLimit, "pids-limit", f.pidsLimit)
	if err != nil {
		return l, err
	}
	if f.memoryHigh != "" {
		if l.MemoryHigh, err = cgroup.ParseSize(f.memoryHigh); err != nil {
			return l, usagef("invalid %s: %v", f.name("memory-high"), err)
		}
	}
	if err := l.Validate(); err != nil {
		return l, usagef("invalid limits: %v", err)
	}
	return l, nil
}

// limitsOf reads one set of memory, CPU and pids limit flags (the workers'
// or the agent's), each named by its flag.
func (f *flags) limitsOf(memFlag, mem, cpuFlag, cpu, pidsFlag, pids string) (cgroup.Limits, error) {
	var l cgroup.Limits
	var err error
	if mem != "" {
		if l.Memory, err = cgroup.ParseSize(mem); err != nil {
			return l, usagef("invalid %s: %v", f.name(memFlag), err)
		}
	}
	if cpu != "" {
		if l.CPU, err = cgroup.ParseCPUs(cpu); err != nil {
			return l, usagef("invalid %s: %v", f.name(cpuFlag), err)
		}
	}
	if pids != "" {
		n, err := strconv.ParseInt(pids, 10, 64)
		if err != nil || n < 1 {
			return l, usagef("invalid %s %q: use a whole number of processes from 1 up", f.name(pidsFlag), pids)
		}
		l.Pids = n
	}
	if err := l.Validate(); err != nil {
		return l, usagef("invalid %s: %v", f.name(memFlag), err)
	}
	return l, nil
}

func oneOf(f *flags, flag, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return usagef("invalid %s %q: use %s", f.name(flag), v, strings.Join(allowed, ", "))
}

// parseCodePair reads "FROM:TO" exit codes, each 0..255.
func parseCodePair(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, errors.New("expected FROM:TO exit codes, like 143:0")
	}
	from, err1 := strconv.Atoi(a)
	to, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || from < 0 || from > 255 || to < 0 || to > 255 {
		return 0, 0, errors.New("exit codes must be numbers from 0 to 255, like 143:0")
	}
	return from, to, nil
}

// lookupUser resolves NAME|UID[:GROUP|GID] from /etc/passwd and /etc/group.
// A numeric uid that has no passwd entry is accepted, as Docker's USER does.
func lookupUser(spec string) (*credential, error) {
	name, group, hasGroup := strings.Cut(spec, ":")
	cred := &credential{home: "/"}
	var u *user.User
	var err error
	if uid, nerr := strconv.ParseUint(name, 10, 32); nerr == nil {
		cred.uid = uint32(uid)
		u, err = user.LookupId(name)
		if err != nil {
			u = nil
			if !hasGroup {
				cred.gid = cred.uid
			}
		}
	} else {
		if u, err = user.Lookup(name); err != nil {
			return nil, fmt.Errorf("no such user in /etc/passwd; use an existing name or a numeric uid")
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		cred.uid = uint32(uid)
	}
	if u != nil {
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		cred.gid, cred.home, cred.name = uint32(gid), u.HomeDir, u.Username
		if ids, err := u.GroupIds(); err == nil {
			for _, g := range ids {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					cred.groups = append(cred.groups, uint32(n))
				}
			}
		}
	}
	if hasGroup {
		if gid, nerr := strconv.ParseUint(group, 10, 32); nerr == nil {
			cred.gid = uint32(gid)
		} else {
			g, err := user.LookupGroup(group)
			if err != nil {
				return nil, fmt.Errorf("no such group %q in /etc/group; use an existing name or a numeric gid", group)
			}
			gid, _ := strconv.ParseUint(g.Gid, 10, 32)
			cred.gid = uint32(gid)
		}
	}
	if os.Geteuid() != 0 && cred.uid != uint32(os.Geteuid()) {
		return nil, fmt.Errorf("switching user needs goinit to run as root (it runs as uid %d)", os.Geteuid())
	}
	return cred, nil
}

// resolveCommand finds the command in PATH. Its errors carry the exit code
// a shell would give: 127 not found, 126 found but not executable.
func resolveCommand(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err == nil || errors.Is(err, exec.ErrDot) {
		return path, nil
	}
	if !strings.Contains(name, "/") {
		return "", &cluster.StartError{Code: 127, Err: fmt.Errorf("cannot run %q: not found in PATH (%s)", name, os.Getenv("PATH"))}
	}
	st, serr := os.Stat(name)
	switch {
	case serr != nil && errors.Is(serr, os.ErrNotExist):
		return "", &cluster.StartError{Code: 127, Err: fmt.Errorf("cannot run %q: no such file", name)}
	case serr != nil:
		return "", &cluster.StartError{Code: 126, Err: fmt.Errorf("cannot run %q: %v", name, errors.Unwrap(serr))}
	case st.IsDir():
		return "", &cluster.StartError{Code: 126, Err: fmt.Errorf("cannot run %q: it is a directory", name)}
	}
	return "", &cluster.StartError{Code: 126, Err: fmt.Errorf("cannot run %q: permission denied (not executable)", name)}
}
