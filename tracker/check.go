package tracker

import (
	"context"
	"time"

	"github.com/trackerd/trackerd/binds"
)

// CheckResult is one line of `trackerd check`: whether one prerequisite of a
// bind (or of NATS) holds, and how to fix it when it does not.
type CheckResult struct {
	// Name says what was checked, e.g. "wal_level" or "REPLICATION privilege".
	Name string
	// OK is true when the prerequisite holds.
	OK bool
	// Detail is what was found, e.g. "wal_level is replica".
	Detail string
	// Fix says what to do when !OK, e.g. "ALTER SYSTEM SET wal_level = logical; then restart",
	// or what to consider when Warn.
	Fix string
	// Warn marks advice: the prerequisite holds (OK), but something may
	// bite later (Detail says what, Fix what to consider). It does not
	// fail the check.
	Warn bool
}

// CheckFunc checks a bind's server for everything its source needs, without
// changing anything. It reports one result per prerequisite; an error is
// returned only when checking itself was impossible (it is also reported as a
// failed result).
type CheckFunc func(ctx context.Context, b binds.Bind) []CheckResult

// Lag is how far a bind is behind its server.
type Lag struct {
	// Bytes is the server's WAL/binlog end minus the confirmed position,
	// -1 when unknown. The source reports it (see LagReporter).
	Bytes int64
	// Behind is the time since the commit of the oldest transaction handed
	// over but not yet confirmed (its position passed to Source.Confirm),
	// 0 when nothing is pending. The tracker computes it from the commit
	// times of the Commit records it was handed and the positions it
	// confirmed: it is the same for every kind of source.
	Behind time.Duration
}

// LagReporter is implemented by sources that can tell their lag in bytes.
// Lag's Behind is the tracker's: a source leaves it 0.
type LagReporter interface {
	Lag() Lag
}
