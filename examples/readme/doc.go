// Package readme holds the Go code of the repository's README.md, so that
// it is compiled and, where servers are at hand, run: readme_test.go has
// every ```go block of the README between "// readme:begin" and
// "// readme:end" markers, and TestREADMEBlocksMatch fails when the two
// differ (whitespace aside). Edit a block in both places.
package readme
