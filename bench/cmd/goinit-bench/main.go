// Command goinit-bench measures goinit against tini, dumb-init, Node's
// cluster module, pm2 and a supervisor-less SO_REUSEPORT ceiling on this
// machine, prints one Markdown table and writes it to -out.
//
// Run it from the repository root, after bench/install-peers.sh:
//
//	go run ./bench/cmd/goinit-bench              # full: about 9 minutes
//	BENCH_QUICK=1 go run ./bench/cmd/goinit-bench # about a minute and a half
//
// Progress goes to stderr, the table to stdout and to -out. The exit status is
// 1 if any figure could not be measured; the table is written all the same.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/goinit/goinit/bench"
)

func main() {
	os.Exit(run())
}

func run() int {
	def := "full"
	if q := os.Getenv("BENCH_QUICK"); q != "" && q != "0" {
		def = "quick"
	}
	modeName := flag.String("mode", def, "full, quick (the default when BENCH_QUICK=1) or tiny")
	root := flag.String("root", ".", "repository root")
	out := flag.String("out", "bench/results.md", "write the table here too; empty for stdout only")
	allowMissing := flag.Bool("allow-missing", false, "leave out contenders whose tools are absent instead of failing")
	only := flag.String("only", "", `comma-separated sections to run, e.g. "init cost,signal latency" (default all)`)
	flag.Parse()
	mode, err := bench.ParseMode(*modeName)
	if err != nil {
		fmt.Fprintf(os.Stderr, "goinit-bench: %v\n", err)
		return 2
	}
	cfg := bench.NewConfig(mode, *root)
	cfg.RequireAll = !*allowMissing
	cfg.Log = os.Stderr
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	report, runErr := bench.Run(ctx, cfg)
	md := report.Markdown()
	fmt.Print(md)
	if *out != "" && len(report.Rows) > 0 {
		if err := writeAtomic(*out, md); err != nil {
			fmt.Fprintf(os.Stderr, "goinit-bench: %v\n", err)
			return 1
		}
	}
	if runErr != nil {
		fmt.Fprintf(os.Stderr, "goinit-bench: %v\n", runErr)
		return 1
	}
	return 0
}

// writeAtomic writes s to path through a temporary file, so an interrupted
// run never leaves half a table.
func writeAtomic(path, s string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}
