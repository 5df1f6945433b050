package changefeed_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/changefeed"
	"github.com/trackerd/trackerd/config"
	natssink "github.com/trackerd/trackerd/sinks/nats"
	"github.com/trackerd/trackerd/sinks/nats/natsserver"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

// envNATS names the NATS server (with JetStream) integration tests also
// run against; an embedded server is always there.
const envNATS = "TRACKERD_TEST_NATS_URL"

// testServer is a NATS server a test runs against.
type testServer struct {
	name string
	url  string // empty: not configured
}

// servers returns an embedded NATS server of the test's own and the one
// named by TRACKERD_TEST_NATS_URL: run each as a subtest that calls need.
func servers(t *testing.T) []testServer {
	t.Helper()
	e, err := natsserver.Start(t.Context(), natsserver.Options{Addr: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })
	return []testServer{{name: "embedded", url: e.ClientURL()}, {name: "external", url: os.Getenv(envNATS)}}
}

// need skips the subtest when its server is not configured, naming the
// variable to set; under CI=true it fails instead.
func (s testServer) need(t *testing.T) {
	t.Helper()
	if s.url != "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not set: CI runs the integration tests against a real NATS server", envNATS)
	}
	t.Skipf("set %s to a NATS server with JetStream (e.g. nats://127.0.0.1:4222) to run this test against it", envNATS)
}

// eachServer runs fn as a subtest against every server, in parallel with
// the other integration tests (each has a bus of its own).
func eachServer(t *testing.T, fn func(t *testing.T, url string)) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	t.Parallel()
	for _, srv := range servers(t) {
		t.Run(srv.name, func(t *testing.T) {
			srv.need(t)
			t.Parallel()
			fn(t, srv.url)
		})
	}
}

func dial(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// bus is a test's own corner of a NATS server: a subject prefix and a
// stream, and a NATS sink publishing there.
type bus struct {
	url    string
	prefix string
	stream string
	nc     *nats.Conn
	sink   *natssink.Sink
}

func uniq(prefix string) string {
	return fmt.Sprintf("%s_%d_%04x", prefix, time.Now().UnixNano()%1e6, rand.IntN(1<<16))
}

func newBus(t *testing.T, url string) *bus {
	t.Helper()
	name := uniq("cf")
	b := &bus{url: url, prefix: name, stream: strings.ToUpper(name), nc: dial(t, url)}
	s, err := natssink.New(t.Context(), b.nc, natssink.Options{Prefix: b.prefix, Stream: natssink.StreamConfig{Name: b.stream}})
	if err != nil {
		t.Fatal(err)
	}
	b.sink = s
	t.Cleanup(func() {
		js, _ := jetstream.New(b.nc)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = js.DeleteStream(ctx, b.stream)
	})
	return b
}

// feed returns a changefeed on a connection of its own.
func (b *bus) feed(t *testing.T, opts ...changefeed.Option) *changefeed.Feed {
	t.Helper()
	f, err := changefeed.New(dial(t, b.url), append([]changefeed.Option{changefeed.WithPrefix(b.prefix), changefeed.WithStream(b.stream)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// count returns the number of messages in the bus's stream.
func (b *bus) count(t *testing.T) uint64 {
	js, _ := jetstream.New(b.nc)
	s, err := js.Stream(t.Context(), b.stream)
	if err != nil {
		return 0
	}
	info, err := s.Info(t.Context())
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// txSpec is one transaction to publish: its bind and its changes'
// tables. A rollback transaction is streamed (its before_commit events go
// out before its end), then rolled back: a rollback event follows them.
type txSpec struct {
	bind     string
	tables   []string
	rollback bool
}

// events returns how many events the transaction publishes.
func (s txSpec) events() uint64 {
	if s.rollback {
		return uint64(len(s.tables)) + 1
	}
	return 2 * uint64(len(s.tables))
}

// script turns transactions into a scripted source's records per bind.
// Change ids count from first; keys name transactions from 1 on.
func script(specs []txSpec, firstTx int) map[string][]tracker.Record {
	out := map[string][]tracker.Record{}
	for i, s := range specs {
		n := firstTx + i
		key := fmt.Sprintf("lsn-%016X", n)
		commit := time.Date(2026, 1, 2, 3, 4, 5, n*1000, time.UTC)
		recs := []tracker.Record{{Kind: tracker.RecordBegin, Tx: tracker.TxInfo{TxKey: key, TxID: fmt.Sprint(700 + n), CommitTime: commit, Streamed: s.rollback}}}
		for j, tb := range s.tables {
			id := json.RawMessage(fmt.Sprint(n*1000 + j))
			recs = append(recs, tracker.Record{Kind: tracker.RecordChange, Change: &tracker.Change{
				Source: "postgresql", Op: tracker.OpInsert, Schema: "public", Table: tb, TxKey: key,
				Key:   tracker.Row{Names: []string{"id"}, Values: []json.RawMessage{id}},
				After: tracker.Row{Names: []string{"id", "note"}, Values: []json.RawMessage{id, json.RawMessage(`"n"`)}},
				Pos:   fmt.Sprintf("0/%X", n*100+j),
			}})
		}
		if s.rollback {
			recs = append(recs, tracker.Record{Kind: tracker.RecordRollback, Tx: tracker.TxInfo{TxKey: key, TxID: fmt.Sprint(700 + n)}})
		} else {
			recs = append(recs, tracker.Record{Kind: tracker.RecordCommit, Tx: tracker.TxInfo{TxKey: key}, Pos: fmt.Sprintf("0/%X", n*100+99)})
		}
		out[s.bind] = append(out[s.bind], recs...)
	}
	return out
}

// publish runs the tracker over the transactions with the bus's sink, one
// scripted source per bind, until every event is stored in the stream.
func (b *bus) publish(t *testing.T, specs []txSpec, firstTx int) {
	t.Helper()
	want := b.count(t)
	for _, s := range specs {
		want += s.events()
	}
	stored := func() bool { return b.count(t) >= want }
	if err := publishSpecs(t.Context(), b.sink, specs, firstTx, t.TempDir(), stored); err != nil {
		t.Fatal(err)
	}
	if got := b.count(t); got != want {
		t.Fatalf("the stream holds %d messages, want %d", got, want)
	}
}

// publishSpecs runs a tracker over the transactions with sink, one scripted
// source per bind, until stored reports every event stored (30s at most).
func publishSpecs(ctx context.Context, sink tracker.Sink, specs []txSpec, firstTx int, dataDir string, stored func() bool) error {
	cfg := config.Default()
	yes := true
	cfg.TrackModifications = &yes
	cfg.DataDir = dataDir
	cfg.CheckpointInterval = 10 * time.Millisecond
	cfg.Binds = map[string]config.BindConfig{}
	srcs := map[string]*trackertest.ScriptedSource{}
	for bind, rs := range script(specs, firstTx) {
		cfg.Binds[bind] = config.BindConfig{URI: "postgresql://app@db.example/" + bind}
		srcs[bind] = &trackertest.ScriptedSource{ID: "scripted/" + bind, Records: rs}
	}
	open := func(ctx context.Context, bd binds.Bind, o tracker.SourceOptions) (tracker.Source, error) {
		return srcs[bd.Key], nil
	}
	// Each bind's origin is fixed in advance, so that the tests know the
	// event ids (see oid).
	store := trackertest.NewMemStore()
	for bind := range srcs {
		id := "scripted/" + bind
		if _, err := store.Save(ctx, tracker.CheckpointKey(bind, id), tracker.Checkpoint{Bind: bind, Source: id, Origin: tracker.Origin(id)}); err != nil {
			return err
		}
	}
	tr, err := tracker.New(&cfg, tracker.WithSource(binds.Postgres, open), tracker.WithSink(sink), tracker.WithCheckpointStore(store))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !stored() {
		select {
		case err := <-done:
			return fmt.Errorf("tracker stopped: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("the events were not all stored within 30s")
		}
	}
	cancel()
	return <-done
}

// eventually polls cond until it holds or the time is up (trackertest.Eventually).
var eventually = trackertest.Eventually

// collector gathers what handlers receive.
type collector struct {
	mu   sync.Mutex
	msgs []changefeed.Message
	txs  []changefeed.Tx
}

func (c *collector) handle(_ context.Context, m changefeed.Message) error {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
	return nil
}

func (c *collector) handleTx(_ context.Context, tx changefeed.Tx) error {
	c.mu.Lock()
	c.txs = append(c.txs, tx)
	c.mu.Unlock()
	return nil
}

func (c *collector) messages() []changefeed.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]changefeed.Message(nil), c.msgs...)
}

func (c *collector) transactions() []changefeed.Tx {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]changefeed.Tx(nil), c.txs...)
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

// stop stops a subscription and waits for it.
func stop(t *testing.T, s *changefeed.Subscription) {
	t.Helper()
	s.Stop()
	select {
	case <-s.Closed():
	case <-time.After(10 * time.Second):
		t.Fatal("subscription did not close within 10s of Stop")
	}
	if err := s.Err(); err != nil {
		t.Fatalf("subscription error after Stop: %v", err)
	}
}

// summary renders events compactly: phase bind table id seq/total.
func summary(ms []changefeed.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		id, _ := m.Change.Key.Get("id")
		out[i] = fmt.Sprintf("%s %s %s %s %d/%d", m.Phase, m.Change.Bind, m.Change.Table, id, m.Change.Seq, m.TxTotal)
	}
	return out
}

// oid is the event id of a scripted bind's event: the bind, the origin of
// its scripted source, and the rest ("<txkey>/<index>/<phase>").
func oid(bind, rest string) string {
	return bind + "/" + tracker.Origin("scripted/"+bind) + "/" + rest
}
