package tracker

import "context"

// snapshots runs a bind's snapshots (see snapshot.go).
type snapshots struct{}

func (s *snapshots) backfill(ctx context.Context, req BackfillRequest) (SnapshotInfo, error) {
	return SnapshotInfo{}, ErrSnapshotUnsupported
}

func (s *snapshots) cancel(ctx context.Context, id string) (SnapshotInfo, error) {
	return SnapshotInfo{}, ErrUnknownSnapshot
}
