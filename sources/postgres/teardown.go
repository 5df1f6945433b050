package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
)

// What `trackerd teardown` and `trackerd reset` do on a PostgreSQL server.
//
// trackerd marks what it makes with a comment: COMMENT ON PUBLICATION (and
// ON EVENT TRIGGER, for a feature that makes one) with ownerComment's
// text, naming the bind. Teardown drops a publication only with that mark,
// or, for one made before the mark existed, under the bind's default name
// (trackerd_<key>) and without any comment; it never drops one a user
// made and named. The slot is the bind's own by its name.

// ownerComment is the comment trackerd writes on what it makes for bind.
func ownerComment(b binds.Bind) string {
	return ownerMark + strconv.Quote(b.Key) + "; trackerd teardown removes it"
}

const ownerMark = "trackerd: created for bind "

// commentOwner returns the bind key a comment written by ownerComment
// names, and whether it is one.
func commentOwner(comment string) (string, bool) {
	rest, ok := strings.CutPrefix(comment, ownerMark)
	if !ok {
		return "", false
	}
	key, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return "", false
	}
	key, err = strconv.Unquote(key)
	return key, err == nil
}

// identityOf is the source identity Open gives a bind (Source.Identity).
func identityOf(systemID, database, slot string) string {
	return fmt.Sprintf("pg/%s/%s/%s", systemID, database, slot)
}

// Footprint lists what trackerd made for b on its server, without changing
// anything: the replication slot, the publication (or why it is left
// alone), and the bind's event triggers ("none" when there are none).
func Footprint(ctx context.Context, b binds.Bind) (tracker.Footprint, error) {
	t, err := connectTeardown(ctx, b)
	if err != nil {
		return tracker.Footprint{}, err
	}
	defer t.close()
	fp := tracker.Footprint{Identity: t.identity}
	slot, err := t.slotObject(ctx)
	if err != nil {
		return fp, t.cs.safe(fmt.Errorf("postgres: replication slot %s: %w", b.Slot, err))
	}
	pub, err := t.publicationObject(ctx)
	if err != nil {
		return fp, t.cs.safe(fmt.Errorf("postgres: publication %s: %w", b.Publication, err))
	}
	triggers, err := t.triggerObjects(ctx)
	if err != nil {
		return fp, t.cs.safe(fmt.Errorf("postgres: event triggers: %w", err))
	}
	fp.Objects = append([]tracker.ServerObject{slot, pub}, triggers...)
	return fp, nil
}

// RemoveFootprint removes the removable objects of fp (a Footprint of b),
// the slot first, and returns what it removed, in words. It stops at the
// first failure; an object already gone counts as removed.
func RemoveFootprint(ctx context.Context, b binds.Bind, fp tracker.Footprint) ([]string, error) {
	t, err := connectTeardown(ctx, b)
	if err != nil {
		return nil, err
	}
	defer t.close()
	if t.identity != fp.Identity {
		return nil, fmt.Errorf("postgres: the bind's server is now %s, not %s as listed: list it again", t.identity, fp.Identity)
	}
	var done []string
	for _, o := range fp.Objects {
		if !o.Removable() {
			continue
		}
		var err error
		switch o.Kind {
		case kindSlot:
			_, err = t.conn.Exec(ctx, `SELECT pg_catalog.pg_drop_replication_slot($1)`, o.Name)
			switch pgCode(err) {
			case "42704":
				err = nil
			case "55006":
				err = fmt.Errorf("%w: %w", fencedError(o.Name, pidFromError(err)), err)
			}
		case kindPublication:
			_, err = t.conn.Exec(ctx, "DROP PUBLICATION IF EXISTS "+quoteIdent(o.Name))
		case kindTrigger:
			_, err = t.conn.Exec(ctx, "DROP EVENT TRIGGER IF EXISTS "+quoteIdent(o.Name))
		default:
			err = errors.New("unknown kind")
		}
		if err != nil {
			return done, t.cs.safe(fmt.Errorf("postgres: drop %s %s: %w", o.Kind, o.Name, err))
		}
		done = append(done, "dropped "+o.Kind+" "+o.Name)
	}
	return done, nil
}

// The kinds of object a bind's footprint holds.
const (
	kindSlot        = "replication slot"
	kindPublication = "publication"
	kindTrigger     = "event trigger"
)

// teardownConn is a query connection to a bind's server, with what
// Footprint and Reset need to know of it.
type teardownConn struct {
	b        binds.Bind
	cs       *connSettings
	conn     *pgx.Conn
	major    int
	database string
	identity string
}

// connectTeardown connects to b's server: a query connection, and a
// replication connection for as long as it takes to read the system
// identifier (which names the bind's checkpoint).
func connectTeardown(ctx context.Context, b binds.Bind) (*teardownConn, error) {
	if !validSlotName(b.Slot) {
		return nil, tracker.ConfigError(fmt.Errorf("postgres: replication slot name %q: use 1 to 63 lower-case letters, digits and underscores", b.Slot))
	}
	cs, err := newConnSettings(b, nil)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	rc, err := cs.connectRepl(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	ident, err := pglogrepl.IdentifySystem(ctx, rc)
	rc.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, cs.safe(fmt.Errorf("postgres: identify system: %w", err))
	}
	conn, err := pgx.ConnectConfig(ctx, cs.pool.ConnConfig)
	if err != nil {
		return nil, cs.safe(fmt.Errorf("postgres: %w", cs.classifyConnect(err, false)))
	}
	major, err := serverMajor(conn.PgConn().ParameterStatus("server_version"))
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return &teardownConn{b: b, cs: cs, conn: conn, major: major, database: ident.DBName,
		identity: identityOf(ident.SystemID, ident.DBName, b.Slot)}, nil
}

func (t *teardownConn) close() { t.conn.Close(context.Background()) }

// slotObject describes the bind's replication slot.
func (t *teardownConn) slotObject(ctx context.Context) (tracker.ServerObject, error) {
	slot := t.b.Slot
	o := tracker.ServerObject{Kind: kindSlot, Name: slot}
	si, ok, err := readSlot(ctx, t.conn, slot, t.major)
	if err != nil {
		return o, err
	}
	if !ok {
		o.Missing, o.Detail = true, "not on the server"
		return o, nil
	}
	switch {
	case si.slotType != "logical" || si.plugin != "pgoutput":
		o.Keep = fmt.Sprintf("a %s slot with plugin %q, not one trackerd made", si.slotType, si.plugin)
		return o, nil
	case si.database != t.database:
		o.Keep = fmt.Sprintf("it belongs to database %q, not the bind's %q", si.database, t.database)
		return o, nil
	case si.temporary:
		o.Keep = "a temporary slot, not one trackerd made; it goes with its session"
		return o, nil
	}
	var retained int64
	if err := t.conn.QueryRow(ctx, `SELECT COALESCE(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn), 0)::int8
		FROM pg_catalog.pg_replication_slots WHERE slot_name = $1`, slot).Scan(&retained); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return o, err
	}
	state := "inactive"
	if si.active {
		state = fmt.Sprintf("active (PID %d)", si.activePID)
		o.Busy = fmt.Sprintf("in use by PID %d", si.activePID)
	}
	o.Detail = fmt.Sprintf("logical pgoutput slot, %s, confirmed_flush_lsn %s", state, orNone(si.confirmedFlush))
	if si.walStatus != "" {
		o.Detail += ", wal_status " + si.walStatus
	}
	o.Detail += fmt.Sprintf(", %d bytes of WAL retained", retained)
	return o, nil
}

// publicationObject describes the bind's publication, and whether trackerd
// made it.
func (t *teardownConn) publicationObject(ctx context.Context) (tracker.ServerObject, error) {
	b := t.b
	o := tracker.ServerObject{Kind: kindPublication, Name: b.Publication}
	var all bool
	var comment string
	var tables int
	err := t.conn.QueryRow(ctx, `SELECT p.puballtables, COALESCE(pg_catalog.obj_description(p.oid, 'pg_publication'), ''),
		(SELECT count(*) FROM pg_catalog.pg_publication_tables pt WHERE pt.pubname = p.pubname)::int
		FROM pg_catalog.pg_publication p WHERE p.pubname = $1`, b.Publication).Scan(&all, &comment, &tables)
	if errors.Is(err, pgx.ErrNoRows) {
		o.Missing, o.Detail = true, "not in database "+t.database
		return o, nil
	}
	if err != nil {
		return o, err
	}
	what := fmt.Sprintf("for %d tables", tables)
	if all {
		what = "FOR ALL TABLES"
	}
	owner, marked := commentOwner(comment)
	defaultName := binds.SanitizeName("trackerd_" + b.Key)
	switch {
	case marked && owner == b.Key:
		o.Detail = what + ", made by trackerd for this bind (its comment says so)"
	case marked:
		o.Detail = what
		o.Keep = fmt.Sprintf("trackerd made it for bind %q (its comment says so), which may still use it", owner)
	case comment == "" && b.Publication == defaultName:
		o.Detail = what + ", under the name trackerd gives the bind's publication and without a comment: made by a trackerd from before comments were written"
	case comment != "":
		o.Detail = what
		o.Keep = fmt.Sprintf("not made by trackerd (its comment is %q); drop it yourself if nothing else uses it: DROP PUBLICATION %s;", comment, quoteIdent(b.Publication))
	default:
		o.Detail = what
		o.Keep = fmt.Sprintf("not made by trackerd: it has no trackerd comment and is not named %s, as trackerd names the bind's publication; drop it yourself if nothing else uses it: DROP PUBLICATION %s;",
			defaultName, quoteIdent(b.Publication))
	}
	return o, nil
}

// triggerObjects lists the event triggers trackerd made for the bind
// (those whose comment names it), or one missing "event trigger" object
// when there are none.
func (t *teardownConn) triggerObjects(ctx context.Context) ([]tracker.ServerObject, error) {
	rows, err := t.conn.Query(ctx, `SELECT evtname::text, evtevent::text, COALESCE(pg_catalog.obj_description(oid, 'pg_event_trigger'), '')
		FROM pg_catalog.pg_event_trigger ORDER BY 1`)
	if err != nil {
		return nil, err
	}
	var out []tracker.ServerObject
	for rows.Next() {
		var name, event, comment string
		if err := rows.Scan(&name, &event, &comment); err != nil {
			rows.Close()
			return nil, err
		}
		if owner, ok := commentOwner(comment); ok && owner == t.b.Key {
			out = append(out, tracker.ServerObject{Kind: kindTrigger, Name: name, Detail: "on " + event + ", made by trackerd for this bind (its comment says so)"})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		out = append(out, tracker.ServerObject{Kind: kindTrigger, Missing: true, Detail: "none"})
	}
	return out, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// Reset moves b to its server's current position, for a bind whose
// checkpoint cannot be resumed: an invalidated slot (wal_status lost) is
// dropped, a missing one created (with the publication, when that is
// missing too), and an existing one advanced to the server's current WAL
// position with pg_replication_slot_advance. from is the bind's checkpoint
// position ("" when it has none): Skipped says what lies between it and
// the new position. A slot in use refuses (tracker.ErrFenced).
func Reset(ctx context.Context, b binds.Bind, from string, opts tracker.SourceOptions) (tracker.Reset, error) {
	var r tracker.Reset
	old, err := parsePosition(from)
	if err != nil {
		return r, tracker.ConfigError(fmt.Errorf("postgres: the checkpoint's position %q: %w", from, err))
	}
	t, err := connectTeardown(ctx, b)
	if err != nil {
		return r, err
	}
	defer t.close()
	r.Identity = t.identity
	si, exists, err := readSlot(ctx, t.conn, b.Slot, t.major)
	if err != nil {
		return r, t.cs.safe(fmt.Errorf("postgres: look up replication slot %s: %w", b.Slot, err))
	}
	if exists {
		if err := checkSlot(b.Slot, t.database, si); err != nil && !errors.Is(err, tracker.ErrResnapshotRequired) {
			return r, fmt.Errorf("postgres: %w", err)
		}
		if si.active {
			return r, fmt.Errorf("postgres: %w", fencedError(b.Slot, int(si.activePID)))
		}
		if si.walStatus == "lost" {
			if _, err := t.conn.Exec(ctx, `SELECT pg_catalog.pg_drop_replication_slot($1)`, b.Slot); err != nil {
				return r, t.cs.safe(fmt.Errorf("postgres: drop the invalidated replication slot %s: %w", b.Slot, err))
			}
			r.Done = append(r.Done, fmt.Sprintf("dropped replication slot %s, which the server had invalidated (wal_status lost; confirmed_flush_lsn %s)", b.Slot, orNone(si.confirmedFlush)))
			exists = false
		}
	}
	// Open makes what is missing, as `trackerd run` would.
	s, err := open(ctx, b, opts, hooks{})
	if err != nil {
		return r, err
	}
	defer s.Close()
	if s.identity != r.Identity {
		return r, fmt.Errorf("postgres: the server's identity changed from %s to %s while resetting", r.Identity, s.identity)
	}
	at := s.slotConfirmed
	if !exists {
		r.Done = append(r.Done, fmt.Sprintf("created replication slot %s at %s", b.Slot, formatLSN(at)))
	} else {
		var end string
		err := s.pool.QueryRow(ctx, `SELECT end_lsn::text FROM pg_catalog.pg_replication_slot_advance($1, pg_catalog.pg_current_wal_lsn())`, b.Slot).Scan(&end)
		if err != nil {
			if pgCode(err) == "55006" {
				return r, fmt.Errorf("postgres: %w", fencedError(b.Slot, pidFromError(err)))
			}
			return r, s.cs.safe(fmt.Errorf("postgres: advance replication slot %s: %w", b.Slot, err))
		}
		l, err := parseLSN(end)
		if err != nil {
			return r, fmt.Errorf("postgres: advance replication slot %s: end %q: %w", b.Slot, end, err)
		}
		r.Done = append(r.Done, fmt.Sprintf("advanced replication slot %s from %s to %s", b.Slot, formatLSN(at), formatLSN(l)))
		at = max(at, l)
	}
	at = max(at, old.through)
	r.Position = formatLSN(at)
	if from != "" {
		r.Skipped = skippedWAL(old, at)
	}
	return r, nil
}

// skippedWAL says what moving a bind from old to at skips.
func skippedWAL(old position, at lsn) string {
	var msg string
	if at > old.through {
		msg = fmt.Sprintf("changes committed after %s up to %s (%d bytes of WAL) are never published", formatLSN(old.through), formatLSN(at), uint64(at-old.through))
	} else {
		msg = fmt.Sprintf("nothing: the server's position is the checkpoint's, %s", formatLSN(old.through))
	}
	if n := len(old.prepared); n > 0 {
		msg += fmt.Sprintf("; the %d prepared transactions the checkpoint carried are no longer followed (their events at COMMIT PREPARED may never be published)", n)
	}
	return msg
}
