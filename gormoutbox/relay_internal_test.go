package gormoutbox

import (
	"testing"
	"time"
)

func TestBackoffGrowsWithJitterAndCap(t *testing.T) {
	r := &Relay{cfg: RelayConfig{MinBackoff: time.Second, MaxBackoff: 30 * time.Second}}
	for n, base := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 5: 16 * time.Second, 6: 30 * time.Second, 40: 30 * time.Second} {
		for i := 0; i < 200; i++ {
			d := r.backoff(n)
			if d < base/2 || d >= base {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v)", n, d, base/2, base)
			}
		}
	}
}

func TestMessageEnvelope(t *testing.T) {
	created := time.Date(2026, 11, 22, 10, 0, 0, 123000, time.UTC)
	m := message(&Row{EventID: "e1", Topic: "t", Key: []byte("k"), EventType: "Created", AggregateType: "item",
		AggregateID: "7", Payload: []byte(`{}`), CreatedAt: created,
		Headers: map[string]string{"traceparent": "00-x", "content-type": "application/json"}, Sequence: 12}, "7f")
	got := map[string]string{}
	var order []string
	for _, h := range m.Headers {
		got[h.Key] = string(h.Value)
		order = append(order, h.Key)
	}
	want := map[string]string{HeaderEventID: "e1", HeaderEventType: "Created", HeaderAggregateType: "item",
		HeaderAggregateID: "7", HeaderOccurredAt: "2026-11-22T10:00:00.000123Z", "traceparent": "00-x",
		HeaderContentType: "application/json", HeaderSequence: "12", HeaderSequenceSource: "7f"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("header %s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) || order[0] != HeaderEventID {
		t.Errorf("headers %v", order)
	}
	if string(m.Key) != "k" || m.Topic != "t" || m.EventID != "e1" || m.Sequence != 12 {
		t.Errorf("message %+v", m)
	}
	// A row without a number: neither header; without a source: no source.
	for _, h := range message(&Row{EventID: "e2", Key: []byte("k")}, "7f").Headers {
		if h.Key == HeaderSequence || h.Key == HeaderSequenceSource {
			t.Errorf("a row without a number has header %s", h.Key)
		}
	}
	for _, h := range message(&Row{EventID: "e3", Key: []byte("k"), Sequence: 3}, "").Headers {
		if h.Key == HeaderSequenceSource {
			t.Errorf("a message without a known source has header %s", h.Key)
		}
	}
}

func TestNotifyWakesWaiters(t *testing.T) {
	r := &Relay{kickCh: make(chan struct{})}
	k1, k2 := r.kicked(), r.kicked()
	r.Notify()
	for _, k := range []<-chan struct{}{k1, k2} {
		select {
		case <-k:
		default:
			t.Fatal("a waiter taken before Notify was not woken")
		}
	}
	select {
	case <-r.kicked():
		t.Fatal("a waiter taken after Notify was woken")
	default:
	}
}
