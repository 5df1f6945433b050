package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
)

// Check reports, one result per prerequisite, whether b's server is ready
// for trackerd: connection and authentication, server version, wal_level,
// the REPLICATION privilege, a replication connection, a replication slot
// (ours, or a free one), a free WAL sender, the slot not in use elsewhere
// and not invalidated, the publication (or the right to create it), tables
// whose UPDATEs and DELETEs would fail for want of a replica identity, how
// far an existing slot is behind, and two-phase commit: whether prepared
// transactions are decoded at PREPARE TRANSACTION (PostgreSQL 15+, the
// slot's two_phase) and max_prepared_transactions (a warning when 0:
// PREPARE TRANSACTION is impossible then). It changes nothing on the
// server.
func Check(ctx context.Context, b binds.Bind) []tracker.CheckResult {
	var out []tracker.CheckResult
	add := func(name string, ok bool, detail, fix string) {
		if ok {
			fix = ""
		}
		out = append(out, tracker.CheckResult{Name: name, OK: ok, Detail: detail, Fix: fix})
	}
	warn := func(name, detail, fix string) {
		out = append(out, tracker.CheckResult{Name: name, OK: true, Warn: true, Detail: detail, Fix: fix})
	}
	cs, err := newConnSettings(b, nil)
	if err != nil {
		add("connect", false, err.Error(), "correct the bind's URI")
		return out
	}
	conn, err := pgx.ConnectConfig(ctx, cs.pool.ConnConfig)
	if err != nil {
		err = cs.safe(cs.classifyConnect(err, false))
		add("connect", false, err.Error(), fixOf(err, "check that the server runs and accepts connections from this host"))
		return out
	}
	defer conn.Close(context.WithoutCancel(ctx))
	c := &checker{ctx: ctx, b: b, cs: cs, conn: conn, add: add, warn: warn}
	c.run()
	return out
}

// fixOf returns the "; fix: ..." part of a classified error, or def.
func fixOf(err error, def string) string {
	if _, fix, ok := strings.Cut(err.Error(), "; fix: "); ok {
		return fix
	}
	return def
}

type checker struct {
	ctx  context.Context
	b    binds.Bind
	cs   *connSettings
	conn *pgx.Conn
	add  func(name string, ok bool, detail, fix string)
	warn func(name, detail, fix string) // holds, with advice
}

func (c *checker) fail(name string, err error) {
	c.add(name, false, c.cs.safe(err).Error(), "see the detail")
}

func (c *checker) run() {
	ctx, b := c.ctx, c.b
	c.add("connect", true, fmt.Sprintf("connected to %s as %q", c.cs.where, c.cs.user), "")
	version := c.conn.PgConn().ParameterStatus("server_version")
	major, err := serverMajor(version)
	if err != nil {
		c.fail("server version", err)
		return
	}
	db := c.conn.Config().Database
	switch {
	case major < 10:
		c.add("server version", false, "PostgreSQL "+version, "upgrade to PostgreSQL 10 or later (14 or later for streaming)")
	case b.Streaming && major < 14:
		c.add("server version", false, "PostgreSQL "+version+"; the bind asks for streaming", "upgrade to PostgreSQL 14 or later, or turn the bind's streaming option off")
	default:
		c.add("server version", true, "PostgreSQL "+version, "")
	}

	ri, err := readRole(ctx, c.conn)
	if err != nil {
		c.fail("wal_level", err)
		return
	}
	c.add("wal_level", ri.walLevel == "logical", "wal_level is "+ri.walLevel, "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL")
	c.add("REPLICATION privilege", ri.super || ri.replication,
		fmt.Sprintf("role %s: superuser %t, replication %t", ri.name, ri.super, ri.replication),
		"ALTER ROLE "+quoteIdent(ri.name)+" REPLICATION;")

	if rc, err := c.cs.connectRepl(ctx); err != nil {
		c.add("replication connection", false, err.Error(), fixOf(err, "allow the connection in pg_hba.conf (a replication=database connection matches its database column)"))
	} else {
		ident, err := pglogrepl.IdentifySystem(ctx, rc)
		rc.Close(context.WithoutCancel(ctx))
		if err != nil {
			c.fail("replication connection", err)
		} else {
			c.add("replication connection", true, fmt.Sprintf("system %s, timeline %d, database %s", ident.SystemID, ident.Timeline, ident.DBName), "")
		}
	}

	c.checkSlot(major, db)
	c.checkPublication(major, db, ri)
}

// checkTwoPhase reports how prepared transactions are published.
func (c *checker) checkTwoPhase(major int, si slotInfo, exists bool) {
	var maxPrepared int
	if err := c.conn.QueryRow(c.ctx, `SELECT current_setting('max_prepared_transactions')::int`).Scan(&maxPrepared); err != nil {
		c.fail("max_prepared_transactions", err)
		return
	}
	if maxPrepared == 0 {
		c.warn("max_prepared_transactions",
			"max_prepared_transactions is 0: PREPARE TRANSACTION is impossible on this server, so no transaction is published before its commit this way",
			"only if applications are to use two-phase commit: ALTER SYSTEM SET max_prepared_transactions = 10; then restart PostgreSQL")
	} else {
		c.add("max_prepared_transactions", true, fmt.Sprintf("max_prepared_transactions is %d", maxPrepared), "")
	}
	slot := c.b.Slot
	switch {
	case major < 15:
		c.add("two-phase decoding", true, fmt.Sprintf("PostgreSQL %d sends a prepared transaction at COMMIT PREPARED, like an ordinary one (decoding at PREPARE TRANSACTION needs PostgreSQL 15)", major), "")
	case !exists:
		c.add("two-phase decoding", true, "slot "+slot+" will be created with two-phase: prepared transactions are published at PREPARE TRANSACTION (before_commit), COMMIT PREPARED (after_commit) and ROLLBACK PREPARED (a retraction)", "")
	case si.twoPhase:
		c.add("two-phase decoding", true, "slot "+slot+" decodes prepared transactions at PREPARE TRANSACTION", "")
	case si.failover:
		c.add("two-phase decoding", true, "slot "+slot+" is a failover slot created without two-phase: prepared transactions are published at COMMIT PREPARED, like ordinary ones (a new slot would publish them at PREPARE TRANSACTION)", "")
	default:
		c.add("two-phase decoding", true, "slot "+slot+" was created without two-phase: trackerd's next start turns it on from the slot's confirmed position (transactions prepared before that are published at COMMIT PREPARED)", "")
	}
}

func (c *checker) checkSlot(major int, db string) {
	ctx, slot := c.ctx, c.b.Slot
	if !validSlotName(slot) {
		c.add("replication slot", false, fmt.Sprintf("slot name %q is not valid", slot), "use 1 to 63 lower-case letters, digits and underscores")
		return
	}
	si, exists, err := readSlot(ctx, c.conn, slot, major)
	if err != nil {
		c.fail("replication slot", err)
		return
	}
	var maxSlots, usedSlots, maxSenders, usedSenders int
	err = c.conn.QueryRow(ctx, `SELECT current_setting('max_replication_slots')::int,
		(SELECT count(*) FROM pg_catalog.pg_replication_slots)::int,
		current_setting('max_wal_senders')::int,
		(SELECT count(*) FROM pg_catalog.pg_stat_replication)::int`).Scan(&maxSlots, &usedSlots, &maxSenders, &usedSenders)
	if err != nil {
		c.fail("replication slot", err)
		return
	}
	if exists {
		if err := checkSlot(slot, db, si); err != nil && !errors.Is(err, tracker.ErrResnapshotRequired) {
			c.add("replication slot", false, err.Error(), fixOf(err, "choose another slot name"))
			return
		}
		c.add("replication slot", true, fmt.Sprintf("slot %s exists (confirmed_flush_lsn %s)", slot, si.confirmedFlush), "")
	} else {
		c.add("replication slot", usedSlots < maxSlots,
			fmt.Sprintf("slot %s will be created: %d of max_replication_slots %d in use", slot, usedSlots, maxSlots),
			"raise max_replication_slots (and restart), or drop slots nothing uses")
	}
	c.add("WAL sender", usedSenders < maxSenders || exists && si.active,
		fmt.Sprintf("%d of max_wal_senders %d in use", usedSenders, maxSenders),
		"raise max_wal_senders (and restart)")
	c.checkTwoPhase(major, si, exists)
	if !exists {
		return
	}
	if si.active {
		c.add("slot not in use", false, fmt.Sprintf("slot %s is in use by PID %d", slot, si.activePID),
			fmt.Sprintf("stop the other trackerd following this bind; if that process is stale: SELECT pg_terminate_backend(%d);", si.activePID))
	} else {
		c.add("slot not in use", true, "slot "+slot+" is free", "")
	}
	switch si.walStatus {
	case "lost":
		c.add("slot WAL retained", false, "wal_status lost: the server removed WAL the slot needed; changes are lost",
			fmt.Sprintf("SELECT pg_drop_replication_slot('%s'); then take a new snapshot of the bind's tables", slot))
	case "unreserved":
		c.add("slot WAL retained", false, "wal_status unreserved: the slot is about to be invalidated",
			"let trackerd catch up now, or raise max_slot_wal_keep_size")
	case "":
		c.add("slot WAL retained", true, "wal_status not reported by this server version", "")
	default:
		c.add("slot WAL retained", true, "wal_status "+si.walStatus, "")
	}
	var behind int64
	if err := c.conn.QueryRow(ctx, `SELECT COALESCE(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), $1::text::pg_lsn), 0)::int8`,
		si.confirmedFlush).Scan(&behind); err != nil {
		c.fail("slot lag", err)
		return
	}
	c.add("slot lag", true, fmt.Sprintf("%d bytes of WAL behind the server", behind), "")
}

func (c *checker) checkPublication(major int, db string, ri roleInfo) {
	ctx, b := c.ctx, c.b
	var exists, all bool
	err := c.conn.QueryRow(ctx, `SELECT count(*) > 0, COALESCE(bool_or(puballtables), false) FROM pg_catalog.pg_publication WHERE pubname = $1`,
		b.Publication).Scan(&exists, &all)
	if err != nil {
		c.fail("publication", err)
		return
	}
	var issues []tableIssue
	if exists {
		what := "listed tables"
		if all {
			what = "all tables"
		}
		missing, err := unpublishedEntries(ctx, c.conn, b, major)
		if err != nil {
			c.fail("publication", err)
			return
		}
		if len(missing) > 0 {
			detail, fix, _ := strings.Cut(unpublishedError(b, missing).Error(), "; fix: ")
			c.add("publication", false, detail, fix)
		} else {
			c.add("publication", true, fmt.Sprintf("publication %s exists (%s)", b.Publication, what), "")
		}
		if issues, err = tableIssues(ctx, c.conn, b); err != nil {
			c.fail("replica identity", err)
			return
		}
	} else {
		var canCreate bool
		if err := c.conn.QueryRow(ctx, `SELECT pg_catalog.has_database_privilege(current_database(), 'CREATE')`).Scan(&canCreate); err != nil {
			c.fail("publication", err)
			return
		}
		tables, err := publishable(ctx, c.conn, b, major, db)
		switch {
		case err != nil:
			c.add("publication", false, c.cs.safe(err).Error(), "correct the bind's tables")
			return
		case ri.super && len(b.Tables) == 0:
			c.add("publication", true, fmt.Sprintf("publication %s will be created FOR ALL TABLES", b.Publication), "")
		case !canCreate:
			c.add("publication", false, fmt.Sprintf("publication %s does not exist and role %s may not create one in database %s", b.Publication, ri.name, db),
				fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s; or have a superuser create the publication", quoteIdent(db), quoteIdent(ri.name)))
		case len(tables) == 0:
			c.add("publication", false, fmt.Sprintf("publication %s does not exist and role %s owns no table to put in it", b.Publication, ri.name),
				fmt.Sprintf("name the bind's tables, or have a superuser run CREATE PUBLICATION %s FOR ALL TABLES;", quoteIdent(b.Publication)))
		default:
			c.add("publication", true, fmt.Sprintf("publication %s will be created for %d tables", b.Publication, len(tables)), "")
		}
		if issues, err = candidateIssues(ctx, c.conn, b, tables, ri.super && len(b.Tables) == 0); err != nil {
			c.fail("replica identity", err)
			return
		}
	}
	var bad []string
	for _, ti := range issues {
		if ti.noIdentity() {
			bad = append(bad, ti.name)
		}
	}
	if len(bad) == 0 {
		c.add("replica identity", true, "every published table has a primary key or a replica identity", "")
		return
	}
	c.add("replica identity", false,
		"tables without primary key or replica identity, whose UPDATEs and DELETEs PostgreSQL refuses while they are published: "+strings.Join(bad, ", "),
		"add a primary key to each, or ALTER TABLE <table> REPLICA IDENTITY FULL;")
}

const candidateIssuesQuery = `SELECT n.nspname::text, c.relname::text, c.relreplident::text,
	EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
	FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
	  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'
	ORDER BY 1, 2`

// candidateIssues lists the identity of the tables a publication still to be
// created would hold: every table (FOR ALL TABLES), or those given.
func candidateIssues(ctx context.Context, q querier, b binds.Bind, tables []tableRef, all bool) ([]tableIssue, error) {
	rows, err := q.Query(ctx, candidateIssuesQuery)
	if err != nil {
		return nil, err
	}
	var out []tableIssue
	for rows.Next() {
		var schema, table string
		ti := tableIssue{updDel: true}
		if err := rows.Scan(&schema, &table, &ti.identity, &ti.hasPK); err != nil {
			rows.Close()
			return nil, err
		}
		in := all
		for _, t := range tables {
			if t.schema == schema && t.table == table {
				in = true
			}
		}
		if !in || !b.Tracks(schema, table) && !all {
			continue
		}
		ti.name = quoteIdent(schema) + "." + quoteIdent(table)
		out = append(out, ti)
	}
	return out, rows.Err()
}
