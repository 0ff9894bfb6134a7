package readme_test

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// goBlock is a fenced ```go block of the README, without its fences.
var goBlock = regexp.MustCompile("(?ms)^```go[ \t]*\n(.*?)^```[ \t]*$")

// normalize collapses every run of white space to one space.
func normalize(s string) string { return strings.Join(strings.Fields(s), " ") }

// readmeBlocks returns the normalized ```go blocks of md, with the line
// each starts on.
func readmeBlocks(md string) (blocks []string, lines []int) {
	for _, m := range goBlock.FindAllStringSubmatchIndex(md, -1) {
		blocks = append(blocks, normalize(md[m[2]:m[3]]))
		lines = append(lines, strings.Count(md[:m[0]], "\n")+1)
	}
	return blocks, lines
}

// markedRegions returns the normalized code between "// readme:begin" and
// "// readme:end" lines of src, with the line each starts on.
func markedRegions(src string) (regions []string, lines []int, err error) {
	var cur []string
	in, start := false, 0
	for i, l := range strings.Split(src, "\n") {
		switch strings.TrimSpace(l) {
		case "// readme:begin":
			if in {
				return nil, nil, fmt.Errorf("line %d: readme:begin inside the region begun on line %d", i+1, start)
			}
			in, start, cur = true, i+1, nil
		case "// readme:end":
			if !in {
				return nil, nil, fmt.Errorf("line %d: readme:end without readme:begin", i+1)
			}
			in = false
			regions = append(regions, normalize(strings.Join(cur, "\n")))
			lines = append(lines, start)
		default:
			if in {
				cur = append(cur, l)
			}
		}
	}
	if in {
		return nil, nil, fmt.Errorf("line %d: readme:begin without readme:end", start)
	}
	return regions, lines, nil
}

// firstDiff shows where a and b part.
func firstDiff(a, b string) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	cut := func(s string) string {
		s = s[i:]
		if len(s) > 60 {
			s = s[:60] + "…"
		}
		return s
	}
	return fmt.Sprintf("README: %q\n  readme_test.go: %q", cut(a), cut(b))
}

// compare reports every README block without an identical marked region
// in the test file and every marked region without its README block, in
// order: block i of the README is region i of readme_test.go.
func compare(md, src string) []string {
	blocks, blines := readmeBlocks(md)
	regions, rlines, err := markedRegions(src)
	if err != nil {
		return []string{"readme_test.go: " + err.Error()}
	}
	var probs []string
	if len(blocks) == 0 {
		probs = append(probs, "README.md has no ```go block: is the path or the pattern wrong?")
	}
	for i := 0; i < max(len(blocks), len(regions)); i++ {
		switch {
		case i >= len(regions):
			probs = append(probs, fmt.Sprintf("README.md line %d: go block %d has no readme:begin/end region in readme_test.go", blines[i], i+1))
		case i >= len(blocks):
			probs = append(probs, fmt.Sprintf("readme_test.go line %d: region %d has no go block in README.md", rlines[i], i+1))
		case blocks[i] != regions[i]:
			probs = append(probs, fmt.Sprintf("README.md line %d (go block %d) differs from readme_test.go line %d:\n  %s",
				blines[i], i+1, rlines[i], firstDiff(blocks[i], regions[i])))
		}
	}
	return probs
}

// TestREADMEBlocksMatch fails when a ```go block of README.md and its
// compiled twin in readme_test.go differ by more than white space, so that
// the README shows only code that compiles.
func TestREADMEBlocksMatch(t *testing.T) {
	md, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("readme_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range compare(string(md), string(src)) {
		t.Error(p)
	}
}

// TestCompareCatchesDrift checks the checker: an edit on either side, a
// dropped line, a missing or extra block all fail; white space does not.
func TestCompareCatchesDrift(t *testing.T) {
	const md = "text\n```go\nx := 1\ny := x + 1\n```\n\n```sh\nmake demo\n```\n```go\nfunc f() {}\n```\n"
	const src = "package p\n\nfunc g() {\n\t// readme:begin\n\tx  :=  1\n\n\ty := x + 1\n\t// readme:end\n}\n\n// readme:begin\nfunc f() {}\n// readme:end\n"
	if p := compare(md, src); len(p) != 0 {
		t.Fatalf("identical up to white space, got %q", p)
	}
	for name, c := range map[string]struct{ md, src string }{
		"README edited":        {strings.Replace(md, "x + 1", "x + 2", 1), src},
		"test edited":          {md, strings.Replace(src, "x + 1", "x + 2", 1)},
		"README line dropped":  {strings.Replace(md, "y := x + 1\n", "", 1), src},
		"test line dropped":    {md, strings.Replace(src, "\ty := x + 1\n", "", 1)},
		"README block added":   {md + "```go\nvar z int\n```\n", src},
		"test region added":    {md, src + "// readme:begin\nvar z int\n// readme:end\n"},
		"README block removed": {strings.Replace(md, "```go\nfunc f() {}\n```\n", "", 1), src},
		"unterminated region":  {md, strings.Replace(src, "\t// readme:end\n", "", 1)},
	} {
		if p := compare(c.md, c.src); len(p) == 0 {
			t.Errorf("%s: not detected", name)
		}
	}
}
