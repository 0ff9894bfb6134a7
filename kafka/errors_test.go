package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/go-outbox/outbox/gormoutbox"
)

// Errors of the broker or the network wrap ErrBrokerUnavailable (the
// relay counts no attempt); errors of the message do not.
func TestClassify(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, tc := range []struct {
		name            string
		err             error
		broker, unknown bool
	}{
		{"connection refused", fmt.Errorf("kafka: topic t: %w", refused), true, false},
		{"context deadline", context.DeadlineExceeded, true, false},
		{"unexpected EOF", io.ErrUnexpectedEOF, true, false},
		{"leader not available", kafkago.LeaderNotAvailable, true, false},
		{"not leader", kafkago.NotLeaderForPartition, true, false},
		{"not enough replicas", kafkago.NotEnoughReplicas, true, false},
		{"request timed out", kafkago.RequestTimedOut, true, false},
		{"coordinator", kafkago.GroupCoordinatorNotAvailable, true, false},
		{"sasl", kafkago.SASLAuthenticationFailed, true, false},
		{"unknown topic", kafkago.UnknownTopicOrPartition, false, true},
		{"too large", kafkago.MessageSizeTooLarge, false, false},
		{"invalid record", kafkago.InvalidRecord, false, false},
		{"corrupt", kafkago.InvalidMessage, false, false},
		{"topic authorization", fmt.Errorf("kafka: topic t: %w", kafkago.TopicAuthorizationFailed), false, false},
		{"invalid topic", kafkago.InvalidTopic, false, false},
		{"already too large", gormoutbox.ErrMessageTooLarge, false, false},
	} {
		err := classify(tc.err)
		if got := errors.Is(err, gormoutbox.ErrBrokerUnavailable); got != tc.broker {
			t.Errorf("%s: classify(%v) wraps ErrBrokerUnavailable = %v, want %v", tc.name, tc.err, got, tc.broker)
		}
		if got := errors.Is(err, gormoutbox.ErrUnknownTopic); got != tc.unknown {
			t.Errorf("%s: classify(%v) wraps ErrUnknownTopic = %v, want %v", tc.name, tc.err, got, tc.unknown)
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: classify lost the cause %v: %v", tc.name, tc.err, err)
		}
	}
}
