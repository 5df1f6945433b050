package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

// rowJSON renders a change's images for comparison.
func rowJSON(c *tracker.Change) string {
	s := fmt.Sprintf("%s key=%s before=%s after=%s", c.Op, c.Key.AppendJSON(nil), c.Before.AppendJSON(nil), c.After.AppendJSON(nil))
	if len(c.Unchanged) > 0 {
		s += " unchanged=" + strings.Join(c.Unchanged, ",")
	}
	return s
}

// kinds renders the records compactly: B begin, i/u/d/t a change, C commit, R rollback.
func kinds(recs []tracker.Record) string {
	var sb strings.Builder
	for _, r := range recs {
		switch r.Kind {
		case tracker.RecordBegin:
			sb.WriteString("B")
		case tracker.RecordChange:
			sb.WriteString(string(r.Change.Op[0]))
		case tracker.RecordCommit:
			sb.WriteString("C ")
		case tracker.RecordRollback:
			sb.WriteString("R ")
		}
	}
	return strings.TrimSpace(sb.String())
}

// dataRecords drops keepalives.
func dataRecords(recs []tracker.Record) []tracker.Record {
	var out []tracker.Record
	for _, r := range recs {
		if r.Kind != tracker.RecordKeepalive {
			out = append(out, r)
		}
	}
	return out
}

func TestIntegrationChanges(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(
		`CREATE TABLE items (id int PRIMARY KEY, name text, qty int)`,
		`CREATE TABLE other (id int PRIMARY KEY)`,
	)
	src := openSource(t, db.bind(), hooks{})
	rec := &recorder{}
	start(t, src, "", rec)
	db.exec(
		`INSERT INTO items VALUES (1, 'one', 1)`,
		`BEGIN; INSERT INTO items VALUES (2, 'two', 2); UPDATE items SET qty = 20 WHERE id = 2; DELETE FROM items WHERE id = 1; COMMIT`,
		`BEGIN; INSERT INTO items VALUES (3, 'rolled back', 3); ROLLBACK`,
		`UPDATE items SET id = 5 WHERE id = 2`,
		`BEGIN; INSERT INTO other VALUES (1); TRUNCATE items, other; COMMIT`,
	)
	eventually(t, 20*time.Second, "the truncate", func() bool { return len(rec.changes("other")) == 2 })
	recs := dataRecords(rec.all())
	if got, want := kinds(recs), "BiC BiudC BuC BittC"; got != want {
		t.Fatalf("records %q, want %q", got, want)
	}
	var got []string
	for _, c := range rec.changes("items") {
		got = append(got, rowJSON(c))
	}
	want := []string{
		`insert key={"id":1} before=null after={"id":1,"name":"one","qty":1}`,
		`insert key={"id":2} before=null after={"id":2,"name":"two","qty":2}`,
		`update key={"id":2} before=null after={"id":2,"name":"two","qty":20}`,
		`delete key={"id":1} before=null after=null`,
		`update key={"id":2} before=null after={"id":5,"name":"two","qty":20}`,
		`truncate key=null before=null after=null`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Transaction identity: one key per transaction, on every record.
	for _, r := range recs {
		switch r.Kind {
		case tracker.RecordChange:
			c := r.Change
			if c.Source != "postgresql" || c.Schema != "public" || c.TxKey == "" || c.Pos == "" {
				t.Fatalf("incomplete change %+v", c)
			}
			if c.Bind != "" || c.TxID != "" || !c.CommitTime.IsZero() {
				t.Fatalf("change %+v: Bind, TxID and CommitTime are the tracker's to stamp", c)
			}
		case tracker.RecordBegin:
			if r.Tx.TxKey == "" || r.Tx.TxID == "" || r.Tx.CommitTime.IsZero() {
				t.Fatalf("begin %+v", r)
			}
		case tracker.RecordCommit:
			if _, err := parseLSN(r.Pos); err != nil || r.Tx.TxKey == "" {
				t.Fatalf("commit %+v", r)
			}
		}
	}
	if recs[0].Tx.TxKey == recs[3].Tx.TxKey {
		t.Fatalf("two transactions share key %s", recs[0].Tx.TxKey)
	}
}

func TestIntegrationValues(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(
		`CREATE TYPE mood AS ENUM ('happy', 'sad')`,
		`CREATE DOMAIN posint AS int CHECK (VALUE > 0)`,
		`CREATE TABLE v (
			id int PRIMARY KEY, n numeric, nn numeric, big int8, small int8, js jsonb, j json, by bytea,
			ts timestamptz, tsn timestamp, tinf timestamptz, d date, dinf date, tm time, iv interval,
			t text, arr int[], arr2 text[], nul int, m mood, ms mood[], p posint, f8 float8, f4 float4,
			b bool, u uuid, ip inet)`,
	)
	src := openSource(t, db.bind(), hooks{})
	rec := &recorder{}
	start(t, src, "", rec)
	// The writer's session is in another time zone: timestamptz values
	// still come out in UTC.
	db.exec(`SET TimeZone = 'Asia/Kolkata'`, `INSERT INTO v VALUES (
		1, 12.50, 'NaN', 9007199254740993, -42, '{"b": [1, 2.5], "a": "x"}', '{"z":1,  "a":2}', '\x00ff10',
		'2024-03-01 12:00:00.25', '2024-03-01 12:00:00.000001', 'infinity', '2024-03-01', '-infinity', '12:34:56.5',
		'1 year 2 months 3 days 04:05:06', 'héllo ✓ 日本 "q"', '{1,NULL,3}', '{{a,b},{c,"d e"}}', NULL,
		'happy', '{happy,sad}', 5, 'NaN', 1.5, true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '10.0.0.1/8')`)
	eventually(t, 20*time.Second, "the insert", func() bool { return len(rec.changes("v")) == 1 })
	c := rec.changes("v")[0]
	want := map[string]string{
		"id": `1`, "n": `"12.50"`, "nn": `"NaN"`, "big": `"9007199254740993"`, "small": `-42`,
		"js": `{"a": "x", "b": [1, 2.5]}`, "j": `{"z":1,  "a":2}`, "by": `"AP8Q"`,
		"ts": `"2024-03-01T06:30:00.25Z"`, "tsn": `"2024-03-01T12:00:00.000001"`, "tinf": `"infinity"`,
		"d": `"2024-03-01"`, "dinf": `"-infinity"`, "tm": `"12:34:56.5"`, "iv": `"P1Y2M3DT4H5M6S"`,
		"t": `"héllo ✓ 日本 \"q\""`, "arr": `[1,null,3]`, "arr2": `[["a","b"],["c","d e"]]`, "nul": `null`,
		"m": `"happy"`, "ms": `["happy","sad"]`, "p": `5`, "f8": `"NaN"`, "f4": `1.5`, "b": `true`,
		"u": `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`, "ip": `"10.0.0.1/8"`,
	}
	for name, w := range want {
		got, ok := c.After.Get(name)
		if !ok || string(got) != w {
			t.Errorf("%s = %s, want %s", name, got, w)
		}
	}
	if c.After.Len() != len(want) {
		t.Errorf("after has %d columns, want %d", c.After.Len(), len(want))
	}
}

func TestIntegrationIdentifiers(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE SCHEMA "my.schema"`, `CREATE TABLE "my.schema"."a table*" ("the id" int PRIMARY KEY, "Mixed" text)`)
	src := openSource(t, db.bind(), hooks{})
	rec := &recorder{}
	start(t, src, "", rec)
	db.exec(`INSERT INTO "my.schema"."a table*" VALUES (7, 'x')`)
	eventually(t, 20*time.Second, "the insert", func() bool { return len(rec.changes("a table*")) == 1 })
	c := rec.changes("a table*")[0]
	if c.Schema != "my.schema" || rowJSON(c) != `insert key={"the id":7} before=null after={"the id":7,"Mixed":"x"}` {
		t.Fatalf("change %s.%s %s", c.Schema, c.Table, rowJSON(c))
	}
}

func TestIntegrationTablesFilter(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE a (id int PRIMARY KEY)`, `CREATE TABLE b (id int PRIMARY KEY)`, `CREATE TABLE c (id int PRIMARY KEY)`)
	bind := db.bind()
	bind.Tables = []string{"a", "public.b"}
	bind.ExcludeTables = []string{"b"}
	src := openSource(t, bind, hooks{})
	rows, _ := db.admin.Query(context.Background(), `SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`, bind.Publication)
	tables, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	if strings.Join(tables, ",") != "a" {
		t.Fatalf("publication holds %v, want [a]", tables)
	}
	rec := &recorder{}
	start(t, src, "", rec)
	db.exec(`INSERT INTO a VALUES (1)`, `INSERT INTO b VALUES (1)`, `INSERT INTO c VALUES (1)`, `INSERT INTO a VALUES (2)`)
	eventually(t, 20*time.Second, "two inserts into a", func() bool { return len(rec.changes("a")) == 2 })
	if n := len(rec.changes("b")) + len(rec.changes("c")); n != 0 {
		t.Fatalf("%d changes of untracked tables", n)
	}
}

func TestIntegrationToast(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(
		`CREATE TABLE d (id int PRIMARY KEY, big text, n int)`,
		`CREATE TABLE f (id int PRIMARY KEY, big text, n int)`,
		`ALTER TABLE f REPLICA IDENTITY FULL`,
		// Incompressible values, stored out of line.
		`ALTER TABLE d ALTER COLUMN big SET STORAGE EXTERNAL`,
		`ALTER TABLE f ALTER COLUMN big SET STORAGE EXTERNAL`,
	)
	src := openSource(t, db.bind(), hooks{})
	rec := &recorder{}
	start(t, src, "", rec)
	db.exec(
		`INSERT INTO d SELECT 1, string_agg(md5(g::text), ''), 0 FROM generate_series(1, 400) g`,
		`INSERT INTO f SELECT 1, string_agg(md5(g::text), ''), 0 FROM generate_series(1, 400) g`,
		`UPDATE d SET n = 1`,
		`UPDATE f SET n = 1`,
		`UPDATE d SET id = 2`,
	)
	eventually(t, 20*time.Second, "the updates", func() bool { return len(rec.changes("d")) == 3 && len(rec.changes("f")) == 2 })
	var big string
	db.admin.QueryRow(context.Background(), `SELECT big FROM f`).Scan(&big)
	bigJSON := `"` + big + `"`

	du := rec.changes("d")[1]
	if got := rowJSON(du); got != `update key={"id":1} before=null after={"id":1,"n":1} unchanged=big` {
		t.Errorf("DEFAULT identity update: %s", got)
	}
	if v, ok := du.After.Get("big"); ok || v != nil {
		t.Errorf("unchanged TOAST value is %s, want not sent", v)
	}
	pk := rec.changes("d")[2]
	if got := rowJSON(pk); got != `update key={"id":1} before=null after={"id":2,"n":1} unchanged=big` {
		t.Errorf("primary key update: %s", got)
	}
	fu := rec.changes("f")[1]
	if len(fu.Unchanged) != 0 {
		t.Errorf("FULL identity: unchanged %v", fu.Unchanged)
	}
	if v, _ := fu.After.Get("big"); string(v) != bigJSON {
		t.Errorf("FULL identity: after.big is %d bytes, want the old value", len(v))
	}
	if v, _ := fu.Before.Get("n"); string(v) != "0" {
		t.Errorf("FULL identity: before.n = %s", v)
	}
	if got := string(fu.Key.AppendJSON(nil)); got != `{"id":1}` {
		t.Errorf("FULL identity key %s, want the primary key", got)
	}
}

func TestIntegrationReconnect(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE r (id int PRIMARY KEY, pad text)`)
	bind := db.bind()
	var states trackertest.States
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	src, err := open(ctx, bind, tracker.SourceOptions{Logger: testLogger(t), Report: states.Report}, hooks{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	db.exec(`INSERT INTO r VALUES (0, 'before')`)
	const rows = 20000
	db.exec(fmt.Sprintf(`INSERT INTO r SELECT g, repeat('x', 100) FROM generate_series(1, %d) g`, rows))

	// Block on the first change of the big transaction until the walsender
	// is gone.
	var seen atomic.Int64
	killed := make(chan struct{})
	rec := &recorder{before: func(r tracker.Record) error {
		if r.Kind == tracker.RecordChange && r.Change.Table == "r" && seen.Add(1) == 100 {
			<-killed
		}
		return nil
	}}
	start(t, src, "", rec)
	eventually(t, 20*time.Second, "the big transaction to start", func() bool { return seen.Load() >= 100 })
	var pid int32
	if err := db.admin.QueryRow(context.Background(), `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, bind.Slot).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	db.exec(fmt.Sprintf(`SELECT pg_terminate_backend(%d)`, pid))
	close(killed)
	eventually(t, 60*time.Second, "the transaction, sent again", func() bool {
		recs := dataRecords(rec.all())
		return len(recs) > 0 && recs[len(recs)-1].Kind == tracker.RecordCommit && seen.Load() > rows
	})
	// The first transaction came once; the big one started over with a
	// Begin, and after its last Begin holds every row once.
	recs := dataRecords(rec.all())
	var begins []int
	for i, r := range recs {
		if r.Kind == tracker.RecordBegin {
			begins = append(begins, i)
		}
	}
	if len(begins) != 3 {
		t.Fatalf("%d begins, want 3 (the first transaction once, the big one twice): %s", len(begins), kinds(recs[:min(len(recs), 20)]))
	}
	if recs[begins[1]].Tx.TxKey != recs[begins[2]].Tx.TxKey {
		t.Fatalf("the re-sent transaction has key %s, was %s", recs[begins[2]].Tx.TxKey, recs[begins[1]].Tx.TxKey)
	}
	ids := map[string]bool{}
	for _, r := range recs[begins[2]+1:] {
		if r.Kind == tracker.RecordChange {
			k := string(r.Change.Key.AppendJSON(nil))
			if ids[k] {
				t.Fatalf("row %s twice after the last Begin", k)
			}
			ids[k] = true
		}
	}
	if len(ids) != rows {
		t.Fatalf("%d rows after the last Begin, want %d", len(ids), rows)
	}
	// The source reported the terminated walsender, and the new stream, to
	// the tracker, which logs them.
	if got := strings.TrimPrefix(states.Sequence(), "creating_slot "); got != "connecting streaming reconnecting streaming" {
		t.Fatalf("reports %q, want connecting, streaming, reconnecting, streaming", got)
	}
}

func TestIntegrationResumeFrom(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE q (id int PRIMARY KEY)`)
	bind := db.bind()
	src := openSource(t, bind, hooks{})
	rec := &recorder{}
	r := start(t, src, "", rec)
	db.exec(`INSERT INTO q VALUES (1)`, `INSERT INTO q VALUES (2)`)
	eventually(t, 20*time.Second, "two commits", func() bool { return len(rec.changes("q")) == 2 })
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	var firstCommit string
	for _, x := range rec.all() {
		if x.Kind == tracker.RecordCommit {
			firstCommit = x.Pos
			break
		}
	}
	// Nothing was confirmed, so the slot sends both transactions again;
	// the first ends at the checkpoint and is skipped.
	src2 := openSource(t, bind, hooks{})
	rec2 := &recorder{}
	start(t, src2, firstCommit, rec2)
	db.exec(`INSERT INTO q VALUES (3)`)
	eventually(t, 20*time.Second, "the new insert", func() bool { return len(rec2.changes("q")) == 2 })
	var got []string
	for _, c := range rec2.changes("q") {
		got = append(got, string(c.Key.AppendJSON(nil)))
	}
	if strings.Join(got, " ") != `{"id":2} {"id":3}` {
		t.Fatalf("after resuming from %s: %v", firstCommit, got)
	}
}

func TestIntegrationKeepalive(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE watched (id int PRIMARY KEY)`, `CREATE TABLE busy (id serial PRIMARY KEY, pad text)`)
	bind := db.bind()
	bind.Tables = []string{"watched"}
	src := openSource(t, bind, hooks{})
	start0, _ := slotState(t, db.admin, bind.Slot)
	var keep atomic.Value
	rec := &recorder{before: func(r tracker.Record) error {
		if r.Kind == tracker.RecordKeepalive {
			keep.Store(r.Pos)
		}
		return nil
	}}
	start(t, src, "", rec)
	// Another table writes WAL; the publication sees nothing.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		c, err := pgx.Connect(context.Background(), db.url)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				c.Exec(context.Background(), `INSERT INTO busy (pad) SELECT repeat('x', 1000) FROM generate_series(1, 50)`)
			}
		}
	}()
	var pos lsn
	eventually(t, 30*time.Second, "a keepalive past the slot's start", func() bool {
		p, _ := keep.Load().(string)
		pos, _ = parseLSN(p)
		return pos > start0
	})
	if n := len(dataRecords(rec.all())); n != 0 {
		t.Fatalf("%d records of an idle publication", n)
	}
	src.Confirm(formatLSN(pos))
	eventually(t, 15*time.Second, "confirmed_flush_lsn to reach the keepalive", func() bool {
		c, _ := slotState(t, db.admin, bind.Slot)
		return c >= pos
	})
	lag := src.Lag()
	if lag.Bytes < 0 || lag.Behind != 0 {
		t.Fatalf("lag %+v", lag)
	}
}

func TestIntegrationHeartbeat(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE quiet (id int PRIMARY KEY)`)
	bind := db.bind()
	bind.Heartbeat = 200 * time.Millisecond
	src := openSource(t, bind, hooks{})
	start0, _ := slotState(t, db.admin, bind.Slot)
	var keeps atomic.Int64
	var last atomic.Value
	rec := &recorder{before: func(r tracker.Record) error {
		if r.Kind == tracker.RecordKeepalive {
			keeps.Add(1)
			last.Store(r.Pos)
			src.Confirm(r.Pos) // a tracker would, once durable
		}
		return nil
	}}
	start(t, src, "", rec)
	eventually(t, 30*time.Second, "heartbeat keepalives", func() bool { return keeps.Load() >= 3 })
	p, _ := parseLSN(last.Load().(string))
	if p <= start0 {
		t.Fatalf("keepalive %s not past the start %s", formatLSN(p), formatLSN(start0))
	}
	eventually(t, 15*time.Second, "the slot to move", func() bool {
		c, _ := slotState(t, db.admin, bind.Slot)
		return c > start0
	})
}

func TestIntegrationConfirmAndLag(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE l (id int PRIMARY KEY)`)
	bind := db.bind()
	src := openSource(t, bind, hooks{})
	rec := &recorder{}
	start(t, src, "", rec)
	db.exec(`INSERT INTO l VALUES (1)`)
	var commit string
	eventually(t, 20*time.Second, "the commit", func() bool {
		for _, r := range rec.all() {
			if r.Kind == tracker.RecordCommit {
				commit = r.Pos
				return true
			}
		}
		return false
	})
	// Behind is the tracker's (tracker.Lag); trackertest.RunSourceTests
	// checks it over this source.
	if lag := src.Lag(); lag.Behind != 0 || lag.Bytes <= 0 {
		t.Fatalf("lag before confirming: %+v", lag)
	}
	src.Confirm(commit)
	want, _ := parseLSN(commit)
	eventually(t, 15*time.Second, "confirmed_flush_lsn to reach the commit", func() bool {
		c, _ := slotState(t, db.admin, bind.Slot)
		return c >= want
	})
	if lag := src.Lag(); lag.Bytes < 0 {
		t.Fatalf("lag after confirming: %+v", lag)
	}
}

func TestIntegrationStreaming(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE s (id int PRIMARY KEY, pad text)`)
	// Two slots see the same transactions: one streams them (a 64kB
	// decoding budget makes every large transaction stream), one not.
	streamed := db.bind()
	streamed.Streaming = true
	plain := db.bind()
	plain.Publication = streamed.Publication
	srcS := openSource(t, streamed, hooks{params: map[string]string{"logical_decoding_work_mem": "64kB"}})
	srcP := openSource(t, plain, hooks{})
	recS, recP := &recorder{}, &recorder{}
	start(t, srcS, "", recS)
	start(t, srcP, "", recP)
	db.exec(
		`BEGIN; INSERT INTO s SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g;
		 SAVEPOINT sp; INSERT INTO s SELECT g, repeat('y', 200) FROM generate_series(2001, 4000) g;
		 ROLLBACK TO sp; INSERT INTO s VALUES (5000, 'z'); COMMIT`,
		`BEGIN; INSERT INTO s SELECT g, repeat('x', 200) FROM generate_series(10001, 13000) g; ROLLBACK`,
		`INSERT INTO s VALUES (6000, 'small')`,
	)
	eventually(t, 60*time.Second, "the small transaction on both slots", func() bool {
		cs := recS.changes("s")
		return len(cs) > 0 && string(cs[len(cs)-1].Key.AppendJSON(nil)) == `{"id":6000}` && len(recP.changes("s")) == 2002
	})
	recs := dataRecords(recS.all())
	var streamedBegin *tracker.Record
	var rollbacks []tracker.Record
	var commits int
	for i, r := range recs {
		switch r.Kind {
		case tracker.RecordBegin:
			if r.Tx.Streamed && streamedBegin == nil {
				streamedBegin = &recs[i]
			}
		case tracker.RecordRollback:
			rollbacks = append(rollbacks, r)
		case tracker.RecordCommit:
			commits++
		}
	}
	if streamedBegin == nil {
		t.Fatalf("no streamed transaction: %s", kinds(recs[:min(20, len(recs))]))
	}
	// The rolled-back savepoint and the rolled-back transaction.
	if len(rollbacks) != 2 || rollbacks[0].Tx.SubTx == "" || rollbacks[0].Tx.TxKey != streamedBegin.Tx.TxKey || rollbacks[1].Tx.SubTx != "" {
		t.Fatalf("rollbacks %+v", rollbacks)
	}
	// Rows of the savepoint carry its subtransaction id; those the server
	// had not streamed yet when it decoded ROLLBACK TO are never sent.
	// ROLLBACK TO keeps the savepoint: row 5000 is in a new subtransaction.
	sub, top, other := 0, 0, 0
	for _, c := range recS.changes("s") {
		switch {
		case c.TxKey != streamedBegin.Tx.TxKey:
		case c.SubTx == rollbacks[0].Tx.SubTx:
			sub++
		case c.SubTx == "":
			top++
		default:
			other++
		}
	}
	if sub == 0 || sub > 2000 || top != 2000 || other != 1 {
		t.Fatalf("%d changes of subtransaction %s (want 1 to 2000), %d of the top transaction (want 2000), %d of others (want 1)",
			sub, rollbacks[0].Tx.SubTx, top, other)
	}
	if commits != 2 {
		t.Fatalf("%d commits, want 2", commits)
	}
	// The same transaction has the same key whether or not it was streamed.
	if k := recP.changes("s")[0].TxKey; k != streamedBegin.Tx.TxKey {
		t.Fatalf("transaction key %s when streamed, %s when not", streamedBegin.Tx.TxKey, k)
	}
}

func TestIntegrationPassword(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	const password = "s3cr3t-Pa55word:/@x"
	role := uniqueName(t, "r_")
	db.exec(
		fmt.Sprintf(`CREATE ROLE %s LOGIN REPLICATION PASSWORD '%s' IN ROLE trackerd_pwauth`, role, password),
		`CREATE TABLE owned (id int PRIMARY KEY)`,
		fmt.Sprintf(`ALTER TABLE owned OWNER TO %s`, role),
		`CREATE TABLE notmine (id int PRIMARY KEY)`,
		fmt.Sprintf(`GRANT CREATE ON DATABASE %s TO %s`, quoteIdent(db.name), role),
	)
	t.Cleanup(func() {
		// After the database (cleanups run last first): the role owns
		// objects in it.
		c, err := pgx.Connect(context.Background(), serverURL(t))
		if err == nil {
			defer c.Close(context.Background())
			dropSlots(t, context.Background(), c, "database = $1", db.name)
			c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+quoteIdent(db.name)+" WITH (FORCE)")
			c.Exec(context.Background(), "DROP ROLE IF EXISTS "+role)
		}
	})
	bind := db.bind()
	bind.URI.User = role
	bind.URI.Host = "127.0.0.1" // password authentication is over TCP

	for _, tc := range []struct {
		name     string
		password string
		query    map[string][]string
	}{
		{"wrong password", "wrong-Pa55:/@y", nil},
		{"no password", "", nil},
		{"password in the query", "", map[string][]string{"password": {"wrong-Pa55:/@y"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bind
			b.URI.Password = binds.Secret(tc.password)
			b.URI.Query = tc.query
			_, err := Open(context.Background(), b, tracker.SourceOptions{Logger: testLogger(t)})
			t.Logf("Open: %v", err)
			if !errors.Is(err, tracker.ErrConfig) {
				t.Fatalf("Open: %v, want a configuration error", err)
			}
			if strings.Contains(err.Error(), password) || tc.password != "" && strings.Contains(err.Error(), tc.password) || strings.Contains(err.Error(), "wrong-Pa55") {
				t.Fatalf("the error holds the password: %v", err)
			}
			if !strings.Contains(err.Error(), "28P01") || !strings.HasPrefix(err.Error(), "postgres: ") {
				t.Fatalf("error %q does not say what failed", err)
			}
			res := Check(context.Background(), b)
			if len(res) == 0 || res[0].OK || strings.Contains(res[0].Detail, "wrong-Pa55") {
				t.Fatalf("check %+v", res)
			}
		})
	}

	// The right password: a role that is not superuser gets a publication
	// of the tables it owns.
	bind.URI.Password = password
	src := openSource(t, bind, hooks{})
	rows, _ := db.admin.Query(context.Background(), `SELECT tablename::text FROM pg_publication_tables WHERE pubname = $1`, bind.Publication)
	tables, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	if strings.Join(tables, ",") != "owned" {
		t.Fatalf("publication of the role's tables holds %v", tables)
	}
	rec := &recorder{}
	start(t, src, "", rec)
	db.exec(`INSERT INTO owned VALUES (1)`)
	eventually(t, 20*time.Second, "the insert", func() bool { return len(rec.changes("owned")) == 1 })
}

func TestIntegrationPrivilege(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	role := uniqueName(t, "r_")
	db.exec(fmt.Sprintf(`CREATE ROLE %s LOGIN`, role))
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), serverURL(t))
		if err == nil {
			defer c.Close(context.Background())
			c.Exec(context.Background(), "DROP ROLE IF EXISTS "+role)
		}
	})
	bind := db.bind()
	bind.URI.User = role
	_, err := Open(context.Background(), bind, tracker.SourceOptions{})
	t.Logf("Open: %v", err)
	if !errors.Is(err, tracker.ErrConfig) || !strings.Contains(err.Error(), "REPLICATION") || !strings.Contains(err.Error(), "ALTER ROLE") {
		t.Fatalf("Open: %v, want a configuration error naming ALTER ROLE ... REPLICATION", err)
	}
	var failed []string
	for _, r := range Check(context.Background(), bind) {
		if !r.OK {
			failed = append(failed, r.Name)
			if r.Fix == "" {
				t.Errorf("check %q failed without a fix", r.Name)
			}
		}
	}
	if !strings.Contains(strings.Join(failed, ","), "REPLICATION privilege") {
		t.Fatalf("failed checks %v", failed)
	}
	// A database that does not exist.
	bind = db.bind()
	bind.URI.Database = db.name + "_missing"
	if _, err := Open(context.Background(), bind, tracker.SourceOptions{}); !errors.Is(err, tracker.ErrConfig) || !strings.Contains(err.Error(), "3D000") {
		t.Fatalf("Open of a missing database: %v", err)
	}
}

func TestIntegrationSlotInUse(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE x (id int PRIMARY KEY)`)
	bind := db.bind()
	quick := hooks{fenceGrace: 500 * time.Millisecond}
	a := openSource(t, bind, quick)
	b := openSource(t, bind, quick) // opened before a holds the slot
	start(t, a, "", &recorder{})
	eventually(t, 20*time.Second, "the slot to be active", func() bool { _, active := slotState(t, db.admin, bind.Slot); return active })

	_, err := open(context.Background(), bind, tracker.SourceOptions{}, quick)
	t.Logf("Open: %v", err)
	if !errors.Is(err, tracker.ErrFenced) || !strings.Contains(err.Error(), "in use by PID") {
		t.Fatalf("Open of a busy slot: %v, want ErrFenced", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = b.Run(ctx, "", &recorder{})
	if !errors.Is(err, tracker.ErrFenced) || errors.Is(err, tracker.ErrConfig) {
		t.Fatalf("Run on a busy slot: %v, want ErrFenced", err)
	}
}

func TestIntegrationSlotCreationWaits(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE w (id int PRIMARY KEY)`)
	// An open transaction with an xid: a new slot's consistent point waits
	// for it to end.
	c, err := pgx.Connect(context.Background(), db.url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var pid int32
	if err := c.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(context.Background(), `BEGIN; INSERT INTO w VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	bind := db.bind()
	_, err = open(context.Background(), bind, tracker.SourceOptions{}, hooks{slotTimeout: 2 * time.Second})
	t.Logf("Open: %v", err)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", pid)) || !strings.Contains(err.Error(), "idle in transaction") {
		t.Fatalf("Open while a transaction is open: %v, want the session named", err)
	}
	// The cancelled creation leaves no slot behind.
	eventually(t, 10*time.Second, "no slot", func() bool {
		var n int
		db.admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, bind.Slot).Scan(&n)
		return n == 0
	})
	c.Exec(context.Background(), `ROLLBACK`)
}

// logBuffer is a slog handler that keeps the warnings it is given.
type logBuffer struct {
	mu    sync.Mutex
	warns []string
}

func (l *logBuffer) Enabled(context.Context, slog.Level) bool { return true }
func (l *logBuffer) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		l.mu.Lock()
		l.warns = append(l.warns, r.Message+" "+fmt.Sprint(r.NumAttrs()))
		r.Attrs(func(a slog.Attr) bool { l.warns[len(l.warns)-1] += " " + a.String(); return true })
		l.mu.Unlock()
	}
	return nil
}
func (l *logBuffer) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logBuffer) WithGroup(string) slog.Handler      { return l }

func TestIntegrationCheck(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE ok (id int PRIMARY KEY)`, `CREATE TABLE nokey (v int)`)
	bind := db.bind()
	res := Check(context.Background(), bind)
	byName := map[string]tracker.CheckResult{}
	for _, r := range res {
		byName[r.Name] = r
		t.Logf("%s ok=%t %s %s", r.Name, r.OK, r.Detail, r.Fix)
	}
	for _, name := range []string{"connect", "server version", "wal_level", "REPLICATION privilege", "replication connection", "replication slot", "publication"} {
		if r, ok := byName[name]; !ok || !r.OK {
			t.Errorf("check %q: %+v", name, r)
		}
	}
	if r := byName["replica identity"]; r.OK || !strings.Contains(r.Detail, `"nokey"`) || r.Fix == "" {
		t.Errorf("replica identity check: %+v", r)
	}
	if r := byName["two-phase decoding"]; !r.OK || !strings.Contains(r.Detail, "will be created with two-phase") {
		t.Errorf("two-phase check before the slot exists: %+v", r)
	}
	if r := byName["max_prepared_transactions"]; !r.OK || r.Fix != "" || !strings.Contains(r.Detail, "max_prepared_transactions is") {
		t.Errorf("max_prepared_transactions check (the test server allows prepared transactions): %+v", r)
	}
	// Check changes nothing.
	var slots, pubs int
	db.admin.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1), (SELECT count(*) FROM pg_publication WHERE pubname = $2)`,
		bind.Slot, bind.Publication).Scan(&slots, &pubs)
	if slots != 0 || pubs != 0 {
		t.Fatalf("Check created %d slots, %d publications", slots, pubs)
	}
	// Open warns about the table whose updates PostgreSQL will refuse.
	logs := &logBuffer{}
	src, err := open(context.Background(), bind, tracker.SourceOptions{Logger: slog.New(logs)}, hooks{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	warned := false
	for _, w := range logs.warns {
		if strings.Contains(w, "FAIL") && strings.Contains(w, `"nokey"`) && strings.Contains(w, "REPLICA IDENTITY FULL") {
			warned = true
		}
	}
	if !warned {
		t.Fatalf("no warning about nokey in %q", logs.warns)
	}
	// With the slot in place, its lag is reported.
	res = Check(context.Background(), bind)
	found, twoPhase := false, false
	for _, r := range res {
		if r.Name == "slot lag" && r.OK && strings.Contains(r.Detail, "bytes") {
			found = true
		}
		if r.Name == "two-phase decoding" && r.OK && strings.Contains(r.Detail, "decodes prepared transactions at PREPARE TRANSACTION") {
			twoPhase = true
		}
	}
	if !found || !twoPhase {
		t.Fatalf("no slot lag or two-phase slot in %+v", res)
	}
}

// BenchmarkIntegrationBacklog measures rows per second decoded from a real
// WAL backlog of 200k inserted rows of a 10-column table, handed to a
// handler that only counts.
func BenchmarkIntegrationBacklog(b *testing.B) {
	db := newTestDB(b)
	db.exec(`CREATE TABLE orders (id int8 PRIMARY KEY, customer_id int, status text, total numeric, paid bool,
		created_at timestamptz, attrs jsonb, weight float8, ref uuid, note varchar)`)
	bind := db.bind()
	openSource(b, bind, hooks{}) // creates the slot before the rows
	const rows = 200000
	for i := 0; i < rows; i += 10000 {
		db.exec(fmt.Sprintf(`INSERT INTO orders SELECT g, g %% 1000, 'shipped', g * 1.25, g %% 2 = 0, now(),
			'{"gift": false, "tags": ["a", "b"]}', g / 3.0, gen_random_uuid(), 'leave at the door'
			FROM generate_series(%d, %d) g`, i+1, i+10000))
	}
	b.ResetTimer()
	var total time.Duration
	for b.Loop() {
		src := openSource(b, bind, hooks{})
		var n atomic.Int64
		done := make(chan struct{})
		h := tracker.HandlerFunc(func(ctx context.Context, r tracker.Record) error {
			if r.Kind == tracker.RecordChange && n.Add(1) == rows {
				close(done)
			}
			return nil
		})
		ctx, cancel := context.WithCancel(context.Background())
		began := time.Now()
		errc := make(chan error, 1)
		go func() { errc <- src.Run(ctx, "", h) }()
		select {
		case <-done:
		case err := <-errc:
			b.Fatalf("Run: %v", err)
		case <-time.After(5 * time.Minute):
			b.Fatalf("only %d rows", n.Load())
		}
		total += time.Since(began)
		cancel()
		<-errc
	}
	b.ReportMetric(float64(rows)*float64(b.N)/total.Seconds(), "rows/s")
}
