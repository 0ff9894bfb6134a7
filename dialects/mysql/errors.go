package mysql

import (
	"errors"
	"reflect"

	"github.com/go-outbox/outbox/dialects"
)

// errorNumber returns the server error number of a MySQL error in err's
// chain (go-sql-driver/mysql's *MySQLError, field Number), read without
// importing the driver: a service on PostgreSQL links this package through
// gormoutbox and should not link a MySQL driver it never uses. Any driver
// whose error type is a struct named MySQLError with a uint16 Number field
// works.
func errorNumber(err error) (uint16, bool) {
	for err != nil {
		v := reflect.ValueOf(err)
		if v.Kind() == reflect.Pointer && !v.IsNil() {
			v = v.Elem()
		}
		if v.Kind() == reflect.Struct && v.Type().Name() == "MySQLError" {
			if f := v.FieldByName("Number"); f.IsValid() && f.Kind() == reflect.Uint16 {
				return uint16(f.Uint()), true
			}
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				if n, ok := errorNumber(e); ok {
					return n, true
				}
			}
			return 0, false
		}
		err = errors.Unwrap(err)
	}
	return 0, false
}

// isErrorNumber reports whether err is a MySQL error with one of numbers.
func isErrorNumber(err error, numbers ...uint16) bool {
	n, ok := errorNumber(err)
	if !ok {
		return false
	}
	for _, x := range numbers {
		if n == x {
			return true
		}
	}
	return false
}

// InboxClassify implements dialects.InboxClassifier. Data errors of a
// message: 1264 (out of range), 1265 (data truncated), 1292 (incorrect
// value), 1366 (incorrect string value: invalid UTF-8), 1367 (illegal
// value), 1406 (data too long), 3140 (invalid JSON). The transaction
// rolled back: 1213 (deadlock: InnoDB rolls the whole transaction back,
// savepoints included), 1205 (lock wait timeout: the statement only,
// unless innodb_rollback_on_timeout; the inbox retries the batch either
// way), 1305 (a savepoint that does not exist: its transaction is gone).
func (Dialect) InboxClassify(err error) dialects.InboxErrorClass {
	n, ok := errorNumber(err)
	if !ok {
		return dialects.InboxErrorOther
	}
	switch n {
	case 1264, 1265, 1292, 1366, 1367, 1406, 3140:
		return dialects.InboxErrorData
	case 1213, 1205, 1305:
		return dialects.InboxErrorRolledBack
	}
	return dialects.InboxErrorOther
}

var _ dialects.InboxClassifier = Dialect{}
