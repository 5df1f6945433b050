package changefeed_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/changefeed"
	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/sinks/nats/natsserver"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire"
)

func BenchmarkDecode(b *testing.B) {
	c := sampleChange()
	data := wire.EncodeEvent(nil, &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: c, ID: "x", TxTotal: 4})
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := changefeed.Decode("s", nil, data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIntegrationRead measures how fast each kind of subscription
// reads a stream of 20000 after_commit events (transactions of 4 changes)
// published by trackerd's sink: events/s, one handler doing nothing.
// TRACKERD_TEST_NATS_URL names the server, else an embedded one is used.
func BenchmarkIntegrationRead(b *testing.B) {
	url := os.Getenv(envNATS)
	if url == "" {
		e, err := natsserver.Start(b.Context(), natsserver.Options{Addr: "127.0.0.1:0", StoreDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { e.Shutdown(context.Background()) })
		url = e.ClientURL()
	}
	const n = 20000
	prefix := uniq("cfbench")
	stream := strings.ToUpper(prefix)
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	b.Cleanup(func() { js.DeleteStream(context.Background(), stream) })
	sink, err := natssink.New(b.Context(), nc, natssink.Options{Prefix: prefix, Stream: natssink.StreamConfig{Name: stream}})
	if err != nil {
		b.Fatal(err)
	}
	lane, err := sink.OpenLane(b.Context(), "a", nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		tx, seq := i/4, i%4
		id := json.RawMessage(fmt.Sprint(i))
		c := &tracker.Change{Bind: "a", Source: "postgresql", Op: tracker.OpInsert, Schema: "public", Table: "t",
			Key: tracker.Row{Names: []string{"id"}, Values: []json.RawMessage{id}}, After: tracker.Row{Names: []string{"id"}, Values: []json.RawMessage{id}},
			TxKey: fmt.Sprintf("k%d", tx), TxID: fmt.Sprint(tx), Seq: seq, Pos: "0/1"}
		ev := &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: c, ID: tracker.EventID("a", "o", c.TxKey, int64(seq), tracker.PhaseAfterCommit), TxTotal: 4, LaneSeq: uint64(i + 1)}
		if err := lane.Publish(b.Context(), ev); err != nil {
			b.Fatal(err)
		}
	}
	if err := lane.Close(b.Context()); err != nil {
		b.Fatal(err)
	}
	feed, err := changefeed.New(nc, changefeed.WithPrefix(prefix), changefeed.WithStream(stream))
	if err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, start func(ctx context.Context, name string, done func(k int)) (*changefeed.Subscription, error), events int) {
		i := 0
		for b.Loop() {
			i++
			var got atomic.Int64
			finished := make(chan struct{})
			ctx, cancel := context.WithCancel(b.Context())
			t0 := time.Now()
			sub, err := start(ctx, fmt.Sprintf("%s_%d", uniq("bench"), i), func(k int) {
				if got.Add(int64(k)) == int64(events) {
					close(finished)
				}
			})
			if err != nil {
				b.Fatal(err)
			}
			select {
			case <-finished:
			case <-time.After(2 * time.Minute):
				b.Fatalf("read %d of %d", got.Load(), events)
			}
			b.ReportMetric(float64(events)/time.Since(t0).Seconds(), "events/s")
			cancel()
			<-sub.Closed()
		}
	}
	b.Run("Consume", func(b *testing.B) {
		run(b, func(ctx context.Context, name string, done func(int)) (*changefeed.Subscription, error) {
			return feed.Consume(ctx, name, changefeed.Filter{}, func(context.Context, changefeed.Message) error { done(1); return nil })
		}, n)
	})
	b.Run("ConsumeTx", func(b *testing.B) {
		run(b, func(ctx context.Context, name string, done func(int)) (*changefeed.Subscription, error) {
			return feed.ConsumeTx(ctx, name, changefeed.Filter{}, func(_ context.Context, tx changefeed.Tx) error { done(len(tx.Changes)); return nil })
		}, n)
	})
	b.Run("Follow", func(b *testing.B) {
		run(b, func(ctx context.Context, _ string, done func(int)) (*changefeed.Subscription, error) {
			return feed.Follow(ctx, changefeed.Filter{}, func(context.Context, changefeed.Message) error { done(1); return nil }, changefeed.FromStart())
		}, n)
	})
}
