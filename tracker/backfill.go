package tracker

import (
	"context"
	"fmt"
)

// Backfill starts a snapshot of a running bind's tables (all it follows
// when req.Tables is empty) while its stream goes on, and returns it as it
// starts. It is kept in the bind's checkpoint: a restart resumes it.
func (t *Tracker) Backfill(ctx context.Context, req BackfillRequest) (SnapshotInfo, error) {
	p, err := t.runningPipeline(req.Bind)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return p.snaps.backfill(ctx, req)
}

// CancelSnapshot stops a running snapshot or backfill of a bind (empty:
// the only bind, or "default") and returns it as it ended.
func (t *Tracker) CancelSnapshot(ctx context.Context, bind, id string) (SnapshotInfo, error) {
	p, err := t.runningPipeline(bind)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return p.snaps.cancel(ctx, id)
}

// Snapshots returns the snapshots of every running bind: those running,
// and those that ended since the bind started.
func (t *Tracker) Snapshots() []SnapshotInfo {
	var out []SnapshotInfo
	for _, s := range t.Stats() {
		out = append(out, s.Snapshots...)
	}
	return out
}

// runningPipeline returns the pipeline of a bind that runs: key, or with
// key empty the only tracked bind, or "default".
func (t *Tracker) runningPipeline(key string) (*pipeline, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if key == "" {
		if len(t.pipelines) == 1 {
			for _, p := range t.pipelines {
				return p, nil
			}
		}
		key = "default"
	}
	p := t.pipelines[key]
	if p == nil {
		var known []string
		for k := range t.pipelines {
			known = append(known, k)
		}
		return nil, ConfigError(fmt.Errorf("bind %q is not running here (running: %v)", key, known))
	}
	return p, nil
}
