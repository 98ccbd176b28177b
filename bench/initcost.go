package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"
)

// initPeer is a program compared as PID 1: goinit, tini, dumb-init, or no
// init at all.
type initPeer struct {
	// name is the contender's name in the table.
	name string
	// tool is the name under which Tools.Missing records it; "" for none.
	tool string
	// argv returns the command line that runs child under it.
	argv func(child ...string) []string
}

// initPeers returns the PID-1 contenders present, goinit first, noting the
// absent ones. With bare, running the child with no init is one of them.
func (h *harness) initPeers(bare bool, names ...string) ([]initPeer, error) {
	t := h.tools
	all := []initPeer{
		{name: "goinit", tool: "goinit", argv: func(c ...string) []string {
			return append([]string{t.Goinit, "--"}, c...)
		}},
		{name: "tini", tool: "tini", argv: func(c ...string) []string {
			args := []string{t.Tini}
			if !h.launch.pidNS {
				args = append(args, "-s") // adopt orphans without being PID 1
			}
			return append(append(args, "--"), c...)
		}},
		{name: "dumb-init", tool: "dumb-init", argv: func(c ...string) []string {
			return append([]string{t.DumbInit}, c...)
		}},
	}
	if bare {
		all = append(all, initPeer{name: "no init (child alone)", argv: func(c ...string) []string { return c }})
	}
	var out []initPeer
	for _, p := range all {
		if len(names) > 0 && p.tool != "" && !slices.Contains(names, p.tool) {
			continue
		}
		if p.tool != "" {
			if err := t.need(p.tool); err != nil {
				if err := h.skip(p.name, err); err != nil {
					return nil, err
				}
				continue
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// initCost measures figure 1: binary size, start-to-exit latency of
// `X -- true`, and idle RSS with one child and with IdleWorkers workers.
func (h *harness) initCost(ctx context.Context) error {
	h.sizes()
	if err := h.startLatency(ctx); err != nil {
		return err
	}
	if err := h.idleRSS(ctx); err != nil {
		return err
	}
	return h.clusterIdleRSS(ctx)
}

// sizes adds the size of each init's binary.
func (h *harness) sizes() {
	const fig = "1. binary size"
	for _, b := range []struct{ name, path, note string }{
		{"goinit", h.tools.Goinit, "static, stripped"},
		{"tini", h.tools.Tini, "dynamically linked to libc"},
		{"tini-static", h.tools.TiniStatic, "static"},
		{"dumb-init", h.tools.DumbInit, "static"},
	} {
		st, err := os.Stat(b.path)
		if b.path == "" || err != nil {
			continue
		}
		h.report.add(Row{Figure: fig, Contender: b.name, Unit: Bytes, Ref: b.name == "goinit",
			Value: Summarize([]float64{float64(st.Size())}), Note: b.note})
	}
}

// startLatency times `X -- true` from fork to the harness reaping X, for
// every init and for true alone, alternating them.
func (h *harness) startLatency(ctx context.Context) error {
	const fig = "1. start-to-exit of `X -- true`"
	peers, err := h.initPeers(true)
	if err != nil {
		return err
	}
	h.logf("start-to-exit latency: %d runs of %d contenders", h.plan.StartRuns, len(peers))
	times := make([][]time.Duration, len(peers))
	for i := 0; i < h.plan.StartRuns; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		for j := range peers {
			k := (i + j) % len(peers)
			t0 := time.Now()
			p, err := h.launch.start(peers[k].argv(h.tools.True), startOptions{})
			if err != nil {
				return err
			}
			if err := p.wait(10 * time.Second); err != nil {
				p.stop(0)
				return fmt.Errorf("%s -- true: %w%s", peers[k].name, err, p.stderrSuffix())
			}
			times[k] = append(times[k], time.Since(t0))
		}
	}
	for k, p := range peers {
		note := ""
		if p.tool == "" {
			note = "the floor: fork, exec and exit of true itself"
		}
		h.report.add(Row{Figure: fig, Contender: p.name, Unit: Seconds, Ref: p.name == "goinit",
			Value: Summarize(seconds(times[k])), WithP99: true, Note: note})
	}
	return nil
}

// idleRSS reads the resident memory of each init with one sleeping child.
func (h *harness) idleRSS(ctx context.Context) error {
	const fig = "1. idle RSS of the supervisor, one child"
	peers, err := h.initPeers(false)
	if err != nil {
		return err
	}
	vals := make([][]float64, len(peers))
	for i := 0; i < h.plan.RSSRuns; i++ {
		for j := range peers {
			k := (i + j) % len(peers)
			v, err := h.rssWithChild(ctx, peers[k])
			if err != nil {
				return err
			}
			vals[k] = append(vals[k], float64(v))
		}
	}
	for k, p := range peers {
		h.report.add(Row{Figure: fig, Contender: p.name, Unit: Bytes, Ref: p.name == "goinit",
			Value: Summarize(vals[k]), Note: "child: sleep"})
	}
	return nil
}

// rssWithChild starts peer with a sleeping child, waits for the child and
// then Settle, and returns the supervisor's VmRSS.
func (h *harness) rssWithChild(ctx context.Context, peer initPeer) (int64, error) {
	p, err := h.launch.start(peer.argv(h.tools.Sleep, "600"), startOptions{})
	if err != nil {
		return 0, err
	}
	defer p.stop(time.Second)
	if err := waitFor(ctx, 10*time.Second, func() bool {
		kids, _ := children(p.pid())
		return len(kids) > 0 || p.exited()
	}); err != nil || p.exited() {
		return 0, fmt.Errorf("%s never started its child: %v%s", peer.name, err, p.stderrSuffix())
	}
	sleepCtx(ctx, h.plan.Settle)
	v, err := rss(p.pid())
	if err != nil {
		return 0, fmt.Errorf("%s: %w", peer.name, err)
	}
	return v, nil
}

// waitFor polls cond every few milliseconds until it holds, for at most d.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("condition not met within %v", d)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
