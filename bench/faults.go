package bench

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// faults measures figure 6: errors seen by clients while the oldest worker
// is SIGKILLed every FaultEvery, with a new connection per request so that
// every request goes through accept.
func (h *harness) faults(ctx context.Context) error {
	if err := h.tools.need("wrk"); err != nil {
		return h.skip("fault figures", err)
	}
	peers, err := h.clusterPeers(nodeApp)
	if err != nil {
		return err
	}
	every, dur := h.plan.FaultEvery, h.plan.FaultDuration
	figErr := fmt.Sprintf("6. failed requests, a worker SIGKILLed every %v for %v, %s", every, dur, nodeApp)
	figRate := fmt.Sprintf("6. failed requests %% (same runs), %s", nodeApp)
	figRPS := fmt.Sprintf("6. requests/s while workers are killed (same runs), %s", nodeApp)
	f := newFigures()
	f.declare(Row{Figure: figErr, Unit: Count})
	f.declare(Row{Figure: figRate, Unit: Percent})
	f.declare(Row{Figure: figRPS, Unit: PerSecond})
	var errs []error
	for rep := 0; rep < h.plan.FaultReps; rep++ {
		for _, peer := range rotate(peers, rep) {
			if err := ctx.Err(); err != nil {
				return err
			}
			h.logf("faults, %s, run %d of %d", peer.name, rep+1, h.plan.FaultReps)
			res, kills, err := h.faultOnce(ctx, peer)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", peer.name, err))
				f.note(figErr, peer.name, "failed: "+err.Error())
				continue
			}
			f.add(figErr, peer.name, float64(res.Errors))
			f.add(figRate, peer.name, 100*float64(res.Errors)/float64(max(1, res.Requests+res.Errors)))
			f.add(figRPS, peer.name, res.RPS)
			f.note(figErr, peer.name, fmt.Sprintf("%d kills per run, new connection per request", kills))
		}
	}
	var names []string
	for _, p := range peers {
		names = append(names, p.name)
	}
	f.rows(h.report, names)
	return errors.Join(errs...)
}

// faultOnce runs one load of FaultDuration against a fresh start of peer,
// killing its oldest worker every FaultEvery, and returns wrk's result and
// the number of kills.
func (h *harness) faultOnce(ctx context.Context, peer clusterPeer) (wrkResult, int, error) {
	port, err := freePort()
	if err != nil {
		return wrkResult{}, 0, err
	}
	c, err := peer.run(port, h.plan.Workers)
	if err != nil {
		return wrkResult{}, 0, err
	}
	defer c.stop()
	if err := c.waitReady(ctx, h.plan.Workers); err != nil {
		return wrkResult{}, 0, err
	}
	type outcome struct {
		res wrkResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := runWrk(ctx, h.tools.Wrk, wrkLoad{url: c.url("/"), duration: h.plan.FaultDuration,
			threads: h.plan.Threads, connections: h.plan.Connections, closeConn: true})
		done <- outcome{res, err}
	}()
	tick := time.NewTicker(h.plan.FaultEvery)
	defer tick.Stop()
	end := time.Now().Add(h.plan.FaultDuration - h.plan.FaultEvery/2)
	kills := 0
	for {
		select {
		case o := <-done:
			return o.res, kills, o.err
		case <-tick.C:
			if time.Now().After(end) {
				continue
			}
			if ws := c.workers(); len(ws) > 0 {
				if err := syscall.Kill(ws[0], syscall.SIGKILL); err == nil {
					kills++
				}
			}
		}
	}
}
