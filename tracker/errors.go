package tracker

import "errors"

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrConfig marks errors that retrying cannot fix: bad configuration,
	// wrong credentials, missing privileges, a server not set up for
	// replication. trackerd exits with status 2 on them.
	ErrConfig = errors.New("configuration")
	// ErrNoCheckpoint is returned by CheckpointStore.Load when a bind has
	// no checkpoint yet.
	ErrNoCheckpoint = errors.New("no checkpoint")
	// ErrCheckpointConflict is returned by CheckpointStore.Save when the
	// stored revision is not the one the caller last saw: another instance
	// is writing the same bind's checkpoint, and this one must stop.
	ErrCheckpointConflict = errors.New("checkpoint changed by another writer")
	// ErrResnapshotRequired means the source can no longer resume from its
	// checkpoint (binlogs purged, slot invalidated): changes were lost on
	// the server side and the bind needs a new snapshot.
	ErrResnapshotRequired = errors.New("re-snapshot required")
	// ErrFenced means another instance holds the bind (its replication slot
	// is in use, or it holds the bind's lease): this one must not run it.
	ErrFenced = errors.New("held by another instance")
)

// ConfigError wraps err so that errors.Is(err, ErrConfig) holds, keeping its
// message as it is.
func ConfigError(err error) error {
	if err == nil || errors.Is(err, ErrConfig) {
		return err
	}
	return configError{err}
}

type configError struct{ err error }

func (e configError) Error() string   { return e.err.Error() }
func (e configError) Unwrap() []error { return []error{e.err, ErrConfig} }
