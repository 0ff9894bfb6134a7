package mysql

import (
	"context"
	"errors"
	"testing"

	"github.com/go-outbox/outbox/dialects"
)

// MySQL declares no commit notifications, and SetNotify says so without
// touching a database.
func TestNoNotify(t *testing.T) {
	if (Dialect{}).Capabilities().Notify {
		t.Fatal("Capabilities().Notify = true on MySQL")
	}
	err := (Dialect{}).SetNotify(context.Background(), nil, dialects.Table{Name: "outbox"}, true)
	if !errors.Is(err, dialects.ErrUnsupported) {
		t.Fatalf("SetNotify = %v, want dialects.ErrUnsupported", err)
	}
}
