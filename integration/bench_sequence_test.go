package integration

import (
	"fmt"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// BenchmarkCaptureKeyLock measures what the key lock costs an explicit
// event (Publish locks its key so that events of a key take their ids —
// their x-sequence numbers — in commit order): one event per transaction,
// with a key (locked) and without one (nothing to lock), alternating on
// one database. Captured writes keyed by their primary key take no lock
// (the entity's row lock orders them) and are measured by
// BenchmarkCaptureOverhead.
func BenchmarkCaptureKeyLock(b *testing.B) {
	for _, d := range testenv.Dialects() {
		b.Run(d.Name, func(b *testing.B) {
			db := benchDBWith(b, d, gormoutbox.Config{})
			publish := func(key string) func(i int) error {
				return func(i int) error {
					return db.Transaction(func(tx *gorm.DB) error {
						k := key
						if k != "" {
							k = fmt.Sprint(key, i%16)
						}
						return gormoutbox.Publish(tx, gormoutbox.Event{Topic: "orders", Key: k, Type: "Noted", Payload: i})
					})
				}
			}
			benchAB(b, "keyed", publish("o-"), "keyless", publish(""))
		})
	}
}

// benchAB times fa and fb, alternating which goes first, and reports
// their times per op and the ratio a/b.
func benchAB(b *testing.B, a string, fa func(int) error, bn string, fb func(int) error) {
	for i := 0; i < 20; i++ { // warm both
		if err := fa(-i - 1); err != nil {
			b.Fatal(err)
		}
		if err := fb(-i - 1); err != nil {
			b.Fatal(err)
		}
	}
	var ta, tb time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		first, second, t1, t2 := fa, fb, &ta, &tb
		if i%2 == 1 {
			first, second, t1, t2 = fb, fa, &tb, &ta
		}
		s := time.Now()
		if err := first(i); err != nil {
			b.Fatal(err)
		}
		m := time.Now()
		if err := second(i); err != nil {
			b.Fatal(err)
		}
		*t1 += m.Sub(s)
		*t2 += time.Since(m)
	}
	b.StopTimer()
	b.ReportMetric(float64(ta.Nanoseconds())/float64(b.N), a+"-ns/op")
	b.ReportMetric(float64(tb.Nanoseconds())/float64(b.N), bn+"-ns/op")
	b.ReportMetric(float64(ta)/float64(tb), a+"/"+bn)
}
