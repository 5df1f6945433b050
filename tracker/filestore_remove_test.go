package tracker_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/trackerd/trackerd/tracker"
)

// TestFileStoreRemove: Remove deletes a checkpoint at the revision last
// seen, and refuses a stale one; the lease file goes once nobody holds its
// lock (a held lease keeps it until it is released).
func TestFileStoreRemove(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "cp.json")
	s := tracker.NewFileStore(path)
	cp, err := s.Save(ctx, "shop.abc", tracker.Checkpoint{Bind: "shop", Source: "x", Position: "1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Save(ctx, "other.abc", tracker.Checkpoint{Bind: "other", Source: "x", Position: "2"}); err != nil {
		t.Fatal(err)
	}
	l, err := s.Lease(ctx, "shop.abc", "teardown")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "shop.abc", cp.Revision+1); !errors.Is(err, tracker.ErrCheckpointConflict) {
		t.Fatalf("Remove at a stale revision: %v, want ErrCheckpointConflict", err)
	}
	if err := s.Remove(ctx, "shop.abc", cp.Revision); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, "shop.abc"); !errors.Is(err, tracker.ErrNoCheckpoint) {
		t.Fatalf("Load after Remove: %v", err)
	}
	if _, err := s.Load(ctx, "other.abc"); err != nil {
		t.Fatalf("the other bind's checkpoint: %v", err)
	}
	lease := path + ".shop.abc.lease"
	if _, err := os.Stat(lease); err != nil {
		t.Fatalf("the held lease's file went: %v", err)
	}
	l.Release(ctx)
	if err := s.Remove(ctx, "shop.abc", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(lease); !os.IsNotExist(err) {
		t.Fatalf("the released lease's file is still there: %v", err)
	}
}
