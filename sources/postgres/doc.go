// Package postgres is trackerd's PostgreSQL source: it follows one bind
// through logical replication with the pgoutput plugin
// (https://www.postgresql.org/docs/current/protocol-logical-replication.html)
// and hands its transactions, row changes and keepalives to a
// [tracker.Handler] as [tracker.Record] values.
//
// [Open] connects, checks the server (wal_level, REPLICATION, version),
// creates the bind's publication when it is missing (before the slot: FOR
// ALL TABLES for a superuser without tables, FOR TABLE the bind's tables, or
// FOR TABLE the tables the role owns) and its permanent pgoutput slot, and
// warns about published tables whose UPDATEs and DELETEs PostgreSQL refuses
// (no primary key, no replica identity) or whose unchanged large values will
// be reported in Change.Unchanged; it stops, with the fix, a bind whose
// existing publication publishes no table one of its tables entries names.
// [Check] reports the same prerequisites without changing anything, for
// `trackerd check`. [Source.Run] streams; [Source.Confirm] advances the
// slot; [Source.Lag] reports the lag in bytes (the tracker computes the
// time behind, the same for every source).
//
// # Positions and delivery
//
// A position is an LSN in PostgreSQL's text form "X/X": the end of the last
// transaction handed over. A transaction's key is "lsn-" and the 16 hex
// digits of the LSN of its first change message, the same whether the
// server streams it or sends it at its commit (the Begin or first Stream
// Start message may carry another: a DDL's record, an unpublished table's).
// Commit records carry the transaction's end LSN: once the tracker confirms
// it, standby status updates report it as flushed (the only field that
// moves a logical slot), always set explicitly. Run starts at the given
// position and skips transactions that end at or before it, as a slot may
// rewind after a server crash. After a dropped connection it resumes after
// the last commit handed over; a transaction the server sends again starts
// with a new Begin record. With nothing open, primary keepalives (at most
// one a second) and trackerd's own heartbeat messages
// (pg_logical_emit_message, PostgreSQL 14+, every Heartbeat while idle)
// become keepalive records, so an idle slot does not pin WAL.
//
// # Prepared transactions
//
// On PostgreSQL 15+ replication uses protocol version 3 with two_phase on:
// a prepared transaction is handed over at PREPARE TRANSACTION, as one
// handed over before its commit (TxInfo.Streamed), is committed by COMMIT
// PREPARED and withdrawn by ROLLBACK PREPARED. New slots are created with
// TWO_PHASE; PostgreSQL turns it on for an existing slot when asked for
// two_phase, from the slot's confirmed position, and sends a transaction
// prepared before that point whole at its COMMIT PREPARED.
//
// The tracker holds a prepared transaction's changes in memory until its
// commit, so after a restart the server must send it again, which it does
// only when decoding starts at or before its prepare. While prepared
// transactions are open, positions name their PREPARE records' LSNs,
// "X/X;prepared=X/X,...": Confirm moves the slot to the oldest of them at
// most, and Run starts there, skipping what ended at or before the first
// LSN except the listed prepared transactions, with streaming off until the
// stream is past that LSN (a streamed transaction published already cannot
// be told from a new one before its end), then reconnecting with it.
// Prepared transactions are remembered across reconnects within a Run, so
// a new connection starts after them.
//
// A streamed transaction handed over before a reconnect is normally sent
// again; when it is not (its changes lie before the new start, so the
// server no longer streams it), Run asks the server its fate
// (pg_xact_status): rolled back, it is retracted; committed, it arrives
// whole; committed with nothing left to publish, it is retracted once the
// stream is past its commit; in progress, Run keeps asking.
//
// One goroutine owns the replication connection: it reads (in 64 KiB
// chunks), hands messages to the decoding goroutine in batches (a message
// waits at most 0.5 ms for company), and sends status updates every 10
// seconds, within a second of a Confirm, and at once when the server asks,
// also while the handler blocks: the reading stops then, and TCP
// back-pressure holds the server. A server silent for 40 seconds, even to
// requests for a reply, is reconnected.
//
// # Row images
//
// A change carries what only the source knows: its table, operation, row
// images, position, Index and, in streamed and prepared transactions,
// TxKey and SubTx. Its transaction id and commit time are on its Begin
// record (the commit time also on the Commit's); the tracker stamps them
// on the change, with the bind (tracker.Record says who fills what).
//
// Key holds the replica-identity columns (the primary key by default; with
// REPLICA IDENTITY FULL, the primary key when there is one), taken from the
// old key or old row when the server sends one, else from the new row.
// Before is the whole old row, only with REPLICA IDENTITY FULL. After is the
// new row. A TOASTed value an UPDATE left unchanged is not in the stream:
// its column is left out of After and named in Unchanged, unless REPLICA
// IDENTITY FULL's old row holds it. A truncate is one change per table, with
// no images.
//
// # Values
//
// Values arrive in text form (the connection sets TimeZone=UTC,
// DateStyle=ISO, IntervalStyle=iso_8601, extra_float_digits=3 and
// bytea_output=hex) and become JSON by type, through pgx's type map; user
// types (enums, domains, arrays of them) are loaded from pg_type when first
// seen:
//
//	type                                     JSON
//	int2, int4, oid, xid, cid                number
//	int8, xid8                               number when |v| <= 2^53-1, else string "9007199254740993"
//	numeric                                  string, exact: "12.50", "NaN", "Infinity"
//	float4, float8                           number, shortest round-trip form; "NaN", "Infinity", "-Infinity" as strings
//	bool                                     true, false
//	json, jsonb                              embedded as sent (text that is not valid JSON: a string)
//	bytea                                    string, standard base64
//	timestamptz                              string "2006-01-02T15:04:05.999999Z" (UTC)
//	timestamp                                string "2006-01-02T15:04:05.999999" (no offset: the column has none)
//	date                                     string "2006-01-02"
//	time, timetz, interval                   string as PostgreSQL writes it ("P1Y2M3DT4H5M6S" for interval)
//	text, varchar, char, name, uuid, inet,
//	cidr, macaddr, money, xml, enum          string
//	arrays (any dimension)                   JSON arrays of the element's encoding; NULL elements null
//	domains                                  as their base type
//	anything else                            its text as a string
//	NULL                                     null
//
// 'infinity' and '-infinity' timestamps and dates, BC dates and years past
// 9999 stay strings as PostgreSQL writes them. Text is UTF-8 (pgx asks the
// server for it); invalid bytes, possible only from a SQL_ASCII database,
// become U+FFFD.
//
// # Snapshots
//
// The source is a [tracker.Snapshotter] and a [tracker.Nudger]: each chunk
// is read in the snapshot a temporary slot exports, whose consistent point
// is the chunk's position (every transaction whose commit ends at or
// before it is in the chunk, none after), in key order (the primary key,
// or a unique index of not-null columns), with the stream's columns and
// value encoding. Creating the slot waits for the transactions open at
// that moment to end, and takes a replication slot and WAL sender for a
// moment. Nudge writes a heartbeat message, which an idle stream hands as
// a keepalive. See snapshot.go.
//
// # Errors
//
// Errors that retrying cannot fix match [tracker.ErrConfig] and say what to
// do: a wrong password (28P01), pg_hba.conf refusal (28000), a missing
// database (3D000), missing privileges (42501), wal_level, no free slot.
// A slot another process streams from matches [tracker.ErrFenced] (after
// a few seconds' grace: a walsender of a connection that just dropped may
// hold it); an invalidated (wal_status lost) or dropped slot matches
// [tracker.ErrResnapshotRequired]; undecodable messages and the handler's
// errors are permanent too. Connections refused, timeouts and terminated
// walsenders are transient: Run reconnects with the sources' one reconnect
// loop (sources/internal/srckit: jittered exponential back-off from 100 ms
// to 10 s, from the start again after progress), and reports each state to
// the tracker through tracker.SourceOptions.Report (connecting; streaming,
// with the position, once START_REPLICATION succeeds; reconnecting, with
// the error), which logs the transitions and makes the bind not ready
// meanwhile. No error or log line holds the bind's password: it never
// enters a connection string, and errors are scrubbed of it.
//
// # Files
//
// source.go opens, confirms and reports lag; setup.go prepares the server
// (publication, slot) and check.go checks it; stream.go owns the
// replication connection (the receiver, status updates, reconnecting);
// decode.go turns pgoutput messages into records, pure and fuzzed;
// values.go, array.go and types.go turn column text into JSON; position.go
// and lsn.go are positions; twophase.go and orphans.go are prepared and
// orphaned streamed transactions; conn.go is connecting and classifying
// errors; snapshot.go reads snapshots; teardown.go is the bind's
// footprint on the server, for trackerd teardown and reset.
package postgres
