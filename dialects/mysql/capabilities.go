package mysql

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/go-outbox/outbox/dialects"
)

// Capabilities implements dialects.Dialect: GORM's INSERT does not always
// return the database defaults (MySQL 8 has no RETURNING, MariaDB's is
// optional), so the rows whose defaults are still zero are read back; the
// precision of a time depends on its column, which rounds; a multi-row
// INSERT's auto increment keys come back as consecutive LastInsertId; ON
// DUPLICATE KEY UPDATE counts 1 per inserted and 2 per changed row; and
// there are no commit notifications.
func (Dialect) Capabilities() dialects.Capabilities {
	return dialects.Capabilities{
		ConsecutiveInsertIDs: true,
		UpsertCount:          dialects.UpsertCountsChanges,
		// A pass locks the shards it claims from (see Open), so it reads
		// ClaimOptions.ShardLocks.
		LocksShards: true,
	}
}

// SetNotify implements dialects.Dialect: MySQL sends no commit
// notifications, so it returns an error wrapping dialects.ErrUnsupported.
func (Dialect) SetNotify(_ context.Context, _ *sql.DB, t dialects.Table, _ bool) error {
	return fmt.Errorf("notify trigger of %s: mysql sends no commit notifications: %w", t, dialects.ErrUnsupported)
}
