package gormoutbox

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
)

// image says what an event's payload shows when Config.BeforeImage is on.
type image int

const (
	imageRow    image = iota // the row (creates; updates and deletes without BeforeImage)
	imageChange              // {"before": …, "after": row}
	imageGone                // {"before": row, "after": null}: a hard delete
)

// emit builds the events of elems (with the matching types) and writes
// them to the outbox on the statement's transaction.
func (p *Plugin) emit(db *gorm.DB, m *model, elems []reflect.Value, types []string) {
	p.emitImages(db, m, elems, types, nil, imageRow)
}

// emitImages is emit with before-images (same index as elems; an invalid
// Value is a row that had none) for Config.BeforeImage.
func (p *Plugin) emitImages(db *gorm.DB, m *model, elems []reflect.Value, types []string, befores []reflect.Value, img image) {
	if !p.cfg.BeforeImage {
		img = imageRow
	}
	if len(elems) == 0 {
		return
	}
	stmt := db.Statement
	if !inTransaction(stmt.ConnPool) {
		_ = db.AddError(fmt.Errorf("gormoutbox: %s: not in a transaction, refusing a non-atomic write", m.name))
		return
	}
	ctx := stmt.Context
	headers := p.headers(ctx, "application/json", m.version)
	if m.ackTopic != "" {
		headers[HeaderAckTopic] = m.ackTopic
		headers[HeaderProcessAttempt] = "1"
	}
	now := p.cfg.Now().UTC()
	recs := make([]dialects.Record, len(elems))
	for i, e := range elems {
		var before reflect.Value
		if i < len(befores) {
			before = befores[i]
		}
		im := img
		if im == imageChange && !before.IsValid() && types[i] == m.createType {
			im = imageRow // a row an upsert created has no before-image
		}
		r, err := p.entityRecord(ctx, m, types[i], e, before, im, now, headers)
		if err != nil {
			_ = db.AddError(err)
			return
		}
		recs[i] = r
	}
	if err := p.dialect.Insert(ctx, stmt.ConnPool, p.table, recs); err != nil {
		_ = db.AddError(fmt.Errorf("gormoutbox: %s: %w", m.name, err))
		return
	}
	if st := stateOf(db); st != nil {
		st.wrote = true
	}
}

func (p *Plugin) headers(ctx context.Context, contentType, version string) map[string]string {
	h := make(map[string]string, 4)
	h["content-type"] = contentType
	if version != "" {
		h["schema-version"] = version
	}
	p.cfg.Propagator.Inject(ctx, propagation.MapCarrier(h))
	return h
}

func (p *Plugin) entityRecord(ctx context.Context, m *model, typ string, e, before reflect.Value, img image, now time.Time, headers map[string]string) (dialects.Record, error) {
	payload, err := m.enc.encode(e)
	if err != nil {
		return dialects.Record{}, err
	}
	switch img {
	case imageChange:
		b := []byte("null")
		if before.IsValid() {
			if b, err = m.enc.encode(before); err != nil {
				return dialects.Record{}, err
			}
		}
		payload = beforeAfter(b, payload)
	case imageGone:
		payload = beforeAfter(payload, []byte("null"))
	}
	pk := fieldValues(ctx, m.pkFields, e)
	aggID := keyString(pk)
	if len(payload) > p.cfg.MaxPayloadBytes {
		return dialects.Record{}, &PayloadTooLargeError{Model: m.name, Event: "row " + aggID,
			Size: len(payload), Limit: p.cfg.MaxPayloadBytes}
	}
	key := aggID
	if !sameFields(m.keyFields, m.pkFields) {
		key = keyString(fieldValues(ctx, m.keyFields, e))
	}
	if len(key) > MaxKeyLen {
		return dialects.Record{}, fmt.Errorf("%w: model %s row %s: message key is %d bytes, over the limit of %d",
			ErrInvalidEvent, m.name, aggID, len(key), MaxKeyLen)
	}
	return dialects.Record{
		EventID:       p.ids.New(),
		Topic:         m.topic,
		Key:           []byte(key),
		EventType:     typ,
		AggregateType: m.aggregateType,
		AggregateID:   aggID,
		Payload:       payload,
		Headers:       headers,
		Shard:         p.shard([]byte(key)),
		CreatedAt:     now,
		AvailableAt:   now,
		AckTopic:      m.ackTopic,
		LockKey:       m.keyLocked,
	}, nil
}

func beforeAfter(before, after []byte) []byte {
	out := make([]byte, 0, len(before)+len(after)+20)
	out = append(out, `{"before":`...)
	out = append(out, before...)
	out = append(out, `,"after":`...)
	out = append(out, after...)
	return append(out, '}')
}

func (p *Plugin) shard(key []byte) int {
	return int(dialects.HashKey(key) % uint32(p.cfg.Shards))
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}
