package inventory

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	rows := []OutboxRow{
		{ID: 1, EventID: "e1", Topic: "inventory", Key: []byte("apple"), Type: "ItemCreated"},
		{ID: 2, EventID: "e2", Topic: "inventory", Key: []byte("pear"), Type: "ItemCreated"},
		{ID: 3, EventID: "e3", Topic: "inventory", Key: []byte("apple"), Type: "ItemUpdated"},
		{ID: 4, EventID: "e4", Topic: "orders", Key: []byte("order-1"), Type: "StockReserved"},
	}
	msg := func(topic string, p int, off int64, key, id string) arrival {
		return arrival{Topic: topic, Partition: p, Offset: off, Key: []byte(key), EventID: id}
	}
	all := []arrival{
		msg("orders", 0, 7, "order-1", "e4"),
		msg("inventory", 1, 10, "apple", "e1"),
		msg("inventory", 2, 3, "pear", "e2"),
		msg("inventory", 1, 11, "apple", "e3"),
	}
	tests := []struct {
		name    string
		got     []arrival
		ok      bool
		want    report // Problems not compared
		problem string // a substring of one of the problems
	}{
		{"all", all, true, report{Committed: 4, InOrder: 4}, ""},
		{"arrival order across partitions does not matter",
			[]arrival{all[3], all[2], all[0], all[1]}, true, report{Committed: 4, InOrder: 4}, ""},
		{"duplicates and other producers' messages are counted, not failed",
			append([]arrival{msg("inventory", 1, 9, "apple", "other-run")}, append(all, msg("inventory", 1, 12, "apple", "e1"))...),
			true, report{Committed: 4, InOrder: 4, Duplicates: 1, Foreign: 1}, ""},
		{"missing", all[:3], false, report{Committed: 4, InOrder: 3, Missing: 1}, "missing: outbox row 3"},
		{"out of order",
			[]arrival{all[0], msg("inventory", 1, 10, "apple", "e3"), all[2], msg("inventory", 1, 11, "apple", "e1")},
			false, report{Committed: 4, InOrder: 3}, "key apple of inventory: outbox rows arrived in the order [3 1]"},
		{"wrong key",
			[]arrival{all[0], all[1], msg("inventory", 2, 3, "plum", "e2"), all[3]},
			false, report{Committed: 4, InOrder: 3}, `arrived on inventory with key "plum"`},
		{"the refused reservation",
			append(all, msg("orders", 0, 8, RefusedOrder, "x")),
			false, report{Committed: 4, InOrder: 4, Foreign: 1, RefusedMsgs: 1}, "refused reservation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := check(rows, tt.got)
			if rep.OK() != tt.ok {
				t.Errorf("OK() = %v, want %v; problems %q", rep.OK(), tt.ok, rep.Problems)
			}
			probs := rep.Problems
			rep.Problems = nil
			if rep.Committed != tt.want.Committed || rep.InOrder != tt.want.InOrder || rep.Missing != tt.want.Missing ||
				rep.Duplicates != tt.want.Duplicates || rep.Foreign != tt.want.Foreign ||
				rep.RefusedRows != tt.want.RefusedRows || rep.RefusedMsgs != tt.want.RefusedMsgs {
				t.Errorf("report %+v, want %+v", rep, tt.want)
			}
			if tt.problem != "" && !strings.Contains(strings.Join(probs, "\n"), tt.problem) {
				t.Errorf("problems %q, want one containing %q", probs, tt.problem)
			}
		})
	}
}
