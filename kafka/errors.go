package kafka

import "errors"

// ErrInvalidConfig reports a Config field the Publisher cannot use.
var ErrInvalidConfig = errors.New("kafka: invalid config")
