package nats

import (
	"context"
	"testing"
	"time"
)

// Each bind's counters are its own (a duplicate is a per-bind question),
// survive its lane being closed and opened again, and sum to Stats.
func TestBindStats(t *testing.T) {
	f := newFakeServer()
	s, err := newSink(f, nil, Options{AckTimeout: 30 * time.Millisecond, MaxInflight: 64})
	if err != nil {
		t.Fatal(err)
	}
	// Event 2 of bind b is stored but its ack is lost: sent again, it is
	// acknowledged as a duplicate.
	f.setPolicy(failOnce("b/lsn-0000000000000001/1/before_commit", actStoreNoAck))
	publish := func(bind string, n int, gen *eventSeq, idSuffix string) {
		t.Helper()
		var rec ackRecorder
		lane, err := s.OpenLane(t.Context(), bind, rec.acked)
		if err != nil {
			t.Fatal(err)
		}
		for range n {
			ev := gen.next()
			ev.ID += idSuffix
			if err := lane.Publish(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := lane.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	a := &eventSeq{bind: "a", txSize: 2}
	publish("a", 4, a, "")
	publish("b", 6, &eventSeq{bind: "b", txSize: 3}, "")
	// Bind a's lane again, after its close (LaneSeq starts again at 1,
	// with other ids): its counters go on.
	publish("a", 4, &eventSeq{bind: "a", txSize: 2}, "/again")

	st := s.BindStats()
	if len(st) != 2 {
		t.Fatalf("BindStats = %+v, want binds a and b", st)
	}
	if got := st["a"]; got.Published != 8 || got.Acked != 8 || got.Retried != 0 || got.Duplicates != 0 || got.InFlight != 0 {
		t.Errorf("bind a: %+v, want 8 published and acked, nothing retried", got)
	}
	b := st["b"]
	if b.Published != 6 || b.Acked < 6 || b.Retried == 0 || b.Duplicates != 1 || b.InFlight != 0 {
		t.Errorf("bind b: %+v, want 6 published, a retry and one duplicate", b)
	}
	if sum := s.Stats(); sum.Published != 14 || sum.Duplicates != 1 || sum.Acked != st["a"].Acked+b.Acked || sum.Retried != b.Retried {
		t.Errorf("Stats = %+v, want the binds' sums", sum)
	}
	if s.InflightLimit() != 64 {
		t.Errorf("InflightLimit = %d, want MaxInflight 64", s.InflightLimit())
	}
}
