// Package testbin builds goinit and the test programs once per test process,
// so that end-to-end tests in every package run real binaries, exactly as
// users do.
package testbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// builds caches binaries per package path for the life of the test process;
// building the same program again would only cost time.
var builds = struct {
	sync.Mutex
	dir   string
	paths map[string]string
}{paths: map[string]string{}}

// Root returns the repository root, found from this source file's location.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// CacheDir returns the git-ignored cache directory for downloaded or built
// test artefacts, creating it if needed.
func CacheDir(t testing.TB) string {
	dir := filepath.Join(Root(), ".cache")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("create cache dir: %v", err)
	}
	return dir
}

// Goinit returns the path of a static goinit binary built from this tree.
func Goinit(t testing.TB) string {
	t.Helper()
	return Build(t, "./init")
}

// Build compiles the Go package pkg (relative to the repository root, e.g.
// "./examples/goserver") into a static binary and returns its path. Each
// package is built once per test process; the binary is named after the
// package directory ("init" is named "goinit").
func Build(t testing.TB, pkg string) string {
	t.Helper()
	builds.Lock()
	defer builds.Unlock()
	if p, ok := builds.paths[pkg]; ok {
		return p
	}
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "goinit-testbin-")
		if err != nil {
			t.Fatalf("temp dir: %v", err)
		}
		builds.dir = dir
	}
	name := filepath.Base(pkg)
	if name == "init" {
		name = "goinit"
	}
	out := filepath.Join(builds.dir, filepath.Base(filepath.Dir(pkg))+"-"+name, name)
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = Root()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	builds.paths[pkg] = out
	return out
}
