package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// adminRows writes n events of topic (asking for answers on ackTopic when
// set) and returns their row ids and event ids, in order.
func adminRows(t *testing.T, db *gorm.DB, topic, ackTopic string, n int) (ids []int64, events []string) {
	t.Helper()
	evs := make([]gormoutbox.Event, n)
	for i := range evs {
		evs[i] = gormoutbox.Event{Topic: topic, Key: fmt.Sprint("k", i), Type: "Changed", Payload: map[string]int{"n": i},
			AckTopic: ackTopic}
	}
	if err := db.Transaction(func(tx *gorm.DB) error { return gormoutbox.Publish(tx, evs...) }); err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	rows, err := sqlDB.Query(`SELECT id, event_id FROM outbox WHERE topic = '` + topic + `' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id int64
			ev string
		)
		if err := rows.Scan(&id, &ev); err != nil {
			t.Fatal(err)
		}
		ids, events = append(ids, id), append(events, ev)
	}
	if len(ids) != n {
		t.Fatalf("%d rows of %s, want %d", len(ids), topic, n)
	}
	return ids, events
}

// adminExec runs a statement of the test's own on db (setting up row
// states as a relay would).
func adminExec(t *testing.T, db *gorm.DB, query string, args ...any) {
	t.Helper()
	if err := db.Exec(query, args...).Error; err != nil {
		t.Fatal(err)
	}
}

func idIn(ids ...int64) string {
	list := make([]string, len(ids))
	for i, id := range ids {
		list[i] = strconv.FormatInt(id, 10)
	}
	return "(" + strings.Join(list, ",") + ")"
}

// The Admin operates the outbox with no Publisher anywhere: counts per
// state (every state with CountStates), dead letters and failed rows,
// which ids are in a state, replay, re-send and cleanup.
func TestAdminOperatesWithoutPublisher(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		stock, stockEvents := adminRows(t, db, "stock", "stock-acks", 6)
		plain, _ := adminRows(t, db, "plain", "", 2)
		admin, err := gormoutbox.NewAdmin(db, gormoutbox.AdminConfig{CleanupBatch: 2})
		if err != nil {
			t.Fatal(err)
		}
		if admin.Table() != "outbox" {
			t.Errorf("Table() = %q, want the plugin's outbox", admin.Table())
		}
		if st, err := admin.Stats(ctx); err != nil || st.Pending != 8 || st.OldestPending.IsZero() {
			t.Fatalf("Stats: %+v, %v; want 8 pending", st, err)
		}

		// States as a relay and the consumers would leave them: two dead,
		// three stock rows and both plain rows published two hours ago; of
		// the published stock rows one answered FAILED on its last attempt,
		// one processed, one waiting. The sixth stays pending.
		adminExec(t, db, `UPDATE outbox SET dead_at = ?, attempts = 10, last_error = 'broker says no' WHERE id IN `+
			idIn(stock[0], stock[1]), time.Now().UTC())
		adminExec(t, db, `UPDATE outbox SET published_at = ? WHERE id IN `+idIn(stock[2], stock[3], stock[4], plain[0], plain[1]),
			time.Now().UTC().Add(-2*time.Hour))
		for i, status := range map[int]gormoutbox.AckStatus{2: gormoutbox.AckFailed, 3: gormoutbox.AckSuccess} {
			if err := db.Transaction(func(tx *gorm.DB) error {
				_, err := gormoutbox.Acknowledge(tx, gormoutbox.Ack{EventID: stockEvents[i], Status: status, Attempt: 1,
					Reason: "no such warehouse"}, 1)
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}

		st, err := admin.Stats(ctx)
		if err != nil || st.Pending != 1 || st.Dead != 2 || st.Awaiting != 1 || st.Failed != 1 {
			t.Errorf("Stats: %+v, %v; want 1 pending, 2 dead, 1 awaiting, 1 failed", st, err)
		}
		topics, err := admin.TopicStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s := topics["stock"]; s.Pending != 1 || s.Dead != 2 || s.Awaiting != 1 || s.Failed != 1 || s.Published != 0 || s.Processed != 0 {
			t.Errorf("TopicStats[stock] = %+v", s)
		}
		all, err := admin.CountStates(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s := all["stock"]; s.Pending != 1 || s.Dead != 2 || s.Awaiting != 1 || s.Failed != 1 || s.Processed != 1 || s.Published != 0 {
			t.Errorf("CountStates[stock] = %+v", s)
		}
		if s := all["plain"]; s.Published != 2 || s.Pending != 0 {
			t.Errorf("CountStates[plain] = %+v, want 2 published", s)
		}

		dead, err := admin.DeadLetters(ctx, gormoutbox.DeadLetterQuery{Topic: "stock"})
		if err != nil || len(dead) != 2 || dead[0].ID != stock[0] || dead[1].ID != stock[1] || dead[0].LastError != "broker says no" {
			t.Errorf("DeadLetters: %+v, %v; want rows %d and %d", dead, err, stock[0], stock[1])
		}
		if dead, err := admin.DeadLetters(ctx, gormoutbox.DeadLetterQuery{Topic: "plain"}); err != nil || len(dead) != 0 {
			t.Errorf("DeadLetters of plain: %+v, %v; want none", dead, err)
		}
		failed, err := admin.Failed(ctx, gormoutbox.DeadLetterQuery{})
		if err != nil || len(failed) != 1 || failed[0].ID != stock[2] || failed[0].FailedAt == nil || failed[0].LastError != "no such warehouse" {
			t.Errorf("Failed: %+v, %v; want row %d", failed, err, stock[2])
		}

		asked := append(slices.Clone(stock), plain...)
		asked = append(asked, 1<<40)
		for state, want := range map[gormoutbox.RowState][]int64{
			gormoutbox.StateDead:     {stock[0], stock[1]},
			gormoutbox.StateFailed:   {stock[2]},
			gormoutbox.StateAwaiting: {stock[4]},
			gormoutbox.StatePending:  {stock[5]},
		} {
			got, err := admin.InState(ctx, state, asked...)
			slices.Sort(got)
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("InState(%s): %v, %v; want %v", state, got, err, want)
			}
		}
		if _, err := admin.InState(ctx, "lost", stock...); !errors.Is(err, dialects.ErrUnknownState) {
			t.Errorf("InState of an unknown state: %v, want ErrUnknownState", err)
		}

		// Replay and Resend put back only rows of their state.
		if n, err := admin.Replay(ctx, stock[0], stock[5]); err != nil || n != 1 {
			t.Errorf("Replay(dead, pending) = %d, %v; want 1", n, err)
		}
		if n, err := admin.Resend(ctx, stock[2], stock[4]); err != nil || n != 1 {
			t.Errorf("Resend(failed, awaiting) = %d, %v; want 1", n, err)
		}
		if _, err := admin.Replay(ctx); !errors.Is(err, dialects.ErrNoIDs) {
			t.Errorf("Replay of no ids: %v, want ErrNoIDs", err)
		}
		if st, err := admin.Stats(ctx); err != nil || st.Pending != 3 || st.Dead != 1 || st.Failed != 0 || st.Awaiting != 1 {
			t.Errorf("after Replay and Resend: %+v, %v; want 3 pending, 1 dead, 0 failed, 1 awaiting", st, err)
		}
		var attempt int
		if err := db.Raw(`SELECT process_attempts FROM outbox WHERE id = ?`, stock[2]).Scan(&attempt).Error; err != nil || attempt != 2 {
			t.Errorf("re-sent row at process attempt %d, %v; want 2", attempt, err)
		}

		// Cleanup, two rows per statement: the processed row and the two
		// plain ones, published two hours ago; the row awaiting its answer
		// stays.
		if n, err := admin.Cleanup(ctx, time.Hour); err != nil || n != 3 {
			t.Errorf("Cleanup = %d, %v; want 3", n, err)
		}
		all, err = admin.CountStates(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s := all["stock"]; s.Processed != 0 || s.Awaiting != 1 || s.Pending != 3 {
			t.Errorf("after Cleanup: stock %+v", s)
		}
		if s, ok := all["plain"]; ok {
			t.Errorf("after Cleanup: plain %+v, want none", s)
		}
	})
}

// NewAdmin needs no plugin (the table and the dialect then come from its
// config and the dialector) and names the config fields at fault.
func TestAdminConfig(t *testing.T) {
	if _, err := gormoutbox.NewAdmin(nil, gormoutbox.AdminConfig{}); !errors.Is(err, gormoutbox.ErrInvalidConfig) {
		t.Errorf("nil db: %v, want ErrInvalidConfig", err)
	}
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db := d.Open(t, nil) // no plugin registered
		script, err := gormoutbox.DDL(d.Name, "outbox")
		applyDDL(t, db, script, err)
		_, err = gormoutbox.NewAdmin(db, gormoutbox.AdminConfig{Table: "no such-table", CleanupBatch: -1})
		if !errors.Is(err, gormoutbox.ErrInvalidConfig) || !errors.Is(err, dialects.ErrInvalidTable) {
			t.Errorf("bad table: %v, want ErrInvalidConfig and ErrInvalidTable", err)
		}
		for _, field := range []string{"AdminConfig.Table", "AdminConfig.CleanupBatch"} {
			if err == nil || !strings.Contains(err.Error(), field) {
				t.Errorf("error %v does not name %s", err, field)
			}
		}
		admin, err := gormoutbox.NewAdmin(db, gormoutbox.AdminConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if st, err := admin.Stats(ctx); err != nil || st != (gormoutbox.Stats{}) {
			t.Errorf("Stats of an empty outbox without a plugin: %+v, %v", st, err)
		}
		if n, err := admin.Cleanup(ctx, 0); err != nil || n != 0 {
			t.Errorf("Cleanup of an empty outbox: %d, %v", n, err)
		}
	})
}
