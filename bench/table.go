package bench

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Unit says how a figure's numbers are printed.
type Unit int

// Units of the figures. Durations are stored in seconds, sizes in bytes.
const (
	Bytes Unit = iota
	Seconds
	Count
	PerSecond
	Ratio
	Percent
)

// format prints v in unit u with three significant digits or so.
func (u Unit) format(v float64) string {
	if math.IsInf(v, 1) {
		return "∞"
	}
	switch u {
	case Bytes:
		switch {
		case v >= 1<<20:
			return fmt.Sprintf("%.2f MiB", v/(1<<20))
		case v >= 1<<10:
			return fmt.Sprintf("%.0f KiB", v/(1<<10))
		}
		return fmt.Sprintf("%.0f B", v)
	case Seconds:
		switch {
		case v == 0:
			return "0"
		case v >= 1:
			return fmt.Sprintf("%.2f s", v)
		case v >= 1e-3:
			return fmt.Sprintf("%.2f ms", v*1e3)
		}
		return fmt.Sprintf("%.0f µs", v*1e6)
	case PerSecond:
		return fmt.Sprintf("%.0f/s", v)
	case Ratio:
		return fmt.Sprintf("%.2f", v)
	case Percent:
		return fmt.Sprintf("%.2f%%", v)
	}
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.1f", v)
}

// Row is one line of the results table: one figure for one contender.
type Row struct {
	// Figure names what is measured, with the conditions that matter
	// ("requests/s, Node app, keep-alive").
	Figure string
	// Contender is the program measured.
	Contender string
	// Unit is how Value is printed.
	Unit Unit
	// Value summarizes the runs. A zero N means there is no value, and Note
	// says why.
	Value Summary
	// WithP99 prints Value.P99 too; for latencies over many runs.
	WithP99 bool
	// Ref marks goinit's row, which the other rows with the same Figure are
	// divided by.
	Ref bool
	// Note is printed in the last column ("absent", "n/a: no supervisor").
	Note string
}

// Report is the outcome of one harness run.
type Report struct {
	// Header lines describe the machine and the mode; printed above the table.
	Header []string
	// Rows are the table's lines, in order.
	Rows []Row
	// Notes are printed under the table: skipped contenders, failed figures.
	Notes []string
}

// add appends a row.
func (r *Report) add(row Row) { r.Rows = append(r.Rows, row) }

// sortByFigure orders the rows by the number their figure starts with,
// keeping the order of rows with the same number.
func (r *Report) sortByFigure() {
	num := func(row Row) int {
		n, _ := strconv.Atoi(strings.SplitN(row.Figure, ".", 2)[0])
		return n
	}
	slices.SortStableFunc(r.Rows, func(a, b Row) int { return num(a) - num(b) })
}

// note appends a note printed under the table.
func (r *Report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// tableHeader is the table's first line; the test checks every row against
// its column count.
const tableHeader = "| Figure | Contender | Median | Spread (min–max) | p99 | Runs | ÷ goinit | Note |"

// Markdown renders the report: header lines, the table, then the notes.
func (r *Report) Markdown() string {
	var b strings.Builder
	for _, h := range r.Header {
		b.WriteString(h + "\n")
	}
	if len(r.Header) > 0 {
		b.WriteString("\n")
	}
	b.WriteString(tableHeader + "\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|---|\n")
	refs := map[string]Summary{}
	for _, row := range r.Rows {
		if row.Ref && row.Value.N > 0 {
			refs[row.Figure] = row.Value
		}
	}
	for _, row := range r.Rows {
		med, spread, p99, runs, ratio := "–", "–", "–", "0", "–"
		if row.Value.N > 0 {
			v := row.Value
			med = row.Unit.format(v.Median)
			runs = fmt.Sprint(v.N)
			if v.N > 1 {
				spread = row.Unit.format(v.Min) + " – " + row.Unit.format(v.Max)
			}
			if row.WithP99 {
				p99 = row.Unit.format(v.P99)
			}
			if ref, ok := refs[row.Figure]; row.Ref {
				ratio = "1 (ref)"
			} else if ok {
				ratio = ratioCell(v.Median, ref.Median)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n",
			cell(row.Figure), cell(row.Contender), med, spread, p99, runs, ratio, cell(row.Note))
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.Notes {
			b.WriteString("- " + n + "\n")
		}
	}
	return b.String()
}

// ratioCell prints v/ref; equal values (zeros included) give 1.00×.
func ratioCell(v, ref float64) string {
	r := v / ref
	switch {
	case v == ref:
		return "1.00×"
	case math.IsNaN(r) || math.IsInf(ref, 0):
		return "–"
	case math.IsInf(r, 0):
		return "∞"
	}
	return fmt.Sprintf("%.2f×", r)
}

// cell escapes the characters that would break a Markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}
