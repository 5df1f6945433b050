package mysql

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

const waitLong = 20 * time.Second

// summary renders a change compactly for comparisons.
func summary(t testing.TB, c *tracker.Change) string {
	t.Helper()
	return fmt.Sprintf("%s %s.%s key=%s before=%s after=%s", c.Op, c.Schema, c.Table,
		c.Key.AppendJSON(nil), c.Before.AppendJSON(nil), c.After.AppendJSON(nil))
}

func TestIntegrationDML(t *testing.T) {
	e := newEnv(t)
	other := e.newDB("o")
	e.exec("CREATE TABLE t1 (id INT PRIMARY KEY, name VARCHAR(20), n INT)")
	e.exec("CREATE TABLE untracked (id INT PRIMARY KEY)")
	e.exec("CREATE TABLE `" + other + "`.t2 (a INT, b INT, PRIMARY KEY (b, a))")
	e.exec("CREATE TABLE `" + other + "`.t3 (a INT PRIMARY KEY)")
	b := e.bind()
	b.Tables = []string{"t1", other + ".t2"}
	s := e.open(b, nil, true)
	rec := &recorder{}
	e.start(s, currentPos(t, s), rec)

	// A single-statement transaction, a multi-statement one across two
	// databases, a rolled-back one, and untracked tables.
	e.exec("INSERT INTO t1 VALUES (1, 'one', 10)")
	tx, err := e.dbx.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"INSERT INTO t1 VALUES (2, 'two', 20), (3, 'three', 30)",
		"UPDATE t1 SET n = n + 1 WHERE id <= 2",
		"INSERT INTO `" + other + "`.t2 VALUES (7, 8)",
		"INSERT INTO untracked VALUES (1)",
		"DELETE FROM t1 WHERE id = 3",
	} {
		if _, err := tx.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	tx, err = e.dbx.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("INSERT INTO t1 VALUES (99, 'rolled back', 0)"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	e.exec("INSERT INTO untracked VALUES (2)")
	e.exec("INSERT INTO `" + other + "`.t3 VALUES (1)")
	e.exec("UPDATE t1 SET name = 'uno' WHERE id = 1")

	want := []string{
		`insert ` + e.db + `.t1 key={"id":1} before=null after={"id":1,"name":"one","n":10}`,
		`insert ` + e.db + `.t1 key={"id":2} before=null after={"id":2,"name":"two","n":20}`,
		`insert ` + e.db + `.t1 key={"id":3} before=null after={"id":3,"name":"three","n":30}`,
		`update ` + e.db + `.t1 key={"id":1} before={"id":1,"name":"one","n":10} after={"id":1,"name":"one","n":11}`,
		`update ` + e.db + `.t1 key={"id":2} before={"id":2,"name":"two","n":20} after={"id":2,"name":"two","n":21}`,
		`insert ` + other + `.t2 key={"b":8,"a":7} before=null after={"a":7,"b":8}`,
		`delete ` + e.db + `.t1 key={"id":3} before={"id":3,"name":"three","n":30} after=null`,
		`update ` + e.db + `.t1 key={"id":1} before={"id":1,"name":"one","n":11} after={"id":1,"name":"uno","n":11}`,
	}
	waitFor(t, "all changes", waitLong, func() bool { return len(rec.committed()) >= len(want) })
	// The last statements produce keepalives or nothing; give them a moment
	// to show up wrongly.
	waitFor(t, "a keepalive after the last commit", waitLong, func() bool {
		recs := rec.snapshot()
		return len(recs) > 0 && recs[len(recs)-1].Kind != tracker.RecordChange
	})
	var got []string
	for _, c := range rec.committed() {
		got = append(got, summary(t, c))
		if c.Source != "mariadb" && c.Source != "mysql" || c.TxKey == "" || c.Pos == "" {
			t.Errorf("change lacks source/tx fields: %+v", c)
		}
		if c.Bind != "" || c.TxID != "" || !c.CommitTime.IsZero() {
			t.Errorf("change %+v: Bind, TxID and CommitTime are the tracker's to stamp", c)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("changes:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	// Transaction structure: Begin, changes with its key, Commit with a
	// position; three transactions with tracked changes.
	var txs []string
	var open string
	for _, r := range rec.snapshot() {
		switch r.Kind {
		case tracker.RecordBegin:
			if open != "" {
				t.Errorf("Begin %s while %s is open", r.Tx.TxKey, open)
			}
			open = r.Tx.TxKey
		case tracker.RecordChange:
			if r.Change.TxKey != open {
				t.Errorf("change of %s inside %s", r.Change.TxKey, open)
			}
		case tracker.RecordCommit:
			if r.Tx.TxKey != open || r.Pos == "" || r.Tx.CommitTime.IsZero() {
				t.Errorf("bad commit %+v (open %s)", r, open)
			}
			if _, err := parsePosition(r.Pos); err != nil {
				t.Error(err)
			}
			txs = append(txs, open)
			open = ""
		case tracker.RecordKeepalive:
			if open != "" {
				t.Errorf("keepalive inside %s", open)
			}
		}
	}
	if len(txs) != 3 {
		t.Errorf("got %d committed transactions, want 3: %v", len(txs), txs)
	}
	for _, k := range txs {
		if !strings.HasPrefix(k, "gtid-") {
			t.Errorf("TxKey %q: want a gtid- key", k)
		}
	}
}

func TestIntegrationValues(t *testing.T) {
	// Run in a child process whose local time zone is Asia/Kolkata, so
	// that TIMESTAMP values prove to be UTC whatever the process zone.
	if os.Getenv("TZ") != "Asia/Kolkata" {
		testURI(t)
		cmd := exec.Command(os.Args[0], "-test.run=^TestIntegrationValues$", "-test.v")
		cmd.Env = append(os.Environ(), "TZ=Asia/Kolkata")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestIntegrationValues") {
			t.Fatalf("child with TZ=Asia/Kolkata failed: %v\n%s", err, out)
		}
		t.Logf("child with TZ=Asia/Kolkata:\n%s", out)
		return
	}
	if _, off := time.Now().Zone(); off != 5*3600+1800 {
		t.Fatalf("TZ=Asia/Kolkata not in effect (offset %d)", off)
	}
	for _, native := range []bool{true, false} {
		t.Run(fmt.Sprintf("native_unicode=%v", native), func(t *testing.T) {
			testValues(t, native)
		})
	}
}

func testValues(t *testing.T, native bool) {
	e := newEnv(t)
	e.exec(`CREATE TABLE v (
  id INT PRIMARY KEY,
  ubig BIGINT UNSIGNED, sbig BIGINT, small BIGINT, tiny TINYINT, utiny TINYINT UNSIGNED, umed MEDIUMINT UNSIGNED, med MEDIUMINT,
  dec65 DECIMAL(65,30), dec52 DECIMAL(5,2),
  dt DATETIME(6), dt0 DATETIME, ts TIMESTAMP(6) NULL DEFAULT NULL, d DATE, tm TIME(3), y YEAR,
  e ENUM('small','medium','large'), s SET('a','b','c','d'),
  bits BIT(64), bit5 BIT(5),
  j JSON,
  lat VARCHAR(20) CHARACTER SET latin1, emoji VARCHAR(20) CHARACTER SET utf8mb4, lt TEXT CHARACTER SET latin1,
  vb VARBINARY(20), bl BLOB, bin BINARY(4), bincoll VARCHAR(10) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
  f FLOAT, db DOUBLE,
  g GEOMETRY, ip INET6, u UUID,
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
  18446744073709551615, -9223372036854775808, 9007199254740991, -128, 255, 16777215, -8388608,
  '-12345678901234567890123456789012345.123456789012345678901234567890', 3.5,
  '2024-02-29 23:59:58.123456', '1999-12-31 23:59:59', '2024-05-01 15:30:00.5', '2024-05-01', '-12:34:56.5', 2024,
  'medium', 'a,c',
  b'1111111111111111111111111111111111111111111111111111111111111111', b'10101',
  '{"a": [1, 2.5, {"b": null}], "c": "x", "big": 18446744073709551615}',
  'café', 'hi 😀', 'déjà',
  X'00FF10', X'DEADBEEF', X'0102', 'AbC',
  0.1, 0.1,
  ST_GeomFromText('POINT(1 2)'), '2001:db8::1', '6ba7b810-9dad-11d1-80b4-00c04fd430c8',
  NULL)`)
	cexec("SET sql_mode = ''")
	cexec("INSERT INTO v (id, dt, d, ts, e) VALUES (2, '0000-00-00 00:00:00', '0000-00-00', '0000-00-00 00:00:00', '')")
	waitFor(t, "2 rows", waitLong, func() bool { return len(rec.committed()) == 2 })
	got := rowMap(t, rec.committed()[0].After)
	want := map[string]string{
		"id": `1`, "ubig": `"18446744073709551615"`, "sbig": `"-9223372036854775808"`, "small": `9007199254740991`,
		"tiny": `-128`, "utiny": `255`, "umed": `16777215`, "med": `-8388608`,
		"dec65": `"-12345678901234567890123456789012345.123456789012345678901234567890"`, "dec52": `"3.50"`,
		"dt": `"2024-02-29T23:59:58.123456"`, "dt0": `"1999-12-31T23:59:59"`,
		"ts": `"2024-05-01T10:00:00.5Z"`, "d": `"2024-05-01"`, "tm": `"-12:34:56.5"`, "y": `2024`,
		"e": `"medium"`, "s": `["a","c"]`,
		"bits": `"18446744073709551615"`, "bit5": `21`,
		"j":   `{"a":[1,2.5,{"b":null}],"c":"x","big":18446744073709551615}`,
		"lat": `"café"`, "emoji": `"hi 😀"`, "lt": `"déjà"`,
		"vb": `"AP8Q"`, "bl": `"3q2+7w=="`, "bin": `"AQIAAA=="`, "bincoll": `"AbC"`,
		"f": `0.1`, "db": `0.1`,
		"g":  `"` + base64.StdEncoding.EncodeToString([]byte{0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0, 0, 0, 0, 0, 0, 0, 0x40}) + `"`,
		"ip": `"2001:db8::1"`, "u": `"6ba7b810-9dad-11d1-80b4-00c04fd430c8"`,
		"nul": `null`,
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %s, want %s", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d columns, want %d: %v", len(got), len(want), got)
	}
	zero := rowMap(t, rec.committed()[1].After)
	for k, w := range map[string]string{"dt": `"0000-00-00 00:00:00.000000"`, "d": `"0000-00-00"`, "ts": `"0000-00-00 00:00:00.000000"`, "e": `""`, "ubig": `null`} {
		if zero[k] != w {
			t.Errorf("zero row %s: got %s, want %s", k, zero[k], w)
		}
	}
}

func TestIntegrationAlterWhileStreaming(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE t (id INT PRIMARY KEY, b VARCHAR(5))")
	s := e.open(e.bind(), nil, true)
	rec := &recorder{}
	e.start(s, currentPos(t, s), rec)
	e.exec("INSERT INTO t VALUES (1, 'x')")
	e.exec("ALTER TABLE t ADD COLUMN c INT AFTER id")
	e.exec("INSERT INTO t VALUES (2, 20, 'y')")
	e.exec("ALTER TABLE t DROP COLUMN b")
	e.exec("INSERT INTO t VALUES (3, 30)")
	e.exec("UPDATE t SET c = 31 WHERE id = 3")
	want := []string{
		`insert ` + e.db + `.t key={"id":1} before=null after={"id":1,"b":"x"}`,
		`insert ` + e.db + `.t key={"id":2} before=null after={"id":2,"c":20,"b":"y"}`,
		`insert ` + e.db + `.t key={"id":3} before=null after={"id":3,"c":30}`,
		`update ` + e.db + `.t key={"id":3} before={"id":3,"c":30} after={"id":3,"c":31}`,
	}
	waitFor(t, "4 changes", waitLong, func() bool { return len(rec.committed()) >= len(want) })
	var got []string
	for _, c := range rec.committed() {
		got = append(got, summary(t, c))
	}
	if !slices.Equal(got, want) {
		t.Errorf("changes:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	// The DDL statements were handed as keepalive boundaries.
	ka := 0
	for _, r := range rec.snapshot() {
		if r.Kind == tracker.RecordKeepalive {
			ka++
		}
	}
	if ka < 2 {
		t.Errorf("got %d keepalives, want one per ALTER", ka)
	}
}

func TestIntegrationAlterWhileStopped(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE t (id INT PRIMARY KEY, b VARCHAR(5))")
	b := e.bind()
	s := e.open(b, nil, true)
	rec := &recorder{}
	run := e.start(s, currentPos(t, s), rec)
	e.exec("INSERT INTO t VALUES (1, 'x')")
	waitFor(t, "first row", waitLong, func() bool { return len(rec.committed()) == 1 })
	saved := rec.lastPos()
	if err := run.stop(t); err != nil {
		t.Fatal(err)
	}
	// While stopped: rows before and after two ALTERs.
	e.exec("INSERT INTO t VALUES (2, 'y')")
	e.exec("ALTER TABLE t ADD COLUMN c INT")
	e.exec("INSERT INTO t VALUES (3, 'z', 30)")
	e.exec("ALTER TABLE t DROP COLUMN b")
	e.exec("INSERT INTO t VALUES (4, 40)")

	s2 := e.open(b, nil, true)
	rec2 := &recorder{}
	e.start(s2, saved, rec2)
	want := []string{
		`insert ` + e.db + `.t key={"id":2} before=null after={"id":2,"b":"y"}`,
		`insert ` + e.db + `.t key={"id":3} before=null after={"id":3,"b":"z","c":30}`,
		`insert ` + e.db + `.t key={"id":4} before=null after={"id":4,"c":40}`,
	}
	waitFor(t, "3 changes after restart", waitLong, func() bool { return len(rec2.committed()) >= len(want) })
	var got []string
	for _, c := range rec2.committed() {
		got = append(got, summary(t, c))
	}
	if !slices.Equal(got, want) {
		t.Errorf("changes:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

// A bind without a checkpoint starts where the binlog ended when it was
// opened, not when Run reads it: a transaction that commits in between (as
// one did when a test wrote right after trackerd said "streaming") is read.
func TestIntegrationStartsWhereOpened(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE t (id INT PRIMARY KEY)")
	s := e.open(e.bind(), nil, true)
	e.exec("INSERT INTO t VALUES (1)")
	rec := &recorder{}
	e.start(s, "", rec)
	e.exec("INSERT INTO t VALUES (2)")
	waitFor(t, "two rows", waitLong, func() bool { return len(rec.committed()) >= 2 })
	var ids []string
	for _, c := range rec.committed() {
		ids = append(ids, rowMap(t, c.After)["id"])
	}
	if !slices.Equal(ids, []string{"1", "2"}) {
		t.Errorf("ids %v, want [1 2]", ids)
	}
}

func TestIntegrationResume(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE t (id INT PRIMARY KEY)")
	b := e.bind()
	s := e.open(b, nil, true)
	rec := &recorder{}
	run := e.start(s, currentPos(t, s), rec)
	e.exec("INSERT INTO t VALUES (1)")
	e.exec("INSERT INTO t VALUES (2)")
	waitFor(t, "two rows", waitLong, func() bool { return len(rec.committed()) == 2 })
	saved := rec.lastPos()
	if err := run.stop(t); err != nil {
		t.Fatal(err)
	}
	e.exec("INSERT INTO t VALUES (3), (4)")
	e.exec("INSERT INTO t VALUES (5)")
	p, err := parsePosition(saved)
	if err != nil {
		t.Fatal(err)
	}
	filePos := position{File: p.File, Pos: p.Pos}
	for name, from := range map[string]string{"gtid": saved, "file and position": filePos.String()} {
		t.Run(name, func(t *testing.T) {
			if name == "gtid" && p.GTID == "" {
				t.Fatalf("position %s has no GTID", saved)
			}
			s := e.open(b, nil, true)
			rec := &recorder{}
			run := e.start(s, from, rec)
			waitFor(t, "three rows", waitLong, func() bool { return len(rec.committed()) >= 3 })
			var ids []string
			for _, c := range rec.committed() {
				ids = append(ids, rowMap(t, c.After)["id"])
			}
			if !slices.Equal(ids, []string{"3", "4", "5"}) {
				t.Errorf("resumed with ids %v, want [3 4 5]", ids)
			}
			if err := run.stop(t); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestIntegrationKillReconnect(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE t (id INT PRIMARY KEY, pad VARCHAR(100))")
	lb := &logBuffer{}
	var states trackertest.States
	src, err := Open(t.Context(), e.bind(), tracker.SourceOptions{Logger: testLogger(t, lb), NativeUnicode: true, Report: states.Report})
	if err != nil {
		t.Fatal(err)
	}
	s := src.(*Source)
	t.Cleanup(func() { s.Close() })
	rec := &recorder{}
	e.start(s, currentPos(t, s), rec)
	// The writer goes on until both kills are done, and for at least n
	// transactions.
	const n = 400
	var (
		wg        sync.WaitGroup
		rows      atomic.Int64
		killsDone = make(chan struct{})
	)
	wg.Add(1)
	writeErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			if i > n {
				select {
				case <-killsDone:
					return
				default:
				}
			}
			var err error
			if i%50 == 0 {
				// Some multi-row transactions, so a kill can land inside one.
				_, err = e.dbx.Exec(fmt.Sprintf("INSERT INTO t VALUES (%d, REPEAT('x', 100)), (%d, 'b'), (%d, 'c')", i, i+100000, i+200000))
				rows.Add(3)
			} else {
				_, err = e.dbx.Exec("INSERT INTO t VALUES (?, 'a')", i)
				rows.Add(1)
			}
			if err != nil {
				writeErr <- err
				return
			}
		}
	}()
	// Kill the binlog connection twice while the writes run.
	for kill := 0; kill < 2; kill++ {
		before := len(rec.committed())
		waitFor(t, "progress before a kill", waitLong, func() bool { return len(rec.committed()) > before+20 })
		id := s.dumpConnID.Load()
		if id == 0 {
			t.Fatal("no dump connection id")
		}
		e.adminExec(fmt.Sprintf("KILL %d", id))
		waitFor(t, "a new dump connection", waitLong, func() bool { return s.dumpConnID.Load() != id })
	}
	close(killsDone)
	wg.Wait()
	select {
	case err := <-writeErr:
		t.Fatal(err)
	default:
	}
	total := int(rows.Load())
	waitFor(t, "every row", waitLong, func() bool { return len(rec.committed()) >= total })
	seen := map[string]int{}
	for _, c := range rec.committed() {
		seen[rowMap(t, c.After)["id"]]++
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("id %s committed %d times", id, k)
		}
	}
	if len(seen) != total {
		t.Errorf("got %d distinct rows, want %d", len(seen), total)
	}
	// The source reported each kill, and the new stream after it, to the
	// tracker, which logs them.
	want := "connecting streaming reconnecting streaming reconnecting streaming"
	if got := states.Sequence(); got != want {
		t.Errorf("reports %q, want %q\nlog:\n%s", got, want, lb.String())
	}
}

func TestIntegrationPurgedBinlogs(t *testing.T) {
	e := newEnv(t)
	b := e.bind()
	cases := []struct {
		name string
		from string
	}{
		// A file the server no longer has: checked before connecting.
		{"file gone", `{"file":"mariadb-bin.000000","pos":4}`},
		// A GTID the server's binlogs do not hold: the server's own 1236.
		{"gtid gone", `{"gtid":"0-4000000000-1","file":"mariadb-bin.000001","pos":4}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := e.open(b, nil, true)
			ctx, cancel := context.WithTimeout(t.Context(), waitLong)
			defer cancel()
			err := s.Run(ctx, tc.from, &recorder{})
			if !errors.Is(err, tracker.ErrResnapshotRequired) {
				t.Fatalf("Run: %v, want ErrResnapshotRequired", err)
			}
			t.Logf("Run: %v", err)
			if !strings.Contains(err.Error(), "re-snapshot required") {
				t.Errorf("error %q does not say re-snapshot required", err)
			}
		})
	}
}

func TestIntegrationStatementFormat(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE t (id INT PRIMARY KEY)")
	lb := &logBuffer{}
	s := e.open(e.bind(), lb, true)
	rec := &recorder{}
	e.start(s, currentPos(t, s), rec)
	conn, err := e.dbx.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{"SET SESSION binlog_format = 'STATEMENT'", "INSERT INTO t VALUES (1)", "SET SESSION binlog_format = 'ROW'"} {
		if _, err := conn.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	e.exec("INSERT INTO t VALUES (2)")
	waitFor(t, "the row-format insert", waitLong, func() bool { return len(rec.committed()) == 1 })
	if !strings.Contains(lb.String(), "NOT tracked") || !strings.Contains(lb.String(), `statement="INSERT INTO t"`) {
		t.Errorf("no warning about the statement-format insert:\n%s", lb.String())
	}
	if id := rowMap(t, rec.committed()[0].After)["id"]; id != "2" {
		t.Errorf("tracked id %s, want 2", id)
	}
}

func TestIntegrationTruncate(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE t (id INT PRIMARY KEY)")
	e.exec("CREATE TABLE other (id INT PRIMARY KEY)")
	b := e.bind()
	b.ExcludeTables = []string{"other"}
	s := e.open(b, nil, true)
	rec := &recorder{}
	e.start(s, currentPos(t, s), rec)
	e.exec("INSERT INTO t VALUES (1)")
	e.exec("TRUNCATE TABLE other")
	e.exec("TRUNCATE TABLE `" + e.db + "`.`t`")
	e.exec("INSERT INTO t VALUES (2)")
	waitFor(t, "3 changes", waitLong, func() bool { return len(rec.committed()) >= 3 })
	got := rec.committed()
	if got[1].Op != tracker.OpTruncate || got[1].Table != "t" || got[1].Schema != e.db {
		t.Errorf("second change %s, want truncate of %s.t", summary(t, got[1]), e.db)
	}
	if len(got) != 3 {
		t.Errorf("got %d changes, want 3", len(got))
	}
}

func TestIntegrationFenced(t *testing.T) {
	e := newEnv(t)
	b := e.bind()
	s := e.open(b, nil, true)
	rec := &recorder{}
	run := e.start(s, currentPos(t, s), rec)
	waitFor(t, "the dump connection", waitLong, func() bool { return s.dumpConnID.Load() != 0 })
	// A second reader with the same server_id is refused.
	_, err := Open(t.Context(), b, tracker.SourceOptions{})
	if !errors.Is(err, tracker.ErrFenced) {
		t.Fatalf("second Open: %v, want ErrFenced", err)
	}
	t.Logf("second Open: %v", err)
	if !strings.Contains(err.Error(), "server_id") {
		t.Errorf("error %q does not name the server_id", err)
	}

	// Another reader registering with our server_id anyway kicks ours off;
	// ours notices on reconnect and stops instead of kicking back.
	port := e.uri.Port
	if port == 0 {
		port = 3306
	}
	other := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID: b.ServerID, Flavor: s.Flavor(), Host: e.uri.Host, Port: uint16(port),
		User: e.uri.User, Password: string(e.uri.Password), Logger: slog.New(slog.DiscardHandler),
	})
	defer other.Close()
	p, _ := parsePosition(currentPos(t, s))
	if _, err := other.StartSync(gm.Position{Name: p.File, Pos: p.Pos}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-run.done:
		close(run.done)
		t.Logf("first reader's Run: %v", err)
		if !errors.Is(err, tracker.ErrFenced) {
			t.Fatalf("first reader's Run: %v, want ErrFenced", err)
		}
	case <-time.After(waitLong):
		t.Fatal("the first reader kept running")
	}
}

func TestIntegrationAuthAndPrivileges(t *testing.T) {
	e := newEnv(t)
	const password = "s3cr3t-Pa55word:/@x"
	user := uniqueName(t, "u")[:30]
	e.adminExec(fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", user, password))
	t.Cleanup(func() { e.admin.Exec(fmt.Sprintf("DROP USER '%s'@'%%'", user)) })
	e.adminExec(fmt.Sprintf("GRANT SELECT ON `%s`.* TO '%s'@'%%'", e.db, user))

	t.Run("wrong password", func(t *testing.T) {
		b := e.bind()
		b.URI.User, b.URI.Password = user, password+"-wrong"
		_, err := Open(t.Context(), b, tracker.SourceOptions{})
		if !errors.Is(err, tracker.ErrConfig) {
			t.Fatalf("Open: %v, want a configuration error", err)
		}
		t.Logf("Open: %v", err)
		if strings.Contains(err.Error(), password) {
			t.Fatalf("error contains the password: %v", err)
		}
		res := Check(t.Context(), b)
		if len(res) == 0 || res[0].OK {
			t.Fatalf("Check: %+v, want a failed connection", res)
		}
		for _, r := range res {
			if strings.Contains(r.Detail+r.Fix, password) {
				t.Fatalf("check result contains the password: %+v", r)
			}
		}
	})
	t.Run("missing replication privileges", func(t *testing.T) {
		b := e.bind()
		b.URI.User, b.URI.Password = user, password
		_, err := Open(t.Context(), b, tracker.SourceOptions{})
		if !errors.Is(err, tracker.ErrConfig) {
			t.Fatalf("Open: %v, want a configuration error", err)
		}
		t.Logf("Open: %v", err)
		if !strings.Contains(err.Error(), "REPLICATION SLAVE") || strings.Contains(err.Error(), password) {
			t.Errorf("error %q should name REPLICATION SLAVE and hide the password", err)
		}
		failed := map[string]bool{}
		for _, r := range Check(t.Context(), b) {
			if !r.OK {
				failed[r.Name] = true
				if r.Fix == "" {
					t.Errorf("failed check %q has no fix", r.Name)
				}
			}
		}
		if !failed["REPLICATION SLAVE privilege"] || failed["SELECT privilege"] || failed["connection"] {
			t.Errorf("failed checks %v, want REPLICATION SLAVE privilege only among privileges", failed)
		}
	})
	t.Run("unknown database", func(t *testing.T) {
		b := e.bind()
		b.URI.Database = e.db + "_missing"
		_, err := Open(t.Context(), b, tracker.SourceOptions{})
		if !errors.Is(err, tracker.ErrConfig) {
			t.Fatalf("Open: %v, want a configuration error", err)
		}
	})
	t.Run("mariadb URI at the server", func(t *testing.T) {
		b := e.bind()
		b.URI.Dialect = "mariadb"
		s, err := Open(t.Context(), b, tracker.SourceOptions{})
		if s != nil {
			defer s.Close()
		}
		flavor := ""
		if err == nil {
			flavor = s.(*Source).Flavor()
		}
		if err == nil && flavor != "mariadb" || err != nil && !errors.Is(err, tracker.ErrConfig) {
			t.Fatalf("Open: %v (flavor %q)", err, flavor)
		}
	})
}

func TestIntegrationCheck(t *testing.T) {
	e := newEnv(t)
	for _, r := range Check(t.Context(), e.bind()) {
		if !r.OK {
			t.Errorf("check %q failed: %s (fix: %s)", r.Name, r.Detail, r.Fix)
		}
	}
}

func TestIntegrationHandlerError(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE t (id INT PRIMARY KEY)")
	s := e.open(e.bind(), nil, true)
	rec := &recorder{failAt: 2}
	from := currentPos(t, s)
	e.exec("INSERT INTO t VALUES (1)")
	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	defer cancel()
	err := s.Run(ctx, from, rec)
	if err == nil || !strings.Contains(err.Error(), "handler refuses record 2") {
		t.Fatalf("Run: %v, want the handler's error", err)
	}
}

func TestIntegrationLag(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE t (id INT PRIMARY KEY)")
	s := e.open(e.bind(), nil, true)
	rec := &recorder{}
	e.start(s, currentPos(t, s), rec)
	e.exec("INSERT INTO t VALUES (1)")
	waitFor(t, "the commit", waitLong, func() bool { return len(rec.committed()) == 1 })
	// Behind is the tracker's (tracker.Lag); trackertest.RunSourceTests
	// checks it over this source. Bytes count from Run's start until the
	// first Confirm.
	if lag := s.Lag(); lag.Behind != 0 || lag.Bytes <= 0 {
		t.Errorf("before Confirm: %+v, want Behind 0 and Bytes > 0", lag)
	}
	s.Confirm(rec.lastPos())
	time.Sleep(1100 * time.Millisecond) // the server's end is read at most once a second
	lag := s.Lag()
	if lag.Behind != 0 || lag.Bytes < 0 {
		t.Errorf("after Confirm: %+v, want Behind 0 and Bytes >= 0", lag)
	}
}

func TestIntegrationCreateSelect(t *testing.T) {
	e := newEnv(t)
	e.exec("CREATE TABLE src (id INT PRIMARY KEY, v VARCHAR(5))")
	e.exec("INSERT INTO src VALUES (1, 'a'), (2, 'b')")
	s := e.open(e.bind(), nil, true)
	rec := &recorder{}
	e.start(s, currentPos(t, s), rec)
	e.exec("CREATE TABLE copy SELECT id, v FROM src")
	e.exec("INSERT INTO src VALUES (3, 'c')")
	waitFor(t, "3 changes", waitLong, func() bool { return len(rec.committed()) >= 3 })
	var got []string
	for _, c := range rec.committed() {
		got = append(got, c.Table+" "+string(c.After.AppendJSON(nil)))
	}
	want := []string{`copy {"id":1,"v":"a"}`, `copy {"id":2,"v":"b"}`, `src {"id":3,"v":"c"}`}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
