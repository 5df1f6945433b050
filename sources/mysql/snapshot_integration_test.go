package mysql

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trackerd/trackerd/tracker"
)

// snapTableOf returns what SnapshotTables says of one table.
func snapTableOf(t testing.TB, s *Source, name string) tracker.SnapshotTable {
	t.Helper()
	ts, err := s.SnapshotTables(t.Context(), []string{name})
	if err != nil {
		t.Fatalf("SnapshotTables(%s): %v", name, err)
	}
	return ts[0]
}

// readAll reads a table chunk by chunk.
func readAll(t testing.TB, s *Source, tbl tracker.SnapshotTable, where string, limit int) ([]*tracker.Change, []tracker.Chunk) {
	t.Helper()
	var rows []*tracker.Change
	var chunks []tracker.Chunk
	after := ""
	for i := 0; ; i++ {
		ch, err := s.ReadChunk(t.Context(), tracker.ChunkRequest{Table: tbl, After: after, Where: where, Limit: limit})
		if err != nil {
			t.Fatalf("ReadChunk %d: %v", i, err)
		}
		rows = append(rows, ch.Rows...)
		chunks = append(chunks, ch)
		after = ch.Next
		if ch.Done {
			return rows, chunks
		}
		if i > 100000 {
			t.Fatal("no end")
		}
	}
}

// TestIntegrationSnapshotValues: a snapshot row's values are the stream's
// for the same row, byte for byte, over every type.
func TestIntegrationSnapshotValues(t *testing.T) {
	for _, native := range []bool{true, false} {
		t.Run(fmt.Sprintf("native_unicode=%v", native), func(t *testing.T) {
			e := newEnv(t)
			e.exec(`CREATE TABLE v (
  id INT PRIMARY KEY,
  ubig BIGINT UNSIGNED, sbig BIGINT, small BIGINT, tiny TINYINT, utiny TINYINT UNSIGNED, umed MEDIUMINT UNSIGNED, med MEDIUMINT, sint SMALLINT, uint INT UNSIGNED,
  dec65 DECIMAL(65,30), dec52 DECIMAL(5,2), dec0 DECIMAL(10,0),
  dt DATETIME(6), dt0 DATETIME, dt3 DATETIME(3), ts TIMESTAMP(6) NULL DEFAULT NULL, ts0 TIMESTAMP NULL DEFAULT NULL, d DATE, tm TIME(3), tm0 TIME, y YEAR,
  e ENUM('small','Medium','large'), s SET('a','B','c','d'),
  bits BIT(64), bit5 BIT(5), bit1 BIT(1),
  j JSON,
  lat VARCHAR(20) CHARACTER SET latin1, emoji VARCHAR(20) CHARACTER SET utf8mb4, lt TEXT CHARACTER SET latin1, ch CHAR(6), chl CHAR(4) CHARACTER SET latin1,
  gb VARCHAR(10) CHARACTER SET gbk,
  vb VARBINARY(20), bl BLOB, bin BINARY(4), bincoll VARCHAR(10) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  f FLOAT, db DOUBLE, f2 FLOAT,
  g GEOMETRY, pt POINT, ip INET6, u UUID,
  nul VARCHAR(5)
)`)
			b := e.bind()
			s := e.open(b, nil, native)
			rec := &recorder{}
			e.start(s, currentPos(t, s), rec)
			conn, err := e.dbx.Conn(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			cexec := func(q string) {
				t.Helper()
				if _, err := conn.ExecContext(t.Context(), q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			cexec("SET time_zone = '+05:30'")
			cexec(`INSERT INTO v VALUES (1,
  18446744073709551615, -9223372036854775808, 9007199254740991, -128, 255, 16777215, -8388608, -32768, 4294967295,
  '-12345678901234567890123456789012345.123456789012345678901234567890', 3.5, -42,
  '2024-02-29 23:59:58.123456', '1999-12-31 23:59:59', '2024-01-01 00:00:00.100', '2024-05-01 15:30:00.5', '2038-01-19 08:44:07', '2024-05-01', '-12:34:56.5', '838:59:59', 2024,
  'Medium', 'a,B,d',
  b'1111111111111111111111111111111111111111111111111111111111111111', b'10101', b'1',
  '{"a": [1, 2.5, {"b": null}], "c": "x", "big": 18446744073709551615, "s": "é\\u00e9"}',
  'café', 'hi 😀', 'déjà', 'ab  ', X'E98141',
  X'C4E3BAC3',
  X'00FF10', X'DEADBEEF', X'0102', 'AbC',
  0.1, 0.1, 1.2345678,
  ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))'), ST_GeomFromText('POINT(1 2)', 4326), '2001:db8::1', '6ba7b810-9dad-11d1-80b4-00c04fd430c8',
  NULL)`)
			cexec(`INSERT INTO v (id, ubig, sbig, small, tiny, dec65, dec52, f, db, f2, tm, tm0, ip, u, ch, bits, y, lat, e, s) VALUES
  (3, 9007199254740992, 9007199254740992, -9007199254740991, 0, '0.000000000000000000000000000001', -0.5, 3.40282e38, 5e-324, -1e-7,
   '-00:00:00.001', '-838:59:59', '::1.2.3.4', '00000000-0000-0000-0000-000000000001', '', 0, 1901, X'80', 'large', ''),
  (4, 0, -1, 0, 1, '1', 0, 0, 1.7976931348623157e308, 16777217, '00:00:00', '00:00:00', '::ffff:1.2.3.4', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'é', 5, 2155, '', 'small', 'c')`)
			cexec("SET sql_mode = ''")
			cexec("INSERT INTO v (id, dt, d, ts, e, y, dt3) VALUES (2, '0000-00-00 00:00:00', '0000-00-00', '0000-00-00 00:00:00', '', 0, '2024-00-00 00:00:00')")
			waitFor(t, "4 rows", waitLong, func() bool { return len(rec.committed()) == 4 })
			stream := map[string]*tracker.Change{}
			for _, c := range rec.committed() {
				stream[string(c.After.Values[0])] = c
			}
			tbl := snapTableOf(t, s, "v")
			if strings.Join(tbl.Key, ",") != "id" {
				t.Fatalf("key %v", tbl.Key)
			}
			rows, _ := readAll(t, s, tbl, "", 3)
			if len(rows) != 4 {
				t.Fatalf("%d rows", len(rows))
			}
			for _, r := range rows {
				id := string(r.After.Values[0])
				sc := stream[id]
				if r.Op != tracker.OpSnapshot || r.Source != "mariadb" || r.Schema != e.db || r.Table != "v" {
					t.Errorf("row %s: %s %s %s.%s", id, r.Op, r.Source, r.Schema, r.Table)
				}
				if got, want := string(r.Key.AppendJSON(nil)), string(sc.Key.AppendJSON(nil)); got != want {
					t.Errorf("row %s key %s, stream %s", id, got, want)
				}
				if len(r.After.Names) != len(sc.After.Names) {
					t.Fatalf("row %s: %d columns, stream %d", id, len(r.After.Names), len(sc.After.Names))
				}
				for i, n := range sc.After.Names {
					if r.After.Names[i] != n || string(r.After.Values[i]) != string(sc.After.Values[i]) {
						t.Errorf("row %s column %s: snapshot %s=%s, stream %s", id, n, r.After.Names[i], r.After.Values[i], sc.After.Values[i])
					}
				}
			}
		})
	}
}

// streamTx is one transaction the stream committed.
type streamTx struct {
	pos     string
	changes []*tracker.Change
}

// commitsOf assembles a recording by transaction key (streamed XA
// transactions interleave with others).
func commitsOf(recs []tracker.Record) []streamTx {
	open := map[string][]*tracker.Change{}
	var out []streamTx
	for _, r := range recs {
		switch r.Kind {
		case tracker.RecordBegin:
			open[r.Tx.TxKey] = nil
		case tracker.RecordChange:
			open[r.Change.TxKey] = append(open[r.Change.TxKey], r.Change)
		case tracker.RecordCommit:
			out = append(out, streamTx{pos: r.Pos, changes: open[r.Tx.TxKey]})
			delete(open, r.Tx.TxKey)
		case tracker.RecordRollback:
			delete(open, r.Tx.TxKey)
		}
	}
	return out
}

// TestIntegrationSnapshotGate proves the position rule with concurrent
// writers (plain and XA transactions): each chunk row's value is the value
// after exactly the stream's transactions whose commit Pos compares <= the
// chunk's Pos.
func TestIntegrationSnapshotGate(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE g (id INT PRIMARY KEY, v INT NOT NULL)")
	const n = 60
	var vals []string
	for i := 1; i <= n; i++ {
		vals = append(vals, fmt.Sprintf("(%d, 0)", i))
	}
	e.exec("INSERT INTO g VALUES " + strings.Join(vals, ","))
	b := e.bind()
	b.Heartbeat = 30 * time.Second // Nudge, not heartbeats, must wake the idle stream
	s := e.open(b, nil, true)
	rec := &recorder{}
	e.start(s, currentPos(t, s), rec)
	tbl := snapTableOf(t, s, "g")

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var txs atomic.Int64
	// Plain writers on ids 1..40, two rows per transaction.
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				a, b := 1+rand.IntN(40), 1+rand.IntN(40)
				_, err := e.dbx.ExecContext(ctx, "UPDATE g SET v = v + 1 WHERE id IN (?, ?)", a, b)
				if err != nil && ctx.Err() == nil && !strings.Contains(err.Error(), "Deadlock") {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				txs.Add(1)
			}
		}()
	}
	// An XA writer on ids 41..60: prepared, then committed a moment later.
	x := e.xaConn()
	var xaN atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			id := x.id(strconv.Itoa(i))
			a := 41 + rand.IntN(20)
			for _, q := range []string{"XA START '" + id + "'", fmt.Sprintf("UPDATE g SET v = v + 1 WHERE id = %d", a), "XA END '" + id + "'", "XA PREPARE '" + id + "'"} {
				if _, err := x.conn.ExecContext(context.Background(), q); err != nil {
					t.Errorf("%s: %v", q, err)
					return
				}
			}
			time.Sleep(time.Duration(5+rand.IntN(30)) * time.Millisecond)
			if _, err := x.conn.ExecContext(context.Background(), "XA COMMIT '"+id+"'"); err != nil {
				t.Errorf("XA COMMIT: %v", err)
				return
			}
			xaN.Add(1)
		}
	}()

	var chunks []tracker.Chunk
	deadline := time.Now().Add(4 * time.Second)
	after := ""
	for time.Now().Before(deadline) {
		ch, err := s.ReadChunk(t.Context(), tracker.ChunkRequest{Table: tbl, After: after, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, ch)
		after = ch.Next
		if ch.Done {
			after = ""
		}
	}
	stop()
	wg.Wait()
	if t.Failed() {
		return
	}
	var maxPos string
	for _, ch := range chunks {
		if c, _ := s.ComparePos(ch.Pos, maxPos); maxPos == "" || c > 0 {
			maxPos = ch.Pos
		}
	}
	// The idle stream hands a keepalive at or past every chunk when nudged.
	waitFor(t, "the stream past the last chunk", 5*time.Second, func() bool {
		s.Nudge()
		p := rec.lastPos()
		c, err := s.ComparePos(p, maxPos)
		return err == nil && c >= 0
	})
	commits := commitsOf(rec.snapshot())
	t.Logf("%d chunks, %d plain and %d XA transactions, %d commits streamed", len(chunks), txs.Load(), xaN.Load(), len(commits))
	if xaN.Load() < 5 || txs.Load() < 50 {
		t.Fatalf("too few writes: %d, %d", txs.Load(), xaN.Load())
	}
	streamed := map[string]bool{}
	for _, r := range rec.snapshot() {
		if r.Kind == tracker.RecordBegin && r.Tx.Streamed {
			streamed[r.Tx.TxKey] = true
		}
	}
	xaOverlaps := 0
	for ci, ch := range chunks {
		state := map[string]string{}
		for _, tx := range commits {
			c, err := s.ComparePos(tx.pos, ch.Pos)
			if err != nil {
				t.Fatal(err)
			}
			if c <= 0 {
				for _, chg := range tx.changes {
					state[string(chg.Key.Values[0])] = string(chg.After.Values[1])
				}
			} else if len(tx.changes) > 0 && streamed[tx.changes[0].TxKey] && beforeChangePos(t, s, tx.changes[0].Pos, ch.Pos) {
				xaOverlaps++ // prepared before the read, committed after it
			}
		}
		for _, r := range ch.Rows {
			id := string(r.Key.Values[0])
			want, ok := state[id]
			if !ok {
				want = "0"
			}
			if got := string(r.After.Values[1]); got != want {
				t.Errorf("chunk %d (pos %s) row %s: v = %s, the stream's transactions up to the chunk's position give %s", ci, ch.Pos, id, got, want)
			}
		}
	}
	t.Logf("%d (chunk, XA transaction prepared before it and committed after it) pairs", xaOverlaps)
	if xaOverlaps == 0 {
		t.Error("no chunk was read while an XA transaction was prepared: the case was not exercised")
	}
}

// beforeChangePos reports whether a change's "file:offset" is before the
// position p.
func beforeChangePos(t testing.TB, s *Source, changePos, p string) bool {
	file, off, ok := strings.Cut(changePos, ":")
	if !ok {
		t.Fatalf("change pos %q", changePos)
	}
	o, _ := strconv.ParseUint(off, 10, 32)
	c, err := s.ComparePos(position{File: file, Pos: uint32(o)}.String(), p)
	if err != nil {
		t.Fatal(err)
	}
	return c < 0
}

// TestIntegrationSnapshotNudge: a chunk read while the stream idles is
// passed by a keepalive soon after Nudge, with heartbeats far away.
func TestIntegrationSnapshotNudge(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE n (id INT PRIMARY KEY)")
	b := e.bind()
	b.Heartbeat = 60 * time.Second
	s := e.open(b, nil, true)
	rec := &recorder{}
	e.start(s, currentPos(t, s), rec)
	e.exec("INSERT INTO n VALUES (1)")
	waitFor(t, "the insert", waitLong, func() bool { return len(rec.committed()) == 1 })
	ch, err := s.ReadChunk(t.Context(), tracker.ChunkRequest{Table: snapTableOf(t, s, "n"), Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Rows) != 1 || !ch.Done {
		t.Fatalf("%d rows, done %v", len(ch.Rows), ch.Done)
	}
	n0 := len(rec.snapshot())
	start := time.Now()
	waitFor(t, "a keepalive at or past the chunk", 3*time.Second, func() bool {
		s.Nudge()
		recs := rec.snapshot()
		for _, r := range recs[n0:] {
			if r.Kind == tracker.RecordKeepalive {
				c, err := s.ComparePos(r.Pos, ch.Pos)
				return err == nil && c >= 0
			}
		}
		return false
	})
	t.Logf("keepalive %v after the first Nudge", time.Since(start))
}

// TestIntegrationSnapshotKeys: composite, varchar (case and accent
// insensitive collation), latin1 and binary keys; a unique NOT NULL key
// when there is no primary key; chunk boundaries never repeat or miss a
// row, whatever the chunk size.
func TestIntegrationSnapshotKeys(t *testing.T) {
	e := newEnv(t)
	e.exec(`CREATE TABLE comp (a INT, b VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci, c VARBINARY(8), v INT, PRIMARY KEY (a, b, c))`)
	e.exec(`CREATE TABLE lat (k VARCHAR(10) CHARACTER SET latin1 PRIMARY KEY, v INT)`)
	e.exec(`CREATE TABLE bin (k VARBINARY(3) PRIMARY KEY, v INT)`)
	e.exec(`CREATE TABLE uq (x INT NULL, k1 INT NOT NULL, k2 DATETIME(3) NOT NULL, v INT, UNIQUE KEY ux (x), UNIQUE KEY uk (k1, k2))`)
	e.exec(`CREATE TABLE misc (u UUID PRIMARY KEY, v INT)`)
	e.exec(`CREATE TABLE en (e ENUM('z','a','m') NOT NULL, f DOUBLE NOT NULL, v INT, PRIMARY KEY (e, f))`)
	bs := []string{"", "a", "B", "é", "😀", "zz", "a b", "ß"}
	cs := []string{"", "\x00", "\x00\x00", "\xff", "A"}
	var vals []string
	want := 0
	for a := 1; a <= 3; a++ {
		for _, b := range bs {
			for _, c := range cs {
				vals = append(vals, fmt.Sprintf("(%d, '%s', X'%x', %d)", a, b, c, want))
				want++
			}
		}
	}
	e.exec("INSERT INTO comp VALUES " + strings.Join(vals, ","))
	e.exec("INSERT INTO lat VALUES (X'E9', 1), (X'66', 2), (X'80', 3), (X'41', 4), (X'4141', 5), (X'D6', 6)")
	e.exec("INSERT INTO bin VALUES (X'000000', 1), (X'00', 2), (X'FF', 3), (X'FFFFFF', 4), (X'0001', 5), (X'20', 6)")
	e.exec("INSERT INTO uq VALUES (NULL, 1, '2024-01-01 00:00:00.5', 1), (NULL, 1, '2024-01-01', 2), (3, 0, '1999-12-31 23:59:59.999', 3), (4, 2, '2024-01-01', 4), (5, 1, '2024-01-01 00:00:00.499', 5)")
	e.exec("INSERT INTO misc VALUES ('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 1), ('00000000-0000-0000-0000-000000000001', 2), ('ffffffff-ffff-ffff-ffff-ffffffffffff', 3), ('6ba7b811-9dad-11d1-80b4-00c04fd430c8', 4), ('123e4567-e89b-02d3-0456-426614174000', 5)")
	e.exec("INSERT INTO en VALUES ('a', 0.1, 1), ('a', 0.30000000000000004, 2), ('z', -1e300, 3), ('m', 5e-324, 4), ('a', 0.3, 5)")
	s := e.open(e.bind(), nil, true)
	if got := strings.Join(snapTableOf(t, s, "uq").Key, ","); got != "k1,k2" {
		t.Errorf("uq key %s, want k1,k2 (x is nullable)", got)
	}
	for _, tc := range []struct {
		table string
		rows  int
	}{{"comp", want}, {"lat", 6}, {"bin", 6}, {"uq", 5}, {"misc", 5}, {"en", 5}} {
		tbl := snapTableOf(t, s, tc.table)
		// The server's own order, for comparison.
		order := "ORDER BY " + strings.Join(tbl.Key, ",")
		var ref []string
		rows, err := e.dbx.Query("SELECT HEX(CONCAT_WS('|', " + strings.Join(tbl.Key, ",") + ")) FROM " + tc.table + " " + order)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var h string
			rows.Scan(&h)
			ref = append(ref, h)
		}
		rows.Close()
		for _, limit := range []int{1, 2, 7, 1000} {
			got, chunks := readAll(t, s, tbl, "", limit)
			if len(got) != tc.rows || len(ref) != tc.rows {
				t.Errorf("%s limit %d: %d rows, want %d (server %d)", tc.table, limit, len(got), tc.rows, len(ref))
				continue
			}
			seen := map[string]bool{}
			for _, r := range got {
				k := string(r.Key.AppendJSON(nil))
				if seen[k] {
					t.Errorf("%s limit %d: row %s twice", tc.table, limit, k)
				}
				seen[k] = true
			}
			if limit == 1 && len(chunks) != tc.rows+1 {
				t.Errorf("%s: %d chunks of 1 for %d rows", tc.table, len(chunks), tc.rows)
			}
		}
	}
}

// TestIntegrationSnapshotErrors: unknown tables, tables without a key, bad
// conditions, a table dropped between chunks; and a condition that works.
func TestIntegrationSnapshotErrors(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
	e.exec("CREATE TABLE nokey (a INT, b INT, UNIQUE KEY (a))")
	e.exec("INSERT INTO t VALUES (1, 10), (2, 20), (3, 30), (4, 40), (5, 50)")
	b := e.bind()
	b.ExcludeTables = []string{"skipped"}
	e.exec("CREATE TABLE skipped (id INT PRIMARY KEY)")
	s := e.open(b, nil, true)

	all, err := s.SnapshotTables(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, x := range all {
		names = append(names, x.Name())
		if x.Estimate < -1 {
			t.Errorf("%s estimate %d", x.Name(), x.Estimate)
		}
	}
	if got := strings.Join(names, ","); got != e.db+".nokey,"+e.db+".t" {
		t.Errorf("followed tables %s", got)
	}
	for _, name := range []string{"nope", "skipped", "otherdb.t"} {
		_, err := s.SnapshotTables(t.Context(), []string{name})
		if !errors.Is(err, tracker.ErrConfig) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), e.db+".t") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if ts, err := s.SnapshotTables(t.Context(), []string{"t", e.db + ".nokey"}); err != nil || len(ts) != 2 || ts[1].Key != nil {
		t.Errorf("t and nokey: %v %v", ts, err)
	}

	nk := snapTableOf(t, s, "nokey")
	_, err = s.ReadChunk(t.Context(), tracker.ChunkRequest{Table: nk, Limit: 10})
	if err == nil || !strings.Contains(err.Error(), "nokey") || !strings.Contains(err.Error(), "PRIMARY KEY") {
		t.Errorf("table without key: %v", err)
	}
	tt := snapTableOf(t, s, "t")
	rows, _ := readAll(t, s, tt, "v >= 20 AND v <> 40 -- a comment", 2)
	if len(rows) != 3 || string(rows[2].After.Values[1]) != "50" {
		t.Errorf("where: %d rows", len(rows))
	}
	for _, where := range []string{"v >>= 1", "nocolumn = 1", "nofunc(v)", "v = (SELECT id FROM t)"} {
		_, err := s.ReadChunk(t.Context(), tracker.ChunkRequest{Table: tt, Where: where, Limit: 10})
		if !errors.Is(err, tracker.ErrConfig) || !strings.Contains(err.Error(), where) {
			t.Errorf("where %q: %v", where, err)
		}
	}
	ch, err := s.ReadChunk(t.Context(), tracker.ChunkRequest{Table: tt, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	e.exec("DROP TABLE t")
	_, err = s.ReadChunk(t.Context(), tracker.ChunkRequest{Table: tt, After: ch.Next, Limit: 2})
	if err == nil || !strings.Contains(err.Error(), "does not exist") && !strings.Contains(err.Error(), "no longer exists") || !strings.Contains(err.Error(), e.db+".t") {
		t.Errorf("dropped table: %v", err)
	}
	t.Logf("dropped table: %v", err)
	// The pool's connections are clean after the reads: time zone and
	// result charset are the server's again.
	var tz string
	if err := s.db.QueryRowContext(t.Context(), "SELECT @@session.time_zone").Scan(&tz); err != nil || tz == "+00:00" && tzDefault(t, e) != "+00:00" {
		t.Errorf("pool connection time zone %q: %v", tz, err)
	}
}

func tzDefault(t testing.TB, e *env) string {
	var tz string
	if err := e.admin.QueryRow("SELECT @@global.time_zone").Scan(&tz); err != nil {
		t.Fatal(err)
	}
	return tz
}

// TestIntegrationSnapshotPosIsSession: within the snapshot transaction the
// session's binlog_snapshot_position stays at the snapshot while the
// server's binlog moves on.
func TestIntegrationSnapshotPosIsSession(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE p (id INT PRIMARY KEY)")
	conn, err := e.dbx.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(t.Context(), "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"); err != nil {
		t.Fatal(err)
	}
	p1, err := snapshotPos(t.Context(), conn)
	if err != nil {
		t.Fatal(err)
	}
	e.exec("INSERT INTO p VALUES (1)")
	p2, err := snapshotPos(t.Context(), conn)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM p").Scan(&n); err != nil || n != 0 {
		t.Fatalf("the snapshot sees %d rows: %v", n, err)
	}
	conn.ExecContext(t.Context(), "COMMIT")
	p3, err := snapshotPos(t.Context(), conn)
	if err != nil {
		t.Fatal(err)
	}
	if p1.String() != p2.String() || p3.String() == p1.String() {
		t.Fatalf("snapshot position %s, after a commit elsewhere %s, after COMMIT %s", p1, p2, p3)
	}
}

// BenchmarkIntegrationReadChunk reads 10k-row chunks of a 200k-row table.
func BenchmarkIntegrationReadChunk(b *testing.B) {
	e := newEnv(b)
	e.exec(`CREATE TABLE big (id INT PRIMARY KEY, name VARCHAR(40), amount DECIMAL(12,2), at DATETIME(3), score DOUBLE, flag TINYINT, note TEXT)`)
	e.exec(`INSERT INTO big SELECT seq, CONCAT('name-', seq), seq / 7, '2024-01-01' + INTERVAL seq SECOND, seq * 1.5, seq % 2, 'some note text' FROM seq_1_to_200000`)
	s := e.open(e.bind(), nil, true)
	tbl := snapTableOf(b, s, "big")
	b.ResetTimer()
	rows := 0
	after := ""
	start := time.Now()
	for b.Loop() {
		ch, err := s.ReadChunk(b.Context(), tracker.ChunkRequest{Table: tbl, After: after, Limit: 10000})
		if err != nil {
			b.Fatal(err)
		}
		rows += len(ch.Rows)
		after = ch.Next
		if ch.Done {
			after = ""
		}
	}
	b.ReportMetric(float64(rows)/time.Since(start).Seconds(), "rows/s")
}
