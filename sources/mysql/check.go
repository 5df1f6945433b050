package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
)

// serverInfo is what trackerd reads about a server before following it.
type serverInfo struct {
	version  string
	mariadb  bool
	serverID uint32
	hostname string
	port     int
	uuid     string // MySQL @@server_uuid
	vars     map[string]string
	user     string // CURRENT_USER()
	privs    privileges
	// replicas are the server_ids of registered binlog readers (SHOW SLAVE
	// HOSTS); replicasErr says why they could not be listed.
	replicas    []replica
	replicasErr error
}

type replica struct {
	serverID uint32
	host     string
}

// flavor is "mariadb" or "mysql", as go-mysql spells it.
func (si *serverInfo) flavor() string {
	if si.mariadb {
		return "mariadb"
	}
	return "mysql"
}

// gtidMode reports whether resuming by GTID is possible: always on
// MariaDB, with gtid_mode=ON on MySQL.
func (si *serverInfo) gtidMode() bool {
	return si.mariadb || strings.EqualFold(si.vars["gtid_mode"], "ON")
}

// privileges are the current user's global privileges, as
// information_schema reports them.
type privileges struct {
	global map[string]bool
	// schemaSelect is true when SELECT is granted on the bind's database
	// or on tables in it.
	schemaSelect bool
	// viaRoles is true when roles are granted, whose privileges the
	// tables above do not show.
	viaRoles bool
	err      error
}

func (p *privileges) has(names ...string) bool {
	for _, n := range names {
		if p.global[n] || p.global["ALL PRIVILEGES"] {
			return true
		}
	}
	return false
}

// probe reads the server's identity, settings, the user's privileges and
// the registered binlog readers. Only a failure to reach or query the
// server at all is an error.
func probe(ctx context.Context, db *sql.DB, database string) (*serverInfo, error) {
	si := &serverInfo{vars: map[string]string{}}
	var sid uint64
	if err := db.QueryRowContext(ctx, `SELECT VERSION(), @@server_id, @@hostname, @@port, CURRENT_USER()`).
		Scan(&si.version, &sid, &si.hostname, &si.port, &si.user); err != nil {
		return nil, err
	}
	si.serverID = uint32(sid)
	si.mariadb = strings.Contains(strings.ToLower(si.version), "mariadb")
	rows, err := db.QueryContext(ctx, `SHOW GLOBAL VARIABLES WHERE Variable_name IN
('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata', 'gtid_mode', 'server_uuid',
 'binlog_row_value_options', 'binlog_expire_logs_seconds', 'expire_logs_days')`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			return nil, err
		}
		si.vars[strings.ToLower(k)] = v
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	si.uuid = si.vars["server_uuid"]
	si.privs = readPrivileges(ctx, db, si.user, database)
	si.replicas, si.replicasErr = listReplicas(ctx, db)
	return si, nil
}

// grantee renders CURRENT_USER() ("user@host") as information_schema's
// GRANTEE ('user'@'host').
func grantee(user string) string {
	i := strings.LastIndexByte(user, '@')
	if i < 0 {
		return "'" + user + "'"
	}
	return "'" + user[:i] + "'@'" + user[i+1:] + "'"
}

func readPrivileges(ctx context.Context, db *sql.DB, user, database string) privileges {
	p := privileges{global: map[string]bool{}}
	g := grantee(user)
	rows, err := db.QueryContext(ctx, `SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ?`, g)
	if err != nil {
		p.err = err
		return p
	}
	for rows.Next() {
		var priv string
		if err := rows.Scan(&priv); err == nil {
			p.global[strings.ToUpper(priv)] = true
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		p.err = err
		return p
	}
	if database != "" {
		var n int
		err := db.QueryRowContext(ctx, `SELECT
 (SELECT COUNT(*) FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = ? AND TABLE_SCHEMA = ? AND PRIVILEGE_TYPE = 'SELECT')
+(SELECT COUNT(*) FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE = ? AND TABLE_SCHEMA = ? AND PRIVILEGE_TYPE = 'SELECT')`,
			g, database, g, database).Scan(&n)
		p.schemaSelect = err == nil && n > 0
	}
	var roles int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.APPLICABLE_ROLES`).Scan(&roles); err == nil && roles > 0 {
		p.viaRoles = true
	}
	return p
}

// listReplicas lists the registered binlog readers: SHOW SLAVE HOSTS, or
// SHOW REPLICAS where the older spelling is gone.
func listReplicas(ctx context.Context, db *sql.DB) ([]replica, error) {
	rows, err := db.QueryContext(ctx, "SHOW SLAVE HOSTS")
	if err != nil {
		var err2 error
		rows, err2 = db.QueryContext(ctx, "SHOW REPLICAS")
		if err2 != nil {
			return nil, err
		}
	}
	cols, err := rows.Columns()
	if err != nil {
		rows.Close()
		return nil, err
	}
	var out []replica
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			rows.Close()
			return nil, err
		}
		var r replica
		for i, c := range cols {
			switch strings.ToLower(c) {
			case "server_id":
				id, _ := strconv.ParseUint(string(vals[i]), 10, 32)
				r.serverID = uint32(id)
			case "host":
				r.host = string(vals[i])
			}
		}
		out = append(out, r)
	}
	return out, errors.Join(rows.Err(), rows.Close())
}

// holder returns the registered reader with server_id id, if any.
func holder(rs []replica, id uint32) (replica, bool) {
	for _, r := range rs {
		if r.serverID == id {
			return r, true
		}
	}
	return replica{}, false
}

// prerequisites turns what probe read into check lines. A line with
// OK false makes Open fail; binlog_row_metadata other than FULL is only a
// warning (OK, with a fix), as information_schema stands in for it.
func prerequisites(si *serverInfo, b binds.Bind) []tracker.CheckResult {
	var out []tracker.CheckResult
	add := func(name string, ok bool, detail, fix string) {
		r := tracker.CheckResult{Name: name, OK: ok, Detail: detail}
		if !ok {
			r.Fix = fix
		}
		out = append(out, r)
	}
	// warn adds advice: the prerequisite holds, with something to consider.
	warn := func(name, detail, fix string) {
		out = append(out, tracker.CheckResult{Name: name, OK: true, Warn: true, Detail: detail, Fix: fix})
	}
	cnf := "in the server's configuration ([mysqld] or [mariadbd]) and restart"

	dialect := strings.ToLower(b.URI.Dialect)
	switch {
	case dialect == "mariadb" && !si.mariadb:
		add("server flavor", false, fmt.Sprintf("the URI says mariadb:// but the server is MySQL %s", si.version),
			"use a mysql:// URI for a MySQL server")
	default:
		add("server flavor", true, fmt.Sprintf("%s %s (binlog read as %s)", si.flavor(), si.version, si.flavor()), "")
	}

	logBin := strings.ToUpper(si.vars["log_bin"])
	add("log_bin", logBin == "ON" || logBin == "1", "log_bin is "+orUnset(si.vars["log_bin"]),
		"set log_bin (e.g. log_bin = mysql-bin) and server_id "+cnf)
	format := strings.ToUpper(si.vars["binlog_format"])
	add("binlog_format", format == "ROW", "binlog_format is "+orUnset(si.vars["binlog_format"]),
		"SET GLOBAL binlog_format = 'ROW' and set binlog_format = ROW "+cnf+"; sessions already connected keep their format")
	image := strings.ToUpper(si.vars["binlog_row_image"])
	add("binlog_row_image", image == "FULL", "binlog_row_image is "+orUnset(si.vars["binlog_row_image"]),
		"SET GLOBAL binlog_row_image = 'FULL' and set binlog_row_image = FULL "+cnf)
	meta := strings.ToUpper(si.vars["binlog_row_metadata"])
	if meta == "FULL" {
		add("binlog_row_metadata", true, "binlog_row_metadata is FULL", "")
	} else {
		warn("binlog_row_metadata",
			"binlog_row_metadata is "+orUnset(si.vars["binlog_row_metadata"])+": column names come from information_schema, so a bind behind an ALTER TABLE stops instead of naming old rows correctly",
			"SET GLOBAL binlog_row_metadata = 'FULL' and set binlog_row_metadata = FULL "+cnf)
	}
	if opts := si.vars["binlog_row_value_options"]; opts != "" {
		add("binlog_row_value_options", false, "binlog_row_value_options is "+opts+": JSON updates are logged as partial diffs",
			"SET GLOBAL binlog_row_value_options = ''")
	}

	// Privileges.
	p := si.privs
	switch {
	case p.err != nil:
		warn("privileges", "cannot read the user's privileges: "+p.err.Error(), "grant SELECT on information_schema privileges tables, or check by hand")
	default:
		roleNote := ""
		if p.viaRoles {
			roleNote = " (roles are granted too; their privileges are not checked)"
		}
		repl := p.has("REPLICATION SLAVE", "REPLICATION REPLICA")
		add("REPLICATION SLAVE privilege", repl || p.viaRoles,
			fmt.Sprintf("%s %s REPLICATION SLAVE%s", si.user, hasWord(repl), roleNote),
			fmt.Sprintf("GRANT REPLICATION SLAVE ON *.* TO %s", grantee(si.user)))
		client := p.has("REPLICATION CLIENT", "BINLOG MONITOR", "SUPER")
		name := "REPLICATION CLIENT"
		if si.mariadb {
			name = "BINLOG MONITOR"
		}
		add(name+" privilege", client || p.viaRoles,
			fmt.Sprintf("%s %s %s%s", si.user, hasWord(client), name, roleNote),
			fmt.Sprintf("GRANT %s ON *.* TO %s", name, grantee(si.user)))
		sel := p.has("SELECT") || p.schemaSelect
		on := "*.*"
		if b.URI.Database != "" {
			on = "`" + strings.ReplaceAll(b.URI.Database, "`", "``") + "`.*"
		}
		add("SELECT privilege", sel || p.viaRoles,
			fmt.Sprintf("%s %s SELECT on %s%s", si.user, hasWord(sel), on, roleNote),
			fmt.Sprintf("GRANT SELECT ON %s TO %s", on, grantee(si.user)))
	}

	// Our server_id must not be the server's own nor another reader's.
	switch r, held := holder(si.replicas, b.ServerID); {
	case b.ServerID == 0:
		add("reader server_id", false, "the bind has no server_id", "set the bind's server_id")
	case b.ServerID == si.serverID:
		add("reader server_id", false, fmt.Sprintf("the reader's server_id %d is the server's own", b.ServerID), "give the bind another server_id")
	case held:
		// Not a failure for `trackerd check`: it may be this very bind,
		// running (check then says so, from the bind's lease). Open
		// refuses it (tracker.ErrFenced) if it stays.
		warn("reader server_id", fmt.Sprintf("%s%d is connected from %s (this bind already running, or another reader)", ReaderConnected, b.ServerID, r.host),
			"give each reader its own server_id, or stop the other reader")
	case si.replicasErr != nil:
		warn("reader server_id", fmt.Sprintf("server_id %d: cannot list binlog readers (%v)", b.ServerID, si.replicasErr),
			"GRANT REPLICATION MASTER ADMIN (MariaDB) or REPLICATION SLAVE to see other readers")
	default:
		add("reader server_id", true, fmt.Sprintf("server_id %d is free", b.ServerID), "")
	}
	return out
}

// ReaderConnected begins the detail of the "reader server_id" check when a
// binlog reader with the bind's server_id is connected: `trackerd check`
// tells the bind's own running trackerd from another reader by its lease.
const ReaderConnected = "a binlog reader with server_id "

func hasWord(ok bool) string {
	if ok {
		return "has"
	}
	return "lacks"
}

func orUnset(s string) string {
	if s == "" {
		return "not set (unknown to this server)"
	}
	return s
}

// Check reports, without changing anything, whether a bind's server is
// ready to be followed: the connection, the server flavor against the
// URI, log_bin, binlog_format=ROW, binlog_row_image=FULL,
// binlog_row_metadata=FULL (a warning), the reader's privileges and a free
// server_id. It implements [tracker.CheckFunc].
func Check(ctx context.Context, b binds.Bind) []tracker.CheckResult {
	cc, err := newConnConfig(b.URI)
	if err != nil {
		return []tracker.CheckResult{{Name: "connection", OK: false, Detail: err.Error(), Fix: "fix the bind's URI"}}
	}
	db, err := openPool(cc, b.Pool, slog.New(slog.DiscardHandler))
	if err != nil {
		return []tracker.CheckResult{{Name: "connection", OK: false, Detail: err.Error(), Fix: "fix the bind's URI"}}
	}
	defer db.Close()
	qctx, cancel := withTimeout(ctx, b.Pool)
	defer cancel()
	si, err := probe(qctx, db, cc.db)
	if err != nil {
		err = classifyConnect(err, cc)
		fix := "check that the server runs and answers at " + cc.addr()
		if errors.Is(err, tracker.ErrConfig) {
			fix = "check the bind's user, password, database and grants"
		}
		return []tracker.CheckResult{{Name: "connection", OK: false, Detail: "connect " + cc.where() + ": " + err.Error(), Fix: fix}}
	}
	out := []tracker.CheckResult{{Name: "connection", OK: true, Detail: fmt.Sprintf("connected to %s as %s", cc.addr(), si.user)}}
	out = append(out, prerequisites(si, b)...)
	var st binlogStatus
	if st, err = masterStatus(qctx, db); err != nil {
		out = append(out, tracker.CheckResult{Name: "binlog status", OK: false, Detail: err.Error(),
			Fix: "grant REPLICATION CLIENT (MySQL) or BINLOG MONITOR (MariaDB), and turn log_bin on"})
	} else {
		out = append(out, tracker.CheckResult{Name: "binlog status", OK: true, Detail: fmt.Sprintf("binlog at %s:%d", st.file, st.pos)})
	}
	return out
}

// binlogStatus is the server's current binlog position.
type binlogStatus struct {
	file string
	pos  uint32
	gtid string // MySQL Executed_Gtid_Set
}

// masterStatus reads the current binlog position: SHOW BINARY LOG STATUS
// (MySQL 8.4+), SHOW MASTER STATUS otherwise.
func masterStatus(ctx context.Context, db *sql.DB) (binlogStatus, error) {
	var st binlogStatus
	rows, err := db.QueryContext(ctx, "SHOW MASTER STATUS")
	if err != nil {
		var err2 error
		if rows, err2 = db.QueryContext(ctx, "SHOW BINARY LOG STATUS"); err2 != nil {
			return st, err
		}
	}
	cols, err := rows.Columns()
	if err != nil {
		rows.Close()
		return st, err
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	found := false
	if rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			rows.Close()
			return st, err
		}
		found = true
		for i, c := range cols {
			switch strings.ToLower(c) {
			case "file":
				st.file = vals[i].String
			case "position":
				p, _ := strconv.ParseUint(vals[i].String, 10, 32)
				st.pos = uint32(p)
			case "executed_gtid_set":
				st.gtid = strings.Join(strings.Fields(vals[i].String), "")
			}
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return st, err
	}
	if !found || st.file == "" {
		return st, errors.New("the server reports no binlog position: log_bin is off")
	}
	return st, nil
}
