package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/sinks/nats/natsserver"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

// natsURL is TRACKERD_TEST_NATS_URL, or an embedded server of the test's.
func natsURL(t *testing.T) string {
	if u := os.Getenv("TRACKERD_TEST_NATS_URL"); u != "" {
		return u
	}
	e, err := natsserver.Start(t.Context(), natsserver.Options{Addr: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Shutdown(context.Background()) })
	return e.ClientURL()
}

// publish sends the events of one transaction through trackerd's NATS sink,
// as trackerd does: before_commit events, then after_commit events.
func publish(t *testing.T, lane tracker.Lane, seq *uint64, txKey string, tables ...string) {
	t.Helper()
	for _, ph := range []tracker.Phase{tracker.PhaseBeforeCommit, tracker.PhaseAfterCommit} {
		for i, tb := range tables {
			id := json.RawMessage(fmt.Sprint(10 * (i + 1)))
			c := &tracker.Change{Bind: "default", Source: "postgresql", Op: tracker.OpInsert, Schema: "public", Table: tb,
				Key: tracker.Row{Names: []string{"id"}, Values: []json.RawMessage{id}}, After: tracker.Row{Names: []string{"id"}, Values: []json.RawMessage{id}},
				TxID: "tx-" + txKey, TxKey: txKey, Seq: i, Pos: "0/1"}
			*seq++
			ev := &tracker.Event{Phase: ph, Change: c, ID: tracker.EventID(c.Bind, "o", txKey, int64(i), ph), LaneSeq: *seq}
			if ph == tracker.PhaseAfterCommit {
				ev.TxTotal = len(tables)
			}
			if err := lane.Publish(t.Context(), ev); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestSubscribe runs the example against NATS: it prints the selected
// changes and the transactions that touch them, whole, and resumes after a
// restart with what it has not seen.
func TestSubscribe(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	url := natsURL(t)
	prefix := fmt.Sprintf("ex_sub_%d_%04x", time.Now().UnixNano()%1e6, rand.IntN(1<<16))
	stream := strings.ToUpper(prefix)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close) // after the stream's deletion: cleanups run last first
	t.Cleanup(func() {
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := js.DeleteStream(ctx, stream); err != nil {
			t.Errorf("delete stream %s: %v", stream, err)
		}
	})
	sink, err := natssink.New(t.Context(), nc, natssink.Options{Prefix: prefix, Stream: natssink.StreamConfig{Name: stream}})
	if err != nil {
		t.Fatal(err)
	}
	lane, err := sink.OpenLane(t.Context(), "default", nil)
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	publish(t, lane, &seq, "k1", "orders", "items")
	publish(t, lane, &seq, "k2", "users")

	env := map[string]string{"TRACKER_NATS_URL": url, "TRACKER_SUBJECT_PREFIX": prefix, "TRACKER_STREAM_NAME": stream}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	start := func() (*trackertest.Buffer, func()) {
		out, errOut := &trackertest.Buffer{}, &trackertest.Buffer{}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- run(ctx, []string{"-table", "orders", "-durable", "test"}, lookup, out, errOut) }()
		return out, func() {
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("the example returned %v\n%s", err, errOut.String())
			}
		}
	}
	wait := func(out *trackertest.Buffer, want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(out.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("the example printed:\n%s\nwant it to contain:\n%s", out.String(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	out, stop := start()
	wait(out, "change insert public.orders key={\"id\":10} (tx tx-k1, 1/2, stream #3)\n")
	wait(out, "tx tx-k1 of default: 2 change(s)\n  insert public.orders\n  insert public.items\n")
	stop()
	if strings.Contains(out.String(), "users") {
		t.Fatalf("the example printed a transaction that does not touch orders:\n%s", out.String())
	}

	// While it is stopped: one more transaction touching orders.
	publish(t, lane, &seq, "k3", "users", "orders")
	out, stop = start()
	wait(out, "change insert public.orders key={\"id\":20} (tx tx-k3, 2/2, stream #10)\n")
	wait(out, "tx tx-k3 of default: 2 change(s)\n  insert public.users\n  insert public.orders\n")
	stop()
	if strings.Contains(out.String(), "tx-k1") {
		t.Fatalf("after a restart, the example printed what it had handled:\n%s", out.String())
	}
	if err := lane.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}
