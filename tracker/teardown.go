package tracker

import "context"

// Footprint is what trackerd made on a bind's server, as `trackerd
// teardown` lists it before removing it: the source's identity (which
// names the bind's checkpoint, see [CheckpointKey]) and the server objects.
type Footprint struct {
	// Identity is the source's identity (Source.Identity).
	Identity string
	// Objects are the server objects trackerd made for the bind, or looked
	// for and found missing (Missing set), in the order they are removed.
	Objects []ServerObject
	// SameServer reports whether a checkpoint written under identity
	// belongs to this bind's server and database too (MariaDB's identity
	// holds a host name that a recreated container changes): such a
	// checkpoint would be resumed or adopted by the next run, so teardown
	// removes it too. Nil means identity must equal Identity.
	SameServer func(identity string) bool
}

// ServerObject is one thing trackerd made on a bind's server: a
// replication slot, a publication, an event trigger.
type ServerObject struct {
	// Kind is what it is: "replication slot", "publication", "event trigger".
	Kind string
	// Name is its name on the server.
	Name string
	// Detail says what it is like now, e.g. "inactive, 4096 bytes of WAL
	// retained".
	Detail string
	// Missing is set when trackerd looked for it and it is not there:
	// nothing to remove.
	Missing bool
	// Keep, when not empty, says why it is left alone: trackerd did not
	// make it, or another bind uses it.
	Keep string
	// Busy, when not empty, says what uses it now (a walsender's PID): it
	// cannot be removed until that stops.
	Busy string
}

// Removable reports whether teardown removes o.
func (o ServerObject) Removable() bool { return !o.Missing && o.Keep == "" }

// Reset is what moving a bind to its server's current position did (see
// `trackerd reset`).
type Reset struct {
	// Identity is the source's identity.
	Identity string
	// Position is the new position, in the source's checkpoint form.
	Position string
	// Done lists what was done on the server, in words ("advanced
	// replication slot s from 0/1 to 0/2").
	Done []string
	// Skipped says what the move skips, in words: the changes between the
	// old position and the new one, which are never published. Empty when
	// there was no old position.
	Skipped string
}

// CheckpointRemover is implemented by checkpoint stores that can remove a
// bind's checkpoint, for `trackerd teardown`.
type CheckpointRemover interface {
	// Remove deletes the checkpoint stored under key if its revision is
	// still revision, and returns ErrCheckpointConflict if not (a trackerd
	// wrote it meanwhile). It also deletes the record of key's lease when
	// no live lease holds it (the caller releases its own lease after).
	Remove(ctx context.Context, key string, revision uint64) error
}
