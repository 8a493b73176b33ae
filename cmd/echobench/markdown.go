package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// mdTable formats a Markdown table. Columns are padded to a common width
// so the source reads as well as the rendering; a column whose cells are
// all numbers (or empty, or "-") is right-aligned. Pipes in cells are
// escaped.
func mdTable(header []string, rows [][]string) string {
	n := len(header)
	cell := func(r []string, i int) string {
		if i < len(r) {
			return strings.ReplaceAll(r[i], "|", `\|`)
		}
		return ""
	}
	width := make([]int, n)
	right := make([]bool, n)
	for i := range n {
		width[i] = max(3, utf8.RuneCountInString(cell(header, i)))
		nums, others := 0, 0
		for _, r := range rows {
			c := cell(r, i)
			width[i] = max(width[i], utf8.RuneCountInString(c))
			switch {
			case c == "" || c == "-":
			case numeric(c):
				nums++
			default:
				others++
			}
		}
		right[i] = nums > 0 && others == 0
	}
	var b strings.Builder
	line := func(r []string) {
		b.WriteString("|")
		for i := range n {
			c := cell(r, i)
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if right[i] {
				b.WriteString(" " + pad + c + " |")
			} else {
				b.WriteString(" " + c + pad + " |")
			}
		}
		b.WriteString("\n")
	}
	line(header)
	b.WriteString("|")
	for i := range n {
		if right[i] {
			b.WriteString(" " + strings.Repeat("-", width[i]-1) + ": |")
		} else {
			b.WriteString(" " + strings.Repeat("-", width[i]) + " |")
		}
	}
	b.WriteString("\n")
	for _, r := range rows {
		line(r)
	}
	return b.String()
}

// numeric reports whether s reads as a number, possibly with thousands
// separators, a sign, a trailing "x" (ratio) or "%".
func numeric(s string) bool {
	s = strings.TrimSuffix(strings.TrimSuffix(s, "%"), "x")
	s = strings.ReplaceAll(s, ",", "")
	s = strings.TrimPrefix(strings.TrimPrefix(s, "+"), "-")
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}

// fmtInt formats n with thousands separators: 1234567 -> "1,234,567".
func fmtInt(n int64) string {
	if n < 0 {
		return "-" + fmtInt(-n)
	}
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// fmtF formats x with prec decimals, or "-" if it is not a finite number.
func fmtF(x float64, prec int) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "-"
	}
	if math.Abs(x) >= 1000 && prec <= 1 {
		return fmtInt(int64(math.Round(x)))
	}
	return strconv.FormatFloat(x, 'f', prec, 64)
}

// fmtRatio formats a/b as "0.93x", or "-" if b is zero.
func fmtRatio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// fmtBytes formats a byte count in KiB/MiB.
func fmtBytes(n float64) string {
	switch a := math.Abs(n); {
	case a >= 1<<20:
		return fmt.Sprintf("%.1f MiB", n/(1<<20))
	case a >= 1<<10:
		return fmt.Sprintf("%.1f KiB", n/(1<<10))
	default:
		return fmt.Sprintf("%.0f B", n)
	}
}

// shellQuote renders argv as a command line one can paste into sh.
func shellQuote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,+@%^", r))
		}) < 0 {
			q[i] = a
			continue
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// section is one part of the report: a title, the command lines run, and
// a body of text and tables.
type section struct {
	title string
	cmds  []string
	body  strings.Builder
}

func (s *section) cmd(argv []string) { s.cmds = append(s.cmds, shellQuote(argv)) }

// cmdc records a command line with a trailing comment.
func (s *section) cmdc(argv []string, comment string) {
	s.cmds = append(s.cmds, shellQuote(argv)+"  # "+comment)
}
func (s *section) note(c string) { s.cmds = append(s.cmds, "# "+c) }

func (s *section) p(format string, args ...any) {
	fmt.Fprintf(&s.body, format, args...)
	s.body.WriteString("\n\n")
}

func (s *section) table(header []string, rows [][]string) {
	s.body.WriteString(mdTable(header, rows))
	s.body.WriteString("\n")
}

func (s *section) code(text string) {
	s.body.WriteString("```\n" + strings.TrimRight(text, "\n") + "\n```\n\n")
}

func (s *section) String() string {
	var b strings.Builder
	b.WriteString("## " + s.title + "\n\n")
	if len(s.cmds) > 0 {
		b.WriteString("Commands run:\n\n```sh\n")
		for _, c := range s.cmds {
			b.WriteString(c + "\n")
		}
		b.WriteString("```\n\n")
	}
	b.WriteString(strings.TrimRight(s.body.String(), "\n") + "\n")
	return b.String()
}
