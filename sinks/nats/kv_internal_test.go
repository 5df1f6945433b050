package nats

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/tracker"
)

// checkpointStoreConformance holds a store to tracker.CheckpointStore's
// contract: Load of nothing is ErrNoCheckpoint; Save is compare-and-set on
// Revision, returning the new revision; keys are independent.
func checkpointStoreConformance(t *testing.T, newStore func(t *testing.T) tracker.CheckpointStore) {
	when := time.Date(2024, 5, 1, 12, 0, 0, 123, time.UTC)
	type step struct {
		op      string // "load", "save"
		key     string
		cp      tracker.Checkpoint
		useRev  int // save: the revision returned by step useRev (1-based); 0: cp.Revision as given
		wantErr error
		wantPos string // load: the position read
		wantRev int    // load: the revision must be that of step wantRev
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"load missing", []step{
			{op: "load", key: "b.x", wantErr: tracker.ErrNoCheckpoint},
		}},
		{"create then load", []step{
			{op: "save", key: "b.x", cp: tracker.Checkpoint{Bind: "b", Source: "pg:1", Position: "0/10", Time: when}},
			{op: "load", key: "b.x", wantPos: "0/10", wantRev: 1},
		}},
		{"update with the current revision", []step{
			{op: "save", key: "b.x", cp: tracker.Checkpoint{Position: "1"}},
			{op: "save", key: "b.x", cp: tracker.Checkpoint{Position: "2"}, useRev: 1},
			{op: "save", key: "b.x", cp: tracker.Checkpoint{Position: "3"}, useRev: 2},
			{op: "load", key: "b.x", wantPos: "3", wantRev: 3},
		}},
		{"stale revision conflicts", []step{
			{op: "save", key: "b.x", cp: tracker.Checkpoint{Position: "1"}},
			{op: "save", key: "b.x", cp: tracker.Checkpoint{Position: "2"}, useRev: 1},
			{op: "save", key: "b.x", cp: tracker.Checkpoint{Position: "fenced"}, useRev: 1, wantErr: tracker.ErrCheckpointConflict},
			{op: "load", key: "b.x", wantPos: "2", wantRev: 2},
		}},
		{"create over an existing key conflicts", []step{
			{op: "save", key: "b.x", cp: tracker.Checkpoint{Position: "1"}},
			{op: "save", key: "b.x", cp: tracker.Checkpoint{Position: "other instance"}, wantErr: tracker.ErrCheckpointConflict},
			{op: "load", key: "b.x", wantPos: "1", wantRev: 1},
		}},
		{"update of a missing key conflicts", []step{
			{op: "save", key: "b.y", cp: tracker.Checkpoint{Position: "1", Revision: 99}, wantErr: tracker.ErrCheckpointConflict},
			{op: "load", key: "b.y", wantErr: tracker.ErrNoCheckpoint},
		}},
		{"keys are independent", []step{
			{op: "save", key: "a.k", cp: tracker.Checkpoint{Position: "a"}},
			{op: "save", key: "b.k", cp: tracker.Checkpoint{Position: "b"}},
			{op: "load", key: "a.k", wantPos: "a", wantRev: 1},
			{op: "load", key: "b.k", wantPos: "b", wantRev: 2},
		}},
		{"key characters of CheckpointKey", []step{
			{op: "save", key: tracker.CheckpointKey("shop eu/ä", "pg:7300000000000000001/db/slot"), cp: tracker.Checkpoint{Position: "p"}},
			{op: "load", key: tracker.CheckpointKey("shop eu/ä", "pg:7300000000000000001/db/slot"), wantPos: "p", wantRev: 1},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			ctx := t.Context()
			revs := make([]uint64, len(tc.steps))
			for i, st := range tc.steps {
				switch st.op {
				case "save":
					cp := st.cp
					if st.useRev > 0 {
						cp.Revision = revs[st.useRev-1]
					}
					got, err := s.Save(ctx, st.key, cp)
					if !errors.Is(err, st.wantErr) || (st.wantErr == nil && err != nil) {
						t.Fatalf("step %d: Save: err = %v, want %v", i+1, err, st.wantErr)
					}
					if err == nil {
						if got.Revision == 0 || got.Revision == cp.Revision || got.Position != cp.Position {
							t.Fatalf("step %d: Save returned %+v for %+v", i+1, got, cp)
						}
						revs[i] = got.Revision
					}
				case "load":
					got, err := s.Load(ctx, st.key)
					if !errors.Is(err, st.wantErr) || (st.wantErr == nil && err != nil) {
						t.Fatalf("step %d: Load: err = %v, want %v", i+1, err, st.wantErr)
					}
					if err != nil {
						continue
					}
					if got.Position != st.wantPos || got.Revision != revs[st.wantRev-1] {
						t.Fatalf("step %d: Load = %+v, want position %q at revision %d", i+1, got, st.wantPos, revs[st.wantRev-1])
					}
					saved := tc.steps[st.wantRev-1].cp
					if got.Bind != saved.Bind || got.Source != saved.Source || !got.Time.Equal(saved.Time) {
						t.Fatalf("step %d: Load = %+v, want the fields of %+v", i+1, got, saved)
					}
				}
			}
		})
	}
}

func TestIntegrationKVStore(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	for _, srv := range servers(t) {
		t.Run(srv.name, func(t *testing.T) {
			srv.need(t)
			nc := dial(t, srv.url)
			newStore := func(t *testing.T) tracker.CheckpointStore {
				s, err := NewKVStore(t.Context(), nc, tempBucket(t, nc))
				if err != nil {
					t.Fatalf("NewKVStore: %v", err)
				}
				return s
			}
			checkpointStoreConformance(t, newStore)

			t.Run("bucket created with history", func(t *testing.T) {
				s := newStore(t).(*KVStore)
				kv, err := s.bind(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				st, err := kv.Status(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if st.History() != KVHistory {
					t.Errorf("history = %d, want %d", st.History(), KVHistory)
				}
				if info := st.(*jetstream.KeyValueBucketStatus).StreamInfo(); info.Config.Storage != jetstream.FileStorage {
					t.Errorf("storage = %v, want file", info.Config.Storage)
				}
			})
			t.Run("two instances: the second is fenced out", func(t *testing.T) {
				bucket := tempBucket(t, nc)
				a, err := NewKVStore(t.Context(), nc, bucket)
				if err != nil {
					t.Fatal(err)
				}
				b, err := NewKVStore(t.Context(), dial(t, srv.url), bucket)
				if err != nil {
					t.Fatal(err)
				}
				key := tracker.CheckpointKey("default", "pg:1/db/slot")
				cpA, err := a.Save(t.Context(), key, tracker.Checkpoint{Bind: "default", Position: "0/1"})
				if err != nil {
					t.Fatal(err)
				}
				cpB, err := b.Load(t.Context(), key)
				if err != nil {
					t.Fatal(err)
				}
				cpB.Position = "0/2"
				if _, err := b.Save(t.Context(), key, cpB); err != nil {
					t.Fatalf("B takes over: %v", err)
				}
				cpA.Position = "0/3"
				if _, err := a.Save(t.Context(), key, cpA); !errors.Is(err, tracker.ErrCheckpointConflict) {
					t.Fatalf("A after B's write: err = %v, want ErrCheckpointConflict", err)
				}
			})
			t.Run("bad bucket name", func(t *testing.T) {
				if _, err := NewKVStore(t.Context(), nc, "a.b"); !errors.Is(err, tracker.ErrConfig) {
					t.Fatalf("err = %v, want a configuration error", err)
				}
			})
		})
	}
}
