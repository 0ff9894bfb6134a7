package inboxtext

import (
	"fmt"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/headers"
)

// ParkColumns lists the inbox columns a parked message is written to, in
// the order of ParkArgs.
const ParkColumns = `consumer, event_id, topic, kafka_partition, kafka_offset, status, processed_at, attempts, last_error, msg_key, payload, headers`

// ParkArgs returns the bind arguments of a parked message in ParkColumns
// order: headers whose name or value is not valid UTF-8 or holds a NUL are
// encoded (EncodeHeaders), the last error is made valid text (Text).
func ParkArgs(dl dialects.InboxDeadLetter) ([]any, error) {
	var he headers.Encoder
	h, err := he.Encode(EncodeHeaders(dl.Headers))
	if err != nil {
		return nil, fmt.Errorf("encode headers of %s: %w", dl.EventID, err)
	}
	var key any
	if dl.Key != nil {
		key = dl.Key
	}
	return []any{dl.Consumer, dl.EventID, dl.Topic, dl.Partition, dl.Offset, "dead", dl.ParkedAt,
		dl.Attempts, Text(dl.LastError), key, dl.Value, h}, nil
}
