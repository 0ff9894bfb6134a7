package postgres

import (
	"errors"
	"strings"

	"github.com/go-outbox/outbox/dialects"
)

// sqlState returns the SQLSTATE of a PostgreSQL error in err's chain, read
// through its SQLState method (pgconn.PgError, lib/pq's Error) without
// importing a driver.
func sqlState(err error) (string, bool) {
	var e interface{ SQLState() string }
	if errors.As(err, &e) {
		return e.SQLState(), true
	}
	return "", false
}

// InboxClassify implements dialects.InboxClassifier: SQLSTATE class 22
// (data exception: invalid byte sequence, a NUL in text, a value too
// long) is the data of a message; 40P01 (deadlock) and 40001
// (serialization failure) roll the batch back.
func (Dialect) InboxClassify(err error) dialects.InboxErrorClass {
	s, ok := sqlState(err)
	switch {
	case !ok:
		return dialects.InboxErrorOther
	case strings.HasPrefix(s, "22"):
		return dialects.InboxErrorData
	case s == "40P01" || s == "40001":
		return dialects.InboxErrorRolledBack
	}
	return dialects.InboxErrorOther
}

var _ dialects.InboxClassifier = Dialect{}
