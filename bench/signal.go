package bench

import (
	"context"
	"fmt"
	"strconv"
	"syscall"
	"time"
)

// signalLatency measures figure 2: the time from the harness sending SIGTERM
// to the supervisor until the child's SIGTERM handler runs, as read on
// CLOCK_MONOTONIC at both ends.
func (h *harness) signalLatency(ctx context.Context) error {
	const fig = "2. SIGTERM to supervisor → child's handler runs"
	peers, err := h.initPeers(false)
	if err != nil {
		return err
	}
	h.logf("signal latency: %d runs of %d contenders", h.plan.SignalRuns, len(peers))
	lat := make([][]time.Duration, len(peers))
	for i := 0; i < h.plan.SignalRuns; i++ {
		for j := range peers {
			if err := ctx.Err(); err != nil {
				return err
			}
			k := (i + j) % len(peers)
			d, err := h.oneSignal(peers[k])
			if err != nil {
				return err
			}
			lat[k] = append(lat[k], d)
		}
	}
	for k, p := range peers {
		h.report.add(Row{Figure: fig, Contender: p.name, Unit: Seconds, Ref: p.name == "goinit",
			Value: Summarize(seconds(lat[k])), WithP99: true})
	}
	return nil
}

// oneSignal runs peer with the sigchild program once and returns the latency
// of one SIGTERM.
func (h *harness) oneSignal(peer initPeer) (time.Duration, error) {
	p, err := h.launch.start(peer.argv(h.tools.SigChild), startOptions{pipes: true})
	if err != nil {
		return 0, err
	}
	defer p.stop(0)
	if s, err := p.line(10 * time.Second); err != nil || s != "ready" {
		return 0, fmt.Errorf("%s: child not ready (%q): %v", peer.name, s, err)
	}
	t0, err := monotonic()
	if err != nil {
		return 0, err
	}
	if err := syscall.Kill(p.pid(), syscall.SIGTERM); err != nil {
		return 0, fmt.Errorf("%s: send SIGTERM: %w", peer.name, err)
	}
	s, err := p.line(10 * time.Second)
	if err != nil {
		return 0, fmt.Errorf("%s: child never saw SIGTERM: %w", peer.name, err)
	}
	t1, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: child printed %q, not a time: %w", peer.name, s, err)
	}
	if err := p.wait(10 * time.Second); err != nil {
		return 0, fmt.Errorf("%s: after SIGTERM: %w%s", peer.name, err, p.stderrSuffix())
	}
	return time.Duration(t1) - t0, nil
}
