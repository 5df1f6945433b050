package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
)

// queryErr classifies an error of the query pool: a failed connection says
// what to fix, like the replication connection's.
func (s *Source) queryErr(what string, err error) error {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return s.cs.classifyConnect(err, false)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// roleInfo is what the server says of the connected role.
type roleInfo struct {
	walLevel    string
	name        string
	super       bool
	replication bool
	// senderTimeoutMS is wal_sender_timeout in milliseconds, 0 = disabled.
	senderTimeoutMS int64
}

const roleQuery = `SELECT current_setting('wal_level'), r.rolname::text, r.rolsuper, r.rolreplication,
	(SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'wal_sender_timeout')
	FROM pg_catalog.pg_roles r WHERE r.rolname = current_user`

// readRole reads the role's attributes and the server settings trackerd
// depends on.
func readRole(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (roleInfo, error) {
	var ri roleInfo
	err := q.QueryRow(ctx, roleQuery).Scan(&ri.walLevel, &ri.name, &ri.super, &ri.replication, &ri.senderTimeoutMS)
	return ri, err
}

func (s *Source) checkServer(ctx context.Context) error {
	ri, err := readRole(ctx, s.pool)
	if err != nil {
		return s.queryErr("read server settings", err)
	}
	s.hooks.statusEvery = statusInterval(s.hooks.statusEvery, ri.senderTimeoutMS)
	return checkRole(ri)
}

// statusInterval is how often to send standby status updates: every, or a
// third of the server's wal_sender_timeout when that is shorter, so that the
// walsender hears from trackerd in time even while the sink blocks reading.
func statusInterval(every time.Duration, senderTimeoutMS int64) time.Duration {
	if senderTimeoutMS <= 0 {
		return every
	}
	return max(min(every, time.Duration(senderTimeoutMS)*time.Millisecond/3), 200*time.Millisecond)
}

// checkRole turns wrong server settings into configuration errors.
func checkRole(ri roleInfo) error {
	if ri.walLevel != "logical" {
		return tracker.ConfigError(fmt.Errorf("wal_level is %s, logical replication needs logical; fix: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL", ri.walLevel))
	}
	if !ri.super && !ri.replication {
		return tracker.ConfigError(fmt.Errorf("role %s has neither REPLICATION nor superuser; fix: ALTER ROLE %s REPLICATION;", ri.name, quoteIdent(ri.name)))
	}
	return nil
}

// tableRef is a table of the database.
type tableRef struct {
	schema, table string
	owned         bool
	partitioned   bool
}

func (t tableRef) sql() string { return quoteIdent(t.schema) + "." + quoteIdent(t.table) }

// entryMatches reports whether a Tables/ExcludeTables entry names the table,
// by the bind's own rule.
func entryMatches(entry, schema, table string) bool {
	return binds.Bind{Tables: []string{entry}}.Tracks(schema, table)
}

const tablesQuery = `SELECT n.nspname::text, c.relname::text, c.relkind::text, pg_catalog.pg_has_role(c.relowner, 'USAGE')
	FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
	  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'
	ORDER BY 1, 2`

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// publishable lists the tables a publication of b may name: the bind's
// tables (every one must exist) or, without them, those the role owns,
// less the excluded ones.
func publishable(ctx context.Context, q querier, b binds.Bind, major int, database string) ([]tableRef, error) {
	rows, err := q.Query(ctx, tablesQuery)
	if err != nil {
		return nil, err
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tableRef, error) {
		var t tableRef
		var kind string
		err := r.Scan(&t.schema, &t.table, &kind, &t.owned)
		t.partitioned = kind == "p"
		return t, err
	})
	if err != nil {
		return nil, err
	}
	// Partitioned tables may be put in a publication from PostgreSQL 13.
	all = slices.DeleteFunc(all, func(t tableRef) bool { return t.partitioned && major < 13 })
	var out []tableRef
	if len(b.Tables) > 0 {
		for _, e := range b.Tables {
			found := false
			for _, t := range all {
				if entryMatches(e, t.schema, t.table) {
					found = true
				}
			}
			if !found {
				return nil, tracker.ConfigError(fmt.Errorf("table %q of the bind's tables is not in database %q", e, database))
			}
		}
	}
	for _, t := range all {
		if !b.Tracks(t.schema, t.table) {
			continue
		}
		if len(b.Tables) == 0 && !t.owned {
			continue
		}
		out = append(out, t)
	}
	return out, nil
}

func (s *Source) ensurePublication(ctx context.Context) error {
	b := s.b
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)`, b.Publication).Scan(&exists); err != nil {
		return s.queryErr("look up publication", err)
	}
	if exists {
		s.log.Debug("publication exists", "publication", b.Publication)
		missing, err := unpublishedEntries(ctx, s.pool, b, s.major)
		if err != nil {
			return s.queryErr("list the publication's tables", err)
		}
		if len(missing) > 0 {
			return tracker.ConfigError(unpublishedError(b, missing))
		}
		return nil
	}
	ri, err := readRole(ctx, s.pool)
	if err != nil {
		return s.queryErr("read role", err)
	}
	stmt := "CREATE PUBLICATION " + quoteIdent(b.Publication)
	if ri.super && len(b.Tables) == 0 {
		stmt += " FOR ALL TABLES"
		s.log.Info("creating publication for all tables", "publication", b.Publication)
	} else {
		tables, err := publishable(ctx, s.pool, b, s.major, s.database)
		if err != nil {
			return s.queryErr("list tables", err)
		}
		if len(tables) == 0 {
			return tracker.ConfigError(fmt.Errorf("publication %q does not exist and role %s owns no table to put in it (only a superuser may create one FOR ALL TABLES); fix: name the bind's tables, or have a superuser run CREATE PUBLICATION %s FOR ALL TABLES;",
				b.Publication, ri.name, quoteIdent(b.Publication)))
		}
		names := make([]string, len(tables))
		for i, t := range tables {
			names[i] = t.sql()
		}
		stmt += " FOR TABLE " + strings.Join(names, ", ")
		if len(b.Tables) == 0 {
			s.log.Info("creating publication for the tables the role owns (only a superuser may create one FOR ALL TABLES; tables created later are not in it)",
				"publication", b.Publication, "role", ri.name, "tables", names)
		} else {
			s.log.Info("creating publication for the bind's tables", "publication", b.Publication, "tables", names)
		}
	}
	if err := s.createPublication(ctx, stmt); err != nil {
		switch pgCode(err) {
		case "42710": // created meanwhile by another instance
			return nil
		case "42501":
			return tracker.ConfigError(fmt.Errorf("create publication %q: %w; fix: GRANT CREATE ON DATABASE %s TO %s; or have a superuser run %s;",
				b.Publication, err, quoteIdent(s.database), quoteIdent(ri.name), stmt))
		}
		return s.queryErr("create publication "+b.Publication, err)
	}
	return nil
}

// createPublication runs stmt (a CREATE PUBLICATION) and marks the new
// publication as trackerd's with a comment naming the bind, in one
// transaction: `trackerd teardown` drops a publication it finds marked so
// (see ownerComment), and leaves one a user made alone.
func (s *Source) createPublication(ctx context.Context, stmt string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "COMMENT ON PUBLICATION "+quoteIdent(s.b.Publication)+" IS "+quoteLiteral(ownerComment(s.b)))
		return err
	})
}

// publishedQuery lists the database's tables and whether publication $1
// publishes their changes: FOR ALL TABLES, or the table itself, one of its
// partitions or one of its ancestors is in it (PostgreSQL 12+; before, the
// table itself).
func publishedQuery(major int) string {
	related := "pc.oid = c.oid"
	if major >= 12 {
		related = `(pc.oid = c.oid OR pc.oid IN (SELECT relid FROM pg_catalog.pg_partition_tree(c.oid))
			OR pc.oid IN (SELECT relid FROM pg_catalog.pg_partition_ancestors(c.oid)))`
	}
	return `SELECT n.nspname::text, c.relname::text,
		COALESCE((SELECT puballtables FROM pg_catalog.pg_publication WHERE pubname = $1), false) OR EXISTS (
			SELECT 1 FROM pg_catalog.pg_publication_tables p
			JOIN pg_catalog.pg_namespace pn ON pn.nspname = p.schemaname
			JOIN pg_catalog.pg_class pc ON pc.relnamespace = pn.oid AND pc.relname = p.tablename
			WHERE p.pubname = $1 AND ` + related + `)
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'`
}

// unpublishedEntries returns the entries of b's tables that name no table
// b's existing publication publishes: their changes would never arrive. A
// publication made for another bind (the default name is per bind key, so
// two deployments of one key share it) is the usual cause.
func unpublishedEntries(ctx context.Context, q querier, b binds.Bind, major int) ([]string, error) {
	if len(b.Tables) == 0 {
		return nil, nil
	}
	rows, err := q.Query(ctx, publishedQuery(major), b.Publication)
	if err != nil {
		return nil, err
	}
	type pubTable struct {
		schema, table string
		published     bool
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pubTable, error) {
		var t pubTable
		err := r.Scan(&t.schema, &t.table, &t.published)
		return t, err
	})
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, e := range b.Tables {
		served := false
		for _, t := range all {
			if t.published && entryMatches(e, t.schema, t.table) && b.Tracks(t.schema, t.table) {
				served = true
				break
			}
		}
		if !served {
			missing = append(missing, e)
		}
	}
	return missing, nil
}

func unpublishedError(b binds.Bind, missing []string) error {
	return fmt.Errorf("publication %s exists but publishes none of the bind's tables %s, whose changes would never arrive (another bind or deployment may have created it for its own tables); "+
		"fix: give the bind a publication of its own (its publication option; trackerd creates it for the bind's tables; if slot %s exists already, drop it too: a slot cannot read a publication created after it), "+
		"or ALTER PUBLICATION %s ADD TABLE ...",
		quoteIdent(b.Publication), strings.Join(missing, ", "), b.Slot, quoteIdent(b.Publication))
}

// slotInfo is a row of pg_replication_slots.
type slotInfo struct {
	plugin, slotType, database string
	active                     bool
	activePID                  int32
	confirmedFlush             string
	walStatus                  string
	temporary                  bool
	twoPhase                   bool // decodes prepared transactions at PREPARE (PostgreSQL 14+)
	failover                   bool // synchronized to standbys (PostgreSQL 17+)
}

func slotQuery(major int) string {
	walStatus := "''"
	if major >= 13 {
		walStatus = "COALESCE(wal_status, '')"
	}
	twoPhase, failover := "false", "false"
	if major >= 14 {
		twoPhase = "two_phase"
	}
	if major >= 17 {
		failover = "failover"
	}
	return `SELECT COALESCE(plugin::text, ''), slot_type, COALESCE(database::text, ''), active, COALESCE(active_pid, 0),
		COALESCE(confirmed_flush_lsn::text, ''), ` + walStatus + `, temporary, ` + twoPhase + `, ` + failover + `
		FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`
}

func readSlot(ctx context.Context, q interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}, slot string, major int) (slotInfo, bool, error) {
	var si slotInfo
	err := q.QueryRow(ctx, slotQuery(major), slot).Scan(&si.plugin, &si.slotType, &si.database, &si.active,
		&si.activePID, &si.confirmedFlush, &si.walStatus, &si.temporary, &si.twoPhase, &si.failover)
	if errors.Is(err, pgx.ErrNoRows) {
		return si, false, nil
	}
	return si, err == nil, err
}

// checkSlot says what is wrong with an existing slot for this bind.
func checkSlot(slot, database string, si slotInfo) error {
	if si.slotType != "logical" || si.plugin != "pgoutput" {
		return tracker.ConfigError(fmt.Errorf("replication slot %s exists as a %s slot with plugin %q, trackerd needs a logical pgoutput slot; fix: choose another slot name, or drop it (SELECT pg_drop_replication_slot('%s');) if nothing uses it",
			slot, si.slotType, si.plugin, slot))
	}
	if si.database != database {
		return tracker.ConfigError(fmt.Errorf("replication slot %s belongs to database %q, not %q; fix: choose another slot name for this bind", slot, si.database, database))
	}
	if si.walStatus == "lost" {
		return fmt.Errorf("replication slot %s was invalidated (wal_status lost): the server removed WAL it still needed, changes are lost; drop and recreate the slot and take a new snapshot: %w",
			slot, tracker.ErrResnapshotRequired)
	}
	return nil
}

func (s *Source) ensureSlot(ctx context.Context) error {
	slot := s.b.Slot
	for attempt := 0; ; attempt++ {
		si, ok, err := readSlot(ctx, s.pool, slot, s.major)
		if err != nil {
			return s.queryErr("look up replication slot", err)
		}
		if ok {
			if err := checkSlot(slot, s.database, si); err != nil {
				return err
			}
			if si.active {
				if err := s.waitSlotFree(ctx, si.activePID); err != nil {
					return err
				}
			}
			if si.walStatus == "unreserved" {
				s.log.Warn("replication slot is about to be invalidated (wal_status unreserved): the server may remove WAL it still needs unless trackerd catches up", "slot", slot)
			}
			l, err := parseLSN(si.confirmedFlush)
			if err != nil {
				return fmt.Errorf("replication slot %s: confirmed_flush_lsn %q: %w", slot, si.confirmedFlush, err)
			}
			s.slotConfirmed = l
			switch {
			case s.twoPhase && !si.twoPhase && si.failover:
				// PostgreSQL restricts two-phase decoding on failover
				// slots (a 2025 fix, 17.x and later): leave it off rather
				// than have the slot refuse to start.
				s.twoPhase = false
				s.log.Info("replication slot is a failover slot without two-phase decoding: prepared transactions are published at COMMIT PREPARED, like ordinary ones; " +
					"for them to be published at PREPARE TRANSACTION, use a new slot")
			case s.twoPhase && !si.twoPhase:
				s.log.Info("replication slot was created without two-phase decoding: starting it turns it on from its confirmed position; "+
					"transactions prepared before that are published at COMMIT PREPARED, later ones at PREPARE TRANSACTION",
					"confirmed_flush_lsn", si.confirmedFlush)
			}
			return nil
		}
		err = s.createSlot(ctx)
		if pgCode(err) == "42710" && attempt == 0 {
			continue // created meanwhile: use it
		}
		return err
	}
}

// waitSlotFree waits a little for a slot that is active (a previous
// instance's walsender may still be exiting), then reports it fenced.
func (s *Source) waitSlotFree(ctx context.Context, pid int32) error {
	deadline := time.Now().Add(s.hooks.fenceGrace)
	for {
		if time.Now().After(deadline) {
			return fencedError(s.b.Slot, int(pid))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		si, ok, err := readSlot(ctx, s.pool, s.b.Slot, s.major)
		if err != nil {
			return s.queryErr("look up replication slot", err)
		}
		if !ok || !si.active {
			return nil
		}
		pid = si.activePID
	}
}

func (s *Source) createSlot(ctx context.Context) error {
	slot := s.b.Slot
	cctx, cancel := context.WithTimeout(ctx, s.hooks.slotTimeout)
	defer cancel()
	// PostgreSQL 15's option list; pglogrepl appends SnapshotAction as is.
	options := "NOEXPORT_SNAPSHOT"
	if s.twoPhase {
		options = "(SNAPSHOT 'nothing', TWO_PHASE)"
	}
	s.report(tracker.SourceStatus{State: tracker.SourceCreatingSlot})
	stopWatch := s.watchSlotWait(cctx, s.conn.PID())
	res, err := pglogrepl.CreateReplicationSlot(cctx, s.conn, slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: options})
	stopWatch()
	if err != nil {
		if ctx.Err() == nil && cctx.Err() != nil {
			return s.slotTimeout(ctx)
		}
		switch pgCode(err) {
		case "53400":
			return tracker.ConfigError(fmt.Errorf("create replication slot %s: %w; fix: raise max_replication_slots (and restart), or drop slots that nothing uses%s",
				slot, err, s.unusedSlots(ctx)))
		case "55000":
			return tracker.ConfigError(fmt.Errorf("create replication slot %s: %w; fix: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL", slot, err))
		case "42501":
			return tracker.ConfigError(fmt.Errorf("create replication slot %s: %w; fix: ALTER ROLE %s REPLICATION;", slot, err, quoteIdent(s.cs.user)))
		case "42710":
			return err
		}
		return fmt.Errorf("create replication slot %s: %w", slot, err)
	}
	l, err := parseLSN(res.ConsistentPoint)
	if err != nil {
		return fmt.Errorf("create replication slot %s: consistent point %q: %w", slot, res.ConsistentPoint, err)
	}
	s.slotConfirmed, s.slotCreated = l, true
	s.log.Info("created replication slot", "consistent_point", res.ConsistentPoint, "two_phase", s.twoPhase)
	// The slot is made: the bind is no longer creating_slot, and streams
	// once Run's stream is established (which reports streaming).
	s.report(tracker.SourceStatus{State: tracker.SourceConnecting, Detail: "replication slot created at " + res.ConsistentPoint})
	return nil
}

// checkNewSlot refuses to resume from a checkpoint position with a slot
// Open had to make: the slot the checkpoint was read from is gone (dropped
// by hand, or by a teardown of another configuration), and the new one
// starts at the server's current position, so the changes in between are
// lost. Resuming would skip them in silence.
func (s *Source) checkNewSlot(from position) error {
	if !s.slotCreated || from.through == 0 || s.slotConfirmed <= from.confirm() {
		return nil
	}
	return fmt.Errorf("replication slot %s was missing and was made anew at %s, but the bind's checkpoint is at %s: the changes in between went with the old slot: %w; "+
		"to go on from the server's current position without them: trackerd reset --bind %s --to current",
		s.b.Slot, formatLSN(s.slotConfirmed), from.String(), tracker.ErrResnapshotRequired, s.b.Key)
}

// How soon a slot creation that still waits is reported with what it
// waits for, and how often again while it waits.
const (
	defaultSlotWaitFirst = time.Second
	defaultSlotWaitEvery = 30 * time.Second
)

// watchSlotWait reports, while CREATE_REPLICATION_SLOT runs on the
// replication connection of PID replPID, what PostgreSQL waits for: it
// makes the slot only once every transaction open when it was asked has
// ended. The first report comes after hooks.slotWaitFirst (most slots are
// made at once), then one every hooks.slotWaitEvery, each logged by the
// tracker and shown as the bind's state detail. stop ends the watch and
// waits for it.
func (s *Source) watchSlotWait(ctx context.Context, replPID uint32) (stop func()) {
	first := cmp.Or(s.hooks.slotWaitFirst, defaultSlotWaitFirst)
	every := cmp.Or(s.hooks.slotWaitEvery, defaultSlotWaitEvery)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTimer(first)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
			if detail := s.slotWaitDetail(wctx, replPID); detail != "" && wctx.Err() == nil {
				s.report(tracker.SourceStatus{State: tracker.SourceCreatingSlot, Detail: detail})
			}
			t.Reset(every)
		}
	}()
	return func() { cancel(); <-done }
}

// slotWaitQuery finds the oldest open transaction of another session:
// those holding a transaction id first (the ones slot creation waits
// for), then those holding a snapshot (xmin).
const slotWaitQuery = `SELECT pid, COALESCE(usename::text, ''), COALESCE(datname::text, ''),
	COALESCE(to_char(xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), ''),
	COALESCE(EXTRACT(EPOCH FROM now() - xact_start), 0)::float8
	FROM pg_catalog.pg_stat_activity
	WHERE (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)
	  AND pid <> pg_catalog.pg_backend_pid() AND pid <> $1
	ORDER BY backend_xid IS NULL, xact_start NULLS LAST LIMIT 1`

// slotWaitDetail says what a slot creation waits for, "" when it cannot
// tell: the oldest open transaction, or the oldest prepared one.
func (s *Source) slotWaitDetail(ctx context.Context, replPID uint32) string {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var (
		pid            int32
		user, db, from string
		age            float64
	)
	err := s.pool.QueryRow(qctx, slotWaitQuery, int32(replPID)).Scan(&pid, &user, &db, &from, &age)
	if err == nil {
		return fmt.Sprintf("PostgreSQL waits for transactions open since %s (%s ago), pid %d (user %s, database %s), before it creates the slot; "+
			"they must end (COMMIT, ROLLBACK, or SELECT pg_terminate_backend(%d))",
			from, (time.Duration(age) * time.Second).Round(time.Second), pid, user, db, pid)
	}
	var gid, since string
	err = s.pool.QueryRow(qctx, `SELECT gid, to_char(prepared AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
		FROM pg_catalog.pg_prepared_xacts ORDER BY prepared LIMIT 1`).Scan(&gid, &since)
	if err == nil {
		return fmt.Sprintf("PostgreSQL waits for transactions open since %s, prepared transaction %s, before it creates the slot; it must end (COMMIT PREPARED or ROLLBACK PREPARED)",
			since, quoteLiteral(gid))
	}
	return ""
}

// slotTimeout explains a slot creation that waited too long: the server
// waits for every transaction open when it was asked to finish.
func (s *Source) slotTimeout(ctx context.Context) error {
	// The replication connection was cancelled mid-command: drop it.
	s.mu.Lock()
	if s.conn != nil {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.conn.Close(cctx)
		cancel()
		s.conn = nil
	}
	s.mu.Unlock()
	msg := fmt.Sprintf("create replication slot %s: still waiting after %s for the transactions open when it was requested to end", s.b.Slot, s.hooks.slotTimeout)
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rows, err := s.pool.Query(qctx, `SELECT pid, COALESCE(usename::text, ''), COALESCE(datname::text, ''), COALESCE(state, ''),
		COALESCE(to_char(xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), '')
		FROM pg_catalog.pg_stat_activity
		WHERE (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) AND pid <> pg_backend_pid()
		ORDER BY xact_start NULLS LAST LIMIT 10`)
	if err == nil {
		var held []string
		for rows.Next() {
			var pid int32
			var user, db, state, since string
			if rows.Scan(&pid, &user, &db, &state, &since) == nil {
				held = append(held, fmt.Sprintf("pid %d (user %s, database %s, %s since %s)", pid, user, db, state, since))
			}
		}
		rows.Close()
		if len(held) > 0 {
			msg += ": " + strings.Join(held, "; ") + "; end them (COMMIT, ROLLBACK or SELECT pg_terminate_backend(pid)) and start again"
		}
	}
	// A prepared transaction is open too, with no session to show it.
	rows, err = s.pool.Query(qctx, `SELECT gid, COALESCE(database::text, ''),
		to_char(prepared AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
		FROM pg_catalog.pg_prepared_xacts ORDER BY prepared LIMIT 10`)
	if err == nil {
		var held []string
		for rows.Next() {
			var gid, db, since string
			if rows.Scan(&gid, &db, &since) == nil {
				held = append(held, fmt.Sprintf("%s (database %s, prepared %s)", quoteLiteral(gid), db, since))
			}
		}
		rows.Close()
		if len(held) > 0 {
			msg += "; prepared transactions: " + strings.Join(held, ", ") + "; end them (COMMIT PREPARED or ROLLBACK PREPARED) and start again"
		}
	}
	return errors.New(msg)
}

// unusedSlots names the inactive slots of the server, for the "no free slot"
// message.
func (s *Source) unusedSlots(ctx context.Context) string {
	rows, err := s.pool.Query(ctx, `SELECT slot_name::text FROM pg_catalog.pg_replication_slots WHERE NOT active ORDER BY 1`)
	if err != nil {
		return ""
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(names) == 0 {
		return ""
	}
	return " (inactive now: " + strings.Join(names, ", ") + ")"
}

// tableIssue is a published table whose changes trackerd cannot report in
// full.
type tableIssue struct {
	name      string
	identity  string
	hasPK     bool
	toastable bool
	updDel    bool
	tracked   bool
}

const tableIssuesQuery = `SELECT pt.schemaname::text, pt.tablename::text, c.relreplident::text,
	EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
	EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
		AND NOT a.attisdropped AND a.attlen = -1 AND a.attstorage <> 'p'),
	p.pubupdate OR p.pubdelete
	FROM pg_catalog.pg_publication_tables pt
	JOIN pg_catalog.pg_publication p ON p.pubname = pt.pubname
	JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
	JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
	WHERE pt.pubname = $1 ORDER BY 1, 2`

func tableIssues(ctx context.Context, q querier, b binds.Bind) ([]tableIssue, error) {
	rows, err := q.Query(ctx, tableIssuesQuery, b.Publication)
	if err != nil {
		return nil, err
	}
	var out []tableIssue
	for rows.Next() {
		var schema, table string
		var ti tableIssue
		if err := rows.Scan(&schema, &table, &ti.identity, &ti.hasPK, &ti.toastable, &ti.updDel); err != nil {
			rows.Close()
			return nil, err
		}
		ti.name = quoteIdent(schema) + "." + quoteIdent(table)
		ti.tracked = b.Tracks(schema, table)
		out = append(out, ti)
	}
	return out, rows.Err()
}

// noIdentity reports whether PostgreSQL refuses UPDATE and DELETE on the
// table while a publication publishes them.
func (ti tableIssue) noIdentity() bool {
	return ti.updDel && (ti.identity == "n" || ti.identity == "d" && !ti.hasPK)
}

// warnTables logs the published tables whose UPDATEs and DELETEs fail, and
// those whose unchanged large values will be reported as unchanged.
func (s *Source) warnTables(ctx context.Context) {
	issues, err := tableIssues(ctx, s.pool, s.b)
	if err != nil {
		s.log.Warn("could not list the publication's tables", "publication", s.b.Publication, "err", err)
		return
	}
	var toast []string
	for _, ti := range issues {
		if ti.noIdentity() {
			s.log.Warn("table has no primary key and no replica identity: while it is in a publication that publishes updates and deletes, PostgreSQL makes its UPDATEs and DELETEs FAIL; fix: add a primary key, or ALTER TABLE "+ti.name+" REPLICA IDENTITY FULL",
				"table", ti.name, "publication", s.b.Publication)
		}
		if ti.tracked && ti.toastable && ti.identity != "f" {
			toast = append(toast, ti.name)
		}
	}
	if len(toast) > 0 {
		const show = 20
		more := ""
		if len(toast) > show {
			more = fmt.Sprintf(" and %d more", len(toast)-show)
			toast = toast[:show]
		}
		s.log.Warn("tables with large (TOAST-able) columns and a replica identity other than FULL: an UPDATE that leaves such a value unchanged reports the column in unchanged, without its value; fix where the values are needed: ALTER TABLE ... REPLICA IDENTITY FULL",
			"tables", strings.Join(toast, ", ")+more)
	}
}
