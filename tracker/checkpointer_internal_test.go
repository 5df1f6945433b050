package tracker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// memStore is a CheckpointStore with compare-and-set, for the
// checkpointer's tests (trackertest imports this package).
type memStore struct {
	mu    sync.Mutex
	cps   map[string]Checkpoint
	saves int
}

func (s *memStore) Load(_ context.Context, key string) (Checkpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp, ok := s.cps[key]
	if !ok {
		return Checkpoint{}, ErrNoCheckpoint
	}
	return cp, nil
}

func (s *memStore) Save(_ context.Context, key string, cp Checkpoint) (Checkpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cps[key].Revision != cp.Revision {
		return Checkpoint{}, ErrCheckpointConflict
	}
	cp.Revision++
	s.cps[key] = cp
	s.saves++
	return cp, nil
}

// confirms records what the checkpointer confirms to the source.
type confirms struct {
	mu  sync.Mutex
	pos []string
}

func (c *confirms) Confirm(pos string) {
	c.mu.Lock()
	c.pos = append(c.pos, pos)
	c.mu.Unlock()
}

func (c *confirms) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.pos, " ")
}

type heldLease struct {
	lost chan struct{}
	held bool
}

func (l *heldLease) Lost() <-chan struct{}         { return l.lost }
func (l *heldLease) Held() bool                    { return l.held }
func (l *heldLease) Release(context.Context) error { return nil }

// The checkpointer driven step by step, without its writer: marks, acks
// and saves, with the delay, the clock for Lag.Behind, the lease checks
// and the former holder's stray write.
func TestCheckpointer(t *testing.T) {
	type step struct {
		do   func(c *checkpointer, s *memStore, l *heldLease) error
		want string // the stored position and what was confirmed, after the step
		err  error
	}
	var (
		t0  = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
		ctx = context.Background()
	)
	commit := func(seq uint64, pos string, at time.Time) func(*checkpointer, *memStore, *heldLease) error {
		return func(c *checkpointer, _ *memStore, _ *heldLease) error { c.commit(seq, pos, at); return nil }
	}
	ack := func(n uint64) func(*checkpointer, *memStore, *heldLease) error {
		return func(c *checkpointer, _ *memStore, _ *heldLease) error { c.ack(n); return nil }
	}
	save := func(delay time.Duration) func(*checkpointer, *memStore, *heldLease) error {
		return func(c *checkpointer, _ *memStore, _ *heldLease) error { return c.save(ctx, delay) }
	}
	behind := func(want time.Duration) func(*checkpointer, *memStore, *heldLease) error {
		return func(c *checkpointer, _ *memStore, _ *heldLease) error {
			if got := c.view(t0.Add(time.Hour)).behind; got != want {
				return errors.New("behind " + got.String() + ", want " + want.String())
			}
			return nil
		}
	}
	for _, tc := range []struct {
		name  string
		delay time.Duration
		steps []step
	}{
		{name: "ok - a position is saved and confirmed once its events are acknowledged", steps: []step{
			{do: commit(2, "0/10", t0), want: " |"},
			{do: commit(3, "0/20", t0.Add(time.Minute)), want: " |"},
			{do: behind(time.Hour), want: " |"},
			{do: save(0), want: " |"},
			{do: ack(2), want: " |"},
			{do: save(0), want: "0/10 | 0/10"},
			{do: behind(59 * time.Minute), want: "0/10 | 0/10"},
			{do: save(0), want: "0/10 | 0/10"}, // nothing new: no write
			{do: ack(3), want: "0/10 | 0/10"},
			{do: save(0), want: "0/20 | 0/10 0/20"},
			{do: behind(0), want: "0/20 | 0/10 0/20"},
		}},
		{name: "ok - positions with no event between them: the last one counts", steps: []step{
			{do: commit(0, "0/10", time.Time{}), want: " |"},
			{do: commit(0, "0/11", time.Time{}), want: " |"},
			{do: commit(0, "", t0), want: " |"}, // no position: nothing to keep
			{do: save(0), want: "0/11 | 0/11"},
		}},
		{name: "ok - the checkpoint delay: acknowledged, then saved only that much later", delay: time.Hour, steps: []step{
			{do: commit(1, "0/10", t0), want: " |"},
			{do: ack(1), want: " |"},
			{do: save(time.Hour), want: " |"},
			{do: save(time.Hour), want: " |"},
			{do: save(0), want: "0/10 | 0/10"}, // the final save does not wait
		}},
		{name: "error - no write while the lease is uncertain, nor once it is lost", steps: []step{
			{do: commit(1, "0/10", t0), want: " |"},
			{do: ack(1), want: " |"},
			{do: func(_ *checkpointer, _ *memStore, l *heldLease) error { l.held = false; return nil }, want: " |"},
			{do: save(0), want: " |", err: errLeaseUncertain},
			{do: func(_ *checkpointer, _ *memStore, l *heldLease) error { close(l.lost); return nil }, want: " |"},
			{do: save(0), want: " |", err: ErrFenced},
		}},
		{name: "ok - the former holder's stray write is overwritten", steps: []step{
			{do: commit(1, "0/10", t0), want: " |"},
			{do: ack(1), want: " |"},
			{do: func(_ *checkpointer, s *memStore, _ *heldLease) error {
				cp, _ := s.Load(ctx, "k")
				cp.Position, cp.Owner = "0/5", "former"
				_, err := s.Save(ctx, "k", cp)
				return err
			}, want: "0/5 |"},
			{do: save(0), want: "0/10 | 0/10"},
		}},
		{name: "error - a write of this owner's is another instance running the bind", steps: []step{
			{do: commit(1, "0/10", t0), want: " |"},
			{do: ack(1), want: " |"},
			{do: func(_ *checkpointer, s *memStore, _ *heldLease) error {
				cp, _ := s.Load(ctx, "k")
				cp.Position = "0/5"
				_, err := s.Save(ctx, "k", cp)
				return err
			}, want: "0/5 |"},
			{do: save(0), want: "0/5 |", err: ErrFenced},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := &memStore{cps: map[string]Checkpoint{}}
			cp, err := store.Save(ctx, "k", Checkpoint{Bind: "b", Source: "src", Owner: "me"})
			if err != nil {
				t.Fatal(err)
			}
			lease := &heldLease{lost: make(chan struct{}), held: true}
			src := &confirms{}
			c := newCheckpointer("k", "me", store, lease, src, tc.delay, slog.New(slog.DiscardHandler))
			c.cp = cp
			for i, st := range tc.steps {
				err := st.do(c, store, lease)
				if (st.err == nil && err != nil) || (st.err != nil && !errors.Is(err, st.err)) {
					t.Fatalf("step %d: %v, want %v", i, err, st.err)
				}
				stored, _ := store.Load(ctx, "k")
				if got := stored.Position + " | " + src.String(); strings.TrimSpace(got) != strings.TrimSpace(st.want) {
					t.Fatalf("step %d: stored | confirmed = %q, want %q", i, got, st.want)
				}
			}
		})
	}
}

// A new bind's first position, with no event before it, is saved before
// keepalive returns: through the writer while it runs, directly once it
// has returned. Later ones wait for the writer's tick.
func TestCheckpointerFirstKeepalive(t *testing.T) {
	for _, writer := range []bool{true, false} {
		store := &memStore{cps: map[string]Checkpoint{}}
		c := newCheckpointer("k", "me", store, nil, &confirms{}, 0, slog.New(slog.DiscardHandler))
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		if writer {
			go func() { done <- c.run(ctx, time.Hour, func(time.Time) {}) }()
		} else {
			close(c.stopped)
		}
		if err := c.keepalive(t.Context(), 0, "p1"); err != nil || c.position() != "p1" {
			t.Fatalf("writer %v: first keepalive: %v, saved %q", writer, err, c.position())
		}
		if err := c.keepalive(t.Context(), 0, "p2"); err != nil || c.position() != "p1" {
			t.Fatalf("writer %v: second keepalive: %v, saved %q, want p1 until the tick", writer, err, c.position())
		}
		cancel()
		if writer {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	}
}
