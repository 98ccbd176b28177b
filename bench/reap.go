package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// reaping measures figure 3: an orphan storm under each init, timing how long
// until the last re-parented zombie is reaped and counting the most zombies
// seen at once.
func (h *harness) reaping(ctx context.Context) error {
	const (
		figTime = "3. orphan storm: release → last zombie reaped"
		figPeak = "3. orphan storm: peak zombies seen"
	)
	peers, err := h.initPeers(false, "goinit", "tini")
	if err != nil {
		return err
	}
	h.logf("reaping: %d storms of %d orphans for %d contenders", h.plan.StormRuns, h.plan.StormOrphans, len(peers))
	times := make([][]float64, len(peers))
	peaks := make([][]float64, len(peers))
	for i := 0; i < h.plan.StormRuns; i++ {
		for j := range peers {
			if err := ctx.Err(); err != nil {
				return err
			}
			k := (i + j) % len(peers)
			d, peak, err := h.oneStorm(ctx, peers[k])
			if err != nil {
				return err
			}
			times[k] = append(times[k], d.Seconds())
			peaks[k] = append(peaks[k], float64(peak))
		}
	}
	note := fmt.Sprintf("%d orphans", h.plan.StormOrphans)
	for k, p := range peers {
		h.report.add(Row{Figure: figTime, Contender: p.name, Unit: Seconds, Ref: p.name == "goinit",
			Value: Summarize(times[k]), Note: note})
	}
	for k, p := range peers {
		h.report.add(Row{Figure: figPeak, Contender: p.name, Unit: Count, Ref: p.name == "goinit",
			Value: Summarize(peaks[k]), Note: note})
	}
	return nil
}

// oneStorm runs one orphan storm under peer. It polls the supervisor's
// children from /proc, so its resolution is one scan of them (a few ms for
// thousands of processes).
func (h *harness) oneStorm(ctx context.Context, peer initPeer) (time.Duration, int, error) {
	n := h.plan.StormOrphans
	p, err := h.launch.start(peer.argv(h.tools.OrphanStorm, "-n", strconv.Itoa(n)), startOptions{pipes: true})
	if err != nil {
		return 0, 0, err
	}
	defer p.stop(time.Second)
	if s, err := p.line(60 * time.Second); err != nil || !strings.HasPrefix(s, "ready") {
		return 0, 0, fmt.Errorf("%s: orphanstorm not ready (%q): %v", peer.name, s, err)
	}
	kids, err := children(p.pid())
	if err != nil {
		return 0, 0, err
	}
	// The storm's own process is the one child that is not an orphan.
	var main int
	for _, c := range kids {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c)); strings.TrimSpace(string(comm)) == "orphanstorm" {
			main = c
		}
	}
	if adopted := len(kids) - 1; adopted < n*9/10 {
		return 0, 0, fmt.Errorf("%s adopted only %d of %d orphans: it is neither PID 1 nor a subreaper", peer.name, adopted, n)
	}
	t0 := time.Now()
	if _, err := p.stdin.Write([]byte("go\n")); err != nil {
		return 0, 0, fmt.Errorf("%s: release orphans: %w", peer.name, err)
	}
	peak := 0
	deadline := t0.Add(60 * time.Second)
	for {
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("%s: orphans still not reaped after 60 s", peer.name)
		}
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		kids, err := children(p.pid())
		if err != nil {
			return 0, 0, err
		}
		left, zombies := 0, 0
		for _, c := range kids {
			if c == main {
				continue
			}
			left++
			if st, err := readStat(c); err == nil && st.State == 'Z' {
				zombies++
			}
		}
		peak = max(peak, zombies)
		if left == 0 {
			break
		}
	}
	d := time.Since(t0)
	_ = p.stdin.Close()
	if err := p.wait(10 * time.Second); err != nil {
		return 0, 0, fmt.Errorf("%s: after the storm: %w%s", peer.name, err, p.stderrSuffix())
	}
	return d, peak, nil
}
