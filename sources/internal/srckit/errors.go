package srckit

import (
	"errors"
	"fmt"

	"github.com/trackerd/trackerd/tracker"
)

// permanentError marks an error that reconnecting cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that reconnecting cannot fix: data the source
// cannot decode, an error of the handler, a position the server cannot
// serve. Its message is err's. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// HandlerError is the error a source returns when its [tracker.Handler]
// fails: permanent (an error from Handle is fatal to Run), with err's
// message after "handle record: ".
func HandlerError(err error) error {
	return Permanent(fmt.Errorf("handle record: %w", err))
}

// IsPermanent reports whether reconnecting cannot fix err: it was marked
// with [Permanent] (or [HandlerError]), or it matches [tracker.ErrConfig],
// [tracker.ErrFenced] or [tracker.ErrResnapshotRequired]. Every other error
// of a replication connection is transient.
func IsPermanent(err error) bool {
	var pe *permanentError
	return errors.As(err, &pe) || errors.Is(err, tracker.ErrConfig) ||
		errors.Is(err, tracker.ErrFenced) || errors.Is(err, tracker.ErrResnapshotRequired)
}
