package tracker

import (
	"context"
	"errors"
	"time"
)

// Checkpoint is a bind's durable progress: everything up to Position has been
// published and acknowledged.
type Checkpoint struct {
	// Bind is the bind key.
	Bind string `json:"bind"`
	// Source is the source's identity (see Source.Identity); a checkpoint
	// is never resumed by a source of another identity.
	Source string `json:"source"`
	// Origin is the origin token of the bind's event ids (see [Origin]),
	// fixed when the checkpoint is first written. Empty in checkpoints of
	// trackerd before 2026-12: the origin of Source is used then.
	Origin string `json:"origin,omitempty"`
	// Owner is the instance that wrote the checkpoint (see WithOwner).
	Owner string `json:"owner,omitempty"`
	// Position is the source's opaque resume position.
	Position string `json:"position"`
	// Snapshots are the bind's unfinished snapshots and backfills, with
	// their progress, saved with Position under the same compare-and-set:
	// everything they published up to their progress is acknowledged.
	Snapshots []SnapshotProgress `json:"snapshots,omitempty"`
	// Time is when the checkpoint was written.
	Time time.Time `json:"time"`
	// Revision is the store's revision of this record, 0 before the first
	// save. Save succeeds only if the stored revision still equals it.
	Revision uint64 `json:"-"`
}

// CheckpointKey is the store key of a bind's checkpoint: the escaped bind
// key and a digest of the source identity, so that a bind pointed at another
// server or database starts afresh.
func CheckpointKey(bind, identity string) string {
	return Escape(bind) + "." + Origin(identity)
}

// CheckpointStore keeps one checkpoint per key, written with compare-and-set.
type CheckpointStore interface {
	// Load returns the checkpoint stored under key, or ErrNoCheckpoint.
	Load(ctx context.Context, key string) (Checkpoint, error)
	// Save stores cp under key if the stored revision is cp.Revision (0:
	// none stored yet), and returns it with its new revision. Otherwise it
	// returns ErrCheckpointConflict.
	Save(ctx context.Context, key string, cp Checkpoint) (Checkpoint, error)
}

// StoredCheckpoint is a checkpoint as a [CheckpointLister] lists it.
type StoredCheckpoint struct {
	// Key is the store key (see CheckpointKey).
	Key string
	Checkpoint
	// Holder names the instance holding the key's lease, empty when no
	// live lease is held.
	Holder string
}

// CheckpointLister is implemented by stores that can list every checkpoint
// of a bind, whatever the source identity it was written for. The tracker
// uses it when a bind has no checkpoint for its source's identity, so that
// it never silently starts afresh beside a checkpoint of the same server
// under another name (see [Adopter]).
type CheckpointLister interface {
	ListCheckpoints(ctx context.Context, bind string) ([]StoredCheckpoint, error)
}

// ErrOtherSource is returned by [Adopter.Adopt] for a checkpoint of
// another server, database or stream.
var ErrOtherSource = errors.New("checkpoint of another source")

// Adopter is implemented by sources whose identity may change while their
// server stays the same (MariaDB's includes the host name, which a
// recreated container changes). When a bind has no checkpoint under its
// source's identity, the tracker offers the source the bind's checkpoints
// written under other identities, newest first:
//
//   - Adopt returns nil when cp belongs to this server and database and its
//     position can be resumed here: the bind resumes from it, with its
//     event-id origin, and its checkpoint moves to the new identity;
//   - an error matching ErrOtherSource when cp belongs to another server
//     or database: it is left alone;
//   - any other error when cp belongs to this server but cannot be resumed
//     (its position is not in this server's log): the bind stops with it,
//     since starting elsewhere would silently skip changes.
type Adopter interface {
	Adopt(ctx context.Context, cp Checkpoint) error
}

// StartPositioner is implemented by sources whose server keeps no position
// for them (a binlog reader, unlike a PostgreSQL slot): StartPosition is
// where a new bind starts, the server's end as of Open. The tracker writes
// it into the bind's first checkpoint before the source runs, so that a
// start killed before its first commit resumes there, not at the
// then-current end, which would skip what was committed in between.
type StartPositioner interface {
	StartPosition() string
}
