package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// helpFlags returns the flags a binary lists in its -h output.
func helpFlags(t *testing.T, bin string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, "-h").CombinedOutput() // -h exits 0 or 2 by flag package convention
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z][a-z-]*)`).FindAllStringSubmatch(string(out), -1) {
		flags = append(flags, m[1])
	}
	if len(flags) < 5 {
		t.Fatalf("%s -h lists %d flags:\n%s", bin, len(flags), out)
	}
	slices.Sort(flags)
	return flags
}

// manFlags returns the flags a man page documents in its OPTIONS section
// (.TP entries starting with \-name).
func manFlags(t *testing.T, page string) []string {
	t.Helper()
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, ".SH OPTIONS")
	if start < 0 {
		t.Fatalf("%s: no OPTIONS section", page)
	}
	s = s[start+len(".SH OPTIONS"):]
	if end := strings.Index(s, "\n.SH "); end >= 0 {
		s = s[:end]
	}
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^\.TP\n\.BI? \\-([a-z\\-]+)`).FindAllStringSubmatch(s, -1) {
		flags = append(flags, strings.ReplaceAll(m[1], `\-`, "-"))
	}
	slices.Sort(flags)
	return flags
}

// TestManPages: echod.8 and echoload.1 format without a warning (groff
// -ww), and each documents exactly the flags its binary has; README's flag
// table names every echod flag too.
func TestManPages(t *testing.T) {
	pages := []struct{ page, bin string }{
		{"echod.8", echodBin(t)},
		{filepath.Join("..", "echoload", "echoload.1"), echoloadBin(t)},
	}
	groff, gerr := exec.LookPath("groff")
	for _, p := range pages {
		if gerr == nil {
			out, err := exec.Command(groff, "-man", "-ww", "-z", "-Tutf8", p.page).CombinedOutput()
			if err != nil || len(out) > 0 {
				t.Errorf("groff -man -ww %s: %v\n%s", p.page, err, out)
			}
		} else {
			t.Logf("groff not installed: %s not formatted", p.page)
		}
		have, doc := helpFlags(t, p.bin), manFlags(t, p.page)
		if !slices.Equal(have, doc) {
			t.Errorf("%s documents %v\nthe binary has %v", p.page, doc, have)
		}
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	if i := strings.Index(section, "\n## Flags"); i >= 0 {
		section = section[i:]
		if j := strings.Index(section[1:], "\n## "); j >= 0 {
			section = section[:j+1]
		}
	}
	for _, f := range helpFlags(t, echodBin(t)) {
		if !strings.Contains(section, "| `-"+f) {
			t.Errorf("README's flag table lacks -%s", f)
		}
	}
}

// TestFuzzTargetsListed: every fuzz target in the module is in the
// Makefile's FUZZ_TARGETS, which make fuzz (and so CI) runs.
func TestFuzzTargetsListed(t *testing.T) {
	mk, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	listed := string(mk)
	root := filepath.Join("..", "..")
	fuzzRe := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(`)
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		for _, m := range fuzzRe.FindAllStringSubmatch(string(b), -1) {
			if target := "./" + rel + ":" + m[1]; !strings.Contains(listed, target) {
				t.Errorf("%s is not in the Makefile's FUZZ_TARGETS", target)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
