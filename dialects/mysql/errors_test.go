package mysql

import (
	"fmt"
	"testing"

	gomysql "github.com/go-sql-driver/mysql"
)

func TestErrorNumber(t *testing.T) {
	deadlock := &gomysql.MySQLError{Number: 1213, Message: "Deadlock found"}
	for name, c := range map[string]struct {
		err  error
		want uint16
		ok   bool
	}{
		"driver error":  {deadlock, 1213, true},
		"wrapped":       {fmt.Errorf("claim: %w", deadlock), 1213, true},
		"joined":        {fmt.Errorf("a: %w; b: %w", fmt.Errorf("x"), deadlock), 1213, true},
		"other error":   {fmt.Errorf("connection refused"), 0, false},
		"nil":           {nil, 0, false},
		"typed nil ptr": {(*gomysql.MySQLError)(nil), 0, false},
	} {
		n, ok := errorNumber(c.err)
		if n != c.want || ok != c.ok {
			t.Errorf("%s: errorNumber = %d, %v; want %d, %v", name, n, ok, c.want, c.ok)
		}
	}
	if !isErrorNumber(deadlock, 1205, 1213) || isErrorNumber(deadlock, 1060) {
		t.Error("isErrorNumber")
	}
}
