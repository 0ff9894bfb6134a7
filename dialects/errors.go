package dialects

import "errors"

// Errors of the dialects, testable with errors.Is.
var (
	// ErrInvalidTable reports a table name that is not a plain SQL
	// identifier.
	ErrInvalidTable = errors.New("dialects: invalid outbox table name")
	// ErrNoIDs is returned by Replay and Resend when they are given no
	// ids.
	ErrNoIDs = errors.New("dialects: no outbox row ids given")
	// ErrNoRow is returned by Acknowledge when the event is not in the
	// table.
	ErrNoRow = errors.New("dialects: no outbox row with this event id")
	// ErrUnknownState reports a RowState InState does not know.
	ErrUnknownState = errors.New("dialects: unknown outbox row state")
	// ErrUnsupported is returned by an optional method of a Dialect
	// (SetNotify) on a database without the feature; its Capabilities say
	// so beforehand.
	ErrUnsupported = errors.New("dialects: not supported by this database")
)
