package inbox

import "errors"

// Errors of the inbox, testable with errors.Is.
var (
	// ErrInvalidConfig reports a Config field that cannot be used.
	ErrInvalidConfig = errors.New("inbox: invalid config")
	// ErrNoHandler: New was given a nil handler.
	ErrNoHandler = errors.New("inbox: no handler")
	// ErrNotInHandler: OnCommit was called with a *gorm.DB that is not a
	// handler's transaction.
	ErrNotInHandler = errors.New("inbox: not the transaction of an inbox handler")
)

// errTxOwned is returned when a handler commits or rolls back the
// transaction it was given: the inbox owns it.
var errTxOwned = errors.New("inbox: the handler's transaction belongs to the inbox; return an error to undo the handler's writes")
