package tracker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	// Position is the source's opaque resume position.
	Position string `json:"position"`
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
	sum := sha256.Sum256([]byte(identity))
	return Escape(bind) + "." + hex.EncodeToString(sum[:8])
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
