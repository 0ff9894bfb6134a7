package dialecttest

import "testing"

// runInbox runs the inbox cases.
func runInbox(t *testing.T, h Harness) {}
