package integration

import (
	"testing"
	"time"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// The relay holds the connections its passes run on between passes: with
// a pool that keeps no idle connection at all, draining a backlog in many
// batches, and then passes that find nothing, closes (and so reopens) no
// connection once the relay is warm. Without held connections
// (HeldConns < 0) every pass reopens them.
func TestRelayHoldsItsConnections(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		sqlDB, err := db.DB()
		if err != nil {
			t.Fatal(err)
		}
		sqlDB.SetMaxIdleConns(0)
		run := func(held int, overlap bool) int64 {
			pub := &recordingPublisher{}
			r := newRelay(t, db, pub, gormoutbox.RelayConfig{BatchSize: 10, HeldConns: held, Overlap: overlap, LockWait: -1})
			defer r.Close()
			drain := func() int {
				res, err := r.Drain(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				return res.Published
			}
			drain() // warm
			writeSeqEvents(t, db, "held-conns", 4, 50, 2, 10)
			before := sqlDB.Stats().MaxIdleClosed
			published := 0
			for deadline := time.Now().Add(30 * time.Second); published < 200 && time.Now().Before(deadline); {
				published += drain()
			}
			for i := 0; i < 5; i++ {
				published += drain()
			}
			if published != 200 {
				t.Fatalf("published %d, want 200", published)
			}
			return sqlDB.Stats().MaxIdleClosed - before
		}
		if closed := run(0, false); closed != 0 {
			t.Errorf("with held connections (default), %d connections were closed and reopened by the relay's passes, want 0", closed)
		}
		if closed := run(0, true); closed != 0 {
			t.Errorf("with held connections and Overlap (a fork per worker), %d connections were closed and reopened, want 0", closed)
		}
		if closed := run(-1, false); closed == 0 {
			t.Errorf("without held connections, no connection was reopened: the check cannot tell")
		}
	})
}
