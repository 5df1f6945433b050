package tracker_test

import (
	"path/filepath"
	"testing"

	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

func TestFileStore(t *testing.T) {
	trackertest.RunCheckpointStoreTests(t, func(t *testing.T) tracker.CheckpointStore {
		return tracker.NewFileStore(filepath.Join(t.TempDir(), "sub", "checkpoints.json"))
	})
}

func TestFileStoreSharedByTwoHandles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cp.json")
	a, b := tracker.NewFileStore(path), tracker.NewFileStore(path)
	cp, err := a.Save(t.Context(), "k", tracker.Checkpoint{Position: "1"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.Load(t.Context(), "k")
	if err != nil || got.Position != "1" || got.Revision != cp.Revision {
		t.Fatalf("second handle Load = %+v, %v", got, err)
	}
	if _, err := b.Save(t.Context(), "k", got); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Save(t.Context(), "k", cp); err == nil {
		t.Fatal("stale save through the first handle succeeded")
	}
}
