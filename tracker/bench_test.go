package tracker_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

// genSource hands over txs transactions of size inserts each, built as it
// goes, then waits for its context to end.
type genSource struct {
	txs, size int
	done      chan struct{}
}

func (s *genSource) Identity() string { return "bench" }
func (s *genSource) Confirm(string)   {}
func (s *genSource) Close() error     { return nil }
func (s *genSource) Run(ctx context.Context, _ string, h tracker.Handler) error {
	at := time.Now()
	for i := range s.txs {
		key := "lsn-" + strconv.Itoa(i)
		if err := h.Handle(ctx, tracker.Record{Kind: tracker.RecordBegin, Tx: tracker.TxInfo{TxKey: key, TxID: key, CommitTime: at}}); err != nil {
			return err
		}
		for j := range s.size {
			id := json.RawMessage(strconv.Itoa(j))
			c := &tracker.Change{Source: "postgresql", Op: tracker.OpInsert, Schema: "public", Table: "orders", Index: int64(j),
				Key:   tracker.Row{Names: []string{"id"}, Values: []json.RawMessage{id}},
				After: tracker.Row{Names: []string{"id", "name", "qty"}, Values: []json.RawMessage{id, json.RawMessage(`"a name"`), json.RawMessage(`12`)}}}
			if err := h.Handle(ctx, tracker.Record{Kind: tracker.RecordChange, Change: c}); err != nil {
				return err
			}
		}
		if err := h.Handle(ctx, tracker.Record{Kind: tracker.RecordCommit, Tx: tracker.TxInfo{TxKey: key, CommitTime: at}, Pos: strconv.Itoa(i)}); err != nil {
			return err
		}
	}
	close(s.done)
	<-ctx.Done()
	return ctx.Err()
}

// ackSink acknowledges every event at once and keeps none.
type ackSink struct{ n atomic.Uint64 }

type ackLane struct {
	s     *ackSink
	acked func(uint64)
}

func (s *ackSink) OpenLane(_ context.Context, _ string, acked func(uint64)) (tracker.Lane, error) {
	return &ackLane{s: s, acked: acked}, nil
}

func (l *ackLane) Publish(_ context.Context, ev *tracker.Event) error {
	l.s.n.Add(1)
	l.acked(ev.LaneSeq)
	return nil
}

func (l *ackLane) Close(context.Context) error { return nil }

// BenchmarkPipeline runs a whole bind, source to lane, with both phases
// published and a receiver on each signal: b.N changes in transactions of
// 10, per change.
func BenchmarkPipeline(b *testing.B) {
	for _, tc := range []struct {
		name      string
		receivers bool
	}{{"events", false}, {"events+receivers", true}} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := testConfig(b)
			const size = 10
			src := &genSource{txs: max(b.N/size, 1), size: size, done: make(chan struct{})}
			sink := &ackSink{}
			tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, func(context.Context, binds.Bind, tracker.SourceOptions) (tracker.Source, error) {
				return src, nil
			}), tracker.WithSink(sink), tracker.WithCheckpointStore(trackertest.NewMemStore()))
			if err != nil {
				b.Fatal(err)
			}
			if tc.receivers {
				tr.BeforeCommit.Connect(func(context.Context, tracker.Change) error { return nil })
				tr.AfterCommit.Connect(func(context.Context, tracker.Change) error { return nil })
			}
			ctx, cancel := context.WithCancel(b.Context())
			done := make(chan error, 1)
			b.ReportAllocs()
			b.ResetTimer()
			go func() { done <- tr.Run(ctx) }()
			select {
			case <-src.done:
			case err := <-done:
				b.Fatalf("Run: %v", err)
			}
			b.StopTimer()
			cancel()
			if err := <-done; err != nil {
				b.Fatalf("Run: %v", err)
			}
			if want := uint64(2 * src.txs * size); sink.n.Load() != want {
				b.Fatalf("%d events, want %d", sink.n.Load(), want)
			}
		})
	}
}
