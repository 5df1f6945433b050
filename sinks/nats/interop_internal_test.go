package nats

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	cenats "github.com/cloudevents/sdk-go/protocol/nats/v2"
	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	ceclient "github.com/cloudevents/sdk-go/v2/client"
	"github.com/cloudevents/sdk-go/v2/event"
	natsgo "github.com/nats-io/nats.go"

	"github.com/trackerd/trackerd/internal/wiretest"
	"github.com/trackerd/trackerd/sinks/nats/natsserver"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire"
)

// received collects the events an sdk-go client receives.
type received struct {
	mu     sync.Mutex
	events []event.Event
}

func (r *received) add(e event.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *received) get() []event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event.Event(nil), r.events...)
}

// startReceiver runs an sdk-go client on protocol p until the test ends.
func startReceiver(t *testing.T, p any) *received {
	t.Helper()
	c, err := ceclient.New(p)
	if err != nil {
		t.Fatal(err)
	}
	var r received
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.StartReceiver(ctx, r.add); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("StartReceiver: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return &r
}

// TestIntegrationSDKInterop publishes the golden events and reads them with
// sdk-go's core-NATS and JetStream receivers: every event arrives (snapshot
// lifecycle events on their control subjects, which the stream captures),
// and reads back to the very bytes trackerd wrote.
func TestIntegrationSDKInterop(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	for _, srv := range servers(t) {
		t.Run(srv.name, func(t *testing.T) {
			srv.need(t)
			nc := dial(t, srv.url)
			s := newTestSink(t, nc, Options{})
			pattern := s.subjects.StreamSubject()

			coreConn := dial(t, srv.url)
			core, err := cenats.NewConsumerFromConn(coreConn, pattern)
			if err != nil {
				t.Fatal(err)
			}
			coreGot := startReceiver(t, core)
			jsc, err := cejs.NewConsumerFromConn(dial(t, srv.url), s.o.Stream.Name, pattern, nil,
				[]natsgo.SubOpt{natsgo.DeliverAll(), natsgo.AckExplicit()})
			if err != nil {
				t.Fatal(err)
			}
			jsGot := startReceiver(t, jsc)
			// The core subscription must exist before publishing.
			eventually(t, 5*time.Second, "the core-NATS receiver to subscribe", func() bool {
				return coreConn.NumSubscriptions() > 0 && coreConn.Flush() == nil
			})

			lane, err := s.OpenLane(t.Context(), "default", nil)
			if err != nil {
				t.Fatal(err)
			}
			cases := wiretest.Events()
			want := map[string][]byte{}
			for i, tc := range cases {
				ev := *tc.Ev
				ev.LaneSeq = uint64(i + 1)
				want[strings.TrimSpace(strings.ToValidUTF8(ev.ID, "\uFFFD"))] = wire.EncodeEvent(nil, &ev)
				if err := lane.Publish(t.Context(), &ev); err != nil {
					t.Fatalf("%s: %v", tc.Name, err)
				}
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := lane.Close(ctx); err != nil {
				t.Fatal(err)
			}
			for name, r := range map[string]*received{"protocol/nats": coreGot, "protocol/nats_jetstream": jsGot} {
				eventually(t, 10*time.Second, name+" receiving every event", func() bool { return len(r.get()) >= len(cases) })
				got := r.get()
				if len(got) != len(cases) {
					t.Fatalf("%s received %d events, want %d", name, len(got), len(cases))
				}
				for _, e := range got {
					w, ok := want[e.ID()]
					if !ok {
						t.Fatalf("%s received unknown event %s", name, e.ID())
					}
					b, err := e.MarshalJSON()
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(b, w) {
						t.Errorf("%s: event %s reads back as\n%s\nwant\n%s", name, e.ID(), b, w)
					}
					if e.Type() == wire.TypePrefix+string(tracker.PhaseRollback) {
						var d wire.RollbackData
						if err := json.Unmarshal(e.Data(), &d); err != nil || d.Op != "rollback" {
							t.Errorf("%s: rollback data %s: %v", name, e.Data(), err)
						}
						continue
					}
					if strings.HasPrefix(e.Type(), wire.LifecycleTypePrefix) {
						var l tracker.Lifecycle
						if err := e.DataAs(&l); err != nil || wire.LifecycleTypePrefix+l.Type != e.Type() {
							t.Errorf("%s: lifecycle data %s: %v", name, e.Data(), err)
						}
						continue
					}
					var c tracker.Change
					if err := e.DataAs(&c); err != nil {
						t.Errorf("%s: event %s: data does not decode into a tracker.Change: %v", name, e.ID(), err)
					}
				}
			}
		})
	}
}

// TestIntegrationCoreMode publishes without JetStream: a subscriber gets
// every event in order, and acked follows the publishes.
func TestIntegrationCoreMode(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	for _, srv := range servers(t) {
		t.Run(srv.name, func(t *testing.T) {
			srv.need(t)
			nc := dial(t, srv.url)
			prefix := "core_" + uniqueName(t)
			s, err := New(t.Context(), nc, Options{Mode: Core, Prefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			subConn := dial(t, srv.url)
			sub, err := subConn.SubscribeSync(prefix + ".>")
			if err != nil {
				t.Fatal(err)
			}
			if err := sub.SetPendingLimits(-1, -1); err != nil {
				t.Fatal(err)
			}
			if err := subConn.Flush(); err != nil { // the server has the subscription
				t.Fatal(err)
			}
			var rec ackRecorder
			lane, err := s.OpenLane(t.Context(), "b", rec.acked)
			if err != nil {
				t.Fatal(err)
			}
			gen := eventSeq{bind: "b", txSize: 4}
			const n = 2000
			var ids []string
			for range n {
				ev := gen.next()
				ids = append(ids, ev.ID)
				if err := lane.Publish(t.Context(), ev); err != nil {
					t.Fatal(err)
				}
			}
			if err := lane.Close(t.Context()); err != nil {
				t.Fatal(err)
			}
			if rec.last() != n {
				t.Fatalf("acked %d, want %d", rec.last(), n)
			}
			for i, id := range ids {
				m, err := sub.NextMsg(5 * time.Second)
				if err != nil {
					t.Fatalf("message %d: %v", i+1, err)
				}
				if got := m.Header.Get(wire.HeaderMsgID); got != id {
					t.Fatalf("message %d is %s, want %s", i+1, got, id)
				}
				if m.Reply != "" {
					t.Fatalf("core message with a reply subject")
				}
			}
		})
	}
}

// TestIntegrationOversize runs the oversize policies against a server with
// a small max_payload.
func TestIntegrationOversize(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	e, err := natsserver.Start(t.Context(), natsserver.Options{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), MaxPayload: 8192})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })
	nc := dial(t, e.ClientURL())
	bigChange := func() *tracker.Change {
		c := testChange("b", 1, 0)
		c.After.Names = append(c.After.Names, "doc")
		c.After.Values = append(c.After.Values, json.RawMessage(`"`+strings.Repeat("x", 20000)+`"`))
		return c
	}
	for _, policy := range []string{OversizeTruncate, OversizeFail} {
		t.Run(policy, func(t *testing.T) {
			s := newTestSink(t, nc, Options{OversizePolicy: policy})
			var rec ackRecorder
			lane, err := s.OpenLane(t.Context(), "b", rec.acked)
			if err != nil {
				t.Fatal(err)
			}
			ev := &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: bigChange(), ID: "b/big/0/after_commit", LaneSeq: 1, TxTotal: 1}
			err = lane.Publish(t.Context(), ev)
			if policy == OversizeFail {
				if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "8192") {
					t.Fatalf("Publish: err = %v, want ErrTooLarge naming the limit", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := lane.Close(t.Context()); err != nil {
				t.Fatal(err)
			}
			if rec.last() != 1 {
				t.Fatalf("acked %d, want 1", rec.last())
			}
			if got := s.Stats().Truncated; got != 1 {
				t.Errorf("Stats.Truncated = %d, want 1", got)
			}
		})
	}
}
