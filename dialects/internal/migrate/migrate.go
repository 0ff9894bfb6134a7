// Package migrate runs versioned schema steps for both dialects.
package migrate

import (
	"context"
	"fmt"

	"github.com/go-outbox/outbox/dialects"
)

// Apply runs, on q, the steps of ms whose version is above current, in
// order, recording each in the migrations table with record (which
// receives the version). It returns the version reached.
func Apply(ctx context.Context, q dialects.Execer, current int, ms []dialects.Migration, record string) (int, error) {
	for _, m := range ms {
		if m.Version <= current {
			continue
		}
		for _, s := range m.Statements {
			if _, err := q.ExecContext(ctx, s); err != nil && (m.Ignore == nil || !m.Ignore(err)) {
				return current, fmt.Errorf("migration %d: %w", m.Version, err)
			}
		}
		if _, err := q.ExecContext(ctx, record, m.Version); err != nil {
			return current, fmt.Errorf("record migration %d: %w", m.Version, err)
		}
		current = m.Version
	}
	return current, nil
}
