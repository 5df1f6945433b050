package binds

import (
	"log/slog"
	"time"
)

// Kind is the replication protocol a bind is followed with, chosen by the
// URI's dialect.
type Kind string

// The kinds of source trackerd can follow.
const (
	// Postgres binds (postgresql://, postgres://) use logical replication.
	Postgres Kind = "postgresql"
	// MySQL binds (mysql://, mariadb://) use the binary log.
	MySQL Kind = "mysql"
)

// Bind is one database trackerd follows: a BINDS entry (or DATABASE_URI as
// "default") with its URI parsed and its defaults resolved.
type Bind struct {
	// Key is the bind key; DATABASE_URI's is "default".
	Key string
	// URI is the parsed URI. Its String and LogValue hide the password.
	URI URI
	// Kind is the source kind the URI's dialect selects.
	Kind Kind
	// Tables, when not empty, limits tracking to these tables. Each entry
	// is "schema.table" or "table" (any schema; for MySQL the schema is the
	// database name).
	Tables []string
	// ExcludeTables are never tracked, in the same form as Tables.
	ExcludeTables []string
	// Track is false for a bind that is configured but not followed.
	Track bool
	// Slot and Publication are the PostgreSQL slot and publication names,
	// resolved: trackerd_<database>_<key> (cut to 63 bytes) by default.
	Slot        string
	Publication string
	// Streaming asks PostgreSQL to stream large in-progress transactions.
	Streaming bool
	// ServerID is the MySQL/MariaDB reader's server_id, resolved: a stable
	// value derived from the key when not configured.
	ServerID uint32
	// Heartbeat is the idle heartbeat interval; 0 disables it.
	Heartbeat time.Duration
	// Snapshot says when the bind reads its tables' existing rows.
	Snapshot SnapshotMode
	// Pool is the resolved query-pool configuration.
	Pool Pool
}

// Pool is a bind's resolved query-connection pool configuration.
type Pool struct {
	// Size is the number of idle connections kept (POOL_SIZE).
	Size int
	// MaxOverflow is how many more may be opened under load (MAX_OVERFLOW);
	// -1 means no limit (see MaxOpen).
	MaxOverflow int
	// Timeout is how long to wait for a connection (POOL_TIMEOUT).
	Timeout time.Duration
	// Recycle is the longest life of a connection; 0 means unlimited
	// (POOL_RECYCLE).
	Recycle time.Duration
}

// MaxOpen returns how many query connections the pool may hold open at
// once: Size + MaxOverflow, at least 1, or 0 for no limit when MaxOverflow
// is -1 (or below), as SQLAlchemy's max_overflow=-1 means.
func (p Pool) MaxOpen() int {
	if p.MaxOverflow < 0 {
		return 0
	}
	return max(p.Size+p.MaxOverflow, 1)
}

// LogValue renders the bind for log/slog without its password.
func (b Bind) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("key", b.Key),
		slog.String("kind", string(b.Kind)),
		slog.String("uri", b.URI.String()),
	)
}

// SnapshotMode says when a bind reads the rows its tables already hold.
type SnapshotMode string

// The snapshot modes (the bind option snapshot).
const (
	// SnapshotNever: only changes from the bind's start on.
	SnapshotNever SnapshotMode = "never"
	// SnapshotInitial: a bind without a checkpoint first publishes every
	// existing row of its tables.
	SnapshotInitial SnapshotMode = "initial"
	// SnapshotWhenNeeded: as SnapshotInitial, and again when the
	// checkpoint can no longer be resumed (slot gone, binlog purged).
	SnapshotWhenNeeded SnapshotMode = "when_needed"
)
