package kafka

import (
	"errors"
	"fmt"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/go-outbox/outbox/gormoutbox"
)

// ErrInvalidConfig reports a Config field the Publisher cannot use.
var ErrInvalidConfig = errors.New("kafka: invalid config")

// classify wraps an error of one message in gormoutbox.ErrUnknownTopic or
// gormoutbox.ErrBrokerUnavailable unless it belongs to the message itself,
// so that the relay counts only the message's own failures toward
// MaxAttempts.
//
// Errors of the message are the broker's answers about that record: too
// large, invalid or corrupt, an invalid topic name, a topic the client may
// not write to. Everything else — connection refused or reset, timeouts
// (the WriteTimeout's context deadline, net.Error), no leader, not enough
// replicas, coordinator and metadata errors, request timed out, SASL or
// TLS failing (a broker going down mid-handshake looks like refused
// credentials) — belongs to the broker or the network: it would fail any
// message, and a retry later can succeed.
func classify(err error) error {
	if err == nil || errors.Is(err, gormoutbox.ErrBrokerUnavailable) || errors.Is(err, gormoutbox.ErrUnknownTopic) ||
		errors.Is(err, gormoutbox.ErrMessageTooLarge) || errors.Is(err, gormoutbox.ErrHeldBack) {
		return err
	}
	var ke kafkago.Error
	if errors.As(err, &ke) {
		switch ke {
		case kafkago.InvalidMessage, kafkago.InvalidMessageSize, kafkago.InvalidTopic,
			kafkago.RecordListTooLarge, kafkago.TopicAuthorizationFailed, kafkago.InvalidTimestamp,
			kafkago.UnsupportedForMessageFormat, kafkago.InvalidRecord, kafkago.MessageSizeTooLarge:
			return err
		case kafkago.UnknownTopicOrPartition:
			return fmt.Errorf("%w: %w", gormoutbox.ErrUnknownTopic, err)
		}
	}
	return fmt.Errorf("%w: %w", gormoutbox.ErrBrokerUnavailable, err)
}
