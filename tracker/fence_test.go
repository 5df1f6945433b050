package tracker_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

// leaseStore is a MemStore whose binds are leased with a lease the test
// controls.
type leaseStore struct {
	*trackertest.MemStore
	lease *testLease
}

func (s *leaseStore) Lease(context.Context, string, string) (tracker.Lease, error) {
	return s.lease, nil
}

type testLease struct {
	lost chan struct{}
	held atomic.Bool
	once sync.Once
}

func newTestLease() *testLease {
	l := &testLease{lost: make(chan struct{})}
	l.held.Store(true)
	return l
}

func (l *testLease) Lost() <-chan struct{}         { return l.lost }
func (l *testLease) Held() bool                    { return l.held.Load() }
func (l *testLease) Release(context.Context) error { return nil }
func (l *testLease) lose() {
	l.held.Store(false)
	l.once.Do(func() { close(l.lost) })
}

// F11: an instance that can no longer be sure of its lease (cut off from
// NATS for most of its time to live), and then loses it, writes no
// checkpoint: not on its ticker, not as its final one. (It went on writing,
// and its last write stopped the new holder.)
func TestNoCheckpointOnceTheLeaseIsUncertainOrLost(t *testing.T) {
	cfg := testConfig(t)
	src := &trackertest.ScriptedSource{Records: []tracker.Record{begin("t1"), insert("t1", "orders", "1"), commit("t1", "0/10")}}
	sink := &trackertest.Sink{Manual: true}
	store := &leaseStore{MemStore: trackertest.NewMemStore(), lease: newTestLease()}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(sink), tracker.WithCheckpointStore(store))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- tr.Run(t.Context()) }()
	<-src.Done()
	opened := store.Saves         // the new bind's checkpoint, with its origin and no position
	store.lease.held.Store(false) // renewals fail: another instance may take over
	sink.Ack("default")
	time.Sleep(100 * time.Millisecond) // 20 checkpoint intervals
	if store.Saves != opened {
		t.Fatalf("%d checkpoints written while the lease was uncertain", store.Saves-opened)
	}
	store.lease.lose()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop after the lease was lost")
	}
	if !errors.Is(err, tracker.ErrFenced) {
		t.Fatalf("Run = %v, want ErrFenced", err)
	}
	if store.Saves != opened {
		t.Fatalf("%d checkpoints written after the lease was lost", store.Saves-opened)
	}
}

// F11: the holder that took a bind over is not stopped by its former
// holder's stray last write: it overwrites it. A write of its own owner,
// though, is another instance running the bind.
func TestNewHolderOverwritesTheFormerHoldersStrayCheckpoint(t *testing.T) {
	for _, tc := range []struct {
		name, writer string
		fenced       bool
	}{
		{"former holder", "old-instance", false},
		{"same owner", "new-instance", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			src := &trackertest.ScriptedSource{ID: "pg/1/shop/slot", Records: []tracker.Record{
				begin("t1"), insert("t1", "orders", "1"), commit("t1", "0/10"),
				begin("t2"), insert("t2", "orders", "2"), commit("t2", "0/20"),
			}}
			sink := &trackertest.Sink{Manual: true}
			store := &leaseStore{MemStore: trackertest.NewMemStore(), lease: newTestLease()}
			tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(sink),
				tracker.WithCheckpointStore(store), tracker.WithOwner("new-instance"))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- tr.Run(ctx) }()
			<-src.Done()
			key := tracker.CheckpointKey("default", src.Identity())
			// The former holder's last write, after this instance loaded
			// the checkpoint.
			cur, err := store.Load(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			cur.Position, cur.Owner = "0/5", tc.writer
			if _, err := store.Save(ctx, key, cur); err != nil {
				t.Fatal(err)
			}
			sink.Ack("default")
			if tc.fenced {
				select {
				case err := <-done:
					if !errors.Is(err, tracker.ErrFenced) {
						t.Fatalf("Run = %v, want ErrFenced", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("Run went on beside a checkpoint written by its own owner")
				}
				return
			}
			trackertest.Eventually(t, 5*time.Second, "checkpoint at 0/20", func() bool { return store.Position(key) == "0/20" })
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			if cp, _ := store.Load(t.Context(), key); cp.Owner != "new-instance" {
				t.Fatalf("checkpoint owner %q, want new-instance", cp.Owner)
			}
		})
	}
}

// adopterSource is a scripted source that recognises checkpoints of its
// server under another identity.
type adopterSource struct {
	*trackertest.ScriptedSource
	adopt func(tracker.Checkpoint) error
}

func (s *adopterSource) Adopt(_ context.Context, cp tracker.Checkpoint) error { return s.adopt(cp) }

func (s *adopterSource) open() tracker.OpenSourceFunc {
	return func(context.Context, binds.Bind, tracker.SourceOptions) (tracker.Source, error) { return s, nil }
}

// F6: a bind with no checkpoint under its source's identity, but one of the
// same server under a former identity (MariaDB's host name changes with a
// recreated container), resumes from it, with its event-id origin, or stops
// with the way out when it cannot be resumed here; it never starts at the
// server's current position in silence.
func TestCheckpointOfAFormerIdentity(t *testing.T) {
	const former, now = "mariadb/1/old-host:3306/shop", "mariadb/1/new-host:3306/shop"
	errNotHere := errors.New("GTID 0-1-7 is not in this server's binlog")
	for _, tc := range []struct {
		name     string
		adopt    error
		wantFrom string
		wantErr  string
	}{
		{"same server", nil, "pos-7", ""},
		{"same server, position gone", errNotHere, "", "cannot be resumed here: GTID 0-1-7 is not in this server's binlog"},
		{"another server", tracker.ErrOtherSource, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			store := trackertest.NewMemStore()
			if _, err := store.Save(t.Context(), tracker.CheckpointKey("default", former), tracker.Checkpoint{
				Bind: "default", Source: former, Position: "pos-7", Time: time.Now().UTC(), Origin: tracker.Origin(former)}); err != nil {
				t.Fatal(err)
			}
			var offered []string
			src := &adopterSource{
				ScriptedSource: &trackertest.ScriptedSource{ID: now, Records: []tracker.Record{begin("t8"), insert("t8", "orders", "8"), commit("t8", "pos-8")}},
				adopt: func(cp tracker.Checkpoint) error {
					offered = append(offered, cp.Source+"@"+cp.Position)
					return tc.adopt
				},
			}
			sink := &trackertest.Sink{}
			tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.open()), tracker.WithSink(sink), tracker.WithCheckpointStore(store))
			if err != nil {
				t.Fatal(err)
			}
			err = runTracker(t, tr, src.ScriptedSource, nil)
			if strings.Join(offered, ",") != former+"@pos-7" {
				t.Fatalf("offered %v, want the former identity's checkpoint", offered)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "trackerd reset --bind default") || !errors.Is(err, tracker.ErrConfig) {
					t.Fatalf("Run = %v, want a configuration error containing %q and the way out", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if from := src.From(); len(from) != 1 || from[0] != tc.wantFrom {
				t.Fatalf("Run started from %q, want %q", from, tc.wantFrom)
			}
			cp, err := store.Load(t.Context(), tracker.CheckpointKey("default", now))
			if err != nil {
				t.Fatal(err)
			}
			origin := cp.Origin // a new one
			if origin == tracker.Origin(former) && tc.adopt != nil {
				t.Fatalf("a fresh bind took the origin of another server's checkpoint")
			}
			if tc.adopt == nil {
				origin = tracker.Origin(former) // ids go on as before
				if got := store.Position(tracker.CheckpointKey("default", now)); got != "pos-8" {
					t.Fatalf("checkpoint under the new identity at %q, want pos-8", got)
				}
			}
			if ev := sink.Events()[0]; !strings.HasPrefix(ev.ID, "default/"+origin+"/") {
				t.Fatalf("event id %s, want origin %s", ev.ID, origin)
			}
		})
	}
}

// F7: with a checkpoint delay (the NATS server's sync interval), a position
// is not saved, nor confirmed to the source, until its events have been
// acknowledged that long; a clean stop saves it at once.
func TestCheckpointDelay(t *testing.T) {
	cfg := testConfig(t)
	src := &trackertest.ScriptedSource{Records: []tracker.Record{begin("t1"), insert("t1", "orders", "1"), commit("t1", "0/10")}}
	store := trackertest.NewMemStore()
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(&trackertest.Sink{}),
		tracker.WithCheckpointStore(store), tracker.WithCheckpointDelay(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	<-src.Done()
	time.Sleep(100 * time.Millisecond) // 20 checkpoint intervals, events acked at once
	key := tracker.CheckpointKey("default", src.Identity())
	if got := store.Position(key); got != "" || len(src.Confirmed()) != 0 {
		t.Fatalf("checkpoint %q, confirmed %v before the delay passed", got, src.Confirmed())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := store.Position(key); got != "0/10" {
		t.Fatalf("checkpoint after a clean stop %q, want 0/10", got)
	}
	if _, err := tracker.New(cfg, tracker.WithCheckpointDelay(-time.Second)); err == nil {
		t.Fatal("a negative delay was accepted")
	}
}

// A new bind's origin is written into its checkpoint before any event is
// published, and is not the hash of its identity alone: clones of one
// PostgreSQL cluster share their system identifier, database and slot
// names, and must not share ids. A restart keeps it.
func TestNewBindsOriginIsFixedFirst(t *testing.T) {
	origins := map[string]bool{}
	for range 2 { // two deployments of clones: the same identity
		cfg := testConfig(t)
		src := &trackertest.ScriptedSource{ID: "pg/7716018287733578960/test/trackerd_test_default",
			Records: []tracker.Record{begin("t1"), insert("t1", "orders", "1"), commit("t1", "0/10")}}
		sink := &trackertest.Sink{Manual: true}
		store := trackertest.NewMemStore()
		tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(sink), tracker.WithCheckpointStore(store))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- tr.Run(ctx) }()
		<-src.Done()
		key := tracker.CheckpointKey("default", src.Identity())
		cp, err := store.Load(t.Context(), key)
		if err != nil || cp.Origin == "" || cp.Position != "" {
			t.Fatalf("before any ack the checkpoint is %+v (%v): want the origin and no position", cp, err)
		}
		if id := sink.Events()[0].ID; !strings.HasPrefix(id, "default/"+cp.Origin+"/") {
			t.Fatalf("event %s does not carry the stored origin %s", id, cp.Origin)
		}
		origins[cp.Origin] = true
		cancel()
		<-done
		// A restart keeps it.
		tr2, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithSink(sink), tracker.WithCheckpointStore(store))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel = context.WithCancel(t.Context())
		go func() { done <- tr2.Run(ctx) }()
		trackertest.Eventually(t, 5*time.Second, "the restart's events", func() bool { return len(sink.Events()) > 2 })
		if id := sink.Events()[2].ID; !strings.HasPrefix(id, "default/"+cp.Origin+"/") {
			t.Fatalf("after a restart event %s does not carry origin %s", id, cp.Origin)
		}
		cancel()
		<-done
	}
	if len(origins) != 2 {
		t.Fatalf("two deployments of clones got one origin: %v", origins)
	}
}

// holdSink is a recording sink whose lanes' Close waits for release, after
// closing closing: the bind's teardown holds at its second step.
type holdSink struct {
	*trackertest.Sink
	closing, release chan struct{}
}

type holdLane struct {
	tracker.Lane
	s *holdSink
}

func (s *holdSink) OpenLane(ctx context.Context, bind string, acked func(uint64)) (tracker.Lane, error) {
	l, err := s.Sink.OpenLane(ctx, bind, acked)
	return &holdLane{Lane: l, s: s}, err
}

func (l *holdLane) Close(ctx context.Context) error {
	close(l.s.closing)
	<-l.s.release
	return l.Lane.Close(ctx)
}

// A bind that stops because its lease was lost reads nothing more: a record
// its source hands over while the lane drains is neither published nor
// given to a receiver. (It went on processing records until the source was
// stopped, the last step, when the stop came from the lease or the
// checkpoint writer rather than from Run's context.)
func TestNothingIsReadOnceTheBindStops(t *testing.T) {
	cfg := testConfig(t)
	src := &chanSource{recs: make(chan tracker.Record)}
	sink := &holdSink{Sink: &trackertest.Sink{}, closing: make(chan struct{}), release: make(chan struct{})}
	store := &leaseStore{MemStore: trackertest.NewMemStore(), lease: newTestLease()}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, func(context.Context, binds.Bind, tracker.SourceOptions) (tracker.Source, error) {
		return src, nil
	}), tracker.WithSink(sink), tracker.WithCheckpointStore(store))
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	tr.BeforeCommit.Connect(func(context.Context, tracker.Change) error { calls.Add(1); return nil })
	done := make(chan error, 1)
	go func() { done <- tr.Run(t.Context()) }()
	src.recs <- begin("t1")
	src.recs <- insert("t1", "orders", "1")
	trackertest.Eventually(t, 5*time.Second, "the first change", func() bool { return calls.Load() == 1 })
	store.lease.lose()
	<-sink.closing // the teardown drains the lane: the bind no longer reads
	src.recs <- insert("t1", "orders", "2")
	close(sink.release)
	if err := <-done; !errors.Is(err, tracker.ErrFenced) {
		t.Fatalf("Run = %v, want ErrFenced", err)
	}
	if n, evs := calls.Load(), len(sink.Events()); n != 1 || evs != 1 {
		t.Fatalf("after the bind stopped reading: %d receiver calls, %d events; want 1 and 1", n, evs)
	}
}
