package tracker

import (
	"context"
	"errors"
	"time"
)

// Snapshots and backfills: reading the rows a bind's tables already hold,
// while the stream goes on (the README's "Snapshots and backfills").
//
// The method is position-gated. A source that implements [Snapshotter]
// reads a table in key order, one chunk at a time, each chunk in one
// consistent read whose position in the replication stream the database
// reports exactly (the exported snapshot of a temporary PostgreSQL slot,
// MariaDB's consistent-snapshot transaction). The tracker holds the chunk
// until the bind's stream reaches that position, and publishes its rows
// there: after every transaction the read saw, before every transaction it
// did not. A consumer that applies events in stream order thus never sees
// a snapshot row after a newer change of the same row.
//
// The source reports the read's position as soon as it knows it, before
// it reads the rows (ChunkRequest.Reserve): the tracker then holds the
// stream before the first commit past that position until the chunk is
// there, so that a read slower than the stream is not overtaken by it. A
// chunk whose position the stream had already passed when it was reserved
// is read again.

// SnapshotTable is a table a snapshot can read.
type SnapshotTable struct {
	// Schema and Table name it (the MySQL database for Schema).
	Schema, Table string
	// Key names the columns chunks are read in order of: the primary key,
	// or a unique key of not-null columns. Empty: the table has none, and
	// cannot be read in chunks.
	Key []string
	// Estimate is the server's estimate of its rows, -1 when unknown.
	Estimate int64
}

// Name is "schema.table".
func (t SnapshotTable) Name() string { return t.Schema + "." + t.Table }

// ChunkRequest asks a [Snapshotter] for the next chunk of a table.
type ChunkRequest struct {
	// Table is what SnapshotTables returned for it.
	Table SnapshotTable
	// After is the Next of the previous chunk; empty for the first.
	After string
	// Where is an optional SQL condition the rows must meet, as the user
	// gave it; the source runs it in a read-only transaction.
	Where string
	// Limit is the most rows to read.
	Limit int
	// Reserve, when not nil, is called once the read's position is known
	// (the chunk's Pos), before its rows are read: from then on the
	// tracker holds the stream before it passes that position until the
	// chunk is handed over, so that a read slower than the stream is never
	// overtaken by it. ReadChunk must call it at most once; it does not
	// block.
	Reserve func(pos string)
}

// Chunk is a consistent read of up to Limit rows of a table, in key order.
type Chunk struct {
	// Rows are the rows read, each a Change with Op snapshot and Source,
	// Schema, Table, Key and After set.
	Rows []*Change
	// Pos is the position of the read in the replication stream: it holds
	// every transaction whose commit position is at or before Pos (as
	// ComparePos orders them), and none after.
	Pos string
	// Next is where the next chunk starts (the last row's key, in a form
	// of the source's own); it is kept in the checkpoint.
	Next string
	// Done is true when the table has no rows after these.
	Done bool
}

// Snapshotter is implemented by sources that can read a snapshot.
type Snapshotter interface {
	// SnapshotTables returns the tables named ("schema.table", or "table"
	// in the bind's default schema), or every table the bind follows when
	// names is empty. A name that is not a followed table is an error
	// naming it (matching ErrConfig).
	SnapshotTables(ctx context.Context, names []string) ([]SnapshotTable, error)
	// ReadChunk reads the next chunk of a table. It may be called from
	// any goroutine while Run runs (or before), never concurrently with
	// itself for one table.
	ReadChunk(ctx context.Context, req ChunkRequest) (Chunk, error)
	// ComparePos orders two positions of this source's stream (commit,
	// keepalive and chunk positions): -1, 0 or +1.
	ComparePos(a, b string) (int, error)
}

// Nudger is implemented by sources that can hand a keepalive record soon
// when asked: the tracker asks while a chunk waits for the stream to reach
// its position, so that an idle stream does not hold it for long.
type Nudger interface {
	Nudge()
}

// SnapshotKind says why a snapshot runs.
type SnapshotKind string

// The snapshot kinds.
const (
	// SnapshotInitial is a bind's first snapshot (the bind option
	// snapshot = "initial" or "when_needed").
	SnapshotInitial SnapshotKind = "initial"
	// SnapshotBackfill is one asked for while the bind runs.
	SnapshotBackfill SnapshotKind = "backfill"
)

// SnapshotProgress is a snapshot's durable progress, kept in the bind's
// checkpoint.
type SnapshotProgress struct {
	// ID names the snapshot; it is part of its events' ids.
	ID   string       `json:"id"`
	Kind SnapshotKind `json:"kind"`
	// Tables are the tables still to read, the current one first
	// ("schema.table"); empty for a snapshot whose tables are not yet
	// resolved (a bind's initial snapshot before its first read).
	Tables []string `json:"tables,omitempty"`
	// All is every table of the snapshot, for status.
	All []string `json:"all,omitempty"`
	// After is where the current table's next chunk starts (Chunk.Next).
	After string `json:"after,omitempty"`
	// Where is the backfill's condition.
	Where string `json:"where,omitempty"`
	// Rows counts the rows published so far; TableRows those of the
	// current table.
	Rows      int64 `json:"rows"`
	TableRows int64 `json:"table_rows,omitempty"`
	// Started is when the snapshot was asked for.
	Started time.Time `json:"started"`
	// Resolved is true once Tables holds the snapshot's tables.
	Resolved bool `json:"resolved,omitempty"`
}

// BackfillRequest asks a running bind to read existing rows again.
type BackfillRequest struct {
	// Bind is the bind key; empty means the only bind, or "default".
	Bind string
	// Tables are "schema.table" (or "table"); empty means every table the
	// bind follows.
	Tables []string
	// Where is an optional SQL condition on the rows.
	Where string
}

// SnapshotInfo describes a snapshot or backfill, running or ended.
type SnapshotInfo struct {
	Bind string       `json:"bind"`
	ID   string       `json:"id"`
	Kind SnapshotKind `json:"kind"`
	// State is "running", "completed", "cancelled" or "failed".
	State string `json:"state"`
	// Table is the table being read.
	Table string `json:"table,omitempty"`
	// Tables are every table of the snapshot.
	Tables []string `json:"tables,omitempty"`
	// Done are the tables read whole.
	Done  []string `json:"done,omitempty"`
	Where string   `json:"where,omitempty"`
	// Rows is the rows published; Estimated the server's estimate of
	// the snapshot's total, -1 when unknown.
	Rows      int64 `json:"rows"`
	Estimated int64 `json:"estimated"`
	// TableRows are the rows published per table.
	TableRows map[string]int64 `json:"table_rows,omitempty"`
	// TableEstimated are the server's estimates per table.
	TableEstimated map[string]int64 `json:"table_estimated,omitempty"`
	// RowsPerSecond is the recent rate.
	RowsPerSecond float64   `json:"rows_per_second"`
	Started       time.Time `json:"started"`
	Ended         time.Time `json:"ended,omitzero"`
	Error         string    `json:"error,omitempty"`
}

// The snapshot states of SnapshotInfo.State.
const (
	SnapshotRunning   = "running"
	SnapshotCompleted = "completed"
	SnapshotCancelled = "cancelled"
	SnapshotFailed    = "failed"
)

// ErrSnapshotUnsupported is returned by Backfill for a bind whose source
// cannot read snapshots.
var ErrSnapshotUnsupported = errors.New("the bind's source cannot read snapshots")

// ErrSnapshotBusy is returned by Backfill when a table asked for is being
// read by another snapshot of the bind.
var ErrSnapshotBusy = errors.New("a snapshot of the table is already running")

// ErrUnknownSnapshot is returned by CancelSnapshot for an id that names no
// running snapshot.
var ErrUnknownSnapshot = errors.New("no running snapshot with this id")

// Lifecycle is a snapshot's lifecycle event, published on
// <prefix>.control.<bind>.snapshot as CloudEvent type
// trackerd.snapshot.<Type>.
type Lifecycle struct {
	// Type is started, table_done, completed, cancelled or failed.
	Type     string       `json:"type"`
	Bind     string       `json:"bind"`
	Snapshot string       `json:"snapshot"`
	Kind     SnapshotKind `json:"kind"`
	// Table is set on table_done, with its Rows.
	Table  string   `json:"table,omitempty"`
	Rows   int64    `json:"rows"`
	Tables []string `json:"tables,omitempty"`
	Error  string   `json:"error,omitempty"`
	// Skipped are tables without a key, left out (see SnapshotTable.Key).
	Skipped []string  `json:"skipped,omitempty"`
	Time    time.Time `json:"time"`
}

// The lifecycle event types.
const (
	LifecycleStarted   = "started"
	LifecycleTableDone = "table_done"
	LifecycleCompleted = "completed"
	LifecycleCancelled = "cancelled"
	LifecycleFailed    = "failed"
)
