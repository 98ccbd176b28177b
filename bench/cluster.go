package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/goinit/goinit/listen"
)

// The apps served in the cluster figures.
const (
	nodeApp = "Node app"
	goApp   = "Go app"
)

// refContender is the row the cluster figures are divided by.
const refContender = "goinit shared"

// shareContender is the unmodified Node app, binding its own port, under
// goinit's --share-ports: the row to read next to refContender, the same
// app rewritten for socket activation.
const shareContender = "goinit share-ports"

// clusterPeer is one way of running N workers of an app on one port.
type clusterPeer struct {
	// name is the contender's name in the table.
	name string
	// app is nodeApp or goApp.
	app string
	// tools are the names in Tools.Missing this peer needs.
	tools []string
	// supervised is false for the no-supervisor ceiling.
	supervised bool
	// note is printed in the table's Note column.
	note string
	// start launches n workers serving on 127.0.0.1:port.
	start func(port, n int) (*clusterRun, error)
}

// run starts the peer with n workers on port.
func (p clusterPeer) run(port, n int) (*clusterRun, error) {
	c, err := p.start(port, n)
	if err != nil {
		return nil, err
	}
	c.peer = p
	return c, nil
}

// clusterRun is one running cluster contender.
type clusterRun struct {
	peer clusterPeer
	port int
	// sup is the supervisor: goinit, the cluster primary, pm2-runtime; nil
	// for the ceiling.
	sup *proc
	// alone are the ceiling's worker processes.
	alone []*proc
	// client talks to the workers, one connection per request.
	client *http.Client
}

// clusterPeers returns the cluster contenders for app, goinit's first, noting
// those whose tools are absent.
func (h *harness) clusterPeers(app string, names ...string) ([]clusterPeer, error) {
	t := h.tools
	var all []clusterPeer
	appArgv, appTools := []string{t.GoServer}, []string{"goserver"}
	if app == nodeApp {
		appArgv, appTools = []string{t.Node, t.NodeServer}, []string{"node", "nodeserver/server.js"}
	}
	for _, balance := range []string{"shared", "reuseport"} {
		all = append(all, clusterPeer{
			name: "goinit " + balance, app: app, tools: appTools, supervised: true,
			note: "socket activation, --balance=" + balance,
			start: func(port, n int) (*clusterRun, error) {
				argv := append([]string{t.Goinit, "--workers=" + strconv.Itoa(n),
					"--listen=127.0.0.1:" + strconv.Itoa(port), "--balance=" + balance, "--"}, appArgv...)
				return h.startSupervised(port, argv, startOptions{})
			},
		})
	}
	if app == nodeApp {
		all = append(all,
			clusterPeer{
				name: shareContender, app: app, tools: []string{"node", "nodeapp/app.js"}, supervised: true,
				note:  "examples/nodeapp, unmodified: listen(PORT) in each worker, no --listen; --share-ports=auto",
				start: func(port, n int) (*clusterRun, error) { return h.startShared(t.NodeApp, port, n) },
			},
			clusterPeer{
				name: "node cluster", app: app, tools: []string{"node", "nodeserver/cluster.js"}, supervised: true,
				note: "examples/nodeserver/cluster.js, round-robin; re-forks 100 ms after a crash, like goinit",
				start: func(port, n int) (*clusterRun, error) {
					return h.startSupervised(port, []string{t.Node, t.NodeCluster}, startOptions{env: []string{
						"PORT=" + strconv.Itoa(port), "HOST=127.0.0.1", "WORKERS=" + strconv.Itoa(n)}})
				},
			},
			clusterPeer{
				name: "pm2", app: app, tools: []string{"node", "pm2-runtime", "nodeserver/server.js"}, supervised: true,
				note: "pm2-runtime -i N (pm2 cluster mode)",
				start: func(port, n int) (*clusterRun, error) {
					home, err := os.MkdirTemp(h.tmp, "pm2-")
					if err != nil {
						return nil, fmt.Errorf("create PM2_HOME: %w", err)
					}
					return h.startSupervised(port, []string{t.PM2Runtime, "start", t.NodeServer, "-i", strconv.Itoa(n)},
						startOptions{dir: home, env: []string{"PORT=" + strconv.Itoa(port), "HOST=127.0.0.1", "PM2_HOME=" + home}})
				},
			})
	} else {
		all = append(all, clusterPeer{
			name: "reuseport, no supervisor", app: app, tools: []string{"goserver"},
			note:  "the ceiling: N processes, each with its own SO_REUSEPORT socket",
			start: func(port, n int) (*clusterRun, error) { return h.startAlone(port, n) },
		})
	}
	var out []clusterPeer
	for _, p := range all {
		if len(names) > 0 && !slices.Contains(names, p.name) {
			continue
		}
		if err := t.need(p.tools...); err != nil {
			if err := h.skip(p.name+" ("+app+")", err); err != nil {
				return nil, err
			}
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// startSupervised starts a supervisor that runs the workers itself, with a
// /proc of its own PID namespace, as in a container: goinit reads the
// binds of its workers there.
func (h *harness) startSupervised(port int, argv []string, o startOptions) (*clusterRun, error) {
	o.ownProc = true
	p, err := h.launch.start(argv, o)
	if err != nil {
		return nil, err
	}
	return &clusterRun{port: port, sup: p, client: newClient()}, nil
}

// startShared starts the unmodified Node app at app, n workers under
// goinit with --share-ports, each binding PORT itself.
func (h *harness) startShared(app string, port, n int) (*clusterRun, error) {
	return h.startSupervised(port, []string{h.tools.Goinit, "--workers=" + strconv.Itoa(n), "--share-ports=auto",
		"--", h.tools.Node, app}, startOptions{env: []string{"PORT=" + strconv.Itoa(port)}})
}

// startAlone starts the ceiling: n copies of the Go server, each handed its
// own SO_REUSEPORT socket by socket activation, with no process above them
// but the harness. goserver binds no SO_REUSEPORT socket by itself, so the
// harness binds them; after the start it holds none, and the kernel spreads
// connections over the n sockets exactly as if each server had bound its
// own.
func (h *harness) startAlone(port, n int) (*clusterRun, error) {
	c := &clusterRun{port: port, client: newClient()}
	addr, err := listen.ParseAddr("tcp4://127.0.0.1:" + strconv.Itoa(port))
	if err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		f, err := listen.Open(context.Background(), addr, true)
		if err != nil {
			c.stop()
			return nil, err
		}
		// LISTEN_PID must be the server's own pid, unknown before the fork:
		// the shell learns it and keeps it by exec'ing the server.
		env := append(listen.Env([]listen.Addr{addr}, []*os.File{f}), "GOINIT_WORKER_ID="+strconv.Itoa(i))
		p, err := h.launch.start([]string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$0"`, h.tools.GoServer}, startOptions{
			plain: true, files: []*os.File{f}, env: env,
		})
		f.Close()
		if err != nil {
			c.stop()
			return nil, err
		}
		c.alone = append(c.alone, p)
	}
	return c, nil
}

// newClient returns an HTTP client that opens a new connection for every
// request, so that probes are spread over workers like new clients are.
func newClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true},
		Timeout:   2 * time.Second,
	}
}

// freePort returns a TCP port that was free a moment ago on every address
// of both families, below the kernel's ephemeral range. Apps that bind for
// themselves bind [::], and a port in the ephemeral range can be taken in
// the meantime as the source port of a client's connection, or still be
// held by one in TIME_WAIT after an earlier load (wrk closes its
// keep-alive connections first): then even SO_REUSEADDR gets EADDRINUSE.
func freePort() (int, error) {
	low := 32768 // Linux's default ip_local_port_range starts here
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	const base = 10000 // above the ports services usually have
	if low <= base+100 {
		return 0, fmt.Errorf("find a free port: the ephemeral range starts at %d, leaving none below it above %d", low, base)
	}
	var lastErr error
	for range 100 {
		port := base + rand.IntN(low-base)
		l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			lastErr = err
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("find a free port: 100 random ports between %d and %d in use, the last: %w", base, low, lastErr)
}

// url returns the address of path on the contender.
func (c *clusterRun) url(path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(c.port) + path
}

// workers returns the host pids of the live workers, oldest first.
func (c *clusterRun) workers() []int {
	var pids []int
	if c.sup == nil {
		for _, p := range c.alone {
			if !p.exited() {
				pids = append(pids, p.pid())
			}
		}
	} else {
		pids, _ = children(c.sup.pid())
	}
	comm := "goserver"
	if c.peer.app == nodeApp {
		comm = "node"
	}
	start := map[int]uint64{}
	live := pids[:0]
	for _, p := range pids {
		st, err := readStat(p)
		if err != nil || st.State == 'Z' {
			continue
		}
		// pm2 runs git (through sh) in the app's directory to record its
		// version: such passing children are not workers. pm2 also sets its
		// workers' title, so comm is "node /path/to..." there: a prefix.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); err != nil || !strings.HasPrefix(string(b), comm) {
			continue
		}
		start[p] = st.Start
		live = append(live, p)
	}
	slices.SortFunc(live, func(a, b int) int { return int(start[a]) - int(start[b]) })
	return live
}

// supervisorCPU returns the CPU time the supervisor has used; 0 without one.
func (c *clusterRun) supervisorCPU() time.Duration {
	if c.sup == nil {
		return 0
	}
	return cpuTime(c.sup.pid())
}

// exited reports whether the supervisor (or every lone worker) is gone.
func (c *clusterRun) exited() bool {
	if c.sup != nil {
		return c.sup.exited()
	}
	for _, p := range c.alone {
		if !p.exited() {
			return false
		}
	}
	return true
}

// stderr returns the end of the supervisor's stderr, for error messages.
func (c *clusterRun) stderr() string {
	if c.sup != nil {
		return c.sup.stderrSuffix()
	}
	return ""
}

// stop ends the contender and everything under it.
func (c *clusterRun) stop() {
	if c.sup != nil {
		c.sup.stop(5 * time.Second)
	}
	for _, p := range c.alone {
		p.stop(5 * time.Second)
	}
	c.client.CloseIdleConnections()
}

// waitReady waits until n workers run and the port answers /healthz.
func (c *clusterRun) waitReady(ctx context.Context, n int) error {
	err := waitFor(ctx, 30*time.Second, func() bool {
		if c.exited() {
			return true
		}
		if len(c.workers()) < n {
			return false
		}
		resp, err := c.client.Get(c.url("/healthz"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if c.exited() {
		return fmt.Errorf("exited before serving%s", c.stderr())
	}
	if err != nil {
		return fmt.Errorf("%d workers not serving on port %d: %w%s", n, c.port, err, c.stderr())
	}
	return nil
}

// workerStats is a worker's answer to GET /stats.
type workerStats struct {
	Pid      int   `json:"pid"`
	Requests int64 `json:"requests"`
}

// stats asks GET /stats over new connections until every live worker has
// answered, and returns each worker's request count by the pid it reports.
// The probes go in concurrent bursts: with one shared socket, an idle worker
// that wins the race for one connection tends to win it for every
// sequential one, and the other would never be asked. Bursts are bounded.
func (c *clusterRun) stats(ctx context.Context) (map[int]int64, error) {
	want := len(c.workers())
	got := map[int]int64{}
	var mu sync.Mutex
	for burst := 0; burst < 50 && len(got) < want; burst++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var wg sync.WaitGroup
		for i := 0; i < 4*want; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := c.getStats(ctx)
				if err != nil {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				got[s.Pid] = max(got[s.Pid], s.Requests)
			}()
		}
		wg.Wait()
	}
	if len(got) < want {
		return got, fmt.Errorf("only %d of %d workers answered /stats", len(got), want)
	}
	return got, nil
}

// getStats makes one GET /stats, abandoned when ctx is done.
func (c *clusterRun) getStats(ctx context.Context) (workerStats, error) {
	var s workerStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/stats"), nil)
	if err != nil {
		return s, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET /stats: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return s, fmt.Errorf("GET /stats: %w", err)
	}
	return s, nil
}

// balance returns max/min of the requests each worker served between two
// /stats snapshots: +Inf if a worker served none.
func balance(before, after map[int]int64) (float64, error) {
	if len(after) == 0 {
		return 0, errors.New("no worker answered /stats")
	}
	lo, hi := int64(-1), int64(0)
	for pid, n := range after {
		d := n - before[pid]
		hi = max(hi, d)
		if lo < 0 || d < lo {
			lo = d
		}
	}
	if hi == 0 {
		return 0, errors.New("no worker served a request")
	}
	if lo == 0 {
		return math.Inf(1), nil
	}
	return float64(hi) / float64(lo), nil
}

// restartTime SIGKILLs the oldest worker and times until a worker that was
// not running before answers /stats: the replacement has started and
// accepts. Probes start every few milliseconds without waiting for each
// other, because a probe handed to the dying worker (by a cluster primary,
// or queued on its SO_REUSEPORT socket) can hang until its timeout and must
// not hold up the next one. The harness then waits for n workers again.
func (c *clusterRun) restartTime(ctx context.Context, n int) (time.Duration, error) {
	ws := c.workers()
	if len(ws) == 0 {
		return 0, errors.New("no worker to kill")
	}
	old := map[int]bool{}
	for _, w := range ws {
		ip, err := innerPid(w)
		if err != nil {
			return 0, err
		}
		old[ip] = true
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := syscall.Kill(ws[0], syscall.SIGKILL); err != nil {
		return 0, fmt.Errorf("kill worker %d: %w", ws[0], err)
	}
	fresh := make(chan time.Duration, 1)
	inflight := make(chan struct{}, 32)
	tick := time.NewTicker(3 * time.Millisecond)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for {
		select {
		case d := <-fresh:
			cancel()
			wg.Wait()
			return d, c.waitReady(parent, n)
		case <-ctx.Done():
			return 0, fmt.Errorf("no replacement accepted: %w%s", ctx.Err(), c.stderr())
		case <-tick.C:
			select {
			case inflight <- struct{}{}:
			default:
				continue // 32 probes hanging: wait for one to end
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-inflight }()
				s, err := c.getStats(ctx)
				if err == nil && !old[s.Pid] {
					select {
					case fresh <- time.Since(t0):
					default:
					}
				}
			}()
		}
	}
}

// loadKinds are the two wrk loads of the throughput figures.
var loadKinds = [...]struct {
	name      string
	closeConn bool
}{{"keep-alive", false}, {"new connection per request", true}}

// figures collects values per figure and contender, keeping the order in
// which figures are declared.
type figures struct {
	// ref is the contender the others are divided by; refContender
	// unless set.
	ref   string
	order []Row
	vals  map[string]map[string][]float64
	notes map[string]map[string]string
}

// newFigures returns an empty collection.
func newFigures() *figures {
	return &figures{ref: refContender, vals: map[string]map[string][]float64{}, notes: map[string]map[string]string{}}
}

// declare adds a figure: a Row template whose Contender is ignored.
func (f *figures) declare(r Row) {
	f.order = append(f.order, r)
	f.vals[r.Figure] = map[string][]float64{}
	f.notes[r.Figure] = map[string]string{}
}

// add records one value.
func (f *figures) add(fig, contender string, v float64) {
	f.vals[fig][contender] = append(f.vals[fig][contender], v)
}

// note sets a contender's note for a figure.
func (f *figures) note(fig, contender, note string) { f.notes[fig][contender] = note }

// rows adds the collected rows to the report, in figure order and then in
// the order of contenders.
func (f *figures) rows(r *Report, contenders []string) {
	for _, tmpl := range f.order {
		for _, c := range contenders {
			vs, ok := f.vals[tmpl.Figure][c]
			note, noted := f.notes[tmpl.Figure][c]
			if !ok && !noted {
				continue
			}
			row := tmpl
			row.Contender = c
			row.Value = Summarize(vs)
			row.Ref = c == f.ref
			if noted {
				row.Note = note
			}
			r.add(row)
		}
	}
}

// throughput measures figures 4, 5 and 7 (and the restart time of figure 6)
// for both apps.
func (h *harness) throughput(ctx context.Context) error {
	if err := h.tools.need("wrk"); err != nil {
		return h.skip("cluster figures", err)
	}
	var errs []error
	for _, app := range []string{nodeApp, goApp} {
		if err := h.throughputApp(ctx, app); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// loadFigures names the figures of one app in the throughput runs; the
// per-load names are indexed like loadKinds. They are built here only, so
// that declare, add and note use the same strings.
type loadFigures struct {
	rps, p99, balance, cpu []string
	restart                string
}

// newLoadFigures returns the figure names for app under loads of duration d.
func newLoadFigures(app string, d time.Duration) loadFigures {
	var n loadFigures
	for _, k := range loadKinds {
		n.rps = append(n.rps, "4. requests/s, "+app+", "+k.name)
		n.p99 = append(n.p99, "4. p99 latency, "+app+", "+k.name)
		n.balance = append(n.balance, "5. balance: max/min requests per worker, "+app+", "+k.name)
		n.cpu = append(n.cpu, fmt.Sprintf("7. supervisor CPU during a %v load, %s, %s", d, app, k.name))
	}
	n.restart = "6. crash → replacement accepts, " + app
	return n
}

// throughputApp runs every cluster contender of app LoadReps times.
func (h *harness) throughputApp(ctx context.Context, app string) error {
	peers, err := h.clusterPeers(app)
	if err != nil {
		return err
	}
	figs := newLoadFigures(app, h.plan.LoadDuration)
	f := newFigures()
	for i := range loadKinds {
		f.declare(Row{Figure: figs.rps[i], Unit: PerSecond})
		f.declare(Row{Figure: figs.p99[i], Unit: Seconds})
	}
	for i := range loadKinds {
		f.declare(Row{Figure: figs.balance[i], Unit: Ratio})
	}
	f.declare(Row{Figure: figs.restart, Unit: Seconds})
	for i := range loadKinds {
		f.declare(Row{Figure: figs.cpu[i], Unit: Seconds})
	}

	var errs []error
	for rep := 0; rep < h.plan.LoadReps; rep++ {
		for _, peer := range rotate(peers, rep) {
			if err := ctx.Err(); err != nil {
				return err
			}
			h.logf("throughput %s, %s, run %d of %d", app, peer.name, rep+1, h.plan.LoadReps)
			if err := h.loadOnce(ctx, peer, f, figs); err != nil {
				errs = append(errs, fmt.Errorf("%s, %s: %w", app, peer.name, err))
				f.note(f.order[0].Figure, peer.name, "failed: "+err.Error())
			}
		}
	}
	var names []string
	for _, p := range peers {
		names = append(names, p.name)
		if !p.supervised {
			f.note(figs.restart, p.name, "n/a: nothing restarts a worker")
			for _, fig := range figs.cpu {
				f.note(fig, p.name, "n/a: no supervisor")
			}
		}
		if f.notes[f.order[0].Figure][p.name] == "" {
			f.note(f.order[0].Figure, p.name, p.note)
		}
	}
	f.rows(h.report, names)
	return errors.Join(errs...)
}

// loadOnce starts peer, runs both loads against it, then times the
// replacement of killed workers, and stops it.
func (h *harness) loadOnce(ctx context.Context, peer clusterPeer, f *figures, figs loadFigures) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	c, err := peer.run(port, h.plan.Workers)
	if err != nil {
		return err
	}
	defer c.stop()
	if err := c.waitReady(ctx, h.plan.Workers); err != nil {
		return err
	}
	load := wrkLoad{url: c.url("/"), threads: h.plan.Threads, connections: h.plan.Connections}
	if h.plan.Warmup > 0 {
		load.duration = h.plan.Warmup
		if _, err := runWrk(ctx, h.tools.Wrk, load); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	load.duration = h.plan.LoadDuration
	for i, k := range loadKinds {
		load.closeConn = k.closeConn
		figBalance := figs.balance[i]
		before, beforeErr := c.stats(ctx)
		cpu0 := c.supervisorCPU()
		res, err := runWrk(ctx, h.tools.Wrk, load)
		if err != nil {
			return err
		}
		cpu := c.supervisorCPU() - cpu0
		f.add(figs.rps[i], peer.name, res.RPS)
		f.add(figs.p99[i], peer.name, res.P99.Seconds())
		if res.Errors > 0 {
			f.note(figs.rps[i], peer.name, fmt.Sprintf("%d errors in the last run", res.Errors))
		}
		if peer.supervised {
			f.add(figs.cpu[i], peer.name, cpu.Seconds())
		}
		after, afterErr := c.stats(ctx)
		if err := errors.Join(beforeErr, afterErr); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			f.note(figBalance, peer.name, "a run without figure: "+err.Error())
		} else if b, err := balance(before, after); err != nil {
			f.note(figBalance, peer.name, "a run without figure: "+err.Error())
		} else {
			f.add(figBalance, peer.name, b)
		}
	}
	if !peer.supervised {
		return nil
	}
	for i := 0; i < h.plan.RestartKills; i++ {
		d, err := c.restartTime(ctx, h.plan.Workers)
		if err != nil {
			return fmt.Errorf("restart %d: %w", i+1, err)
		}
		f.add(figs.restart, peer.name, d.Seconds())
	}
	if peer.name == "node cluster" {
		f.note(figs.restart, peer.name, "cluster.js waits 100 ms before re-forking")
	}
	return nil
}

// clusterIdleRSS measures the supervisor's resident memory with IdleWorkers
// idle workers of the Node app (figure 1).
func (h *harness) clusterIdleRSS(ctx context.Context) error {
	fig := fmt.Sprintf("1. idle RSS of the supervisor, %d workers", h.plan.IdleWorkers)
	peers, err := h.clusterPeers(nodeApp, refContender, "node cluster", "pm2")
	if err != nil {
		return err
	}
	f := newFigures()
	f.declare(Row{Figure: fig, Unit: Bytes})
	var errs []error
	for rep := 0; rep < h.plan.RSSRuns; rep++ {
		for _, peer := range rotate(peers, rep) {
			h.logf("idle RSS with %d workers: %s", h.plan.IdleWorkers, peer.name)
			v, err := h.idleClusterRSS(ctx, peer)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", peer.name, err))
				f.note(fig, peer.name, "failed: "+err.Error())
				continue
			}
			f.add(fig, peer.name, float64(v))
		}
	}
	var names []string
	for _, p := range peers {
		names = append(names, p.name)
		if f.notes[fig][p.name] == "" {
			f.note(fig, p.name, "Node app")
		}
	}
	f.rows(h.report, names)
	return errors.Join(errs...)
}

// idleClusterRSS starts peer with IdleWorkers workers, lets it settle and
// reads the supervisor's VmRSS.
func (h *harness) idleClusterRSS(ctx context.Context, peer clusterPeer) (int64, error) {
	port, err := freePort()
	if err != nil {
		return 0, err
	}
	c, err := peer.run(port, h.plan.IdleWorkers)
	if err != nil {
		return 0, err
	}
	defer c.stop()
	if err := c.waitReady(ctx, h.plan.IdleWorkers); err != nil {
		return 0, err
	}
	sleepCtx(ctx, h.plan.Settle)
	return rss(c.sup.pid())
}

// killStrayPM2 kills any process whose command line or environment names
// one of this run's PM2_HOME directories: a pm2 daemon that escaped its
// contender's process group and namespace.
func (h *harness) killStrayPM2() {
	if h.tmp == "" {
		return
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || pid == os.Getpid() {
			continue
		}
		for _, f := range []string{"cmdline", "environ"} {
			b, _ := os.ReadFile(filepath.Join(d, f))
			if bytes.Contains(b, []byte(h.tmp)) {
				h.logf("killing stray pm2 process %d", pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
				break
			}
		}
	}
}
