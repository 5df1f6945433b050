package tracker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

// tableDB is a fake database for snapshot tests: one table of integer keys
// and values, a commit log with positions 1, 2, 3..., a stream that hands
// the log over with a lag, and consistent reads at the current position.
type tableDB struct {
	mu      sync.Mutex
	rows    map[int]int // key -> value
	log     []dbCommit  // log[i] has position i+1
	wake    chan struct{}
	nudges  chan struct{}
	lag     time.Duration
	reads   int
	failOn  int   // ReadChunk fails on this read (1-based), 0 never
	failErr error // with this error
	noKey   bool
	// slowReads makes ReadChunk take up to 1 ms after its read.
	slowReads bool
	// hang makes ReadChunk reserve its position, then wait for its ctx.
	hang bool
	// lost makes the next Run fail with ErrResnapshotRequired.
	lost bool
	// noReserve makes ReadChunk leave ChunkRequest.Reserve uncalled.
	noReserve bool
	handled   int // commits handed to the tracker
}

type dbCommit struct {
	key, val int
	del      bool
}

func newTableDB(n int) *tableDB {
	db := &tableDB{rows: make(map[int]int), wake: make(chan struct{}, 1), nudges: make(chan struct{}, 1)}
	for k := 1; k <= n; k++ {
		db.rows[k] = 0
	}
	return db
}

func pos(n int) string { return fmt.Sprintf("%010d", n) }

// write commits one change.
func (db *tableDB) write(key, val int, del bool) {
	db.mu.Lock()
	if del {
		delete(db.rows, key)
	} else {
		db.rows[key] = val
	}
	db.log = append(db.log, dbCommit{key: key, val: val, del: del})
	db.mu.Unlock()
	select {
	case db.wake <- struct{}{}:
	default:
	}
}

func (db *tableDB) state() map[int]int {
	db.mu.Lock()
	defer db.mu.Unlock()
	out := make(map[int]int, len(db.rows))
	for k, v := range db.rows {
		out[k] = v
	}
	return out
}

func (db *tableDB) Identity() string { return "fake/table" }
func (db *tableDB) Confirm(string)   {}
func (db *tableDB) Close() error     { return nil }

func (db *tableDB) Open() tracker.OpenSourceFunc {
	return func(context.Context, binds.Bind, tracker.SourceOptions) (tracker.Source, error) { return db, nil }
}

// Run hands the log over from after position from, each commit after the
// lag, and a keepalive when idle and nudged.
func (db *tableDB) Run(ctx context.Context, from string, h tracker.Handler) error {
	db.mu.Lock()
	lost := db.lost
	db.lost = false
	db.mu.Unlock()
	if lost {
		return fmt.Errorf("the server no longer has position %s: %w", from, tracker.ErrResnapshotRequired)
	}
	next := 0
	if from != "" {
		next, _ = strconv.Atoi(from)
	}
	for {
		db.mu.Lock()
		var c *dbCommit
		if next < len(db.log) {
			c = &db.log[next]
		}
		db.mu.Unlock()
		if c == nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-db.wake:
			case <-db.nudges:
				if next > 0 {
					if err := h.Handle(ctx, tracker.Record{Kind: tracker.RecordKeepalive, Pos: pos(next)}); err != nil {
						return err
					}
				}
			}
			continue
		}
		if db.lag > 0 {
			time.Sleep(time.Duration(rand.Int64N(int64(db.lag))))
		}
		next++
		key := "t" + pos(next)
		op, after := tracker.OpUpdate, row("id", strconv.Itoa(c.key), "v", strconv.Itoa(c.val))
		if c.del {
			op, after = tracker.OpDelete, tracker.Row{}
		}
		for _, r := range []tracker.Record{
			{Kind: tracker.RecordBegin, Tx: tracker.TxInfo{TxKey: key}},
			{Kind: tracker.RecordChange, Change: &tracker.Change{Source: "fake", Op: op, Schema: "s", Table: "t", TxKey: key,
				Key: row("id", strconv.Itoa(c.key)), After: after}},
			{Kind: tracker.RecordCommit, Tx: tracker.TxInfo{TxKey: key}, Pos: pos(next)},
		} {
			if err := h.Handle(ctx, r); err != nil {
				return err
			}
		}
		db.mu.Lock()
		db.handled = next
		db.mu.Unlock()
	}
}

func (db *tableDB) Nudge() {
	select {
	case db.nudges <- struct{}{}:
	default:
	}
}

func (db *tableDB) SnapshotTables(_ context.Context, names []string) ([]tracker.SnapshotTable, error) {
	for _, n := range names {
		if n != "s.t" && n != "t" {
			return nil, tracker.ConfigError(fmt.Errorf("table %s is not followed", n))
		}
	}
	t := tracker.SnapshotTable{Schema: "s", Table: "t", Key: []string{"id"}, Estimate: int64(len(db.state()))}
	if db.noKey {
		t.Key = nil
	}
	return []tracker.SnapshotTable{t}, nil
}

func (db *tableDB) ReadChunk(ctx context.Context, req tracker.ChunkRequest) (tracker.Chunk, error) {
	if db.hang {
		// A read that reserves its position and never ends.
		db.mu.Lock()
		p := pos(len(db.log))
		db.reads++
		db.mu.Unlock()
		req.Reserve(p)
		<-ctx.Done()
		return tracker.Chunk{}, ctx.Err()
	}
	if req.Where == "bad" {
		return tracker.Chunk{}, tracker.ConfigError(errors.New(`syntax error at or near "bad"`))
	}
	after := 0
	if req.After != "" {
		after, _ = strconv.Atoi(req.After)
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	db.reads++
	if db.failOn > 0 && db.reads == db.failOn {
		return tracker.Chunk{}, db.failErr
	}
	var keys []int
	for k := range db.rows {
		if k > after {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	ch := tracker.Chunk{Pos: pos(len(db.log)), Done: len(keys) <= req.Limit}
	keys = keys[:min(len(keys), req.Limit)]
	for _, k := range keys {
		ch.Rows = append(ch.Rows, &tracker.Change{Source: "fake", Op: tracker.OpSnapshot, Schema: "s", Table: "t",
			Key: row("id", strconv.Itoa(k)), After: row("id", strconv.Itoa(k), "v", strconv.Itoa(db.rows[k]))})
	}
	if len(keys) > 0 {
		ch.Next = strconv.Itoa(keys[len(keys)-1])
	}
	if req.Reserve != nil || db.slowReads {
		db.mu.Unlock()
		if req.Reserve != nil && !db.noReserve {
			req.Reserve(ch.Pos)
		}
		if db.slowReads {
			// A read that takes long: the stream may pass its position
			// meanwhile.
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		}
		db.mu.Lock()
	}
	return ch, nil
}

func (db *tableDB) ComparePos(a, b string) (int, error) {
	if len(a) != 10 || len(b) != 10 {
		return 0, fmt.Errorf("bad positions %q %q", a, b)
	}
	switch {
	case a < b:
		return -1, nil
	case a > b:
		return 1, nil
	}
	return 0, nil
}

// applied applies the after_commit events in stream order; it fails the
// test when a snapshot row comes after a newer change of its row.
func applied(t *testing.T, evs []tracker.Event) (map[int]int, map[string]int) {
	t.Helper()
	state := make(map[int]int)
	lastChange := make(map[int]string) // key -> position of its last change applied
	lifecycle := make(map[string]int)
	for _, ev := range evs {
		if ev.Lifecycle != nil {
			lifecycle[ev.Lifecycle.Type]++
			continue
		}
		if ev.Phase != tracker.PhaseAfterCommit {
			continue
		}
		var d struct {
			Key   struct{ ID int }
			After *struct{ ID, V int }
		}
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			t.Fatalf("data %s: %v", ev.Data, err)
		}
		c := ev.Change
		if c.Op == tracker.OpSnapshot {
			if p, ok := lastChange[d.Key.ID]; ok && p > c.Pos {
				t.Fatalf("snapshot row %d read at %s published after its change at %s", d.Key.ID, c.Pos, p)
			}
			if ev.Snapshot == "" || ev.ID != tracker.SnapshotEventID(c.Bind, c.Origin, ev.Snapshot, c) {
				t.Fatalf("snapshot event %q (snapshot %q)", ev.ID, ev.Snapshot)
			}
		} else {
			lastChange[d.Key.ID] = c.TxKey[1:]
		}
		if d.After == nil {
			delete(state, d.Key.ID)
		} else {
			state[d.Key.ID] = d.After.V
		}
	}
	return state, lifecycle
}

// snapshotTracker returns a tracker of db with the default bind's
// snapshot option set to mode, chunks of chunk rows.
func snapshotTracker(t *testing.T, db *tableDB, mode string, chunk int, sink tracker.Sink, store tracker.CheckpointStore) *tracker.Tracker {
	t.Helper()
	cfg := testConfig(t)
	cfg.Binds = map[string]config.BindConfig{"default": {Snapshot: mode}}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, db.Open()), tracker.WithSink(sink),
		tracker.WithCheckpointStore(store), tracker.WithSnapshotChunk(chunk))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestSnapshotWhileWriting: an initial snapshot of a table while a writer
// updates and deletes its rows and the stream lags: applying the events in
// stream order gives the table's state, and no snapshot row comes after a
// newer change of its row.
func TestSnapshotWhileWriting(t *testing.T) {
	for _, lag := range []time.Duration{0, 150 * time.Microsecond} {
		t.Run(fmt.Sprint("lag ", lag), func(t *testing.T) {
			db := newTableDB(3000)
			db.lag = lag
			db.slowReads = true
			sink := &trackertest.Sink{}
			store := trackertest.NewMemStore()
			tr := snapshotTracker(t, db, "initial", 970, sink, store)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- tr.Run(ctx) }()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 1; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					k := 1 + rand.IntN(3100)
					db.write(k, i, rand.IntN(10) == 0)
					time.Sleep(200 * time.Microsecond)
				}
			}()
			trackertest.Eventually(t, 20*time.Second, "the snapshot completes", func() bool {
				for _, s := range tr.Snapshots() {
					if s.State == tracker.SnapshotCompleted {
						return true
					}
				}
				return false
			})
			close(stop)
			wg.Wait()
			db.write(1, -1, false)
			trackertest.Eventually(t, 10*time.Second, "the stream catches up", func() bool {
				db.mu.Lock()
				defer db.mu.Unlock()
				return db.handled == len(db.log)
			})
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			got, lc := applied(t, sink.Events())
			want := db.state()
			if len(got) != len(want) {
				t.Fatalf("applied %d rows, the table has %d", len(got), len(want))
			}
			for k, v := range want {
				if got[k] != v {
					t.Fatalf("row %d: applied %d, table %d", k, got[k], v)
				}
			}
			if lc[tracker.LifecycleStarted] != 1 || lc[tracker.LifecycleTableDone] != 1 || lc[tracker.LifecycleCompleted] != 1 {
				t.Fatalf("lifecycle events %v", lc)
			}
			cp, _ := store.Load(t.Context(), tracker.CheckpointKey("default", db.Identity()))
			if len(cp.Snapshots) != 0 {
				t.Fatalf("a completed snapshot is still in the checkpoint: %+v", cp.Snapshots)
			}
		})
	}
}

// runUntil runs tr until cond holds, then stops it.
func runUntil(t *testing.T, tr *tracker.Tracker, msg string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	trackertest.Eventually(t, 20*time.Second, msg, cond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotResumes: a bind stopped in the middle of its snapshot goes on
// from its checkpoint: every row is published, those of at most the chunk
// in flight twice, with the same ids.
func TestSnapshotResumes(t *testing.T) {
	db := newTableDB(5000)
	db.write(5, 1, false) // a first position
	sink := &trackertest.Sink{}
	store := trackertest.NewMemStore()
	key := tracker.CheckpointKey("default", db.Identity())
	rows := func() int {
		n := 0
		for _, ev := range sink.Events() {
			if ev.Snapshot != "" {
				n++
			}
		}
		return n
	}
	stops := 0
	for stop := 1; ; stop++ {
		stops = stop
		tr := snapshotTracker(t, db, "initial", 50, sink, store)
		before := rows()
		runUntil(t, tr, "some rows of the snapshot", func() bool {
			cp, _ := store.Load(t.Context(), key)
			return rows() >= before+120 || (len(cp.Snapshots) == 0 && cp.Position != "")
		})
		cp, err := store.Load(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		if len(cp.Snapshots) == 0 {
			if stop < 3 {
				t.Fatalf("the snapshot ended after %d stops: the test stops it too late", stop)
			}
			break
		}
		if stop > 60 {
			t.Fatalf("the snapshot does not end: %+v", cp.Snapshots)
		}
	}
	ids := make(map[string]int)
	var snapshot string
	for _, ev := range sink.Events() {
		if ev.Snapshot == "" {
			continue
		}
		if snapshot == "" {
			snapshot = ev.Snapshot
		}
		if ev.Snapshot != snapshot {
			t.Fatalf("a restart started another snapshot: %s, then %s", snapshot, ev.Snapshot)
		}
		ids[ev.ID]++
	}
	if len(ids) != 5000 {
		t.Fatalf("%d distinct rows published, want 5000", len(ids))
	}
	again := rows() - len(ids)
	if again > 50*stops {
		t.Fatalf("%d rows published twice over the restarts: more than a chunk each", again)
	}
	got, lc := applied(t, sink.Events())
	if len(got) != 5000 || lc[tracker.LifecycleCompleted] != 1 {
		t.Fatalf("applied %d rows, lifecycle %v", len(got), lc)
	}
	for _, ev := range sink.Events() {
		if l := ev.Lifecycle; l != nil && (l.Type == tracker.LifecycleTableDone || l.Type == tracker.LifecycleCompleted) && l.Rows < 5000 {
			t.Fatalf("%s counts %d rows over %d restarts, want 5000 or more (a chunk read again counts twice)", l.Type, l.Rows, stops)
		}
	}
}

// TestBackfill: a backfill of a running bind, its bad requests, cancel and
// list.
func TestBackfill(t *testing.T) {
	db := newTableDB(3000)
	db.write(5, 1, false)
	db.slowReads = true // so that the backfill is still running when cancelled
	sink := &trackertest.Sink{}
	store := trackertest.NewMemStore()
	tr := snapshotTracker(t, db, "never", 10, sink, store)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	trackertest.Eventually(t, 10*time.Second, "the bind runs", tr.Ready)
	if n := len(tr.Snapshots()); n != 0 {
		t.Fatalf("snapshot = never, but %d snapshots", n)
	}

	for _, tc := range []struct {
		name string
		req  tracker.BackfillRequest
		is   error
	}{
		{"unknown table", tracker.BackfillRequest{Tables: []string{"s.nope"}}, tracker.ErrConfig},
		{"bad where", tracker.BackfillRequest{Where: "bad"}, tracker.ErrConfig},
		{"unknown bind", tracker.BackfillRequest{Bind: "other"}, tracker.ErrConfig},
	} {
		if _, err := tr.Backfill(ctx, tc.req); !errors.Is(err, tc.is) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.is)
		}
	}

	info, err := tr.Backfill(ctx, tracker.BackfillRequest{Tables: []string{"s.t"}})
	if err != nil {
		t.Fatal(err)
	}
	if info.State != tracker.SnapshotRunning || info.Kind != tracker.SnapshotBackfill {
		t.Fatalf("backfill %+v", info)
	}
	if _, err := tr.Backfill(ctx, tracker.BackfillRequest{Tables: []string{"s.t"}}); !errors.Is(err, tracker.ErrSnapshotBusy) {
		t.Fatalf("second backfill of the table: %v, want ErrSnapshotBusy", err)
	}
	if _, err := tr.CancelSnapshot(ctx, "", "backfill-nope"); !errors.Is(err, tracker.ErrUnknownSnapshot) {
		t.Fatalf("cancel of an unknown id: %v", err)
	}
	ended, err := tr.CancelSnapshot(ctx, "", info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ended.State != tracker.SnapshotCancelled || ended.Rows >= 3000 {
		t.Fatalf("cancelled backfill %+v", ended)
	}
	trackertest.Eventually(t, 5*time.Second, "the checkpoint forgets the cancelled backfill", func() bool {
		cp, _ := store.Load(t.Context(), tracker.CheckpointKey("default", db.Identity()))
		return len(cp.Snapshots) == 0
	})

	// Once the first ended, the table may be backfilled again, to the end.
	info, err = tr.Backfill(ctx, tracker.BackfillRequest{Tables: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	trackertest.Eventually(t, 20*time.Second, "the backfill completes", func() bool {
		for _, s := range tr.Snapshots() {
			if s.ID == info.ID {
				return s.State == tracker.SnapshotCompleted && s.Rows == 3000 && s.TableRows["s.t"] == 3000
			}
		}
		return false
	})
	_, lc := applied(t, sink.Events())
	want := map[string]int{tracker.LifecycleStarted: 2, tracker.LifecycleCancelled: 1, tracker.LifecycleTableDone: 1, tracker.LifecycleCompleted: 1}
	for k, v := range want {
		if lc[k] != v {
			t.Fatalf("lifecycle events %v, want %v", lc, want)
		}
	}
	if got := len(tr.Snapshots()); got != 2 {
		t.Fatalf("%d snapshots listed, want the cancelled and the completed", got)
	}
}

// TestSnapshotReadFails: a snapshot whose read fails for good (a table
// gone: a configuration error) ends as failed, with its lifecycle event,
// and the bind streams on; a read that fails once (a dropped connection) is
// read again and the snapshot completes.
func TestSnapshotReadFails(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		state string
		event string
	}{
		{"gone", tracker.ConfigError(errors.New(`relation "s.t" does not exist`)), tracker.SnapshotFailed, tracker.LifecycleFailed},
		{"transient", errors.New("the server went away"), tracker.SnapshotCompleted, tracker.LifecycleCompleted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := newTableDB(500)
			db.write(5, 1, false)
			db.failOn, db.failErr = 3, tc.err
			sink := &trackertest.Sink{}
			store := trackertest.NewMemStore()
			tr := snapshotTracker(t, db, "initial", 100, sink, store)
			runUntil(t, tr, "the snapshot ends and the stream goes on", func() bool {
				s := tr.Snapshots()
				if len(s) != 1 || s[0].State != tc.state || !tr.Ready() {
					return false
				}
				db.write(6, 2, false)
				got, _ := applied(t, sink.Events())
				return got[6] == 2
			})
			if _, lc := applied(t, sink.Events()); lc[tc.event] != 1 {
				t.Fatalf("lifecycle %v", lc)
			}
		})
	}
}

// TestSnapshotWhenNeeded: a bind with snapshot = "when_needed" whose
// checkpoint cannot be resumed moves to the current position and reads its
// tables again; with "initial" it stops.
func TestSnapshotWhenNeeded(t *testing.T) {
	for _, mode := range []string{"when_needed", "initial"} {
		t.Run(mode, func(t *testing.T) {
			db := newTableDB(300)
			db.write(5, 1, false)
			sink := &trackertest.Sink{}
			store := trackertest.NewMemStore()
			key := tracker.CheckpointKey("default", db.Identity())
			tr := snapshotTracker(t, db, mode, 100, sink, store)
			runUntil(t, tr, "the initial snapshot completes", func() bool {
				s := tr.Snapshots()
				return len(s) == 1 && s[0].State == tracker.SnapshotCompleted && store.Position(key) != ""
			})
			db.lost = true
			cfg := testConfig(t)
			cfg.Binds = map[string]config.BindConfig{"default": {Snapshot: mode}}
			var resets []string
			tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, db.Open()), tracker.WithSink(sink),
				tracker.WithCheckpointStore(store), tracker.WithSnapshotChunk(100),
				tracker.WithReset(binds.Postgres, func(_ context.Context, _ binds.Bind, from string, _ tracker.SourceOptions) (tracker.Reset, error) {
					resets = append(resets, from)
					db.mu.Lock()
					defer db.mu.Unlock()
					return tracker.Reset{Identity: db.Identity(), Position: pos(len(db.log))}, nil
				}))
			if err != nil {
				t.Fatal(err)
			}
			if mode == "initial" {
				if err := tr.Run(t.Context()); !errors.Is(err, tracker.ErrResnapshotRequired) {
					t.Fatalf("Run: %v, want ErrResnapshotRequired", err)
				}
				return
			}
			runUntil(t, tr, "a second snapshot completes", func() bool {
				s := tr.Snapshots()
				return len(s) == 1 && s[0].State == tracker.SnapshotCompleted
			})
			if len(resets) != 1 {
				t.Fatalf("resets %v", resets)
			}
			_, lc := applied(t, sink.Events())
			if lc[tracker.LifecycleCompleted] != 2 {
				t.Fatalf("lifecycle %v, want two completed snapshots", lc)
			}
		})
	}
}

// TestCancelReservedRead: a snapshot cancelled while its read holds a
// reserved position lets the stream go on.
func TestCancelReservedRead(t *testing.T) {
	db := newTableDB(100)
	db.write(5, 1, false)
	sink := &trackertest.Sink{}
	tr := snapshotTracker(t, db, "never", 10, sink, trackertest.NewMemStore())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	trackertest.Eventually(t, 10*time.Second, "the bind runs", tr.Ready)
	db.mu.Lock()
	db.hang = true
	db.mu.Unlock()
	info, err := tr.Backfill(ctx, tracker.BackfillRequest{})
	if err != nil {
		t.Fatal(err)
	}
	trackertest.Eventually(t, 5*time.Second, "the read is reserved", func() bool {
		db.mu.Lock()
		defer db.mu.Unlock()
		return db.reads > 0
	})
	db.write(7, 70, false) // held: the read's position is before it
	time.Sleep(50 * time.Millisecond)
	if got, _ := applied(t, sink.Events()); got[7] == 70 {
		t.Fatal("a commit past a reserved read's position was published before the read ended")
	}
	if _, err := tr.CancelSnapshot(ctx, "", info.ID); err != nil {
		t.Fatal(err)
	}
	db.write(8, 80, false)
	trackertest.Eventually(t, 5*time.Second, "the stream goes on", func() bool {
		got, _ := applied(t, sink.Events())
		return got[7] == 70 && got[8] == 80
	})
}
