package changefeed_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/changefeed"
	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/tracker"
)

// reorderedStream publishes txs transactions of size changes each (both
// phases, every event on a subject of its own) into a stream without
// batch publishing that refuses one after_commit event until its subject
// is purged, so that the events sent after it are stored ahead of it:
// issue 9, F10, on a server (or stream) where that cannot be prevented.
// It returns the event ids in publication order.
func reorderedStream(t *testing.T, url string, txs, size int) (b *bus, order []string) {
	t.Helper()
	name := uniq("cfo")
	b = &bus{url: url, prefix: name, stream: strings.ToUpper(name), nc: dial(t, url)}
	js, _ := jetstream.New(b.nc)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = js.DeleteStream(ctx, b.stream)
	})
	st, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: b.stream, Subjects: []string{b.prefix + ".>"},
		Storage: jetstream.FileStorage, Duplicates: time.Minute,
		MaxMsgsPerSubject: 1, Discard: jetstream.DiscardNew, DiscardNewPerSubject: true})
	if err != nil {
		t.Fatal(err)
	}
	s, err := natssink.New(t.Context(), b.nc, natssink.Options{Prefix: b.prefix, Stream: natssink.StreamConfig{Name: b.stream, DuplicateWindow: time.Minute}, AckTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b.sink = s
	lane, err := s.OpenLane(t.Context(), "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	var evs []*tracker.Event
	for tx := 1; tx <= txs; tx++ {
		key := fmt.Sprintf("lsn-%016X", tx)
		changes := make([]*tracker.Change, size)
		for j := range changes {
			id := json.RawMessage(fmt.Sprint(tx*1000 + j))
			changes[j] = &tracker.Change{Bind: "a", Source: "postgresql", Op: tracker.OpInsert, Schema: "public",
				Table: fmt.Sprintf("t%d_%d", tx, j), TxKey: key, TxID: fmt.Sprint(tx), Seq: j, Index: int64(j), Origin: "o", Pos: "0/1",
				Key: tracker.Row{Names: []string{"id"}, Values: []json.RawMessage{id}}}
		}
		for _, ph := range []tracker.Phase{tracker.PhaseBeforeCommit, tracker.PhaseAfterCommit} {
			for j, c := range changes {
				ev := &tracker.Event{Phase: ph, Change: c, ID: tracker.EventID("a", "o", key, int64(j), ph), LaneSeq: uint64(len(evs) + 1)}
				if ph == tracker.PhaseAfterCommit {
					ev.TxTotal = size
				}
				evs = append(evs, ev)
				order = append(order, ev.ID)
			}
		}
	}
	// Occupy the subject of transaction 3's first after_commit event.
	refused := evs[2*2*size+size]
	full := string(s.Subjects().Append(nil, refused.Phase, refused.Change))
	if _, err := js.Publish(t.Context(), full, []byte("{}"), jetstream.WithMsgID("placeholder")); err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if err := lane.Publish(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	// Once the lane sends the refused event again, what overtook it is in.
	eventually(t, 10*time.Second, "the refused event sent again", func() bool { return s.Stats().Retried > 0 })
	if err := st.Purge(t.Context(), jetstream.WithPurgeSubject(full)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := lane.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Stats().Reordered == 0 {
		t.Fatal("the stream holds the events in order: the test did not force a reorder")
	}
	return b, order
}

// TestIntegrationOrderRestored: changefeed hands a bind's events over in
// their order of publication although the stream holds some out of order.
func TestIntegrationOrderRestored(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		const txs, size = 12, 3
		b, order := reorderedStream(t, url, txs, size)
		f := b.feed(t)
		follow := func(flt changefeed.Filter, n int, opts ...changefeed.ConsumeOption) []string {
			t.Helper()
			var c collector
			sub, err := f.Follow(t.Context(), flt, c.handle, append([]changefeed.ConsumeOption{changefeed.FromStart()}, opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			defer stop(t, sub)
			eventually(t, 10*time.Second, fmt.Sprintf("%d events", n), func() bool { return c.len() >= n })
			time.Sleep(50 * time.Millisecond)
			var out []string
			for _, m := range c.messages() {
				out = append(out, m.ID)
			}
			return out
		}
		if got := follow(changefeed.Filter{}, len(order), changefeed.OrderWait(0)); slices.Equal(got, order) {
			t.Fatal("without OrderWait the events arrive in order: the stream is not reordered")
		}
		if got := follow(changefeed.Filter{}, len(order)); !slices.Equal(got, order) {
			t.Fatalf("Follow of the whole bind:\n got %v\nwant %v", got, order)
		}
		var after []string
		for _, id := range order {
			if strings.HasSuffix(id, "/after_commit") {
				after = append(after, id)
			}
		}
		if got := follow(changefeed.Filter{Bind: "a", Phase: tracker.PhaseAfterCommit}, len(after)); !slices.Equal(got, after) {
			t.Fatalf("Follow of a phase:\n got %v\nwant %v", got, after)
		}

		// Consume, durable.
		var c collector
		sub, err := f.Consume(t.Context(), "all", changefeed.Filter{}, c.handle)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "every event consumed", func() bool { return c.len() >= len(order) })
		stop(t, sub)
		var got []string
		for _, m := range c.messages() {
			got = append(got, m.ID)
		}
		if !slices.Equal(got, order) {
			t.Fatalf("Consume:\n got %v\nwant %v", got, order)
		}

		// ConsumeTx: whole transactions, in order.
		var ct collector
		sub, err = f.ConsumeTx(t.Context(), "txs", changefeed.Filter{}, ct.handleTx)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "every transaction", func() bool { return len(ct.transactions()) >= txs })
		stop(t, sub)
		var keys []string
		for i, tx := range ct.transactions() {
			keys = append(keys, tx.TxKey)
			if want := fmt.Sprintf("lsn-%016X", i+1); tx.TxKey != want || tx.Partial || len(tx.Changes) != size {
				t.Errorf("transaction %d: %s (partial %v, %d changes), want %s whole", i, tx.TxKey, tx.Partial, len(tx.Changes), want)
			}
		}
		if len(keys) != txs {
			t.Fatalf("ConsumeTx: %d transactions %v, want %d", len(keys), keys, txs)
		}
	})
}
