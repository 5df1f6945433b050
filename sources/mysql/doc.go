// Package mysql follows a MySQL or MariaDB bind through its binary log and
// hands its row changes to the tracker as [tracker.Record]s: a Begin, the
// transaction's changes as they are read, and a Commit at its XID (or
// COMMIT) event. It reads the binlog with go-mysql's BinlogSyncer (never
// canal, never mysqldump) and decodes row images itself, straight to JSON.
//
// # Server
//
// The server needs log_bin, binlog_format=ROW and binlog_row_image=FULL
// ([Open] refuses it otherwise, with the fix), and should have
// binlog_row_metadata=FULL: the TABLE_MAP events then carry column names,
// signedness, charsets, ENUM/SET labels and the primary key as they were
// when each row was written, so an ALTER TABLE never shifts values into the
// wrong columns. Without it the names come from information_schema (as the
// table is now), and a row whose column count differs from today's table
// stops the bind with an error saying so. The reader needs REPLICATION
// SLAVE, REPLICATION CLIENT (MariaDB: BINLOG MONITOR) and SELECT, and a
// server_id no other reader uses ([tracker.ErrFenced] otherwise).
//
// The flavor is read from the server (SELECT VERSION()): a mysql:// URI
// may point at MariaDB, a mariadb:// URI at MySQL is a configuration error.
//
// # Positions
//
// A position is compact JSON, {"gtid":"0-1-1234","file":"mariadb-bin.000003","pos":5678}:
// the GTID state through the last transaction handed over (MariaDB's
// per-domain GTID position, as BINLOG_GTID_POS reports it for that point;
// MySQL's executed set; absent when GTIDs are off), the binlog offset just
// after it, and "xa", the XA transactions prepared and not yet committed
// or rolled back by then (see below). MySQL with gtid_mode=ON resumes by
// GTID set; MariaDB, and MySQL without GTIDs, by file and offset. MariaDB
// without gtid_strict_mode (its default) lets a session set gtid_seq_no
// below its domain's last sequence number, or to one used before (a binlog
// replayed with mysqlbinlog keeps its GTIDs): resuming by GTID would then
// replay or fail, while a file and offset are exact. Such a transaction is
// published like any other, and the position never moves backwards.
// Before reading, the source checks with BINLOG_GTID_POS that the
// position's GTID state is the server's at its file and offset (a reset
// binlog, or another server's, fails that), which reads the binlog file up
// to the offset (at most max_binlog_size), as the server itself did for
// each connection by GTID. With no position it starts at the server's
// current one, never at the oldest binlog. A position the server can no
// longer serve (binlogs purged, or not this binlog) is
// [tracker.ErrResnapshotRequired].
//
// Transaction keys are gtid-<domain>-<server>-<seq> (MariaDB),
// gtid-<uuid>-<gno> (MySQL) or pos-<file>-<offset of the first event>
// without GTIDs; a MariaDB GTID that is not above its domain's last one
// also names its place, gtid-<domain>-<server>-<seq>-<file>-<offset>, so
// that a repeated GTID never repeats event ids. A change's Index is its
// row's place among all rows of the transaction, rows of tables the bind
// does not follow included: those are counted by walking their images by
// size, with the TABLE_MAP's column types. Lost connections are resumed
// from the end of the last transaction handed over, so an interrupted
// transaction is sent again from its start, with the same keys.
//
// # XA transactions
//
// The binlog holds an XA transaction's rows when it is prepared: MariaDB
// 10.11 logs a GTID event flagged FL_PREPARED_XA, the rows, XA END and an
// XA_PREPARE_LOG_EVENT (MySQL an XA START statement first), and later its
// XA COMMIT or XA ROLLBACK as a group of its own (MariaDB flags its GTID
// FL_COMPLETED_XA). The prepared part is handed over as a streamed
// transaction (TxInfo.Streamed) keyed by its XA PREPARE group's GTID (or
// place), so its before_commit events go out before the commit; XA COMMIT
// hands its Commit, XA ROLLBACK its Rollback (the tracker retracts its
// before_commit events). XA COMMIT ... ONE PHASE is an ordinary
// transaction. Positions list the prepared transactions (xid, key, start),
// and a stream resumes at the start of the oldest one with tracked
// changes: after a restart it is handed over again with the same keys and
// indexes, while the transactions after it that were handed over before
// (which start before the position's file and offset, or whose GTIDs the
// MySQL set holds) are skipped. An XA COMMIT of a transaction prepared
// before the bind's start is logged as a warning: its changes are not
// tracked.
//
// # Source identity
//
// The identity of a source is mysql/<server_uuid>/<database> or
// mariadb/<server_id>/<@@hostname>:<@@port>/<database>: MariaDB has no
// server UUID, and the host name tells apart servers that share a
// server_id (1 by default). A recreated container keeps its data, binlog
// and server_id but gets a new host name; [Source.Adopt] then recognises
// the bind's checkpoint of the former identity when its flavor, server_id
// and database match and its position is in this server's binlog.
//
// # Values
//
// Row images are JSON objects in column order:
//
//   - integers are numbers, unsigned ones read as unsigned; those beyond
//     ±(2^53-1) (BIGINT, BIGINT UNSIGNED, BIT(64)) are decimal strings;
//   - DECIMAL is an exact string with the column's scale ("-12.3400");
//   - FLOAT keeps float32 precision (0.1, not 0.10000000149011612), DOUBLE
//     float64; YEAR is a number;
//   - TIMESTAMP is RFC 3339 in UTC with Z ("2024-05-01T10:00:00.5Z"),
//     whatever the process or server time zone; DATETIME has no zone and is
//     "2006-01-02T15:04:05.999999" without an offset; the fraction has no
//     trailing zeros. Zero dates stay literal: "0000-00-00 00:00:00"
//     (with the column's fraction digits), "2024-00-00 00:00:00";
//   - DATE is "2006-01-02", TIME "[-]hh:mm:ss.ffffff" (hours may pass 24);
//   - ENUM is its label ("" for the invalid value 0), SET an array of labels;
//   - JSON (MySQL's binary JSON, and MariaDB's JSON alias, found through its
//     json_valid CHECK constraint) is embedded as JSON;
//   - BINARY, VARBINARY, BLOB, binary-collation strings, GEOMETRY (SRID +
//     WKB) and VECTOR are base64 strings; BINARY(n) gets back its zero
//     padding;
//   - MariaDB UUID, INET6 and INET4 are their text forms;
//   - NULL is null.
//
// Text is transcoded from the column's charset to UTF-8 whatever
// NATIVE_UNICODE says (MySQL's latin1 is Windows-1252, so a latin1 "é",
// byte 0xE9, arrives as "é"). The setting decides what happens to bytes
// that do not decode (invalid UTF-8 in a utf8mb4 column, a byte a
// single-byte charset leaves undefined): with NATIVE_UNICODE true (trust
// the server) each becomes U+FFFD; with false each becomes the four
// characters \xHH (its upper-case hex), so nothing is lost. Multi-byte
// legacy charsets (gbk, sjis, big5, euckr, ucs2, utf16, utf32) are decoded
// by golang.org/x/text, which turns invalid sequences into U+FFFD in both
// modes.
//
// # Transactions and time
//
// Rows go out as they are read, between the transaction's Begin and its
// Commit. The binlog only holds committed transactions (XA transactions
// aside), so before_commit means "before trackerd read the commit". A
// change carries what only the source knows (its table, operation, row
// images, position, Index, TxKey); its transaction id and commit time are
// on the Begin record, and the tracker stamps them on it (tracker.Record
// says who fills what). The Begin has the commit time only where the
// binlog states it up front (MySQL 8's original_commit_timestamp in the
// GTID event); otherwise the changes get it from the Commit record, which
// carries the XID event's time (one-second resolution). An update's Key is taken from its old image (the row it
// applies to), as PostgreSQL's is. Transactions
// with no tracked change are not handed over; a keepalive with their end
// position is (at most every 100 ms, and at the next heartbeat). DDL
// invalidates cached table descriptions and is a position boundary, handed
// as a keepalive once the next event shows that no rows belong to it
// (MySQL 8 logs CREATE TABLE ... SELECT as the DDL followed by its rows);
// TRUNCATE TABLE of a tracked table is a truncate change in a transaction
// of its own.
//
// DML logged as a statement (a session with binlog_format=STATEMENT, or
// MIXED choosing a statement) cannot be decoded into rows: it is logged as
// a warning with its binlog position and is NOT tracked.
//
// # Errors and reconnecting
//
// Fatal: the handler's errors, configuration errors, binlogs purged past
// the position ([tracker.ErrResnapshotRequired]), another reader with the
// bind's server_id ([tracker.ErrFenced]), and events that cannot be
// decoded. Everything else (KILL, a server restart, idle timeouts, a dead
// connection noticed by the heartbeat) is reconnected by the sources' one
// reconnect loop (sources/internal/srckit: jittered exponential back-off
// from 100 ms to 10 s, from the start again after progress), which
// reports each state to the tracker through tracker.SourceOptions.Report
// (connecting; streaming, with the position, once the binlog dump has
// started; reconnecting, with the error). The tracker logs the
// transitions and makes the bind not ready meanwhile. [Source.Lag]
// reports the bytes between the binlog's end and the confirmed position
// (Run's start until the first Confirm); the tracker computes the time.
//
// # Files
//
// source.go opens, runs, confirms and reports lag; conn.go and check.go
// connect and check the server; stream.go turns binlog events into
// records; decode.go turns row images into rows (values.go, jsonb.go and
// charset.go encode each value) and rowcount.go counts the rows of tables
// the bind does not follow; query.go reads the SQL of QUERY events as far
// as stream.go needs it; log.go demotes go-mysql's log lines; schema.go
// describes tables; position.go and xa.go are positions, GTIDs and XA
// transactions; snapshot.go reads snapshot chunks (MariaDB only: each a
// consistent-snapshot transaction at its binlog_snapshot_position, gated
// by ComparePos against the stream's commit positions); teardown.go is the
// bind's footprint, for trackerd teardown and reset.
package mysql
