package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// harness carries one run's state through the sections.
type harness struct {
	cfg    Config
	plan   Plan
	tools  Tools
	launch launcher
	report *Report
	// tmp is a temporary directory for pm2 homes and such; removed at the end.
	tmp string
	// skipped records contenders left out, so each is noted once.
	skipped map[string]bool
}

// Run measures every figure and returns the report. Figures that cannot be
// measured are left out with a note; the error then says which failed. The
// report is valid, and worth printing, even when the error is not nil.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return &Report{}, fmt.Errorf("repository root: %w", err)
	}
	cfg.Root = root
	if cfg.Cache == "" {
		cfg.Cache = filepath.Join(cfg.Root, ".cache")
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	h := &harness{cfg: cfg, plan: cfg.Plan, report: &Report{}, skipped: map[string]bool{}}
	h.logf("building goinit and the benchmark programs into %s", filepath.Join(cfg.Cache, "bench"))
	if cfg.Cache, err = filepath.Abs(cfg.Cache); err != nil {
		return h.report, fmt.Errorf("cache directory: %w", err)
	}
	tools, err := findTools(ctx, cfg.Root, cfg.Cache)
	if err != nil {
		return h.report, err
	}
	h.tools = tools
	if cfg.RequireAll && len(tools.Missing) > 0 {
		var missing []string
		for name, why := range tools.Missing {
			missing = append(missing, name+": "+why)
		}
		return h.report, fmt.Errorf("peers missing (run bench/install-peers.sh): %s", strings.Join(missing, "; "))
	}
	if h.tmp, err = os.MkdirTemp("", "goinit-bench-"); err != nil {
		return h.report, fmt.Errorf("create temporary directory: %w", err)
	}
	defer os.RemoveAll(h.tmp)
	defer h.killStrayPM2()
	nsErr := probePIDNamespace(tools.True)
	h.launch = launcher{pidNS: nsErr == nil, procns: tools.ProcNS}
	h.header(ctx, nsErr)

	sections := []section{
		{"init cost", h.initCost},
		{"signal latency", h.signalLatency},
		{"reaping", h.reaping},
		{"cluster throughput", h.throughput},
		{"faults under load", h.faults},
		{"reload under load", h.reloadUnderLoad},
	}
	var errs []error
	for _, name := range cfg.Only {
		if !slices.ContainsFunc(sections, func(s section) bool { return s.name == name }) {
			return h.report, fmt.Errorf("no section %q to run", name)
		}
	}
	for _, s := range sections {
		if len(cfg.Only) > 0 && !slices.Contains(cfg.Only, s.name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		start := time.Now()
		h.logf("== %s", s.name)
		if err := s.run(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
			h.report.note("%s: not all figures measured: %v", s.name, err)
		}
		h.logf("== %s done in %v", s.name, time.Since(start).Round(time.Millisecond))
	}
	h.report.sortByFigure()
	return h.report, errors.Join(errs...)
}

// section is one group of figures.
type section struct {
	name string
	run  func(context.Context) error
}

// header fills the lines printed above the table.
func (h *harness) header(ctx context.Context, nsErr error) {
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	how := "Each contender runs as PID 1 of its own PID namespace, as in a container"
	if nsErr != nil {
		how = "PID namespaces unavailable (" + nsErr.Error() + "): contenders run as child subreapers"
	}
	h.report.Header = []string{
		fmt.Sprintf("goinit benchmark, %s mode, %s, Linux %s, %d CPUs, %s, %s",
			h.cfg.Mode, time.Now().UTC().Format("2006-01-02 15:04 UTC"), strings.TrimSpace(string(kernel)),
			runtime.NumCPU(), runtime.Version(), host),
		"Peers: " + cmp.Or(strings.Join(h.tools.versions(ctx), "; "), "none found") + ".",
		"",
		"Median over the runs, spread is min – max; ÷ goinit is the contender's median divided by goinit's in the same run",
		"(for sizes, latencies, errors, balance and CPU lower is better; for requests/s higher is better).", how + ".",
	}
}

// skip notes once that contender is left out because of err, or returns err
// if the configuration requires every peer.
func (h *harness) skip(contender string, err error) error {
	if h.cfg.RequireAll {
		return fmt.Errorf("%s: %w", contender, err)
	}
	if !h.skipped[contender] {
		h.skipped[contender] = true
		h.report.note("%s left out: %v", contender, err)
		h.logf("skipping %s: %v", contender, err)
	}
	return nil
}

// logf prints one progress line.
func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.cfg.Log, "bench: "+format+"\n", args...)
}

// rotate returns xs starting at index i mod len(xs), so that repeated runs
// alternate which contender goes first.
func rotate[T any](xs []T, i int) []T {
	if len(xs) == 0 {
		return xs
	}
	i %= len(xs)
	return append(append([]T(nil), xs[i:]...), xs[:i]...)
}

// seconds converts durations to the float seconds that Summarize takes.
func seconds(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}
