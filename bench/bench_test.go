package bench

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/goinit/goinit/internal/testbin"
)

// TestHarnessTiny runs the whole benchmark once in Tiny mode and checks that
// it produced a well-formed table. It asserts nothing about the numbers.
// Outside CI a contender whose tools are absent is left out with a message;
// under CI=true every peer must be installed (.ci/run does it).
func TestHarnessTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the benchmark harness; skipped with -short")
	}
	cfg := NewConfig(Tiny, testbin.Root())
	cfg.Cache = testbin.CacheDir(t)
	cfg.RequireAll = os.Getenv("CI") == "true"
	cfg.Log = testLog{t}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	report, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("harness failed: %v\npartial report:\n%s", err, report.Markdown())
	}
	for _, n := range report.Notes {
		if strings.Contains(n, "left out") {
			t.Logf("contender skipped (install it to measure it): %s", n)
		}
	}
	md := report.Markdown()
	t.Logf("tiny-mode table (numbers meaningless):\n%s", md)
	checkTable(t, md)
	figs := []string{"1. binary size", "1. start-to-exit", "1. idle RSS", "2. SIGTERM", "3. orphan storm"}
	if _, err := exec.LookPath("wrk"); err == nil {
		figs = append(figs, "4. requests/s", "4. p99 latency", "5. balance", "6. crash → replacement",
			"7. supervisor CPU")
		// The fault figure runs the Node app only.
		if _, err := exec.LookPath("node"); err == nil {
			figs = append(figs, "6. failed requests", "8. failed requests during a reload", "8. reload duration",
				"8. bad release", "8. failed requests from the reload")
			// The unmodified app under --share-ports is measured where
			// the same app on fd 3 is.
			for _, fig := range []string{"4. requests/s, Node app, new connection per request", "6. failed requests, "} {
				if !hasRow(report, fig, shareContender) {
					t.Errorf("table has no %q row for %s", fig, shareContender)
				}
			}
		}
	}
	for _, fig := range figs {
		if !strings.Contains(md, "| "+fig) {
			t.Errorf("table has no %q row", fig)
		}
	}
}

// checkTable checks that md holds exactly one Markdown table, with the
// expected header, a separator, and rows of the same width each naming a
// figure and a contender, and that every figure has goinit's reference row
// with a value, so goinit itself was measured for each.
func checkTable(t *testing.T, md string) {
	t.Helper()
	var table []string
	inTable, tables := false, 0
	for _, line := range strings.Split(md, "\n") {
		isRow := strings.HasPrefix(line, "|")
		if isRow && !inTable {
			tables++
		}
		inTable = isRow
		if isRow {
			table = append(table, line)
		}
	}
	if tables != 1 {
		t.Fatalf("want exactly one table, found %d", tables)
	}
	if len(table) < 3 {
		t.Fatalf("table has %d lines, want a header, a separator and rows", len(table))
	}
	if table[0] != tableHeader {
		t.Errorf("header = %q, want %q", table[0], tableHeader)
	}
	width := cells(table[0])
	if !strings.HasPrefix(table[1], "|---") || cells(table[1]) != width {
		t.Errorf("bad separator line %q", table[1])
	}
	refs := map[string]bool{}
	var figures []string
	for _, row := range table[2:] {
		if n := cells(row); n != width {
			t.Errorf("row has %d cells, want %d: %q", n, width, row)
			continue
		}
		c := strings.Split(strings.Trim(row, "|"), " | ")
		fig, contender, ratio := strings.TrimSpace(c[0]), strings.TrimSpace(c[1]), strings.TrimSpace(c[6])
		if fig == "" || contender == "" {
			t.Errorf("row without figure or contender: %q", row)
		}
		if _, seen := refs[fig]; !seen {
			figures = append(figures, fig)
			refs[fig] = false
		}
		if ratio == "1 (ref)" {
			refs[fig] = true
		}
	}
	for _, fig := range figures {
		if !refs[fig] {
			t.Errorf("figure %q has no goinit reference row with a value (÷ goinit = \"1 (ref)\")", fig)
		}
	}
}

// hasRow reports whether the report has a value for contender in a figure
// whose name starts with fig.
func hasRow(r *Report, fig, contender string) bool {
	return slices.ContainsFunc(r.Rows, func(row Row) bool {
		return strings.HasPrefix(row.Figure, fig) && row.Contender == contender && row.Value.N > 0
	})
}

// cells counts the cells of a Markdown table row, ignoring escaped pipes.
func cells(row string) int {
	return strings.Count(strings.ReplaceAll(row, `\|`, ""), "|") - 1
}

// testLog sends the harness's progress lines to the test log.
type testLog struct{ t *testing.T }

// Write implements io.Writer.
func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
