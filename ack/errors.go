package ack

import "errors"

// ErrNoAckTopic: Reply was given a message that asks for no answer (no
// "ack-topic" header).
var ErrNoAckTopic = errors.New("ack: the message asks for no acknowledgement (no ack-topic header)")
