package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/trackerd/trackerd/tracker"
)

// Snapshots (tracker.Snapshotter): every chunk is one consistent read at an
// exact stream position. ReadChunk creates a temporary logical slot that
// exports its snapshot (CREATE_REPLICATION_SLOT ... TEMPORARY LOGICAL
// pgoutput (SNAPSHOT 'export')) on a replication connection, imports the
// snapshot into a REPEATABLE READ READ ONLY transaction of the query pool,
// drops the slot and reads the chunk in key order. The slot's consistent
// point is the chunk's position: the snapshot holds every transaction whose
// commit record ends at or before it, and the bind's slot hands every later
// one with a commit position above it (both are ends of WAL records of the
// same server), so the tracker publishes the chunk exactly there.
//
// Creating a logical slot waits until every transaction that holds a
// transaction id when it starts has ended (prepared ones included): a long
// open write transaction delays each chunk (the wait is logged with the
// blocking session), and each chunk needs a free replication slot and WAL
// sender for a moment (max_replication_slots, max_wal_senders).

var (
	_ tracker.Snapshotter = (*Source)(nil)
	_ tracker.Nudger      = (*Source)(nil)
)

// Snapshot tunables.
const (
	defaultChunkRows = 10000
	// keptSnapConns is how many replication connections are kept open
	// between chunks.
	keptSnapConns = 2
	// nudgeSpacing is the least time between two nudge messages.
	nudgeSpacing = 50 * time.Millisecond
	// snapWaitLog is when a slot creation that still waits is logged.
	snapWaitLog = 5 * time.Second
	// maxListed bounds the followed tables an unknown-table error lists.
	maxListed = 50
)

// snapState is the snapshot side of a Source.
type snapState struct {
	mu     sync.Mutex
	idle   []*pgconn.PgConn // replication connections between chunks
	types  *catalogTypes    // column types, as the stream resolves them
	closed bool

	nudgeMu    sync.Mutex
	nudging    bool // a nudge goroutine runs
	nudgeAgain bool // asked again while it ran
	lastNudge  time.Time
}

// closeSnapshots closes the kept replication connections; later reads fail.
func (s *Source) closeSnapshots() {
	s.snap.mu.Lock()
	idle := s.snap.idle
	s.snap.idle, s.snap.closed = nil, true
	s.snap.mu.Unlock()
	for _, c := range idle {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c.Close(ctx)
		cancel()
	}
}

// snapTablesQuery lists the tables the stream hands changes of: published
// by the bind's publication (publishedQuery, the check Open makes) under
// their own names (leaf partitions, or the roots with
// publish_via_partition_root), with their read key and estimate. The key is
// the primary key in index order, else the unique, valid, non-partial,
// non-expression index of not-null columns with the fewest columns.
func snapTablesQuery(major int) string {
	viaRoot := "false"
	if major >= 13 {
		viaRoot = "COALESCE((SELECT pubviaroot FROM pg_catalog.pg_publication WHERE pubname = $1), false)"
	}
	natts := "i.indnatts"
	if major >= 11 {
		natts = "i.indnkeyatts"
	}
	keyCols := `SELECT array_agg(a.attname::text ORDER BY k.ord)
		FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
		JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE k.ord <= ` + natts
	return `WITH pub(schema, tab, published) AS (` + publishedQuery(major) + `)
	SELECT n.nspname::text, c.relname::text, c.reltuples::float8,
		COALESCE(
			(SELECT (` + keyCols + `) FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary LIMIT 1),
			(SELECT (` + keyCols + `) FROM pg_catalog.pg_index i
				WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
				  AND 0 <> ALL (i.indkey::int2[])
				  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
					WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[]) AND NOT a.attnotnull)
				ORDER BY ` + natts + `, i.indexrelid LIMIT 1),
			'{}')
	FROM pub
	JOIN pg_catalog.pg_namespace n ON n.nspname = pub.schema
	JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pub.tab
	WHERE pub.published AND CASE WHEN ` + viaRoot + ` THEN NOT c.relispartition ELSE c.relkind = 'r' END
	ORDER BY 1, 2`
}

// followedTables lists the tables the bind follows: those snapTablesQuery
// finds that the bind's Tables and ExcludeTables let through (the
// decoder's filter).
func (s *Source) followedTables(ctx context.Context) ([]tracker.SnapshotTable, error) {
	rows, err := s.pool.Query(ctx, snapTablesQuery(s.major), s.b.Publication)
	if err != nil {
		return nil, s.queryErr("list the followed tables", err)
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tracker.SnapshotTable, error) {
		var t tracker.SnapshotTable
		var est float64
		err := r.Scan(&t.Schema, &t.Table, &est, &t.Key)
		t.Estimate = int64(est)
		if est < 0 {
			t.Estimate = -1
		}
		if len(t.Key) == 0 {
			t.Key = nil
		}
		return t, err
	})
	if err != nil {
		return nil, s.queryErr("list the followed tables", err)
	}
	return slices.DeleteFunc(all, func(t tracker.SnapshotTable) bool { return !s.b.Tracks(t.Schema, t.Table) }), nil
}

// SnapshotTables returns the tables named ("schema.table", or "table":
// the one of that name, in the connection's current schema when several
// schemas have one), or every table the bind follows when names is empty,
// in the order asked (else by name). The tables followed are those of the
// bind's publication that its tables and exclude_tables options let
// through, as the stream hands them: leaf partitions, or partition roots
// when the publication publishes via the root. Key is the primary key, or
// a unique key of not-null columns, or empty. A name that is not a followed
// table is an error matching tracker.ErrConfig.
func (s *Source) SnapshotTables(ctx context.Context, names []string) ([]tracker.SnapshotTable, error) {
	if err := s.snapOpen(); err != nil {
		return nil, s.boundary(err)
	}
	all, err := s.followedTables(ctx)
	if err != nil {
		return nil, s.boundary(err)
	}
	if len(names) == 0 {
		return all, nil
	}
	var current string
	out := make([]tracker.SnapshotTable, 0, len(names))
	for _, name := range names {
		var match []tracker.SnapshotTable
		for _, t := range all {
			if t.Name() == name {
				match = []tracker.SnapshotTable{t}
				break
			}
			if t.Table == name {
				match = append(match, t)
			}
		}
		if len(match) > 1 {
			if current == "" {
				if err := s.pool.QueryRow(ctx, "SELECT current_schema()::text").Scan(&current); err != nil {
					return nil, s.boundary(s.queryErr("read the current schema", err))
				}
			}
			if i := slices.IndexFunc(match, func(t tracker.SnapshotTable) bool { return t.Schema == current }); i >= 0 {
				match = match[i : i+1]
			} else {
				return nil, s.boundary(tracker.ConfigError(fmt.Errorf("table %q is ambiguous: the bind follows %s; name it with its schema", name, listTables(match))))
			}
		}
		if len(match) == 0 {
			return nil, s.boundary(tracker.ConfigError(fmt.Errorf("table %q is not a table the bind follows (publication %s; followed: %s)",
				name, s.b.Publication, listTables(all))))
		}
		if !slices.ContainsFunc(out, func(t tracker.SnapshotTable) bool { return t.Name() == match[0].Name() }) {
			out = append(out, match[0])
		}
	}
	return out, nil
}

func listTables(ts []tracker.SnapshotTable) string {
	if len(ts) == 0 {
		return "none"
	}
	var names []string
	for i, t := range ts {
		if i == maxListed {
			names = append(names, fmt.Sprintf("and %d more", len(ts)-maxListed))
			break
		}
		names = append(names, t.Name())
	}
	return strings.Join(names, ", ")
}

func (s *Source) snapOpen() error {
	s.snap.mu.Lock()
	defer s.snap.mu.Unlock()
	if s.snap.closed || s.pool == nil {
		return errors.New("the source is closed")
	}
	return nil
}

// ComparePos orders two positions of the stream (commit, keepalive and
// chunk positions) by their LSN.
func (s *Source) ComparePos(a, b string) (int, error) {
	pa, err := parsePosition(a)
	if err != nil {
		return 0, fmt.Errorf("postgres: position %q: %w", a, err)
	}
	pb, err := parsePosition(b)
	if err != nil {
		return 0, fmt.Errorf("postgres: position %q: %w", b, err)
	}
	switch {
	case pa.through < pb.through:
		return -1, nil
	case pa.through > pb.through:
		return 1, nil
	}
	return 0, nil
}

// Nudge makes the stream hand a keepalive record soon: it writes a
// heartbeat message (pg_logical_emit_message, non-transactional) in the
// background, which an idle stream hands as a keepalive at the message's
// position (PostgreSQL 14+; before, the WAL it writes makes the server send
// a keepalive past it). Written after the caller's chunk was read, it lies
// past the chunk's position. It never blocks, and coalesces calls made
// while a message is being written into one more.
func (s *Source) Nudge() {
	s.snap.nudgeMu.Lock()
	defer s.snap.nudgeMu.Unlock()
	if s.snap.nudging {
		s.snap.nudgeAgain = true
		return
	}
	if s.snapOpen() != nil {
		return
	}
	s.snap.nudging = true
	go s.nudgeLoop()
}

func (s *Source) nudgeLoop() {
	for {
		s.snap.nudgeMu.Lock()
		wait := nudgeSpacing - time.Since(s.snap.lastNudge)
		s.snap.nudgeMu.Unlock()
		if wait > 0 {
			time.Sleep(wait)
		}
		if s.snapOpen() == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := s.pool.Exec(ctx, "SELECT pg_catalog.pg_logical_emit_message(false, '"+heartbeatPrefix+"', 'nudge')")
			cancel()
			if err != nil {
				s.log.Debug("nudge failed", "err", s.cs.safe(err))
			}
		}
		s.snap.nudgeMu.Lock()
		s.snap.lastNudge = time.Now()
		if !s.snap.nudgeAgain {
			s.snap.nudging = false
			s.snap.nudgeMu.Unlock()
			return
		}
		s.snap.nudgeAgain = false
		s.snap.nudgeMu.Unlock()
	}
}

// ReadChunk reads the next chunk of a table: up to req.Limit rows (10000
// when not set) after req.After in key order, meeting req.Where and the
// publication's row filter, in one snapshot exported by a temporary slot,
// whose consistent point is the chunk's Pos. Rows carry the columns the
// stream carries (the publication's column list), encoded as the stream
// encodes them; Next is a JSON array of the last row's key values in their
// text forms. req.Reserve, when set, is called with the chunk's Pos once
// the snapshot is taken, before the rows are read. A table without a key, a
// dropped table, and a condition the server rejects (SQLSTATE class 42, or
// 22 for a value it cannot take) are errors matching tracker.ErrConfig.
func (s *Source) ReadChunk(ctx context.Context, req tracker.ChunkRequest) (tracker.Chunk, error) {
	ch, err := s.readChunk(ctx, req)
	if err != nil {
		return tracker.Chunk{}, s.boundary(fmt.Errorf("snapshot of %s: %w", req.Table.Name(), err))
	}
	return ch, nil
}

// snapColumn is a column a chunk reads.
type snapColumn struct {
	name  string
	oid   uint32
	inPub bool // in the stream's rows (the publication's column list)
	plan  *colType
}

func (s *Source) readChunk(ctx context.Context, req tracker.ChunkRequest) (tracker.Chunk, error) {
	t := req.Table
	if len(t.Key) == 0 {
		return tracker.Chunk{}, tracker.ConfigError(fmt.Errorf("table %s has no primary key nor unique index of not-null columns, so it cannot be read in chunks; "+
			"fix: add a primary key (ALTER TABLE %s ADD PRIMARY KEY (...)) or a unique index on not-null columns", t.Name(), quoteIdent(t.Schema)+"."+quoteIdent(t.Table)))
	}
	var after []string
	if req.After != "" {
		if err := json.Unmarshal([]byte(req.After), &after); err != nil || len(after) != len(t.Key) {
			return tracker.Chunk{}, tracker.ConfigError(fmt.Errorf("chunk cursor %q is not a JSON array of %d key values", req.After, len(t.Key)))
		}
	}
	limit := req.Limit
	if limit <= 0 {
		limit = defaultChunkRows
	}
	if err := s.snapOpen(); err != nil {
		return tracker.Chunk{}, err
	}

	// The transaction that reads, on a query connection.
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return tracker.Chunk{}, s.queryErr("connect", err)
	}
	defer pc.Release()
	pg := pc.Conn().PgConn()

	// The snapshot, from a temporary slot on a replication connection.
	rc, err := s.snapConn(ctx)
	if err != nil {
		return tracker.Chunk{}, err
	}
	pos, err := s.exportSnapshot(ctx, rc, pg)
	if err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		rc.Close(cctx)
		cancel()
		return tracker.Chunk{}, err
	}
	s.keepSnapConn(rc)
	if req.Reserve != nil {
		// The position is known, the rows not yet read: the tracker holds
		// the stream before it passes it.
		req.Reserve(formatLSN(pos))
	}
	committed := false
	defer func() {
		if !committed && !pg.IsClosed() {
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			pg.Exec(rctx, "ROLLBACK").ReadAll()
			cancel()
		}
	}()

	cols, filter, err := s.snapColumns(ctx, pc, t)
	if err != nil {
		return tracker.Chunk{}, err
	}
	keyIdx := make([]int, len(t.Key))
	for i, k := range t.Key {
		j := slices.IndexFunc(cols, func(c snapColumn) bool { return c.name == k })
		if j < 0 {
			return tracker.Chunk{}, fmt.Errorf("key column %s is not in the table (was it changed?); read the table again", quoteIdent(k))
		}
		keyIdx[i] = j
	}
	query, oids := chunkQuery(t, cols, keyIdx, after != nil, filter, req.Where, limit)
	var params [][]byte
	for _, v := range after {
		params = append(params, []byte(v))
	}
	if after == nil {
		oids = nil
	}
	ch, err := s.scanChunk(pg.ExecParams(ctx, query, params, oids, nil, nil), t, cols, keyIdx, limit)
	if err != nil {
		return tracker.Chunk{}, s.chunkErr(ctx, t, req.Where, err)
	}
	if _, err := pg.Exec(ctx, "COMMIT").ReadAll(); err != nil {
		return tracker.Chunk{}, fmt.Errorf("commit: %w", err)
	}
	committed = true
	ch.Pos = formatLSN(pos)
	if len(ch.Rows) == 0 {
		ch.Next = req.After
	}
	for _, r := range ch.Rows {
		r.Pos = ch.Pos
	}
	return ch, nil
}

// snapConn returns a kept replication connection, or a new one.
func (s *Source) snapConn(ctx context.Context) (*pgconn.PgConn, error) {
	s.snap.mu.Lock()
	for n := len(s.snap.idle); n > 0; n = len(s.snap.idle) {
		c := s.snap.idle[n-1]
		s.snap.idle = s.snap.idle[:n-1]
		if !c.IsClosed() {
			s.snap.mu.Unlock()
			return c, nil
		}
	}
	s.snap.mu.Unlock()
	return s.cs.connectRepl(ctx)
}

// keepSnapConn keeps c for the next chunk, or closes it.
func (s *Source) keepSnapConn(c *pgconn.PgConn) {
	s.snap.mu.Lock()
	if !s.snap.closed && len(s.snap.idle) < keptSnapConns && !c.IsClosed() && c.TxStatus() == 'I' {
		s.snap.idle = append(s.snap.idle, c)
		c = nil
	}
	s.snap.mu.Unlock()
	if c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c.Close(ctx)
		cancel()
	}
}

// exportSnapshot creates a temporary slot on rc, imports its snapshot into
// a new transaction on pg, drops the slot and returns its consistent point.
func (s *Source) exportSnapshot(ctx context.Context, rc, pg *pgconn.PgConn) (lsn, error) {
	var rnd [6]byte
	rand.Read(rnd[:])
	slot := "trackerd_snap_" + strconv.FormatUint(uint64(rc.PID()), 10) + "_" + hex.EncodeToString(rnd[:])
	action := "EXPORT_SNAPSHOT"
	if s.major >= 15 {
		action = "(SNAPSHOT 'export')"
	}
	stop := s.logSnapWait(ctx, rc.PID())
	res, err := pglogrepl.CreateReplicationSlot(ctx, rc, slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Temporary: true, Mode: pglogrepl.LogicalReplication, SnapshotAction: action})
	stop()
	if err != nil {
		switch pgCode(err) {
		case "53400":
			return 0, fmt.Errorf("create temporary replication slot: %w; fix: raise max_replication_slots (each chunk read needs a free slot for a moment)", err)
		case "42501":
			return 0, tracker.ConfigError(fmt.Errorf("create temporary replication slot: %w; fix: ALTER ROLE %s REPLICATION;", err, quoteIdent(s.cs.user)))
		}
		return 0, fmt.Errorf("create temporary replication slot: %w", err)
	}
	pos, err := parseLSN(res.ConsistentPoint)
	if err != nil {
		return 0, fmt.Errorf("temporary replication slot: consistent point %q: %w", res.ConsistentPoint, err)
	}
	// The exported snapshot lives until the next command on rc: import it
	// first.
	_, err = pg.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT "+quoteLiteral(res.SnapshotName)).ReadAll()
	if err != nil {
		return 0, fmt.Errorf("import snapshot %s: %w", res.SnapshotName, err)
	}
	if err := pglogrepl.DropReplicationSlot(ctx, rc, slot, pglogrepl.DropReplicationSlotOptions{}); err != nil {
		return 0, fmt.Errorf("drop temporary replication slot %s: %w", slot, err)
	}
	return pos, nil
}

// logSnapWait logs what a slot creation waits for when it takes long.
func (s *Source) logSnapWait(ctx context.Context, pid uint32) (stop func()) {
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTimer(snapWaitLog)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
			if detail := s.slotWaitDetail(wctx, pid); detail != "" && wctx.Err() == nil {
				s.log.Warn("snapshot chunk waits for a temporary replication slot", "detail", detail)
			}
			t.Reset(6 * snapWaitLog)
		}
	}()
	return func() { cancel(); <-done }
}

// snapColumnsQuery lists a table's columns as the stream sends them (not
// dropped, not generated), in order.
func snapColumnsQuery(major int) string {
	generated := ""
	if major >= 12 {
		generated = " AND a.attgenerated = ''"
	}
	return `SELECT a.attname::text, a.atttypid
		FROM pg_catalog.pg_attribute a
		JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped` + generated + `
		ORDER BY a.attnum`
}

// snapColumns reads, in the snapshot, the table's columns with their
// decoding plans, and the publication's row filter of it (PostgreSQL 15+).
func (s *Source) snapColumns(ctx context.Context, pc *pgxpool.Conn, t tracker.SnapshotTable) ([]snapColumn, string, error) {
	rows, err := pc.Query(ctx, snapColumnsQuery(s.major), t.Schema, t.Table)
	if err != nil {
		return nil, "", fmt.Errorf("list columns: %w", err)
	}
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (snapColumn, error) {
		c := snapColumn{inPub: true}
		err := r.Scan(&c.name, &c.oid)
		return c, err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list columns: %w", err)
	}
	if len(cols) == 0 {
		return nil, "", tracker.ConfigError(fmt.Errorf("table %s does not exist (dropped?)", t.Name()))
	}
	var filter string
	if s.major >= 15 {
		var attnames []string
		var rowFilter *string
		err := pc.QueryRow(ctx, `SELECT attnames::text[], rowfilter FROM pg_catalog.pg_publication_tables
			WHERE pubname = $1 AND schemaname = $2 AND tablename = $3`, s.b.Publication, t.Schema, t.Table).Scan(&attnames, &rowFilter)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return nil, "", fmt.Errorf("read the publication's column list: %w", err)
		default:
			if attnames != nil {
				for i := range cols {
					cols[i].inPub = slices.Contains(attnames, cols[i].name)
				}
			}
			if rowFilter != nil {
				filter = *rowFilter
			}
		}
	}
	s.snap.mu.Lock()
	defer s.snap.mu.Unlock()
	if s.snap.types == nil {
		s.snap.types = newCatalogTypes(context.Background(), s.pool, s.b.Pool.Timeout, s.log)
	}
	for i := range cols {
		cols[i].plan = s.snap.types.plan(cols[i].oid)
	}
	return cols, filter, nil
}

// chunkQuery builds a chunk's SELECT and the key parameters' type OIDs.
func chunkQuery(t tracker.SnapshotTable, cols []snapColumn, keyIdx []int, hasAfter bool, filter, where string, limit int) (string, []uint32) {
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, c := range cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quoteIdent(c.name))
	}
	b.WriteString(" FROM ")
	b.WriteString(quoteIdent(t.Schema) + "." + quoteIdent(t.Table))
	keys := make([]string, len(keyIdx))
	oids := make([]uint32, len(keyIdx))
	for i, k := range keyIdx {
		keys[i] = quoteIdent(cols[k].name)
		oids[i] = cols[k].oid
	}
	var conds []string
	if hasAfter {
		ps := make([]string, len(keys))
		for i := range ps {
			ps[i] = "$" + strconv.Itoa(i+1)
		}
		conds = append(conds, "("+strings.Join(keys, ", ")+") > ("+strings.Join(ps, ", ")+")")
	}
	if filter != "" {
		conds = append(conds, "("+filter+")")
	}
	if strings.TrimSpace(where) != "" {
		// On lines of their own, so that a -- comment ends with the line.
		conds = append(conds, "(\n"+where+"\n)")
	}
	if len(conds) > 0 {
		b.WriteString(" WHERE ")
		b.WriteString(strings.Join(conds, " AND "))
	}
	b.WriteString(" ORDER BY ")
	b.WriteString(strings.Join(keys, ", "))
	b.WriteString(" LIMIT ")
	b.WriteString(strconv.Itoa(limit))
	return b.String(), oids
}

// scanChunk turns the rows of rr into snapshot changes. Values are encoded
// as the stream encodes them (valueEncoder), into one buffer for the whole
// chunk; rows, values and changes are allocated once per chunk.
func (s *Source) scanChunk(rr *pgconn.ResultReader, t tracker.SnapshotTable, cols []snapColumn, keyIdx []int, limit int) (tracker.Chunk, error) {
	var pubNames []string
	pubIdx := make([]int, len(cols)) // the value slot of each column, -1 if not in After
	extra := 0                       // key columns not in After
	for i, c := range cols {
		if c.inPub {
			pubIdx[i] = len(pubNames)
			pubNames = append(pubNames, c.name)
		} else {
			pubIdx[i] = -1
		}
	}
	keyNames := slices.Clone(t.Key)
	for _, k := range keyIdx {
		if pubIdx[k] < 0 {
			extra++
		}
	}
	width := len(pubNames) + extra // value slots per row
	enc := valueEncoder{reformatFloats: s.major < 12}
	buf := make([]byte, 0, 64<<10)
	offs := make([]int32, 0, 2*width*min(limit, 1024))
	// The last row's key texts, copied row by row: the reader's buffer is
	// reused by the next message it reads.
	var lastBuf []byte
	lastEnd := make([]int, len(keyIdx))
	n := 0
	for rr.NextRow() {
		vals := rr.Values()
		if len(vals) != len(cols) {
			rr.Close()
			return tracker.Chunk{}, fmt.Errorf("row of %d columns, want %d", len(vals), len(cols))
		}
		for i, v := range vals {
			if pubIdx[i] < 0 {
				continue
			}
			start := len(buf)
			if v == nil {
				buf = append(buf, "null"...)
			} else {
				buf = enc.appendValue(buf, cols[i].plan, v)
			}
			offs = append(offs, int32(start), int32(len(buf)))
		}
		for _, k := range keyIdx {
			if pubIdx[k] < 0 {
				start := len(buf)
				if vals[k] == nil {
					buf = append(buf, "null"...)
				} else {
					buf = enc.appendValue(buf, cols[k].plan, vals[k])
				}
				offs = append(offs, int32(start), int32(len(buf)))
			}
		}
		lastBuf = lastBuf[:0]
		for i, k := range keyIdx {
			lastBuf = append(lastBuf, vals[k]...)
			lastEnd[i] = len(lastBuf)
		}
		n++
	}
	if _, err := rr.Close(); err != nil {
		return tracker.Chunk{}, err
	}
	if cap(enc.raw) > maxKeptBuffer {
		enc.raw = nil
	}
	if len(buf) > 1<<31-1 {
		return tracker.Chunk{}, errors.New("chunk too large: lower its row limit")
	}
	ch := tracker.Chunk{Done: n < limit, Rows: make([]*tracker.Change, n)}
	if n == 0 {
		return ch, nil
	}
	values := make([]json.RawMessage, n*width)
	keys := make([]json.RawMessage, n*len(keyIdx))
	changes := make([]tracker.Change, n)
	for r := range n {
		row := values[r*width : (r+1)*width : (r+1)*width]
		for j := range row {
			o := offs[2*(r*width+j):]
			row[j] = json.RawMessage(buf[o[0]:o[1]:o[1]])
		}
		key := keys[r*len(keyIdx) : (r+1)*len(keyIdx) : (r+1)*len(keyIdx)]
		e := len(pubNames)
		for i, k := range keyIdx {
			if p := pubIdx[k]; p >= 0 {
				key[i] = row[p]
			} else {
				key[i] = row[e]
				e++
			}
		}
		c := &changes[r]
		c.Source, c.Op = sourceKind, tracker.OpSnapshot
		c.Schema, c.Table = t.Schema, t.Table
		c.Key = tracker.Row{Names: keyNames, Values: key}
		c.After = tracker.Row{Names: pubNames, Values: row[:len(pubNames):len(pubNames)]}
		ch.Rows[r] = c
	}
	next := make([]string, len(keyIdx))
	for i := range next {
		start := 0
		if i > 0 {
			start = lastEnd[i-1]
		}
		next[i] = string(lastBuf[start:lastEnd[i]])
	}
	cur, err := json.Marshal(next)
	if err != nil {
		return tracker.Chunk{}, err
	}
	ch.Next = string(cur)
	return ch, nil
}

// chunkErr explains a failed chunk query: a table dropped meanwhile, or a
// condition the server rejects (class 42, syntax or access, and class 22,
// a value it cannot take: configuration errors). The password is scrubbed
// at the boundary.
func (s *Source) chunkErr(ctx context.Context, t tracker.SnapshotTable, where string, err error) error {
	code := pgCode(err)
	if code == "42P01" || code == "42703" {
		var exists bool
		qerr := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2)`, t.Schema, t.Table).Scan(&exists)
		if qerr == nil && !exists {
			return tracker.ConfigError(fmt.Errorf("table %s does not exist (dropped while the snapshot read it): %w", t.Name(), err))
		}
	}
	if strings.TrimSpace(where) != "" && (strings.HasPrefix(code, "42") || strings.HasPrefix(code, "22")) {
		return tracker.ConfigError(fmt.Errorf("read with condition %q: %w; fix: correct the condition", where, err))
	}
	switch {
	case code == "42501":
		return tracker.ConfigError(fmt.Errorf("read: %w; fix: GRANT SELECT ON %s TO %s;", err, quoteIdent(t.Schema)+"."+quoteIdent(t.Table), quoteIdent(s.cs.user)))
	case code == "42703":
		return fmt.Errorf("read: %w (the table changed while it was read; read the chunk again)", err)
	case strings.HasPrefix(code, "42"):
		return tracker.ConfigError(fmt.Errorf("read: %w", err))
	}
	return fmt.Errorf("read: %w", err)
}
