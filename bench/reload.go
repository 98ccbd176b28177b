package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// badRelease is the code a bad release puts in place of the app: it exits
// at start, before it listens, as a release with a syntax error, a missing
// module or a missing setting does.
const badRelease = `'use strict';
console.error('bench: bad release: exits at start');
process.exit(1);
`

// reloadPeer is one way of reloading N workers of the Node app.
type reloadPeer struct {
	name  string
	tools []string
	note  string
	// start runs n workers of the app at path on port and returns how to
	// reload them.
	start func(path string, port, n int) (*clusterRun, reloader, error)
}

// reloader asks a running contender to reload and waits, at most timeout,
// for it to report the outcome.
type reloader func(ctx context.Context, c *clusterRun, timeout time.Duration) (reloadOutcome, error)

// reloadOutcome is what a reload reported.
type reloadOutcome struct {
	// failed is true if the contender reported the reload as failed.
	failed bool
	// took is the time from asking to the report.
	took time.Duration
	// report says how it was reported, for the table's note.
	report string
}

// reloadPeers returns the contenders of the reload figures, goinit's first.
func (h *harness) reloadPeers() ([]reloadPeer, error) {
	t := h.tools
	all := []reloadPeer{
		{
			name: shareContender, tools: []string{"node", "nodeapp/app.js"},
			note: "examples/nodeapp, unmodified, --workers=N --share-ports=auto; SIGHUP, until goinit logs the outcome",
			start: func(path string, port, n int) (*clusterRun, reloader, error) {
				c, err := h.startShared(path, port, n)
				return c, h.goinitReload, err
			},
		},
		{
			name: "pm2", tools: []string{"node", "pm2-runtime", "pm2", "nodeapp/app.js"},
			note: "the same app, pm2-runtime start app.js -i N (cluster mode); pm2 reload app, until it exits",
			start: func(path string, port, n int) (*clusterRun, reloader, error) {
				home, err := os.MkdirTemp(h.tmp, "pm2-")
				if err != nil {
					return nil, nil, fmt.Errorf("create PM2_HOME: %w", err)
				}
				c, err := h.startSupervised(port, []string{t.PM2Runtime, "start", path, "-i", strconv.Itoa(n), "--name", "app"},
					startOptions{dir: home, env: []string{"PORT=" + strconv.Itoa(port), "PM2_HOME=" + home}})
				return c, h.pm2Reload(home), err
			},
		},
	}
	var out []reloadPeer
	for _, p := range all {
		if err := t.need(p.tools...); err != nil {
			if err := h.skip(p.name+" (reload)", err); err != nil {
				return nil, err
			}
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// goinitReload sends goinit SIGHUP and waits for its "reload complete" or
// "reload failed" line.
func (h *harness) goinitReload(ctx context.Context, c *clusterRun, timeout time.Duration) (reloadOutcome, error) {
	lines := c.sup.watchStderr("reload complete", "reload failed")
	t0 := time.Now()
	if err := syscall.Kill(c.sup.pid(), syscall.SIGHUP); err != nil {
		return reloadOutcome{}, fmt.Errorf("send SIGHUP: %w", err)
	}
	select {
	case line := <-lines:
		o := reloadOutcome{took: time.Since(t0), failed: strings.Contains(line, "reload failed")}
		o.report = "logged reload complete"
		if o.failed {
			o.report = "logged reload failed"
		}
		return o, nil
	case <-c.sup.done:
		return reloadOutcome{}, fmt.Errorf("goinit exited during the reload%s", c.stderr())
	case <-time.After(timeout):
		return reloadOutcome{}, fmt.Errorf("goinit logged no reload outcome within %v%s", timeout, c.stderr())
	case <-ctx.Done():
		return reloadOutcome{}, ctx.Err()
	}
}

// pm2Reload returns a reloader that runs `pm2 reload app` against the pm2
// whose home is home. The command runs as PID 1 of a PID namespace of its
// own: a daemon it might spawn (if it found none to talk to) dies with it.
func (h *harness) pm2Reload(home string) reloader {
	return func(ctx context.Context, c *clusterRun, timeout time.Duration) (reloadOutcome, error) {
		t0 := time.Now()
		p, err := h.launch.start([]string{h.tools.PM2, "reload", "app"}, startOptions{
			dir: home, env: []string{"PM2_HOME=" + home}, ownProc: true, mergeStdout: true,
		})
		if err != nil {
			return reloadOutcome{}, err
		}
		defer p.stop(0)
		select {
		case <-p.done:
		case <-time.After(timeout):
			return reloadOutcome{}, fmt.Errorf("pm2 reload still running after %v%s", timeout, p.stderrSuffix())
		case <-ctx.Done():
			return reloadOutcome{}, ctx.Err()
		}
		o := reloadOutcome{took: time.Since(t0)}
		code := p.exitCode()
		o.failed = code != 0
		o.report = fmt.Sprintf("pm2 reload exited %d, printed ✓ %d time(s)", code, strings.Count(p.stderr.String(), "✓"))
		return o, nil
	}
}

// reloadFigures names the figures of the reload section; built here only,
// so that declare, add and note use the same strings.
type reloadFigures struct {
	goodErrors, goodTook, badReported, badErrors string
}

// newReloadFigures returns the figure names for a load that goes on for
// after once a bad release's reload reported.
func newReloadFigures(after time.Duration) reloadFigures {
	return reloadFigures{
		goodErrors:  "8. failed requests during a reload under load, good release, " + nodeApp,
		goodTook:    "8. reload duration, good release: asked → reported done",
		badReported: "8. bad release (exits at start): reloads reported as failed",
		badErrors:   fmt.Sprintf("8. failed requests from the reload until %v after it reported, bad release", after),
	}
}

// reloadUnderLoad measures figure 8: requests lost while every worker is
// replaced under load, once with a release that works and once with one
// that exits at start.
func (h *harness) reloadUnderLoad(ctx context.Context) error {
	if err := h.tools.need("wrk"); err != nil {
		return h.skip("reload figures", err)
	}
	peers, err := h.reloadPeers()
	if err != nil {
		return err
	}
	figs := newReloadFigures(h.plan.ReloadAfter)
	f := newFigures()
	f.ref = shareContender
	f.declare(Row{Figure: figs.goodErrors, Unit: Count})
	f.declare(Row{Figure: figs.goodTook, Unit: Seconds})
	f.declare(Row{Figure: figs.badReported, Unit: Percent})
	f.declare(Row{Figure: figs.badErrors, Unit: Count})
	var errs []error
	for rep := 0; rep < h.plan.ReloadReps; rep++ {
		for _, bad := range []bool{false, true} {
			for _, peer := range rotate(peers, rep) {
				if err := ctx.Err(); err != nil {
					return err
				}
				kind := "good"
				if bad {
					kind = "bad"
				}
				h.logf("reload, %s release, %s, run %d of %d", kind, peer.name, rep+1, h.plan.ReloadReps)
				if err := h.reloadOnce(ctx, peer, bad, f, figs); err != nil {
					errs = append(errs, fmt.Errorf("%s release, %s: %w", kind, peer.name, err))
					fig := figs.goodErrors
					if bad {
						fig = figs.badErrors
					}
					f.note(fig, peer.name, "failed: "+err.Error())
				}
			}
		}
	}
	var names []string
	for _, p := range peers {
		names = append(names, p.name)
		if f.notes[figs.goodTook][p.name] == "" {
			f.note(figs.goodTook, p.name, p.note)
		}
	}
	f.rows(h.report, names)
	return errors.Join(errs...)
}

// reloadOnce starts peer on a copy of the app, loads it with a new
// connection per request, and reloads it: with the same code, or, if bad,
// after replacing the code on disk with badRelease.
func (h *harness) reloadOnce(ctx context.Context, peer reloadPeer, bad bool, f *figures, figs reloadFigures) error {
	app, err := h.release()
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	n := h.plan.Workers
	c, reload, err := peer.start(app, port, n)
	if err != nil {
		return err
	}
	c.peer = clusterPeer{name: peer.name, app: nodeApp}
	defer c.stop()
	if err := c.waitReady(ctx, n); err != nil {
		return err
	}
	// Every worker must have read the code before a bad release replaces
	// it: a Node worker reads its script some tens of milliseconds after
	// it starts, and one still starting would run the bad release itself.
	if _, err := c.stats(ctx); err != nil {
		return fmt.Errorf("before the reload: %w", err)
	}
	old := c.workers()
	if bad {
		if err := writeAtomic(app, badRelease); err != nil {
			return err
		}
	}
	p := h.plan
	load := wrkLoad{url: c.url("/"), duration: p.ReloadLead + p.ReloadTimeout + max(p.ReloadTail, p.ReloadAfter) + 5*time.Second,
		threads: p.Threads, connections: p.Connections, closeConn: true}
	w, err := startWrk(ctx, h.tools.Wrk, load)
	if err != nil {
		return err
	}
	sleepCtx(ctx, p.ReloadLead)
	out, err := reload(ctx, c, p.ReloadTimeout)
	if err != nil {
		_, _ = w.stop()
		return err
	}
	// wrk cannot start against a port that refuses connections, so one
	// load spans the reload and what follows it: a bad release's outage
	// is counted only if the load was already running.
	tail := p.ReloadTail
	if bad {
		tail = p.ReloadAfter
	}
	sleepCtx(ctx, tail)
	res, err := w.stop()
	if err != nil {
		return err
	}
	if !bad {
		f.add(figs.goodErrors, peer.name, float64(res.Errors))
		f.note(figs.goodErrors, peer.name, fmt.Sprintf("%s; %d requests, new connection per request", res.kinds(), res.Requests))
		if out.failed {
			return fmt.Errorf("the reload of a good release failed (%s)%s", out.report, c.stderr())
		}
		f.add(figs.goodTook, peer.name, out.took.Seconds())
		return c.waitReplaced(ctx, old, n)
	}
	reported := 0.0
	if out.failed {
		reported = 100
	}
	f.add(figs.badReported, peer.name, reported)
	f.note(figs.badReported, peer.name, fmt.Sprintf("%s after %v", out.report, out.took.Round(time.Millisecond)))
	f.add(figs.badErrors, peer.name, float64(res.Errors))
	note := fmt.Sprintf("%s; %d requests served", res.kinds(), res.Requests)
	if c.exited() {
		note += "; the supervisor exited"
	}
	ws := c.workers()
	kept := len(slices.DeleteFunc(slices.Clone(old), func(o int) bool { return !slices.Contains(ws, o) }))
	note += fmt.Sprintf("; %d of %d old workers still running", kept, len(old))
	f.note(figs.badErrors, peer.name, note)
	return nil
}

// release copies the Node app into a directory of its own, so that a bad
// release can replace its code on disk without touching examples/.
func (h *harness) release() (string, error) {
	dir, err := os.MkdirTemp(h.tmp, "release-")
	if err != nil {
		return "", fmt.Errorf("create release directory: %w", err)
	}
	b, err := os.ReadFile(h.tools.NodeApp)
	if err != nil {
		return "", fmt.Errorf("read the app: %w", err)
	}
	app := filepath.Join(dir, "app.js")
	if err := os.WriteFile(app, b, 0o644); err != nil {
		return "", fmt.Errorf("copy the app: %w", err)
	}
	return app, nil
}

// writeAtomic replaces path with s through a rename, as a deploy does, so
// that no process ever reads half a file.
func writeAtomic(path, s string) error {
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		return fmt.Errorf("write the new release: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("put the new release in place: %w", err)
	}
	return nil
}

// waitReplaced waits until n workers run and none of them is in old: every
// worker was replaced, and the replaced ones have drained and exited.
func (c *clusterRun) waitReplaced(ctx context.Context, old []int, n int) error {
	var ws []int
	err := waitFor(ctx, 30*time.Second, func() bool {
		ws = c.workers()
		if len(ws) != n {
			return false
		}
		return !slices.ContainsFunc(ws, func(w int) bool { return slices.Contains(old, w) })
	})
	if err != nil {
		return fmt.Errorf("after the reload, workers %v (before it %v), want %d new ones: %w%s", ws, old, n, err, c.stderr())
	}
	return nil
}
