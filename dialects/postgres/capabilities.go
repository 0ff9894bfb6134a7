package postgres

import (
	"time"

	"github.com/go-outbox/outbox/dialects"
)

// Capabilities implements dialects.Dialect: GORM's INSERT returns every
// database default (RETURNING), times are stored to the microsecond and
// pgx truncates what it sends to it, generated keys come back only from
// RETURNING, ON CONFLICT DO UPDATE counts every row it touched, and the
// outbox table's trigger sends NOTIFY at commit (package pgxlisten
// receives it); DDL is transactional.
func (Dialect) Capabilities() dialects.Capabilities {
	return dialects.Capabilities{
		ReturnsDefaults: true,
		TimePrecision:   time.Microsecond,
		TimesTruncated:  true,
		UpsertCount:     dialects.UpsertCountsRows,
		Notify:          true,
		// DDL is transactional: migrations run in one transaction.
		TransactionalDDL: true,
	}
}
