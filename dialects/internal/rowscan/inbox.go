package rowscan

import (
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/go-outbox/outbox/dialects"
)

// InboxColumns lists the columns InboxDeadLetters reads, in its order.
const InboxColumns = `consumer, event_id, topic, kafka_partition, kafka_offset, msg_key, payload, headers,
	attempts, COALESCE(last_error, ''), processed_at`

// InboxDeadLetters reads parked inbox messages selected as InboxColumns
// and closes rows.
func InboxDeadLetters(rows *sql.Rows) ([]dialects.InboxDeadLetter, error) {
	defer rows.Close()
	var out []dialects.InboxDeadLetter
	for rows.Next() {
		var (
			dl dialects.InboxDeadLetter
			h  []byte
			at Time
		)
		if err := rows.Scan(&dl.Consumer, &dl.EventID, &dl.Topic, &dl.Partition, &dl.Offset, &dl.Key, &dl.Value, &h,
			&dl.Attempts, &dl.LastError, &at); err != nil {
			return nil, err
		}
		dl.ParkedAt = at.Time
		if len(h) > 0 {
			if err := json.Unmarshal(h, &dl.Headers); err != nil {
				return nil, fmt.Errorf("headers of dead letter %s: %w", dl.EventID, err)
			}
		}
		out = append(out, dl)
	}
	return out, rows.Err()
}
