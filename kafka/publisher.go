// Package kafka publishes outbox messages to Apache Kafka with
// segmentio/kafka-go. It implements gormoutbox.Publisher.
//
// If your code also imports github.com/segmentio/kafka-go, import this
// package under another name:
//
//	import outboxkafka "github.com/go-outbox/outbox/kafka"
//
// # Order
//
// The relay hands Publish one claim at a time, in outbox order. Publish
// sends it with as few WriteMessages calls as it can, one after the other,
// each holding the messages of one topic and at most BatchBytes, so that
// kafka-go makes one batch per partition per call and retries it in place
// (a later batch of a partition is never sent while an earlier one is in
// flight). Once a message of a key fails — too large included — later
// messages of that key in the claim are not sent (gormoutbox.ErrHeldBack):
// nothing overtakes a failed message.
//
// kafka-go has no idempotent producer: a retry of a batch the broker had
// written but not acknowledged duplicates it. Delivery is at least once;
// consumers deduplicate on the event-id header.
//
// # TLS and SASL
//
// Config.TLS turns on TLS and Config.SASL authenticates with PLAIN,
// SCRAM-SHA-256 or SCRAM-SHA-512; NewPublisher builds the kafka-go
// Transport from them (or takes a Transport of yours, with neither set):
//
//	p, err := outboxkafka.NewPublisher(outboxkafka.Config{
//		Brokers: []string{"kafka-1:9093"},
//		TLS:     &tls.Config{RootCAs: pool},
//		SASL: outboxkafka.SASL{Mechanism: outboxkafka.SASLScramSHA512,
//			Username: "outbox", Password: os.Getenv("KAFKA_PASSWORD")},
//	})
//
// The password appears in no error, and SASL prints and logs (fmt, slog,
// encoding/json) without it, so a Config can be logged as it is.
//
// Failures come back from Publish as an error for every message of the
// call, so that the relay retries them and marks nothing published:
//
//   - Refused credentials: the broker closes the connection, which kafka-go
//     reports as io.ErrUnexpectedEOF. The error names the mechanism and the
//     user, says the authentication failed or the connection was closed
//     during it, and matches both kafkago.SASLAuthenticationFailed and the
//     connection error (errors.Is).
//   - A user without WRITE on the topic: the error names the topic and the
//     user and matches kafkago.TopicAuthorizationFailed. A user without
//     DESCRIBE on it does not see the topic at all:
//     kafkago.UnknownTopicOrPartition, with the user named as a possible
//     cause.
//   - A broker certificate that TLS does not trust: the error says the TLS
//     handshake failed and matches *tls.CertificateVerificationError
//     (errors.As).
//
// Each failure says whose it is (see classify): errors of the broker or
// the network wrap gormoutbox.ErrBrokerUnavailable, so the relay counts no
// attempt for them and backs off as a whole; an unknown topic wraps
// gormoutbox.ErrUnknownTopic; answers about the record itself (too large,
// invalid, topic authorisation) are the message's and count.
//
// kafka-go keeps the failure of its first metadata fetch until its next
// one (within Transport.MetadataTTL, 6s by default), so a broker that
// accepts the credentials again is seen within that time.
package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/go-outbox/outbox/gormoutbox"
)

// Defaults of Config.
const (
	DefaultBatchSize    = 500
	DefaultBatchBytes   = 1_000_000
	DefaultWriteTimeout = 10 * time.Second
	DefaultMaxAttempts  = 3
	DefaultBatchTimeout = 100 * time.Microsecond
)

// Config configures a Publisher. Brokers is required.
type Config struct {
	// Brokers are the bootstrap addresses, "host:port".
	Brokers []string

	// Balancer maps a message key to a partition. Default
	// &kafkago.Murmur2Balancer{}: the Java client's default partitioner
	// for keyed messages, so that Java producers and consumers agree on
	// where a key lives. Messages without a key go to a random partition.
	// Use &kafkago.Hash{} to match sarama, &kafkago.CRC32Balancer{} to
	// match librdkafka's default.
	Balancer kafkago.Balancer

	// BatchSize bounds the messages of one WriteMessages call. Set it to
	// the relay's BatchSize (or more) so that a claim goes out in one call
	// per topic; kafka-go allocates room for BatchSize messages per
	// partition batch, so do not make it much larger. Default 500.
	BatchSize int

	// BatchBytes bounds the bytes of one WriteMessages call (and so of
	// one partition batch). Keep it below the broker's message.max.bytes
	// (1,048,588 by default) with a margin for the batch encoding. A
	// single message over it fails with gormoutbox.ErrMessageTooLarge
	// and is dead-lettered. Default 1,000,000.
	BatchBytes int64

	// MaxAttempts is how many times kafka-go tries a partition batch
	// before reporting it failed (retries are in place and keep order).
	// Default 3; 1 means no retry (the relay's backoff then does all of
	// it).
	MaxAttempts int

	// BatchTimeout is kafka-go's BatchTimeout. One call's messages for a
	// partition always go in one batch, so it only adds latency; kafka-go's
	// own default of 1s would make every call last a second. Default 100µs.
	BatchTimeout time.Duration

	// WriteTimeout bounds one produce request. Default 10s.
	WriteTimeout time.Duration

	// RequiredAcks defaults to kafkago.RequireAll: a message counts as
	// sent once every in-sync replica has it. Lowering it can lose
	// messages the relay has marked published.
	RequiredAcks kafkago.RequiredAcks

	// Compression of the batches. Default none.
	Compression kafkago.Compression

	// TLS, when not nil, makes every connection to the brokers TLS with
	// this config (a nil TLS means plaintext). Its ServerName defaults to
	// the broker's host. Put the CA of the brokers' certificates in
	// RootCAs, and a client certificate in Certificates for mutual TLS.
	TLS *tls.Config

	// SASL authenticates every connection with a user name and password
	// (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512); the zero value means no
	// SASL. An unknown mechanism, or a mechanism without a user name or
	// password, is an ErrInvalidConfig. The password is never printed or
	// logged by this package (see SASL).
	SASL SASL

	// ClientID is the client id sent with every request (seen in broker
	// logs, metrics and client-id quotas). Default empty.
	ClientID string

	// Transport carries the requests. Default: a Transport of the
	// Publisher's own built from TLS, SASL and ClientID, closed by Close.
	// A Transport given here is used as it is and not closed; TLS, SASL
	// and ClientID must then be left empty (ErrInvalidConfig otherwise):
	// set them on the Transport.
	Transport *kafkago.Transport

	// AllowAutoTopicCreation lets the broker create missing topics.
	AllowAutoTopicCreation bool
}

// Publisher writes outbox messages with a kafka-go Writer. It is safe for
// concurrent use; Publish calls are serialised (see Publish).
type Publisher struct {
	mu       sync.Mutex // one Publish at a time
	cfg      Config
	w        *kafkago.Writer
	ownTrans *kafkago.Transport
	auth     *authTracker // SASL of ownTrans, nil without
}

var _ gormoutbox.Publisher = (*Publisher)(nil)

// NewPublisher returns a Publisher for cfg.
func NewPublisher(cfg Config) (*Publisher, error) {
	if len(cfg.Brokers) == 0 {
		return nil, fmt.Errorf("%w: Brokers is empty", ErrInvalidConfig)
	}
	for i, b := range cfg.Brokers {
		if b == "" {
			return nil, fmt.Errorf("%w: Brokers[%d] is empty", ErrInvalidConfig, i)
		}
	}
	if cfg.Balancer == nil {
		cfg.Balancer = &kafkago.Murmur2Balancer{}
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.BatchSize < 1 {
		return nil, fmt.Errorf("%w: BatchSize = %d, want at least 1", ErrInvalidConfig, cfg.BatchSize)
	}
	if cfg.BatchBytes == 0 {
		cfg.BatchBytes = DefaultBatchBytes
	}
	if cfg.BatchBytes < 1024 {
		return nil, fmt.Errorf("%w: BatchBytes = %d, want at least 1024", ErrInvalidConfig, cfg.BatchBytes)
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MaxAttempts < 0 {
		return nil, fmt.Errorf("%w: MaxAttempts = %d, want at least 1", ErrInvalidConfig, cfg.MaxAttempts)
	}
	if cfg.BatchTimeout == 0 {
		cfg.BatchTimeout = DefaultBatchTimeout
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.RequiredAcks == 0 {
		cfg.RequiredAcks = kafkago.RequireAll
	}
	own, auth, err := transport(&cfg)
	if err != nil {
		return nil, err
	}
	p := &Publisher{cfg: cfg, ownTrans: own, auth: auth}
	tr := cfg.Transport
	if tr == nil {
		tr = own
	}
	p.w = &kafkago.Writer{
		Addr:         kafkago.TCP(cfg.Brokers...),
		Balancer:     cfg.Balancer,
		MaxAttempts:  cfg.MaxAttempts,
		BatchSize:    cfg.BatchSize, // calls are bounded by BatchSize and BatchBytes: never split
		BatchBytes:   cfg.BatchBytes,
		BatchTimeout: cfg.BatchTimeout,
		WriteTimeout: cfg.WriteTimeout,
		RequiredAcks: cfg.RequiredAcks,
		Compression:  cfg.Compression,
		Transport:    tr,

		AllowAutoTopicCreation: cfg.AllowAutoTopicCreation,
	}
	return p, nil
}

// Writer returns the underlying kafka-go Writer (for its Stats).
func (p *Publisher) Writer() *kafkago.Writer { return p.w }

// Close flushes and closes the writer and the Publisher's own transport.
func (p *Publisher) Close() error {
	err := p.w.Close()
	if p.ownTrans != nil {
		p.ownTrans.CloseIdleConnections()
	}
	return err
}

// Publish implements gormoutbox.Publisher.
//
// Calls are serialised: concurrent WriteMessages calls on one Writer can
// share a partition batch, and a call's messages of one key could then be
// split between two batches with different fates — a later message written
// while an earlier one failed. Serialising costs nothing when one relay
// publishes; a relay with several Workers still overlaps one worker's
// database work with another's publishing.
func (p *Publisher) Publish(ctx context.Context, msgs []gormoutbox.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	errs := make([]error, len(msgs))
	failed := make(map[string]error) // topic+key → error of its first failed message
	var anyErr bool

	// Messages too large for any batch are dead-lettered at once: kafka-go
	// would refuse the whole call for them.
	sizes := make([]int64, len(msgs))
	big := make(map[string]int) // topic+key → index of its first too-large message
	for i := range msgs {
		sizes[i] = size(&msgs[i])
		if sizes[i] > p.cfg.BatchBytes {
			errs[i] = fmt.Errorf("%w: event %s is about %d bytes, over BatchBytes (%d)",
				gormoutbox.ErrMessageTooLarge, msgs[i].EventID, sizes[i], p.cfg.BatchBytes)
			anyErr = true
			// A too-large message is dead-lettered, and a dead row blocks
			// its key (unless the relay skips dead keys, which it decides
			// at its next claim): the later ones of its key are held back.
			if msgs[i].Key != nil {
				if _, ok := big[tkey(&msgs[i])]; !ok {
					big[tkey(&msgs[i])] = i
				}
			}
		}
	}

	for _, idx := range p.calls(msgs, sizes, errs) {
		// Drop what an earlier failure of the same key holds back.
		send := idx[:0:0]
		for _, i := range idx {
			if ferr, ok := failed[tkey(&msgs[i])]; ok {
				errs[i] = fmt.Errorf("%w (%v)", gormoutbox.ErrHeldBack, ferr)
				anyErr = true
				continue
			}
			if j, ok := big[tkey(&msgs[i])]; ok && j < i && msgs[i].Key != nil {
				errs[i] = fmt.Errorf("%w (%v)", gormoutbox.ErrHeldBack, errs[j])
				anyErr = true
				continue
			}
			send = append(send, i)
		}
		if len(send) == 0 {
			continue
		}
		res := p.write(ctx, msgs, send)
		var tooLarge []int
		for j, i := range send {
			err := res[j]
			if err == nil {
				continue
			}
			anyErr = true
			if errors.Is(err, kafkago.MessageSizeTooLarge) {
				// The broker refused a partition batch as too large; it
				// does not say which message. Isolate them below.
				tooLarge = append(tooLarge, i)
				continue
			}
			errs[i] = err
			if msgs[i].Key != nil {
				if _, ok := failed[tkey(&msgs[i])]; !ok {
					failed[tkey(&msgs[i])] = err
				}
			}
		}
		// Send each message of a refused batch alone, in order: those the
		// broker still refuses are too large; the others go through.
		for _, i := range tooLarge {
			if ferr, ok := failed[tkey(&msgs[i])]; ok && msgs[i].Key != nil {
				errs[i] = fmt.Errorf("%w (%v)", gormoutbox.ErrHeldBack, ferr)
				continue
			}
			err := p.write(ctx, msgs, []int{i})[0]
			switch {
			case err == nil:
				errs[i] = nil
			case errors.Is(err, kafkago.MessageSizeTooLarge):
				errs[i] = fmt.Errorf("%w: event %s: the broker refused it: %w",
					gormoutbox.ErrMessageTooLarge, msgs[i].EventID, err)
				if msgs[i].Key != nil {
					failed[tkey(&msgs[i])] = errs[i]
				}
			default:
				errs[i] = err
				if msgs[i].Key != nil {
					failed[tkey(&msgs[i])] = err
				}
			}
		}
	}
	if !anyErr {
		return nil
	}
	for _, e := range errs {
		if e != nil {
			return gormoutbox.PublishErrors(errs)
		}
	}
	return nil
}

// calls splits the messages not yet failed into WriteMessages calls: one
// topic per call (a topic kafka-go cannot look up fails the whole call, and
// must not take other topics with it), each call at most BatchSize messages
// and BatchBytes, in
// outbox order within a topic.
func (p *Publisher) calls(msgs []gormoutbox.Message, sizes []int64, errs []error) [][]int {
	var (
		order []string
		byTop = make(map[string][]int)
	)
	for i := range msgs {
		if errs[i] != nil {
			continue
		}
		t := msgs[i].Topic
		if _, ok := byTop[t]; !ok {
			order = append(order, t)
		}
		byTop[t] = append(byTop[t], i)
	}
	var out [][]int
	for _, t := range order {
		var (
			cur   []int
			bytes int64
		)
		for _, i := range byTop[t] {
			if len(cur) > 0 && (bytes+sizes[i] > p.cfg.BatchBytes || len(cur) == p.cfg.BatchSize) {
				out = append(out, cur)
				cur, bytes = nil, 0
			}
			cur = append(cur, i)
			bytes += sizes[i]
		}
		if len(cur) > 0 {
			out = append(out, cur)
		}
	}
	return out
}

// write sends msgs[idx...] in one WriteMessages call and returns one error
// per message.
func (p *Publisher) write(ctx context.Context, msgs []gormoutbox.Message, idx []int) []error {
	km := make([]kafkago.Message, len(idx))
	for j, i := range idx {
		m := &msgs[i]
		hs := make([]kafkago.Header, len(m.Headers))
		for k, h := range m.Headers {
			hs[k] = kafkago.Header{Key: h.Key, Value: h.Value}
		}
		km[j] = kafkago.Message{Topic: m.Topic, Key: m.Key, Value: m.Value, Headers: hs}
	}
	out := make([]error, len(idx))
	err := p.w.WriteMessages(ctx, km...)
	if err == nil {
		return out
	}
	var we kafkago.WriteErrors
	if errors.As(err, &we) && len(we) == len(idx) {
		for j := range out {
			if we[j] != nil {
				out[j] = classify(p.explain(msgs[idx[j]].Topic, we[j]))
			}
		}
		return out
	}
	// A client-side MessageTooLargeError cannot come here (Publish checks
	// sizes with an over-estimate first); were it to, every message of the
	// call is retried rather than all dead-lettered.
	for j := range out {
		out[j] = classify(p.explain(msgs[idx[j]].Topic, err))
	}
	return out
}

func tkey(m *gormoutbox.Message) string { return m.Topic + "\x00" + string(m.Key) }

// size over-estimates kafka-go's Message.totalSize (record overhead, key,
// value and headers, each length counted at its widest varint), so that a
// call it bounds by BatchBytes is never split by kafka-go.
func size(m *gormoutbox.Message) int64 {
	n := int64(4+1+1+8) + 4 + int64(len(m.Key)) + 4 + int64(len(m.Value)) + 5
	for _, h := range m.Headers {
		n += 5 + int64(len(h.Key)) + 5 + int64(len(h.Value))
	}
	return n
}
