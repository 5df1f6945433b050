package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/trackerd/trackerd/tracker"
)

// xaConn is a connection for XA statements, whose prepared transactions
// are rolled back when the test ends (a prepared transaction holds its
// locks, and the database could not be dropped).
type xaConn struct {
	e    *env
	conn *sql.Conn
	tag  string
}

func (e *env) xaConn() *xaConn {
	e.t.Helper()
	conn, err := e.dbx.Conn(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	x := &xaConn{e: e, conn: conn, tag: fmt.Sprintf("trk%06d", rand.IntN(1000000))}
	// Registered after newEnv's cleanup, so it runs before the DROP. The
	// connection is closed first: a prepared transaction belongs to its
	// connection while it lives.
	e.t.Cleanup(func() {
		conn.Close()
		rows, err := e.admin.Query("XA RECOVER")
		if err == nil {
			var ids []string
			for rows.Next() {
				var format, gl, bl int
				var data string
				if rows.Scan(&format, &gl, &bl, &data) == nil && strings.HasPrefix(data, x.tag) {
					ids = append(ids, data)
				}
			}
			rows.Close()
			for _, id := range ids {
				e.admin.Exec("XA ROLLBACK '" + id + "'")
			}
		}
	})
	return x
}

// committedTx assembles the recorded changes as the tracker does with
// streamed transactions: by key, a Begin of a key already open starting it
// again, a Commit releasing its changes, a Rollback dropping them.
func committedTx(r *recorder) []*tracker.Change {
	var out []*tracker.Change
	open := map[string][]*tracker.Change{}
	for _, rec := range r.snapshot() {
		switch rec.Kind {
		case tracker.RecordBegin:
			open[rec.Tx.TxKey] = []*tracker.Change{}
		case tracker.RecordChange:
			open[rec.Change.TxKey] = append(open[rec.Change.TxKey], rec.Change)
		case tracker.RecordCommit:
			out = append(out, open[rec.Tx.TxKey]...)
			delete(open, rec.Tx.TxKey)
		case tracker.RecordRollback:
			delete(open, rec.Tx.TxKey)
		}
	}
	return out
}

// id is a test-unique xid.
func (x *xaConn) id(name string) string { return x.tag + name }

func (x *xaConn) exec(qs ...string) {
	x.e.t.Helper()
	for _, q := range qs {
		if _, err := x.conn.ExecContext(context.Background(), q); err != nil {
			x.e.t.Fatalf("%s: %v", q, err)
		}
	}
}

// TestIntegrationXA follows XA transactions on the real server: a
// prepared one's changes are handed over at XA PREPARE as a streamed
// transaction, committed at XA COMMIT or rolled back at XA ROLLBACK, and
// XA COMMIT ... ONE PHASE is an ordinary transaction. After a restart from
// a position taken while one is prepared, it is handed over again (same
// key and indexes) while what followed it is not, and its XA COMMIT
// commits it.
func TestIntegrationXA(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
	e.exec("CREATE TABLE u (id INT PRIMARY KEY)")
	b := e.bind()
	b.Tables = []string{"t"}
	s := e.open(b, nil, true)
	rec := &recorder{}
	run := e.start(s, currentPos(t, s), rec)
	x := e.xaConn()
	a, r, one, p := x.id("a"), x.id("r"), x.id("one"), x.id("p")

	e.exec("INSERT INTO t VALUES (1, 'plain')")
	x.exec("XA START '"+a+"'", "INSERT INTO u VALUES (1)", "INSERT INTO t VALUES (2, 'xa'), (3, 'xa')", "XA END '"+a+"'", "XA PREPARE '"+a+"'")
	waitFor(t, "the prepared transaction's changes", waitLong, func() bool { return len(rec.changes()) >= 3 })
	recs := rec.snapshot()
	var begin tracker.Record
	for _, rr := range recs {
		if rr.Kind == tracker.RecordBegin {
			begin = rr
		}
	}
	if !begin.Tx.Streamed {
		t.Fatalf("the XA transaction's Begin %+v is not streamed", begin.Tx)
	}
	xaKey := begin.Tx.TxKey
	cs := rec.changes()
	if cs[1].Index != 1 || cs[2].Index != 2 || cs[1].TxKey != xaKey {
		t.Errorf("prepared changes: index %d, %d (want 1, 2: u's row is 0), key %s", cs[1].Index, cs[2].Index, cs[1].TxKey)
	}
	if got := kinds(recs); !strings.HasSuffix(got, "BCCK") {
		t.Errorf("records %s, want ...BCCK (the prepare ends with a keepalive)", got)
	}
	waitFor(t, "the position listing the prepared transaction", waitLong, func() bool { return strings.Contains(rec.lastPos(), `"xa":[`) })

	e.exec("INSERT INTO t VALUES (4, 'while prepared')")
	x.exec("XA COMMIT '" + a + "'")
	x.exec("XA START '"+r+"'", "INSERT INTO t VALUES (5, 'rolled back')", "XA END '"+r+"'", "XA PREPARE '"+r+"'")
	x.exec("XA ROLLBACK '" + r + "'")
	x.exec("XA START '"+one+"'", "INSERT INTO t VALUES (6, 'one phase')", "XA END '"+one+"'", "XA COMMIT '"+one+"' ONE PHASE")
	waitFor(t, "six changes", waitLong, func() bool { return len(rec.changes()) >= 6 })
	waitFor(t, "the last commit", waitLong, func() bool {
		recs := rec.snapshot()
		return recs[len(recs)-1].Kind != tracker.RecordChange && len(committedTx(rec)) >= 5
	})
	var got []string
	for _, c := range committedTx(rec) {
		got = append(got, rowMap(t, c.After)["id"])
	}
	if !slices.Equal(got, []string{"1", "4", "2", "3", "6"}) {
		t.Errorf("committed ids %v, want [1 4 2 3 6] (the XA transaction commits after 4)", got)
	}
	var commits, rollbacks []string
	for _, rr := range rec.snapshot() {
		switch rr.Kind {
		case tracker.RecordCommit:
			commits = append(commits, rr.Tx.TxKey)
		case tracker.RecordRollback:
			rollbacks = append(rollbacks, rr.Tx.TxKey)
		}
	}
	if !slices.Contains(commits, xaKey) || len(rollbacks) != 1 {
		t.Errorf("commits %v (want %s among them), rollbacks %v (want one)", commits, xaKey, rollbacks)
	}
	if strings.Contains(rec.lastPos(), `"xa"`) {
		t.Errorf("position %s still lists XA transactions", rec.lastPos())
	}

	// Restart while one is prepared.
	x.exec("XA START '"+p+"'", "INSERT INTO t VALUES (7, 'prepared'), (8, 'prepared')", "XA END '"+p+"'", "XA PREPARE '"+p+"'")
	e.exec("INSERT INTO t VALUES (9, 'after prepare')")
	waitFor(t, "9 changes", waitLong, func() bool { return len(rec.changes()) >= 9 })
	waitFor(t, "the commit of 9", waitLong, func() bool { return len(committedTx(rec)) >= 6 })
	saved := rec.lastPos()
	if !strings.Contains(saved, `"xa":[`) {
		t.Fatalf("position %s does not list the prepared transaction", saved)
	}
	var pKey string
	var pIdx []int64
	for _, c := range rec.changes() {
		if v := rowMap(t, c.After)["id"]; v == "7" || v == "8" {
			pKey = c.TxKey
			pIdx = append(pIdx, c.Index)
		}
	}
	if err := run.stop(t); err != nil {
		t.Fatal(err)
	}
	x.exec("XA COMMIT '" + p + "'")
	e.exec("INSERT INTO t VALUES (10, 'after restart')")

	s2 := e.open(b, nil, true)
	rec2 := &recorder{}
	e.start(s2, saved, rec2)
	waitFor(t, "three changes after the restart", waitLong, func() bool { return len(committedTx(rec2)) >= 3 })
	var ids []string
	var idx []int64
	for _, c := range rec2.changes() {
		ids = append(ids, rowMap(t, c.After)["id"])
		if c.TxKey == pKey {
			idx = append(idx, c.Index)
		}
	}
	if !slices.Equal(ids, []string{"7", "8", "10"}) {
		t.Errorf("after the restart: ids %v, want [7 8 10] (the prepared transaction again, not 9)", ids)
	}
	if !slices.Equal(idx, pIdx) {
		t.Errorf("indexes again %v, first %v", idx, pIdx)
	}
	var cids []string
	for _, c := range committedTx(rec2) {
		cids = append(cids, rowMap(t, c.After)["id"])
	}
	if !slices.Equal(cids, []string{"7", "8", "10"}) {
		t.Errorf("committed after the restart: %v, want [7 8 10]", cids)
	}
}

// TestIntegrationIndexUntracked: rows of an untracked table with every
// column type take their places in the transaction, counted by walking
// their images by size.
func TestIntegrationIndexUntracked(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE v (
  id INT PRIMARY KEY,
  ubig BIGINT UNSIGNED, tiny TINYINT, med MEDIUMINT, dec65 DECIMAL(65,30), dec52 DECIMAL(5,2),
  dt DATETIME(6), dt0 DATETIME, ts TIMESTAMP(3) NULL DEFAULT NULL, d DATE, tm TIME(3), y YEAR,
  e ENUM('small','medium','large'), s SET('a','b','c','d','e','f','g','h','i'), bits BIT(64), bit5 BIT(5),
  j JSON, lat VARCHAR(300) CHARACTER SET latin1, emoji VARCHAR(20) CHARACTER SET utf8mb4, lt TEXT, mt MEDIUMTEXT, lb LONGBLOB,
  vb VARBINARY(20), bin BINARY(4), ch CHAR(10), f FLOAT, db DOUBLE, g GEOMETRY, ip INET6, u UUID, nul VARCHAR(5))`)
	e.exec("CREATE TABLE t (id INT PRIMARY KEY)")
	b := e.bind()
	b.Tables = []string{"t"}
	s := e.open(b, nil, true)
	rec := &recorder{}
	e.start(s, currentPos(t, s), rec)
	row := func(id int) string {
		return fmt.Sprintf(`(%d, 18446744073709551615, -128, -8388608, '-1234567890.123', 3.5,
  '2024-02-29 23:59:58.123456', '1999-12-31 23:59:59', '2024-05-01 15:30:00.5', '2024-05-01', '-12:34:56.5', 2024,
  'medium', 'a,c,i', b'101', b'10101', '{"a": [1, 2.5, {"b": null}]}', REPEAT('é', 260), 'hi 😀', REPEAT('x', 300), 'mt', REPEAT('b', 70000),
  X'00FF10', X'0102', 'abc', 0.1, 0.1, ST_GeomFromText('POINT(1 2)'), '2001:db8::1', '6ba7b810-9dad-11d1-80b4-00c04fd430c8', NULL)`, id)
	}
	tx, err := e.dbx.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"INSERT INTO v VALUES " + row(1) + ", " + row(2), // 0, 1
		"INSERT INTO t VALUES (1)",                       // 2
		"UPDATE v SET tiny = 1, j = '[1]'",               // 3, 4
		"INSERT INTO v (id) VALUES (3)",                  // 5
		"DELETE FROM v WHERE id = 1",                     // 6
		"INSERT INTO t VALUES (2), (3)",                  // 7, 8
	} {
		if _, err := tx.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three changes", waitLong, func() bool { return len(rec.committed()) >= 3 })
	var got []int64
	for _, c := range rec.committed() {
		got = append(got, c.Index)
	}
	if !slices.Equal(got, []int64{2, 7, 8}) {
		t.Errorf("indexes %v, want [2 7 8]", got)
	}
}

// TestIntegrationAdopt: a checkpoint of the same server_id and database
// under another host name (a recreated container) is adopted when its
// position is in this server's binlog, and refused, saying why, when not.
func TestIntegrationAdopt(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE t (id INT PRIMARY KEY)")
	s := e.open(e.bind(), nil, true)
	if !s.info.mariadb {
		t.Skip("the identities of MySQL servers hold their server_uuid, which survives a recreated container")
	}
	e.exec("INSERT INTO t VALUES (1)")
	pos, err := parsePosition(currentPos(t, s))
	if err != nil {
		t.Fatal(err)
	}
	me, _ := parseIdentity(s.Identity())
	id := func(server, host, db string) string { return "mariadb/" + server + "/" + host + "/" + db }
	recreated := id(me.server, "0123456789ab:3306", me.db)
	wrongGTID := pos
	wrongGTID.GTID = "0-1-1"
	cases := []struct {
		name     string
		source   string
		position string
		want     error
		says     string
	}{
		{"recreated container", recreated, pos.String(), nil, ""},
		{"other database", id(me.server, "0123456789ab:3306", me.db+"x"), pos.String(), tracker.ErrOtherSource, ""},
		{"other server_id", id(me.server+"7", me.host, me.db), pos.String(), tracker.ErrOtherSource, ""},
		{"mysql", "mysql/3e11fa47-71ca-11e1-9e33-c80aa9429562/" + me.db, pos.String(), tracker.ErrOtherSource, ""},
		{"other GTID there", recreated, wrongGTID.String(), errAny, "GTID position"},
		{"file not here", recreated, position{GTID: pos.GTID, File: "mariadb-bin.999999", Pos: 4}.String(), errAny, "not on the server"},
		{"not an event start", recreated, position{GTID: pos.GTID, File: pos.File, Pos: pos.Pos - 1}.String(), errAny, "not the start of an event"},
		{"past the end", recreated, position{GTID: pos.GTID, File: pos.File, Pos: 1 << 31}.String(), errAny, "past the end"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Adopt(t.Context(), tracker.Checkpoint{Bind: "b", Source: tc.source, Position: tc.position})
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("Adopt: %v, want nil", err)
			case tc.want == tracker.ErrOtherSource && !errors.Is(err, tracker.ErrOtherSource):
				t.Fatalf("Adopt: %v, want ErrOtherSource", err)
			case tc.want == errAny && (err == nil || errors.Is(err, tracker.ErrOtherSource) || !strings.Contains(err.Error(), tc.says)):
				t.Fatalf("Adopt: %v, want an error saying %q", err, tc.says)
			}
			if err != nil {
				t.Logf("Adopt: %v", err)
			}
		})
	}
}

var errAny = errors.New("any error")
