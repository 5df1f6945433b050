package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
)

// What `trackerd teardown` and `trackerd reset` do on a MySQL or MariaDB
// server. A binlog reader makes nothing on the server: teardown removes
// only the bind's checkpoints, and reset moves the checkpoint to the end
// of the binlog.

// serverIdentity is the source identity Open gives a bind on the server
// probe read (Source.Identity).
func serverIdentity(si *serverInfo, database string) string {
	if si.mariadb {
		return "mariadb/" + strconv.FormatUint(uint64(si.serverID), 10) + "/" + si.hostname + ":" + strconv.Itoa(si.port) + "/" + database
	}
	return "mysql/" + si.uuid + "/" + database
}

// sameServer reports whether identities a and b name one server and
// database: the same flavor, server (MySQL's server_uuid, MariaDB's
// server_id) and database; a MariaDB host name may differ (a recreated
// container's does).
func sameServer(a, b string) bool {
	fields := func(id string) (flavor, server, db string, ok bool) {
		parts := strings.Split(id, "/")
		switch {
		case len(parts) == 4 && parts[0] == "mariadb":
			return parts[0], parts[1], parts[3], true
		case len(parts) == 3 && parts[0] == "mysql":
			return parts[0], parts[1], parts[2], true
		}
		return "", "", "", false
	}
	fa, sa, da, oka := fields(a)
	fb, sb, db, okb := fields(b)
	return oka && okb && fa == fb && sa == sb && da == db
}

// probeBind connects to b's server and reads what Open would.
func probeBind(ctx context.Context, b binds.Bind) (*sql.DB, *connConfig, *serverInfo, error) {
	cc, err := newConnConfig(b.URI)
	if err != nil {
		return nil, nil, nil, tracker.ConfigError(fmt.Errorf("mysql: %w", err))
	}
	db, err := openPool(cc, b.Pool, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, nil, nil, tracker.ConfigError(fmt.Errorf("mysql: %w", err))
	}
	qctx, cancel := withTimeout(ctx, b.Pool)
	defer cancel()
	si, err := probe(qctx, db, cc.db)
	if err != nil {
		db.Close()
		return nil, nil, nil, fmt.Errorf("mysql: connect %s: %w", cc.where(), classifyConnect(err, cc))
	}
	return db, cc, si, nil
}

// Footprint reads b's source identity; a binlog reader makes nothing on
// the server, so it lists no object.
func Footprint(ctx context.Context, b binds.Bind) (tracker.Footprint, error) {
	db, cc, si, err := probeBind(ctx, b)
	if err != nil {
		return tracker.Footprint{}, err
	}
	db.Close()
	id := serverIdentity(si, cc.db)
	return tracker.Footprint{Identity: id, SameServer: func(other string) bool { return sameServer(id, other) }}, nil
}

// Reset reads the end of b's binlog: the position a bind whose checkpoint
// cannot be resumed (binlogs purged) moves to. from is the bind's
// checkpoint position ("" when it has none): Skipped says what lies
// between. Nothing changes on the server.
func Reset(ctx context.Context, b binds.Bind, from string) (tracker.Reset, error) {
	var r tracker.Reset
	var old position
	if from != "" {
		p, err := parsePosition(from)
		if err != nil {
			return r, tracker.ConfigError(fmt.Errorf("mysql: the checkpoint's position: %w", err))
		}
		old = p
	}
	db, cc, si, err := probeBind(ctx, b)
	if err != nil {
		return r, err
	}
	defer db.Close()
	r.Identity = serverIdentity(si, cc.db)
	qctx, cancel := withTimeout(ctx, b.Pool)
	defer cancel()
	// As Open's current position: MariaDB's GTID state first, then the
	// file and offset after it.
	var gtid sql.NullString
	if si.mariadb {
		if err := db.QueryRowContext(qctx, "SELECT @@GLOBAL.gtid_binlog_pos").Scan(&gtid); err != nil {
			return r, fmt.Errorf("mysql: read the binlog's GTID position: %w", classifyConnect(err, cc))
		}
	}
	st, err := masterStatus(qctx, db)
	if err != nil {
		return r, fmt.Errorf("mysql: read the binlog's end: %w", classifyConnect(err, cc))
	}
	p := position{File: st.file, Pos: st.pos}
	switch {
	case si.mariadb:
		p.GTID = gtid.String
	case si.gtidMode():
		p.GTID = st.gtid
	}
	r.Position = p.String()
	if from != "" {
		r.Skipped = fmt.Sprintf("changes committed after %s up to %s are never published", describe(old), describe(p))
	}
	return r, nil
}

// describe renders a position for people: "mariadb-bin.000003:5678 (GTID
// 0-1-1234)".
func describe(p position) string {
	s := p.File + ":" + strconv.FormatUint(uint64(p.Pos), 10)
	if p.File == "" {
		s = "GTID " + p.GTID
	} else if p.GTID != "" {
		s += " (GTID " + p.GTID + ")"
	}
	return s
}
