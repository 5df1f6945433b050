package tracker_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trackerd/trackerd/binds"

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

func TestFileStoreLease(t *testing.T) {
	s := tracker.NewFileStore(filepath.Join(t.TempDir(), "cp.json"))
	first, err := s.Lease(t.Context(), "default.abc", "host-a:/data")
	if err != nil {
		t.Fatal(err)
	}
	_, err = tracker.NewFileStore(s.Path()).Lease(t.Context(), "default.abc", "host-b:/other")
	if !errors.Is(err, tracker.ErrFenced) || !strings.Contains(err.Error(), "host-a:/data") {
		t.Fatalf("second lease: %v, want ErrFenced naming the holder", err)
	}
	if _, err := s.Lease(t.Context(), "other.key", "host-b:/other"); err != nil {
		t.Fatalf("a lease of another key: %v", err)
	}
	if err := first.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lease(t.Context(), "default.abc", "host-b:/other"); err != nil {
		t.Fatalf("lease after release: %v", err)
	}
}

func TestSecondTrackerOnALeasedBindIsFenced(t *testing.T) {
	cfg := testConfig(t)
	store := tracker.NewFileStore(filepath.Join(cfg.DataDir, "checkpoints.json"))
	src := &trackertest.ScriptedSource{ID: "pg/1/db/slot"}
	if _, err := store.Lease(t.Context(), tracker.CheckpointKey("default", src.ID), "the-first"); err != nil {
		t.Fatal(err)
	}
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithCheckpointStore(tracker.NewFileStore(store.Path())))
	if err != nil {
		t.Fatal(err)
	}
	err = tr.Run(t.Context())
	if !errors.Is(err, tracker.ErrFenced) || !strings.Contains(err.Error(), "the-first") {
		t.Fatalf("Run = %v, want ErrFenced naming the holder", err)
	}
}
