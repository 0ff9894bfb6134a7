package dialecttest

import "testing"

// runOutbox runs the outbox cases.
func runOutbox(t *testing.T, h Harness) {}
