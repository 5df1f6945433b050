package tracker

import (
	"context"
	"log/slog"
	"time"

	"github.com/trackerd/trackerd/binds"
)

// RecordKind says which field of a [Record] is meaningful.
type RecordKind uint8

// The kinds of record a source hands to the tracker.
const (
	// RecordBegin opens a transaction (Record.Tx).
	RecordBegin RecordKind = iota + 1
	// RecordChange is one row change (Record.Change) of the open
	// transaction named by Change.TxKey.
	RecordChange
	// RecordCommit closes a transaction (Record.Tx); Record.Pos is the
	// position from which to resume once it and everything before it is
	// durable.
	RecordCommit
	// RecordRollback withdraws a streamed (or prepared) transaction, or
	// one of its subtransactions (Record.Tx, Tx.SubTx).
	RecordRollback
	// RecordKeepalive says the source has seen everything up to Record.Pos
	// and nothing is open; it may be checkpointed once all earlier
	// transactions are durable.
	RecordKeepalive
)

// Record is what a source hands to the tracker, in stream order.
//
// A transaction is a Begin, its changes and a Commit (or a Rollback, for
// one handed over before its commit: TxInfo.Streamed). Pos is set on
// Commit and Keepalive records only, the positions a bind may resume
// from; a Keepalive comes only while no transaction is open, save
// streamed ones. A change's Index grows within its transaction.
//
// Who fills which [Change] field: the source fills what only it knows,
// Source, Op, Schema, Table, Key, Before, After, Unchanged, Pos, Index,
// SubTx, and TxKey (needed on the changes of a streamed transaction, whose
// changes may interleave with others'; elsewhere it may be left empty, and
// must otherwise be its Begin's). It leaves Bind, Origin, Seq, TxID and
// CommitTime empty: the tracker stamps them, from the bind and from the
// transaction's Begin (CommitTime again from the Commit, for the
// after_commit events), and nothing overwrites a field its owner set.
// trackertest.RunSourceTests checks a source against this contract.
type Record struct {
	Kind   RecordKind
	Tx     TxInfo
	Change *Change
	Pos    string
	// Decode is optional: how long the source took to decode this
	// change, reported by Tracker.DebugEvents when RECORD_QUERIES is on.
	// Only the source can tell it: the time between two calls of Handle
	// also holds the waiting for the server.
	Decode time.Duration
}

// TxInfo describes a transaction at its begin, commit or rollback.
type TxInfo struct {
	// TxKey identifies the transaction (see Change.TxKey).
	TxKey string
	// TxID is the source's transaction id (see Change.TxID).
	TxID string
	// SubTx is the rolled-back subtransaction; empty for the whole.
	SubTx string
	// CommitTime is the commit time where the source knows it.
	CommitTime time.Time
	// Streamed is true for a transaction handed over before its commit
	// (PostgreSQL streaming, and prepared transactions, handed over at
	// PREPARE TRANSACTION; MySQL/MariaDB XA transactions, from their XA
	// PREPARE): its changes may interleave with other transactions, and it
	// may end in a rollback.
	Streamed bool
}

// Handler receives a source's records in stream order. Handle blocks to
// apply back-pressure; a source must not read further while it blocks, and
// must keep its server connection alive meanwhile. An error from Handle is
// fatal to the source's Run.
type Handler interface {
	Handle(ctx context.Context, r Record) error
}

// HandlerFunc adapts a function to [Handler].
type HandlerFunc func(ctx context.Context, r Record) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, r Record) error { return f(ctx, r) }

// Source follows one bind's replication stream.
//
// Positions are opaque strings owned by the source (a PostgreSQL LSN, a
// MySQL GTID set and binlog position): the tracker stores and passes them but
// never parses them.
type Source interface {
	// Identity names the server and stream this source reads (PostgreSQL
	// system id, database and slot; MySQL/MariaDB server UUID or id and
	// database). A checkpoint is only resumed by a source of the same
	// identity.
	Identity() string
	// Run streams records to h, starting after position from (empty: where
	// the server's own state says, or, for a new stream, the end as of
	// Open, so that nothing committed after Open returned is missed),
	// until ctx ends (it then returns ctx's error) or a fatal error. It
	// reconnects transient failures itself, resuming after the last commit
	// (or keepalive) it handed to h, which is at or after the last position
	// passed to Confirm; a transaction cut off by the reconnect is sent
	// again from its Begin. It skips transactions at or below from.
	Run(ctx context.Context, from string, h Handler) error
	// Confirm tells the source that everything up to pos is durable
	// downstream, so the server may forget it. It does not block and may be
	// called from any goroutine.
	Confirm(pos string)
	// Close releases what Open acquired if Run was never called; Run
	// releases its own connections when it returns. Close is idempotent.
	Close() error
}

// SourceOptions are what the tracker passes to an [OpenSourceFunc].
type SourceOptions struct {
	// Logger is the bind's logger.
	Logger *slog.Logger
	// NativeUnicode is NATIVE_UNICODE: trust the server's text encoding.
	NativeUnicode bool
	// Report receives the source's state changes: connecting, creating a
	// slot, streaming, reconnecting (with the error). It is never nil when
	// the tracker opens a source, is safe to call from any goroutine, and
	// does not block. The tracker logs the transitions (a source need not:
	// "reconnected, streaming from ..." is the tracker's) and shows them as
	// the bind's state. A source that reports must report streaming once
	// its stream is established: until then the bind is not ready.
	Report func(SourceStatus)
}

// OpenSourceFunc connects to a bind's server, checks that it is ready for
// replication, and returns its source. Errors that retrying cannot fix
// (bad credentials, missing privileges, wrong server settings) should match
// [ErrConfig] with errors.Is.
type OpenSourceFunc func(ctx context.Context, b binds.Bind, opts SourceOptions) (Source, error)
