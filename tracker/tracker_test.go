package tracker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

func testConfig(t testing.TB) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.DatabaseURI = "postgresql://app@db.example/shop"
	yes := true
	cfg.TrackModifications = &yes
	cfg.DataDir = t.TempDir()
	cfg.CheckpointInterval = 5 * time.Millisecond
	return &cfg
}

func row(kv ...string) tracker.Row {
	var r tracker.Row
	for i := 0; i < len(kv); i += 2 {
		r.Names = append(r.Names, kv[i])
		r.Values = append(r.Values, json.RawMessage(kv[i+1]))
	}
	return r
}

func begin(key string) tracker.Record {
	return tracker.Record{Kind: tracker.RecordBegin, Tx: tracker.TxInfo{TxKey: key, TxID: "x" + key,
		CommitTime: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}}
}

func insert(key, table, id string) tracker.Record {
	return tracker.Record{Kind: tracker.RecordChange, Change: &tracker.Change{Source: "postgresql", Op: tracker.OpInsert,
		Schema: "public", Table: table, TxKey: key, Key: row("id", id), After: row("id", id, "name", `"n`+id+`"`), Pos: "0/1"}}
}

func commit(key, pos string) tracker.Record {
	return tracker.Record{Kind: tracker.RecordCommit, Tx: tracker.TxInfo{TxKey: key}, Pos: pos}
}

// runTracker runs tr until src has handled everything and cond holds, then
// stops it and returns Run's error.
func runTracker(t *testing.T, tr *tracker.Tracker, src *trackertest.ScriptedSource, cond func() bool) error {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	select {
	case <-src.Done():
	case err := <-done:
		cancel()
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("source never finished its records")
	}
	if cond != nil {
		trackertest.Eventually(t, 10*time.Second, "condition after the records", cond)
	}
	cancel()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	return nil
}

func TestOrderIDsAndCheckpoint(t *testing.T) {
	cfg := testConfig(t)
	src := &trackertest.ScriptedSource{ID: "pg/1/shop/slot", Records: []tracker.Record{
		begin("lsn-A"), insert("lsn-A", "orders", "1"), insert("lsn-A", "items", "2"), commit("lsn-A", "0/A0"),
		begin("lsn-B"), insert("lsn-B", "orders", "3"), commit("lsn-B", "0/B0"),
	}}
	sink := &trackertest.Sink{}
	store := trackertest.NewMemStore()
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(sink), tracker.WithCheckpointStore(store))
	if err != nil {
		t.Fatal(err)
	}
	key := tracker.CheckpointKey("default", src.Identity())
	if err := runTracker(t, tr, src, func() bool { return store.Position(key) == "0/B0" }); err != nil {
		t.Fatalf("Run: %v", err)
	}
	var got []string
	for _, ev := range sink.Events() {
		got = append(got, fmt.Sprintf("%s %s total=%d seq=%d", ev.Phase, ev.ID, ev.TxTotal, ev.LaneSeq))
	}
	cp, err := store.Load(t.Context(), key)
	if err != nil || len(cp.Origin) != 16 {
		t.Fatalf("checkpoint %+v, %v: want the bind's origin in it", cp, err)
	}
	want := withOrigin(cp.Origin,
		"before_commit default/lsn-A/0/before_commit total=0 seq=1",
		"before_commit default/lsn-A/1/before_commit total=0 seq=2",
		"after_commit default/lsn-A/0/after_commit total=2 seq=3",
		"after_commit default/lsn-A/1/after_commit total=2 seq=4",
		"before_commit default/lsn-B/0/before_commit total=0 seq=5",
		"after_commit default/lsn-B/0/after_commit total=1 seq=6",
	)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	ev := sink.Events()[2]
	var data map[string]any
	if err := json.Unmarshal(ev.Data, &data); err != nil {
		t.Fatalf("event data is not JSON: %v\n%s", err, ev.Data)
	}
	if data["table"] != "orders" || data["op"] != "insert" {
		t.Fatalf("data = %s", ev.Data)
	}
	if c := src.Confirmed(); len(c) == 0 || c[len(c)-1] != "0/B0" {
		t.Fatalf("confirmed = %v, want last 0/B0", c)
	}
}

func TestCheckpointWaitsForAcks(t *testing.T) {
	cfg := testConfig(t)
	src := &trackertest.ScriptedSource{Records: []tracker.Record{
		begin("t1"), insert("t1", "orders", "1"), commit("t1", "0/10"),
		begin("t2"), insert("t2", "orders", "2"), commit("t2", "0/20"),
	}}
	sink := &trackertest.Sink{Manual: true}
	store := trackertest.NewMemStore()
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(sink), tracker.WithCheckpointStore(store))
	if err != nil {
		t.Fatal(err)
	}
	key := tracker.CheckpointKey("default", src.Identity())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	<-src.Done()
	// Nothing is acked: several checkpoint intervals pass with no checkpoint.
	time.Sleep(50 * time.Millisecond)
	if pos := store.Position(key); pos != "" {
		t.Fatalf("checkpoint moved to %q before any ack", pos)
	}
	sink.Ack("default")
	trackertest.Eventually(t, 5*time.Second, "checkpoint after ack", func() bool { return store.Position(key) == "0/20" })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestReconnectResendsTransactionWithSameIDs(t *testing.T) {
	cfg := testConfig(t)
	src := &trackertest.ScriptedSource{Records: []tracker.Record{
		begin("t1"), insert("t1", "orders", "1"),
		// The source lost its connection mid-transaction and sends it again.
		begin("t1"), insert("t1", "orders", "1"), insert("t1", "orders", "2"), commit("t1", "0/10"),
	}}
	sink := &trackertest.Sink{}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(sink), tracker.WithCheckpointStore(trackertest.NewMemStore()))
	if err != nil {
		t.Fatal(err)
	}
	if err := runTracker(t, tr, src, nil); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ev := range sink.Events() {
		ids = append(ids, ev.ID)
	}
	want := strings.Join(withOrigin(eventOrigin(t, sink.Events()),
		"default/t1/0/before_commit", "default/t1/0/before_commit", "default/t1/1/before_commit", "default/t1/0/after_commit", "default/t1/1/after_commit"), " ")
	if strings.Join(ids, " ") != want {
		t.Fatalf("ids = %v\nwant %s", ids, want)
	}
	if ev := sink.Events()[3]; ev.TxTotal != 2 {
		t.Fatalf("after_commit total = %d, want 2", ev.TxTotal)
	}
}

func TestReceiversOrderAndRetry(t *testing.T) {
	cfg := testConfig(t)
	src := &trackertest.ScriptedSource{Records: []tracker.Record{
		begin("t1"), insert("t1", "orders", "1"), insert("t1", "orders", "2"), commit("t1", "0/10"),
	}}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithCheckpointStore(trackertest.NewMemStore()))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var log []string
	failures := 2
	tr.BeforeCommit.Connect(func(_ context.Context, c tracker.Change) error {
		mu.Lock()
		defer mu.Unlock()
		if c.Seq == 1 && failures > 0 {
			failures--
			log = append(log, "before fail 1")
			return errors.New("receiver down")
		}
		log = append(log, fmt.Sprintf("before %d", c.Seq))
		return nil
	})
	tr.AfterCommit.Connect(func(_ context.Context, c tracker.Change) error {
		mu.Lock()
		defer mu.Unlock()
		log = append(log, fmt.Sprintf("after %d/%s", c.Seq, c.CommitTime.Format(time.RFC3339)))
		return nil
	})
	var txTotal int
	tr.AfterCommit.ConnectTx(func(_ context.Context, tx tracker.Tx) error {
		mu.Lock()
		defer mu.Unlock()
		for c, err := range tx.Changes() {
			if err != nil {
				return err
			}
			txTotal += c.Seq + 1
		}
		log = append(log, fmt.Sprintf("tx %d", tx.Total))
		return nil
	})
	if err := runTracker(t, tr, src, nil); err != nil {
		t.Fatal(err)
	}
	want := "before 0|before fail 1|before fail 1|before 1|after 0/2026-11-24T12:00:00Z|after 1/2026-11-24T12:00:00Z|tx 2"
	if got := strings.Join(log, "|"); got != want {
		t.Fatalf("receiver calls:\n%s\nwant\n%s", got, want)
	}
	if txTotal != 3 {
		t.Fatalf("ConnectTx saw seqs summing to %d, want 3", txTotal)
	}
	if st := tr.Stats(); len(st) != 1 || st[0].ReceiverRetry != 2 {
		t.Fatalf("stats = %+v, want 2 receiver retries", st)
	}
}

func TestDisconnectStopsReceiver(t *testing.T) {
	var s tracker.Signal
	calls := 0
	off := s.Connect(func(context.Context, tracker.Change) error { calls++; return nil })
	off()
	off() // idempotent
	cfg := testConfig(t)
	src := &trackertest.ScriptedSource{Records: []tracker.Record{begin("t"), insert("t", "a", "1"), commit("t", "0/1")}}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithCheckpointStore(trackertest.NewMemStore()))
	if err != nil {
		t.Fatal(err)
	}
	off2 := tr.AfterCommit.Connect(func(context.Context, tracker.Change) error { calls++; return nil })
	off2()
	if err := runTracker(t, tr, src, nil); err != nil {
		t.Fatal(err)
	}
	if calls != 0 {
		t.Fatalf("a disconnected receiver was called %d times", calls)
	}
}

func TestSpillLargeTransaction(t *testing.T) {
	cfg := testConfig(t)
	cfg.SpillThreshold = 2048 // a few changes in memory, the rest on disk
	recs := []tracker.Record{begin("big")}
	const n = 500
	for i := range n {
		recs = append(recs, insert("big", "orders", fmt.Sprint(i)))
	}
	recs = append(recs, commit("big", "0/99"))
	src := &trackertest.ScriptedSource{Records: recs}
	sink := &trackertest.Sink{}
	store := trackertest.NewMemStore()
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(sink), tracker.WithCheckpointStore(store))
	if err != nil {
		t.Fatal(err)
	}
	if err := runTracker(t, tr, src, nil); err != nil {
		t.Fatal(err)
	}
	evs := sink.Events()
	if len(evs) != 2*n {
		t.Fatalf("%d events, want %d", len(evs), 2*n)
	}
	for i := range n {
		before, after := evs[i], evs[n+i]
		if after.Phase != tracker.PhaseAfterCommit || after.Change.Seq != i || after.TxTotal != n {
			t.Fatalf("after_commit %d: phase %s seq %d total %d", i, after.Phase, after.Change.Seq, after.TxTotal)
		}
		if !bytes.Equal(before.Data, after.Data) {
			t.Fatalf("change %d: after_commit data differs from before_commit:\n%s\n%s", i, before.Data, after.Data)
		}
	}
}

func TestStreamedRollbacks(t *testing.T) {
	cfg := testConfig(t)
	sb := func(key string) tracker.Record {
		r := begin(key)
		r.Tx.Streamed = true
		return r
	}
	ch := func(key, sub, id string) tracker.Record {
		r := insert(key, "orders", id)
		r.Change.SubTx = sub
		return r
	}
	src := &trackertest.ScriptedSource{Records: []tracker.Record{
		sb("s1"), ch("s1", "", "1"), ch("s1", "701", "2"), ch("s1", "701", "3"),
		begin("t2"), insert("t2", "items", "9"), commit("t2", "0/20"), // interleaved ordinary transaction
		ch("s1", "", "4"),
		{Kind: tracker.RecordRollback, Tx: tracker.TxInfo{TxKey: "s1", SubTx: "701"}},
		commit("s1", "0/30"),
		sb("s2"), ch("s2", "", "5"),
		{Kind: tracker.RecordRollback, Tx: tracker.TxInfo{TxKey: "s2"}},
		// F1: ROLLBACK TO a savepoint, then ROLLBACK: two retractions,
		// each with an id of its own (they shared one, and JetStream
		// dropped the second as a duplicate).
		sb("s3"), ch("s3", "", "6"), ch("s3", "702", "7"),
		{Kind: tracker.RecordRollback, Tx: tracker.TxInfo{TxKey: "s3", SubTx: "702"}},
		{Kind: tracker.RecordRollback, Tx: tracker.TxInfo{TxKey: "s3"}},
	}}
	sink := &trackertest.Sink{}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(sink), tracker.WithCheckpointStore(trackertest.NewMemStore()))
	if err != nil {
		t.Fatal(err)
	}
	if err := runTracker(t, tr, src, nil); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range sink.Events() {
		s := ev.ID
		if ev.Retract != nil {
			s += fmt.Sprintf(" %v", ev.Retract.Ranges)
		}
		if ev.Phase == tracker.PhaseAfterCommit {
			s += fmt.Sprintf(" total=%d", ev.TxTotal)
		}
		got = append(got, s)
	}
	want := withOrigin(eventOrigin(t, sink.Events()),
		"default/s1/0/before_commit", "default/s1/1/before_commit", "default/s1/2/before_commit",
		"default/t2/0/before_commit", "default/t2/0/after_commit total=1",
		"default/s1/3/before_commit",
		"default/s1/0/rollback [{1 2}]",
		"default/s1/0/after_commit total=2", "default/s1/3/after_commit total=2",
		"default/s2/0/before_commit",
		"default/s2/0/rollback [{0 0}]",
		"default/s3/0/before_commit", "default/s3/1/before_commit",
		"default/s3/0/rollback [{1 1}]",
		"default/s3/1/rollback [{0 1}]",
	)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A streamed or prepared transaction none of whose changes was handed over
// commits with no key: only its position counts. It must not commit the
// ordinary transaction a reconnect cut off (p.cur), which is sent again
// whole: that one's after_commit events went out early, with only the
// rows received before the reconnect.
func TestKeylessStreamedCommitLeavesCurrentAlone(t *testing.T) {
	cfg := testConfig(t)
	src := &trackertest.ScriptedSource{Records: []tracker.Record{
		begin("t1"), insert("t1", "orders", "1"),
		// reconnect: an empty prepared transaction commits first
		{Kind: tracker.RecordCommit, Tx: tracker.TxInfo{Streamed: true}, Pos: "0/8"},
		begin("t1"), insert("t1", "orders", "1"), insert("t1", "orders", "2"), commit("t1", "0/10"),
	}}
	sink := &trackertest.Sink{}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(sink), tracker.WithCheckpointStore(trackertest.NewMemStore()))
	if err != nil {
		t.Fatal(err)
	}
	if err := runTracker(t, tr, src, nil); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ev := range sink.Events() {
		ids = append(ids, fmt.Sprintf("%s total=%d", ev.ID, ev.TxTotal))
	}
	want := strings.Join(withOrigin(eventOrigin(t, sink.Events()),
		"default/t1/0/before_commit total=0", "default/t1/0/before_commit total=0", "default/t1/1/before_commit total=0",
		"default/t1/0/after_commit total=2", "default/t1/1/after_commit total=2"), "\n")
	if got := strings.Join(ids, "\n"); got != want {
		t.Fatalf("events:\n%s\nwant:\n%s", got, want)
	}
}

func TestKeepaliveOnlyWhenIdle(t *testing.T) {
	cfg := testConfig(t)
	src := &trackertest.ScriptedSource{Records: []tracker.Record{
		{Kind: tracker.RecordKeepalive, Pos: "0/5"},
		begin("t1"), insert("t1", "orders", "1"),
		{Kind: tracker.RecordKeepalive, Pos: "0/7"}, // inside a transaction: ignored
		commit("t1", "0/10"),
		{Kind: tracker.RecordKeepalive, Pos: "0/50"},
	}}
	store := trackertest.NewMemStore()
	sink := &trackertest.Sink{}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(sink), tracker.WithCheckpointStore(store))
	if err != nil {
		t.Fatal(err)
	}
	key := tracker.CheckpointKey("default", src.Identity())
	if err := runTracker(t, tr, src, func() bool { return store.Position(key) == "0/50" }); err != nil {
		t.Fatal(err)
	}
	for _, p := range src.Confirmed() {
		if p == "0/7" {
			t.Fatalf("confirmed a keepalive position inside an open transaction: %v", src.Confirmed())
		}
	}
}

func TestSignalsAfterCommitOnly(t *testing.T) {
	cfg := testConfig(t)
	cfg.Signals = []string{"after_commit"}
	src := &trackertest.ScriptedSource{Records: []tracker.Record{begin("t"), insert("t", "a", "1"), commit("t", "0/1")}}
	sink := &trackertest.Sink{}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(sink), tracker.WithCheckpointStore(trackertest.NewMemStore()))
	if err != nil {
		t.Fatal(err)
	}
	if err := runTracker(t, tr, src, nil); err != nil {
		t.Fatal(err)
	}
	evs := sink.Events()
	if len(evs) != 1 || evs[0].Phase != tracker.PhaseAfterCommit || evs[0].LaneSeq != 1 {
		t.Fatalf("events = %+v, want one after_commit", evs)
	}
}

func TestResumeFromCheckpoint(t *testing.T) {
	cfg := testConfig(t)
	src := &trackertest.ScriptedSource{ID: "pg/9/db/s"}
	store := trackertest.NewMemStore()
	key := tracker.CheckpointKey("default", src.ID)
	if _, err := store.Save(t.Context(), key, tracker.Checkpoint{Bind: "default", Source: src.ID, Position: "0/ABC"}); err != nil {
		t.Fatal(err)
	}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithCheckpointStore(store))
	if err != nil {
		t.Fatal(err)
	}
	if err := runTracker(t, tr, src, nil); err != nil {
		t.Fatal(err)
	}
	if from := src.From(); len(from) != 1 || from[0] != "0/ABC" {
		t.Fatalf("source started from %v, want [0/ABC]", from)
	}
}

func TestCheckpointConflictFencesBind(t *testing.T) {
	cfg := testConfig(t)
	src := &trackertest.ScriptedSource{Records: []tracker.Record{begin("t"), insert("t", "a", "1"), commit("t", "0/1")}}
	store := trackertest.NewMemStore()
	sink := &trackertest.Sink{Manual: true}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(sink), tracker.WithCheckpointStore(store))
	if err != nil {
		t.Fatal(err)
	}
	// Another instance writes the checkpoint after this one loaded it and
	// before this one's first write (held back by withholding the acks).
	key := tracker.CheckpointKey("default", src.Identity())
	go func() {
		<-src.Done()
		cur, _ := store.Load(context.Background(), key)
		cur.Position = "0/0"
		store.Save(context.Background(), key, cur)
		sink.Ack("default")
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = tr.Run(ctx)
	if !errors.Is(err, tracker.ErrFenced) {
		t.Fatalf("Run = %v, want ErrFenced", err)
	}
}

func TestTrackingDisabled(t *testing.T) {
	cfg := testConfig(t)
	no := false
	cfg.TrackModifications = &no
	tr, err := tracker.New(cfg) // no source needed: nothing is followed
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Run(t.Context()); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
}

func TestTrackModificationsWarning(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value *bool
		want  int
	}{
		{"unset warns once", nil, 1},
		{"true is silent", ptr(true), 0},
		{"false is silent", ptr(false), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.TrackModifications = tc.value
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, nil))
			src := &trackertest.ScriptedSource{}
			if _, err := tracker.New(cfg, tracker.WithLogger(log), tracker.WithSource(binds.Postgres, src.Open())); err != nil {
				t.Fatal(err)
			}
			if got := strings.Count(buf.String(), config.TrackModificationsWarning); got != tc.want {
				t.Fatalf("warning appears %d times, want %d:\n%s", got, tc.want, buf.String())
			}
		})
	}
}

func TestMissingSourceNamesImport(t *testing.T) {
	cfg := testConfig(t)
	_, err := tracker.New(cfg)
	if err == nil || !strings.Contains(err.Error(), "tracker.WithSource(binds.Postgres, postgres.Open)") ||
		!strings.Contains(err.Error(), "github.com/trackerd/trackerd/sources/postgres") {
		t.Fatalf("New without a source: %v", err)
	}
}

func TestDebugEvents(t *testing.T) {
	cfg := testConfig(t)
	cfg.Testing = true
	src := &trackertest.ScriptedSource{Records: []tracker.Record{begin("t"), insert("t", "orders", "1"), commit("t", "0/1")}}
	sink := &trackertest.Sink{}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(sink), tracker.WithCheckpointStore(trackertest.NewMemStore()))
	if err != nil {
		t.Fatal(err)
	}
	if err := runTracker(t, tr, src, nil); err != nil {
		t.Fatal(err)
	}
	evs := tr.DebugEvents()
	if len(evs) != 2 {
		t.Fatalf("DebugEvents = %d events, want 2", len(evs))
	}
	for _, e := range evs {
		if e.Table != "orders" || e.Ack <= 0 || e.Publish < 0 {
			t.Fatalf("debug event %+v: want table orders and an ack time", e)
		}
	}
}

func TestSinkErrorStopsBind(t *testing.T) {
	cfg := testConfig(t)
	src := &trackertest.ScriptedSource{Records: []tracker.Record{begin("t"), insert("t", "orders", "1"), commit("t", "0/1")}}
	sink := &trackertest.Sink{FailID: "default/0123456789abcdef/t/0/after_commit", Err: errors.New("message too large")}
	store := trackertest.NewMemStore()
	if _, err := store.Save(t.Context(), tracker.CheckpointKey("default", src.Identity()),
		tracker.Checkpoint{Bind: "default", Source: src.Identity(), Origin: "0123456789abcdef"}); err != nil {
		t.Fatal(err)
	}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(sink), tracker.WithCheckpointStore(store))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = tr.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "message too large") || !strings.Contains(err.Error(), "bind default") {
		t.Fatalf("Run = %v, want the sink's error naming the bind", err)
	}
}

func ptr[T any](v T) *T { return &v }

// eventOrigin returns the origin of the first event's id, and fails the
// test unless every event has it.
func eventOrigin(t *testing.T, evs []tracker.Event) string {
	t.Helper()
	if len(evs) == 0 {
		t.Fatal("no events")
	}
	origin := strings.Split(evs[0].ID, "/")[1]
	for _, ev := range evs {
		if strings.Split(ev.ID, "/")[1] != origin || len(origin) != 16 {
			t.Fatalf("event %s: want origin %s (16 hex digits) in every id", ev.ID, origin)
		}
	}
	return origin
}

// withOrigin puts origin after the bind key "default/" of each want line.
func withOrigin(origin string, lines ...string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = strings.Replace(l, "default/", "default/"+origin+"/", 1)
	}
	return out
}

// A source that keeps no position on the server hands its start first: the
// tracker writes it before the source reads on, so a stop before the first
// commit resumes there.
func TestFirstKeepaliveIsCheckpointedAtOnce(t *testing.T) {
	cfg := testConfig(t)
	cfg.CheckpointInterval = time.Hour // only the synchronous write can happen
	store := trackertest.NewMemStore()
	src := &trackertest.ScriptedSource{ID: "mariadb/1/h:3306/db"}
	var seen string
	src.Records = []tracker.Record{{Kind: tracker.RecordKeepalive, Pos: `{"file":"b.000001","pos":4}`}}
	key := tracker.CheckpointKey("default", src.ID)
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithCheckpointStore(store), tracker.WithSink(&trackertest.Sink{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := runTracker(t, tr, src, func() bool { seen = store.Position(key); return true }); err != nil {
		t.Fatal(err)
	}
	if seen != `{"file":"b.000001","pos":4}` {
		t.Fatalf("checkpoint right after the first keepalive = %q", seen)
	}
}
