package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/goinit/goinit/signals"
)

// Tools holds the absolute path of every program the harness runs. An empty
// path means the program is absent, and Missing says why.
type Tools struct {
	// Goinit is built from Root/init exactly as released: static, stripped.
	Goinit string
	// Tini, TiniStatic and DumbInit are Debian's packages of the peers.
	Tini, TiniStatic, DumbInit string
	// Wrk drives the HTTP load.
	Wrk string
	// Node runs the Node app, Node's cluster module and pm2.
	Node string
	// PM2Runtime is pm2's foreground launcher, from Cache/npm or PATH.
	PM2Runtime string
	// PM2 is pm2's command line, from the same place: it asks a running
	// pm2 to reload.
	PM2 string
	// SigChild and OrphanStorm are built from bench/apps.
	SigChild, OrphanStorm string
	// ProcNS is built from init/testdata/procns: it mounts a /proc of its
	// new PID namespace and execs the contender, as a container runtime
	// does.
	ProcNS string
	// GoServer is built from examples/goserver.
	GoServer string
	// NodeServer and NodeCluster are examples/nodeserver/server.js and
	// cluster.js.
	NodeServer, NodeCluster string
	// NodeApp is examples/nodeapp/app.js, the same app binding its own
	// port.
	NodeApp string
	// True and Sleep are the system's, used as trivial children.
	True, Sleep string
	// Missing maps the name of each absent tool to the reason.
	Missing map[string]string
}

// findTools builds goinit and the harness's own programs into cache/bench
// and looks up the peers. Only a failure to build goinit or the programs in
// bench/apps is an error; anything else absent is recorded in Missing.
func findTools(ctx context.Context, root, cache string) (Tools, error) {
	t := Tools{Missing: map[string]string{}}
	bin := filepath.Join(cache, "bench")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return t, fmt.Errorf("create %s: %w", bin, err)
	}
	var err error
	build := func(pkg, name string) string {
		if err != nil {
			return ""
		}
		out := filepath.Join(bin, name)
		ldflags := "-s -w"
		if pkg == "./init" {
			ldflags += " " + signals.PreemptOffLDFlags
		}
		err = goBuild(ctx, root, pkg, out, ldflags)
		return out
	}
	t.Goinit = build("./init", "goinit")
	t.SigChild = build("./bench/apps/sigchild", "sigchild")
	t.OrphanStorm = build("./bench/apps/orphanstorm", "orphanstorm")
	t.ProcNS = build("./init/testdata/procns", "procns")
	if err != nil {
		return t, err
	}
	if _, statErr := os.Stat(filepath.Join(root, "examples", "goserver")); statErr != nil {
		t.Missing["goserver"] = "examples/goserver does not exist"
	} else {
		t.GoServer = build("./examples/goserver", "goserver")
		if err != nil {
			t.GoServer = ""
			t.Missing["goserver"] = err.Error()
			err = nil
		}
	}

	look := func(name string, paths ...string) string {
		for _, p := range paths {
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p
			}
		}
		p, err := exec.LookPath(name)
		if err != nil {
			t.Missing[name] = "not installed (" + err.Error() + ")"
			return ""
		}
		return p
	}
	t.Tini = look("tini")
	t.TiniStatic = look("tini-static")
	t.DumbInit = look("dumb-init")
	t.Wrk = look("wrk")
	t.Node = look("node")
	t.PM2Runtime = look("pm2-runtime", filepath.Join(cache, "npm", "node_modules", ".bin", "pm2-runtime"))
	t.PM2 = look("pm2", filepath.Join(cache, "npm", "node_modules", ".bin", "pm2"))
	t.True = look("true")
	t.Sleep = look("sleep")
	for _, f := range []struct {
		path *string
		name string // tool name and path below examples/
	}{{&t.NodeServer, "nodeserver/server.js"}, {&t.NodeCluster, "nodeserver/cluster.js"}, {&t.NodeApp, "nodeapp/app.js"}} {
		p := filepath.Join(root, "examples", filepath.FromSlash(f.name))
		if _, err := os.Stat(p); err != nil {
			t.Missing[f.name] = "examples/" + f.name + " does not exist"
			continue
		}
		*f.path = p
	}
	return t, nil
}

// need returns an error naming every tool among names that is absent.
func (t Tools) need(names ...string) error {
	var errs []error
	for _, n := range names {
		if why, ok := t.Missing[n]; ok {
			errs = append(errs, fmt.Errorf("%s: %s", n, why))
		}
	}
	return errors.Join(errs...)
}

// goBuild builds pkg as a static binary at out with ldflags, the way goinit
// is released, so that sizes and start-up times are the real ones.
func goBuild(ctx context.Context, root, pkg, out, ldflags string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags="+ldflags, "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, strings.TrimSpace(string(b)))
	}
	return nil
}

// versions returns one "name version" string per peer present, for the
// report's header, so that results can be compared across machines.
func (t Tools) versions(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	first := func(path string, args ...string) string {
		if path == "" {
			return ""
		}
		// wrk -v exits 1 after printing its version, so the error is ignored.
		out, _ := exec.CommandContext(ctx, path, args...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	var out []string
	for _, v := range []struct{ name, line string }{
		{"tini", first(t.Tini, "--version")},
		{"dumb-init", first(t.DumbInit, "--version")},
		{"wrk", first(t.Wrk, "-v")},
		{"node", first(t.Node, "--version")},
		{"pm2", t.pm2Version()},
	} {
		if v.line != "" {
			out = append(out, v.name+": "+v.line)
		}
	}
	return out
}

// pm2Version reads pm2's version from its package.json, next to the
// pm2-runtime script; starting pm2 just to ask would take a second.
func (t Tools) pm2Version() string {
	if t.PM2Runtime == "" {
		return ""
	}
	real, err := filepath.EvalSymlinks(t.PM2Runtime)
	if err != nil {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(real), "..", "package.json"))
	if err != nil {
		return ""
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(b, &pkg) != nil {
		return ""
	}
	return pkg.Version
}
