package tracker_test

import (
	"context"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

// readySink is a recording sink that says whether it can publish.
type readySink struct {
	*trackertest.Sink
	down atomic.Bool
}

func (s *readySink) Ready() bool { return !s.down.Load() }

// Stats gives an operator what `trackerd status` and /metrics show: every
// tracked bind from before Run (starting), the lease holder, the source's
// connection, when the last event was seen, the commit-to-ack latency per
// transaction, and waiting_for_nats while the sink cannot publish.
func TestStatsForOperators(t *testing.T) {
	cfg := testConfig(t)
	committed := time.Now().Add(-3 * time.Second)
	tx := func(key, id, pos string) []tracker.Record {
		b := begin(key)
		b.Tx.CommitTime = committed
		return []tracker.Record{b, insert(key, "orders", id), commit(key, pos)}
	}
	src := &trackertest.ScriptedSource{Records: append(tx("t1", "1", "0/10"), tx("t2", "2", "0/20")...)}
	sink := &readySink{Sink: &trackertest.Sink{Manual: true}}
	store := &leaseStore{MemStore: trackertest.NewMemStore(), lease: newTestLease()}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(sink),
		tracker.WithCheckpointStore(store), tracker.WithOwner("vm1:/var/lib/trackerd"))
	if err != nil {
		t.Fatal(err)
	}
	st := tr.Stats()
	if len(st) != 1 || st[0].Bind != "default" || st[0].State != tracker.StateStarting || st[0].SourceConnected || st[0].LagKnown {
		t.Fatalf("Stats before Run = %+v, want the bind, starting, not connected, lag unknown", st)
	}
	if tr.Owner() != "vm1:/var/lib/trackerd" {
		t.Fatalf("Owner() = %q", tr.Owner())
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	<-src.Done()
	one := func() tracker.BindStats {
		t.Helper()
		st := tr.Stats()
		if len(st) != 1 {
			t.Fatalf("Stats = %+v, want one bind", st)
		}
		return st[0]
	}
	s := one()
	if s.State != tracker.StateStreaming || !s.SourceConnected || s.LeaseHolder != "vm1:/var/lib/trackerd" {
		t.Fatalf("streaming bind: %+v, want streaming, connected, held by vm1", s)
	}
	if s.LastEventAt.IsZero() || time.Since(s.LastEventAt) > 10*time.Second {
		t.Fatalf("LastEventAt = %v, want about now", s.LastEventAt)
	}
	if s.CommitToAck.Count != 0 {
		t.Fatalf("CommitToAck counted %d before any acknowledgement", s.CommitToAck.Count)
	}
	sink.Ack("default")
	trackertest.Eventually(t, 5*time.Second, "two transactions observed", func() bool { return one().CommitToAck.Count == 2 })
	h := one().CommitToAck
	if h.Sum < 6 || h.Sum > 60 {
		t.Fatalf("CommitToAck sum = %vs for two transactions committed 3s ago", h.Sum)
	}
	if q := h.Quantile(0.5); q < 2.5 || q > 5 {
		t.Fatalf("median commit to ack = %vs, want within the 2.5-5s bucket", q)
	}

	sink.down.Store(true)
	if s := one(); s.State != tracker.StateWaitingForNATS || !s.SourceConnected {
		t.Fatalf("sink down: %+v, want waiting_for_nats, source still connected", s)
	}
	sink.down.Store(false)
	if s := one(); s.State != tracker.StateStreaming {
		t.Fatalf("sink back: state %s, want streaming", s.State)
	}
	if tr.Ready() != true {
		t.Fatal("not Ready once streaming again")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if s := one(); s.State != tracker.StateStopped || s.SourceConnected || s.LeaseHolder != "" {
		t.Fatalf("stopped bind: %+v, want stopped, not connected, no lease", s)
	}
}

func TestHistogramQuantile(t *testing.T) {
	h := tracker.Histogram{Bounds: []float64{1, 2, 4}, Counts: []uint64{0, 4, 0, 0}, Count: 4, Sum: 6}
	if q := h.Quantile(0.5); q != 1.5 {
		t.Errorf("median = %v, want 1.5 (half way into the 1-2 bucket)", q)
	}
	h = tracker.Histogram{Bounds: []float64{1, 2, 4}, Counts: []uint64{0, 0, 0, 3}, Count: 3}
	if q := h.Quantile(0.99); q != 4 {
		t.Errorf("p99 above every bound = %v, want the last bound", q)
	}
	if q := (tracker.Histogram{Bounds: []float64{1}, Counts: []uint64{0, 0}}).Quantile(0.5); !math.IsNaN(q) {
		t.Errorf("empty histogram's median = %v, want NaN", q)
	}
}
