// Package trackertest holds fakes for testing code that uses the tracker
// (a scripted source, a recording sink, an in-memory checkpoint store) and
// conformance suites every real implementation must pass
// ([RunCheckpointStoreTests], [RunSourceTests]), and the helpers the
// project's tests share ([Eventually], [Buffer]). An embedding application
// can use them to test its receivers without a database or NATS.
package trackertest

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
)

// MemStore is an in-memory [tracker.CheckpointStore] with compare-and-set.
type MemStore struct {
	mu   sync.Mutex
	recs map[string]tracker.Checkpoint
	// Saves counts successful saves.
	Saves int
}

// NewMemStore returns an empty store.
func NewMemStore() *MemStore { return &MemStore{recs: make(map[string]tracker.Checkpoint)} }

// Load implements tracker.CheckpointStore.
func (s *MemStore) Load(_ context.Context, key string) (tracker.Checkpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp, ok := s.recs[key]
	if !ok {
		return tracker.Checkpoint{}, tracker.ErrNoCheckpoint
	}
	return cp, nil
}

// Save implements tracker.CheckpointStore.
func (s *MemStore) Save(_ context.Context, key string, cp tracker.Checkpoint) (tracker.Checkpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recs[key].Revision != cp.Revision {
		return tracker.Checkpoint{}, tracker.ErrCheckpointConflict
	}
	cp.Revision++
	s.recs[key] = cp
	s.Saves++
	return cp, nil
}

// ListCheckpoints implements tracker.CheckpointLister.
func (s *MemStore) ListCheckpoints(_ context.Context, bind string) ([]tracker.StoredCheckpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prefix := tracker.Escape(bind) + "."
	var out []tracker.StoredCheckpoint
	for k, cp := range s.recs {
		if strings.HasPrefix(k, prefix) {
			out = append(out, tracker.StoredCheckpoint{Key: k, Checkpoint: cp})
		}
	}
	return out, nil
}

// Position returns the stored position under key ("" when none).
func (s *MemStore) Position(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recs[key].Position
}

// ScriptedSource is a [tracker.Source] that hands over a fixed list of
// records, then waits for its context to end.
type ScriptedSource struct {
	ID      string
	Records []tracker.Record
	// FailAfter, when > 0, makes Run return Err after that many records.
	FailAfter int
	Err       error

	mu        sync.Mutex
	from      []string
	confirmed []string
	handled   int
	done      chan struct{}
	closed    bool
}

// Open returns an OpenSourceFunc that always returns s.
func (s *ScriptedSource) Open() tracker.OpenSourceFunc {
	return func(context.Context, binds.Bind, tracker.SourceOptions) (tracker.Source, error) { return s, nil }
}

// Identity implements tracker.Source.
func (s *ScriptedSource) Identity() string {
	if s.ID == "" {
		return "scripted"
	}
	return s.ID
}

// Run implements tracker.Source.
func (s *ScriptedSource) Run(ctx context.Context, from string, h tracker.Handler) error {
	s.mu.Lock()
	s.from = append(s.from, from)
	if s.done == nil {
		s.done = make(chan struct{})
	}
	done := s.done
	s.mu.Unlock()
	for i, r := range s.Records {
		if s.FailAfter > 0 && i == s.FailAfter {
			return s.Err
		}
		if err := h.Handle(ctx, r); err != nil {
			return err
		}
		s.mu.Lock()
		s.handled++
		s.mu.Unlock()
	}
	s.mu.Lock()
	select {
	case <-done:
	default:
		close(done)
	}
	s.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

// Done is closed once every record was handled.
func (s *ScriptedSource) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		s.done = make(chan struct{})
	}
	return s.done
}

// Confirm implements tracker.Source.
func (s *ScriptedSource) Confirm(pos string) {
	s.mu.Lock()
	s.confirmed = append(s.confirmed, pos)
	s.mu.Unlock()
}

// Close implements tracker.Source.
func (s *ScriptedSource) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

// Confirmed returns the positions passed to Confirm, in order.
func (s *ScriptedSource) Confirmed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.confirmed)
}

// From returns the positions Run was started from.
func (s *ScriptedSource) From() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.from)
}

// Sink is a recording [tracker.Sink]. By default it acknowledges every
// event at once; with Manual set, events wait for Ack.
type Sink struct {
	// Manual holds acknowledgements until Ack is called.
	Manual bool
	// FailID makes Publish of the event with this id return Err.
	FailID string
	Err    error

	mu     sync.Mutex
	events []tracker.Event
	lanes  map[string]*lane
}

type lane struct {
	s     *Sink
	bind  string
	acked func(uint64)
	last  uint64
}

// OpenLane implements tracker.Sink.
func (s *Sink) OpenLane(_ context.Context, bind string, acked func(uint64)) (tracker.Lane, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lanes == nil {
		s.lanes = make(map[string]*lane)
	}
	l := &lane{s: s, bind: bind, acked: acked}
	s.lanes[bind] = l
	return l, nil
}

func (l *lane) Publish(ctx context.Context, ev *tracker.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.s.mu.Lock()
	if l.s.FailID != "" && ev.ID == l.s.FailID {
		l.s.mu.Unlock()
		return l.s.Err
	}
	// Copies: the tracker reuses the event and its data after Publish.
	e := *ev
	e.Data = slices.Clone(ev.Data)
	if ev.Change != nil {
		c := *ev.Change
		e.Change = &c
	}
	l.s.events = append(l.s.events, e)
	l.last = ev.LaneSeq
	manual := l.s.Manual
	l.s.mu.Unlock()
	if !manual {
		l.acked(ev.LaneSeq)
	}
	return nil
}

func (l *lane) Close(context.Context) error { return nil }

// Ack acknowledges every event published so far on bind's lane.
func (s *Sink) Ack(bind string) {
	s.mu.Lock()
	l := s.lanes[bind]
	s.mu.Unlock()
	if l != nil {
		l.acked(l.last)
	}
}

// Events returns the published events, in order.
func (s *Sink) Events() []tracker.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

// Eventually polls cond every 5 ms until it holds or timeout passes, then
// fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	if !waitUntil(timeout, cond) {
		t.Fatalf("timed out after %v: %s", timeout, msg)
	}
}

// waitUntil polls cond every 5 ms until it holds (true) or timeout passes
// (false).
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// Buffer is a bytes.Buffer safe for concurrent use: it collects what a
// logger or a process writes from other goroutines, for a test to read.
// The zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// States records a source's state reports, as its
// [tracker.SourceOptions].Report, for tests.
type States struct {
	mu   sync.Mutex
	list []tracker.SourceStatus
}

// Report records st; it is a tracker.SourceOptions.Report.
func (s *States) Report(st tracker.SourceStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = append(s.list, st)
}

// All returns the reports so far.
func (s *States) All() []tracker.SourceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.list)
}

// Sequence returns the states reported so far, separated by spaces, a
// state repeated in a row once (a retry may report reconnecting again):
// "connecting streaming reconnecting streaming". A streaming report
// without its position reads "streaming(no position)", a reconnecting one
// without its error "reconnecting(no error)".
func (s *States) Sequence() string {
	var seq []string
	for _, st := range s.All() {
		r := string(st.State)
		switch {
		case st.State == tracker.SourceStreaming && st.Position == "":
			r += "(no position)"
		case st.State == tracker.SourceReconnecting && st.Err == nil:
			r += "(no error)"
		}
		if n := len(seq); n == 0 || seq[n-1] != r {
			seq = append(seq, r)
		}
	}
	return strings.Join(seq, " ")
}

// Count returns how many reports of state came so far.
func (s *States) Count(state tracker.SourceState) int {
	n := 0
	for _, st := range s.All() {
		if st.State == state {
			n++
		}
	}
	return n
}

// RunCheckpointStoreTests checks that a store keeps compare-and-set
// semantics: every real [tracker.CheckpointStore] must pass it.
func RunCheckpointStoreTests(t *testing.T, newStore func(t *testing.T) tracker.CheckpointStore) {
	ctx := context.Background()
	t.Run("missing key", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Load(ctx, "b.missing"); !errors.Is(err, tracker.ErrNoCheckpoint) {
			t.Fatalf("Load of a missing key: err = %v, want ErrNoCheckpoint", err)
		}
	})
	t.Run("save load update", func(t *testing.T) {
		s := newStore(t)
		cp := tracker.Checkpoint{Bind: "b", Source: "src", Position: "0/10", Time: time.Unix(1700000000, 0).UTC()}
		saved, err := s.Save(ctx, "b.k1", cp)
		if err != nil {
			t.Fatalf("first Save: %v", err)
		}
		if saved.Revision == 0 {
			t.Fatalf("first Save returned revision 0")
		}
		got, err := s.Load(ctx, "b.k1")
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if got.Position != "0/10" || got.Source != "src" || got.Bind != "b" || got.Revision != saved.Revision || !got.Time.Equal(cp.Time) {
			t.Fatalf("Load = %+v, want %+v", got, saved)
		}
		got.Position = "0/20"
		saved2, err := s.Save(ctx, "b.k1", got)
		if err != nil {
			t.Fatalf("second Save: %v", err)
		}
		if saved2.Revision == saved.Revision {
			t.Fatalf("revision did not change on Save")
		}
		if got, _ := s.Load(ctx, "b.k1"); got.Position != "0/20" {
			t.Fatalf("after update Load position = %q, want 0/20", got.Position)
		}
	})
	t.Run("stale revision conflicts", func(t *testing.T) {
		s := newStore(t)
		first, err := s.Save(ctx, "b.k2", tracker.Checkpoint{Bind: "b", Position: "1"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Save(ctx, "b.k2", first); err != nil {
			t.Fatalf("Save with current revision: %v", err)
		}
		first.Position = "2"
		if _, err := s.Save(ctx, "b.k2", first); !errors.Is(err, tracker.ErrCheckpointConflict) {
			t.Fatalf("Save with a stale revision: err = %v, want ErrCheckpointConflict", err)
		}
		if _, err := s.Save(ctx, "b.k2", tracker.Checkpoint{Bind: "b", Position: "3"}); !errors.Is(err, tracker.ErrCheckpointConflict) {
			t.Fatalf("Save of revision 0 over an existing key: err = %v, want ErrCheckpointConflict", err)
		}
	})
	t.Run("list a bind's checkpoints", func(t *testing.T) {
		s := newStore(t)
		l, ok := s.(tracker.CheckpointLister)
		if !ok {
			t.Skip("the store does not list checkpoints")
		}
		for _, k := range []struct{ key, pos string }{{tracker.CheckpointKey("b.x", "one"), "1"}, {tracker.CheckpointKey("b.x", "two"), "2"}, {tracker.CheckpointKey("b", "one"), "3"}} {
			if _, err := s.Save(ctx, k.key, tracker.Checkpoint{Bind: "b", Position: k.pos}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := l.ListCheckpoints(ctx, "b.x")
		if err != nil {
			t.Fatal(err)
		}
		var pos []string
		for _, sc := range got {
			pos = append(pos, sc.Position)
			if want, _ := s.Load(ctx, sc.Key); want.Position != sc.Position || want.Revision != sc.Revision || sc.Revision == 0 {
				t.Fatalf("listed %+v, stored %+v", sc, want)
			}
		}
		slices.Sort(pos)
		if strings.Join(pos, ",") != "1,2" {
			t.Fatalf("ListCheckpoints(b.x) positions %v, want 1 and 2 (not b's)", pos)
		}
		if got, err := l.ListCheckpoints(ctx, "none"); err != nil || len(got) != 0 {
			t.Fatalf("ListCheckpoints of a bind without any = %v, %v", got, err)
		}
	})
	t.Run("keys are independent", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Save(ctx, "a.x", tracker.Checkpoint{Position: "a"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Save(ctx, "b.x", tracker.Checkpoint{Position: "b"}); err != nil {
			t.Fatal(err)
		}
		a, _ := s.Load(ctx, "a.x")
		b, _ := s.Load(ctx, "b.x")
		if a.Position != "a" || b.Position != "b" {
			t.Fatalf("positions = %q, %q; want a, b", a.Position, b.Position)
		}
	})
}
