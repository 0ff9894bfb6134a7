package rowscan_test

import (
	"strings"
	"testing"

	"github.com/go-outbox/outbox/dialects/internal/rowscan"
	"github.com/go-outbox/outbox/dialects/mysql"
	"github.com/go-outbox/outbox/gormoutbox"
)

// The key limit a row is checked against is the plugin's and the MySQL
// column's.
func TestMaxKeyLen(t *testing.T) {
	for name, n := range map[string]int{"gormoutbox.MaxKeyLen": gormoutbox.MaxKeyLen, "mysql.MaxKeyLen": mysql.MaxKeyLen} {
		if n != rowscan.MaxKeyLen {
			t.Errorf("%s = %d, rowscan.MaxKeyLen = %d: want them equal", name, n, rowscan.MaxKeyLen)
		}
	}
}

func TestValidTopic(t *testing.T) {
	for topic, want := range map[string]bool{
		"orders": true, "a.b_c-D9": true, strings.Repeat("t", 249): true,
		"": false, ".": false, "..": false, "bad topic": false, "t/x": false, "é": false,
		strings.Repeat("t", 250): false,
	} {
		if got := rowscan.ValidTopic(topic); got != want {
			t.Errorf("ValidTopic(%q) = %v, want %v", topic, got, want)
		}
	}
}
