package rowscan

import (
	"testing"
	"time"
)

func TestTimeScan(t *testing.T) {
	var tm Time
	for _, v := range []any{"2026-11-22 10:11:12.123456", []byte("2026-11-22 10:11:12.123456"), time.Date(2026, 11, 22, 10, 11, 12, 123456000, time.UTC)} {
		if err := tm.Scan(v); err != nil || !tm.Valid || tm.Time.Nanosecond() != 123456000 {
			t.Errorf("Scan(%v): %v %v", v, tm, err)
		}
	}
	if err := tm.Scan(nil); err != nil || tm.Valid {
		t.Errorf("Scan(nil): %v %v", tm, err)
	}
	if err := tm.Scan("yesterday"); err == nil {
		t.Error("Scan(\"yesterday\") succeeded")
	}
}
