package sequence

import (
	"slices"
	"testing"

	"github.com/go-outbox/outbox/dialects"
)

// Keys lists the distinct keys of the records that ask for a lock,
// sorted by topic and key bytes; records without a key or without
// LockKey ask for none.
func TestKeys(t *testing.T) {
	rec := func(topic string, key []byte, lock bool) dialects.Record {
		return dialects.Record{Topic: topic, Key: key, LockKey: lock}
	}
	recs := []dialects.Record{
		rec("b", []byte("k"), true), rec("a", []byte("z"), true), rec("b", []byte("k"), true),
		rec("a", nil, true), rec("a", []byte(""), true), rec("a", []byte("y"), false),
	}
	got := Keys(recs)
	want := []Key{{"a", []byte("")}, {"a", []byte("z")}, {"b", []byte("k")}}
	if !slices.EqualFunc(got, want, func(a, b Key) bool { return Compare(a, b) == 0 }) {
		t.Fatalf("Keys = %v, want %v", got, want)
	}
	if Keys(recs[5:]) != nil {
		t.Fatal("a record without LockKey asked for a lock")
	}
}

// Lock ids differ by table, topic and key, and do not run parts together.
func TestLockID(t *testing.T) {
	tab := dialects.Table{Name: "outbox"}
	ids := map[int64]string{}
	for _, c := range []struct {
		t dialects.Table
		k Key
	}{
		{tab, Key{"a", []byte("b")}}, {tab, Key{"ab", []byte("")}}, {tab, Key{"a", []byte("c")}},
		{dialects.Table{Name: "other"}, Key{"a", []byte("b")}}, {dialects.Table{Schema: "s", Name: "outbox"}, Key{"a", []byte("b")}},
	} {
		id := LockID(c.t, c.k)
		if prev, ok := ids[id]; ok {
			t.Fatalf("%v %v shares lock id %d with %s", c.t, c.k, id, prev)
		}
		ids[id] = c.t.String() + "/" + c.k.Topic + "/" + string(c.k.Key)
	}
}
