package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
)

// snapTable returns the followed table name of src, failing the test if it
// is not one.
func snapTable(t testing.TB, src *Source, name string) tracker.SnapshotTable {
	t.Helper()
	ts, err := src.SnapshotTables(context.Background(), []string{name})
	if err != nil {
		t.Fatalf("SnapshotTables(%s): %v", name, err)
	}
	return ts[0]
}

// readAll reads a table in chunks of limit rows, checking the chunks'
// positions and cursors, and returns its rows.
func readAll(t testing.TB, src *Source, tab tracker.SnapshotTable, where string, limit int) []*tracker.Change {
	t.Helper()
	ctx := context.Background()
	var rows []*tracker.Change
	after := ""
	for i := 0; ; i++ {
		var reserved []string
		ch, err := src.ReadChunk(ctx, tracker.ChunkRequest{Table: tab, After: after, Where: where, Limit: limit,
			Reserve: func(pos string) { reserved = append(reserved, pos) }})
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if len(reserved) != 1 || reserved[0] != ch.Pos {
			t.Fatalf("chunk %d at %s: reserved %q, want its position once", i, ch.Pos, reserved)
		}
		if _, err := parseLSN(ch.Pos); err != nil || ch.Pos == "0/0" {
			t.Fatalf("chunk %d: position %q", i, ch.Pos)
		}
		if len(ch.Rows) > limit || !ch.Done && len(ch.Rows) != limit {
			t.Fatalf("chunk %d: %d rows of %d, done %v", i, len(ch.Rows), limit, ch.Done)
		}
		rows = append(rows, ch.Rows...)
		after = ch.Next
		if ch.Done {
			return rows
		}
		if i > 10000 {
			t.Fatal("no end")
		}
	}
}

// jsonValue decodes a JSON value, numbers kept as written.
func jsonValue(raw []byte) any {
	d := json.NewDecoder(strings.NewReader(string(raw)))
	d.UseNumber()
	var v any
	d.Decode(&v)
	return v
}

func keyJSON(c *tracker.Change) string { return string(c.Key.AppendJSON(nil)) }

func TestIntegrationSnapshotTables(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(
		`CREATE SCHEMA other`,
		`CREATE TABLE pk2 (b text, a int, x int, PRIMARY KEY (a, b))`,
		`CREATE TABLE uniq (id int NOT NULL, code text NOT NULL, y int, UNIQUE (code), UNIQUE (id, code))`,
		`CREATE TABLE uniqnull (id int UNIQUE, y int)`,
		`CREATE TABLE partial (id int NOT NULL, y int)`,
		`CREATE UNIQUE INDEX ON partial (id) WHERE y > 0`,
		`CREATE TABLE expr (id int NOT NULL)`,
		`CREATE UNIQUE INDEX ON expr ((id + 1))`,
		`CREATE TABLE nokey (a int)`,
		`CREATE TABLE skipped (id int PRIMARY KEY)`,
		`CREATE TABLE other.pk2 (id int PRIMARY KEY)`,
		`CREATE TABLE parted (id int, p int, PRIMARY KEY (id, p)) PARTITION BY LIST (p)`,
		`CREATE TABLE parted_1 PARTITION OF parted FOR VALUES IN (1)`,
		`INSERT INTO pk2 SELECT 'b', g, g FROM generate_series(1, 1000) g`,
		`ANALYZE pk2`,
	)
	b := db.bind()
	b.ExcludeTables = []string{"skipped"}
	src := openSource(t, b, hooks{})
	ctx := context.Background()
	all, err := src.SnapshotTables(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tb := range all {
		got = append(got, fmt.Sprintf("%s key=%s", tb.Name(), strings.Join(tb.Key, ",")))
	}
	want := []string{
		"other.pk2 key=id",
		"public.expr key=",
		"public.nokey key=",
		"public.parted_1 key=id,p",
		"public.partial key=",
		"public.pk2 key=a,b",
		"public.uniq key=code",
		"public.uniqnull key=",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("tables:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, tb := range all {
		switch tb.Name() {
		case "public.pk2":
			if tb.Estimate != 1000 {
				t.Errorf("estimate of pk2 %d, want 1000", tb.Estimate)
			}
		case "public.uniq":
			if tb.Estimate != -1 {
				t.Errorf("estimate of never analyzed uniq %d, want -1", tb.Estimate)
			}
		}
	}
	// Names: schema-qualified, bare (the current schema wins), in order.
	ts, err := src.SnapshotTables(ctx, []string{"uniq", "pk2", "other.pk2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 3 || ts[0].Name() != "public.uniq" || ts[1].Name() != "public.pk2" || ts[2].Name() != "other.pk2" {
		t.Fatalf("named tables %+v", ts)
	}
	for _, name := range []string{"skipped", "public.missing", "parted"} {
		_, err = src.SnapshotTables(ctx, []string{"pk2", name})
		if !errors.Is(err, tracker.ErrConfig) || !strings.Contains(err.Error(), strconv.Quote(name)) || !strings.Contains(err.Error(), "public.pk2, public.uniq") {
			t.Fatalf("unknown table %s: %v, want a configuration error naming it and listing the followed ones", name, err)
		}
	}
	// A table without a key cannot be read in chunks.
	_, err = src.ReadChunk(ctx, tracker.ChunkRequest{Table: snapTable(t, src, "nokey"), Limit: 10})
	if !errors.Is(err, tracker.ErrConfig) || !strings.Contains(err.Error(), "public.nokey") || !strings.Contains(err.Error(), "PRIMARY KEY") {
		t.Fatalf("keyless table: %v", err)
	}
}

// TestIntegrationSnapshotTablesPublication: only the tables of the bind's
// publication are followed.
func TestIntegrationSnapshotTablesPublication(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE a (id int PRIMARY KEY)`, `CREATE TABLE b (id int PRIMARY KEY)`)
	b := db.bind()
	db.exec(`CREATE PUBLICATION ` + quoteIdent(b.Publication) + ` FOR TABLE a`)
	src := openSource(t, b, hooks{})
	ts, err := src.SnapshotTables(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0].Name() != "public.a" {
		t.Fatalf("tables %+v, want public.a only", ts)
	}
	if _, err := src.SnapshotTables(context.Background(), []string{"b"}); !errors.Is(err, tracker.ErrConfig) {
		t.Fatalf("unpublished table: %v", err)
	}
}

// TestIntegrationSnapshotValuesEqualStream: a snapshot row is exactly what
// the stream's insert of the same row carries, for every kind of value.
func TestIntegrationSnapshotValuesEqualStream(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(
		`CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`,
		`CREATE DOMAIN posint AS int CHECK (VALUE > 0)`,
		`CREATE TABLE wide (
			id int PRIMARY KEY,
			i2 int2, i4 int4, i8 int8, big int8, num numeric, num2 numeric(10,2), f4 float4, f8 float8,
			b bool, j json, jb jsonb, by bytea, tstz timestamptz, ts timestamp, d date, tm time, tmtz timetz,
			iv interval, tx text, vc varchar(20), ch char(5), u uuid, ip inet, cidr cidr, mac macaddr,
			mon money, x xml, m mood, dom posint, ia int[], ta text[], ma mood[], ja jsonb[], pt point,
			tsv tsvector, o oid, gen int GENERATED ALWAYS AS (i2 * 2) STORED, nul text)`,
	)
	src := openSource(t, db.bind(), hooks{})
	rec := &recorder{}
	start(t, src, "", rec)
	db.exec(
		`INSERT INTO wide (id, i2, i4, i8, big, num, num2, f4, f8, b, j, jb, by, tstz, ts, d, tm, tmtz, iv, tx, vc, ch, u, ip, cidr, mac, mon, x, m, dom, ia, ta, ma, ja, pt, tsv, o)
		VALUES (1, -32768, 2147483647, 9007199254740991, 9223372036854775807, 12345678901234567890.123456789, 12.5, 1.1, 0.1,
			true, '{"a": [1, 2.50]}', '{"b": null, "a": 1}', '\x00ff10', '2024-02-29 23:59:59.123456+05:30', '2024-01-01 00:00:00.5',
			'2024-12-31', '13:14:15.5', '01:02:03+02', '1 year 2 months 3 days 04:05:06.7', 'héllo "q" \ ''x''', 'vc', 'ab',
			'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '10.0.0.1/8', '10.0.0.0/8', '08:00:2b:01:02:03', 12.34, '<a>x</a>', 'happy', 7,
			'{1,NULL,3}', '{"a b","c,d",NULL,"e\"f"}', '{sad,ok}', ARRAY['{"k":1}'::jsonb], '(1.5,2)', 'a fat cat', 42)`,
		`INSERT INTO wide (id, f4, f8, tstz, ts, d, num) VALUES (2, 'NaN', '-Infinity', 'infinity', '-infinity', '0044-03-15 BC', 'NaN')`,
		`INSERT INTO wide (id, f8, num, tstz, ts, d) VALUES (3, 1e300, -0.000001, '10000-01-01 00:00:00+00', '1999-12-31 23:59:59', 'infinity')`,
		`INSERT INTO wide (id) VALUES (4)`,
	)
	eventually(t, 20*time.Second, "the inserts", func() bool { return len(rec.changes("wide")) == 4 })
	rows := readAll(t, src, snapTable(t, src, "wide"), "", 3)
	ins := rec.changes("wide")
	if len(rows) != len(ins) {
		t.Fatalf("%d snapshot rows, %d inserts", len(rows), len(ins))
	}
	for i, r := range rows {
		if r.Op != tracker.OpSnapshot || r.Source != sourceKind || r.Schema != "public" || r.Table != "wide" {
			t.Fatalf("row %d: %+v", i, r)
		}
		if got, want := string(r.After.AppendJSON(nil)), string(ins[i].After.AppendJSON(nil)); got != want {
			t.Errorf("row %d:\nsnapshot %s\nstream   %s", i, got, want)
		}
		if got, want := keyJSON(r), keyJSON(ins[i]); got != want {
			t.Errorf("row %d key: snapshot %s, stream %s", i, got, want)
		}
	}
	if _, ok := rows[0].After.Get("gen"); ok {
		t.Errorf("generated column in the snapshot row (the stream has none)")
	}
}

// TestIntegrationSnapshotChunkCursors: chunks resume exactly after Next for
// composite, text, uuid and bytea keys: every row once, in key order.
func TestIntegrationSnapshotChunkCursors(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(
		`CREATE TABLE comp (a int, b text, c timestamptz, v int, PRIMARY KEY (a, b, c))`,
		`INSERT INTO comp SELECT g % 7, chr(65 + g % 5) || repeat('x', g % 3), '2024-01-01'::timestamptz + g * interval '1.5 second', g
			FROM generate_series(1, 300) g`,
		`CREATE TABLE tkey (k text PRIMARY KEY, v int)`,
		`INSERT INTO tkey VALUES (''), (' '), ('a'), ('A'), ('é'), ('e'), ('z'), ('Z'), ('quote''s'), ('back\slash'), ('"dq"'), ('[1,2]'), ('日本'), ('a b'), ('ab'), ('tab	x')`,
		`INSERT INTO tkey SELECT md5(g::text), g FROM generate_series(1, 100) g`,
		`CREATE TABLE ukey (k uuid PRIMARY KEY)`,
		`INSERT INTO ukey SELECT md5(g::text)::uuid FROM generate_series(1, 97) g`,
		`CREATE TABLE bkey (k bytea PRIMARY KEY)`,
		`INSERT INTO bkey SELECT decode(md5(g::text), 'hex') FROM generate_series(1, 50) g`,
		`INSERT INTO bkey VALUES ('\x'), ('\x00'), ('\x0000'), ('\xff')`,
		`CREATE TABLE nkey (k numeric PRIMARY KEY, f float8 NOT NULL UNIQUE)`,
		`INSERT INTO nkey SELECT g / 7.0, g / 3.0 FROM generate_series(1, 60) g`,
	)
	src := openSource(t, db.bind(), hooks{})
	ctx := context.Background()
	for _, tc := range []struct {
		table, order string
	}{
		{"comp", "a, b, c"},
		{"tkey", "k"},
		{"ukey", "k"},
		{"bkey", "k"},
		{"nkey", "k"},
	} {
		tab := snapTable(t, src, tc.table)
		var want []string
		rows, err := db.admin.Query(ctx, `SELECT row_to_json(t)::text FROM `+tc.table+` t ORDER BY `+tc.order)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			rows.Scan(&s)
			want = append(want, s)
		}
		rows.Close()
		for _, limit := range []int{1, 7, 1000} {
			got := readAll(t, src, tab, "", limit)
			if len(got) != len(want) {
				t.Fatalf("%s, chunks of %d: %d rows, want %d", tc.table, limit, len(got), len(want))
			}
			seen := map[string]bool{}
			for _, r := range got {
				k := keyJSON(r)
				if seen[k] {
					t.Fatalf("%s, chunks of %d: row %s twice", tc.table, limit, k)
				}
				seen[k] = true
			}
			// Same order as the server's ORDER BY: compare the key values
			// decoded from the server's row_to_json.
			for i, r := range got {
				var m map[string]json.RawMessage
				json.Unmarshal([]byte(want[i]), &m)
				for j, name := range tab.Key {
					a, b := jsonValue(r.Key.Values[j]), jsonValue(m[name])
					if fmt.Sprint(a) != fmt.Sprint(b) && tc.table != "bkey" && tc.table != "comp" {
						t.Fatalf("%s, chunks of %d: row %d key %s=%v, want %v", tc.table, limit, i, name, a, b)
					}
				}
			}
		}
	}
	// The unique not-null key of a table is used like a primary key.
	got := readAll(t, src, tracker.SnapshotTable{Schema: "public", Table: "nkey", Key: []string{"f"}}, "", 8)
	if len(got) != 60 {
		t.Fatalf("by f: %d rows", len(got))
	}
}

func TestIntegrationSnapshotWhere(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(
		`CREATE TABLE w (id int PRIMARY KEY, v int, note text)`,
		`INSERT INTO w SELECT g, g % 10, 'n' || g FROM generate_series(1, 200) g`,
	)
	const password = "Sn4pSecretPw"
	b := db.bind()
	b.URI.Password = password // trust authentication ignores it
	src := openSource(t, b, hooks{})
	tab := snapTable(t, src, "w")
	rows := readAll(t, src, tab, "v = 3 -- a comment", 4)
	if len(rows) != 20 {
		t.Fatalf("%d rows with v = 3, want 20", len(rows))
	}
	for _, r := range rows {
		if v, _ := r.After.Get("v"); string(v) != "3" {
			t.Fatalf("row %s", r.After.AppendJSON(nil))
		}
	}
	for _, where := range []string{
		"no_such_column = 1",
		"v = '" + password + "'",
		"v = ) OR (",
		"pg_catalog.no_such_function(v)",
	} {
		_, err := src.ReadChunk(context.Background(), tracker.ChunkRequest{Table: tab, Where: where, Limit: 10})
		if !errors.Is(err, tracker.ErrConfig) {
			t.Fatalf("where %q: %v, want a configuration error", where, err)
		}
		if strings.Contains(err.Error(), password) {
			t.Fatalf("where %q: the error holds the password: %v", where, err)
		}
		t.Logf("where %q: %v", where, err)
	}
	// A condition cannot write.
	_, err := src.ReadChunk(context.Background(), tracker.ChunkRequest{Table: tab, Where: "nextval('no_seq') > 0", Limit: 10})
	if err == nil {
		t.Fatal("a writing condition ran")
	}
}

func TestIntegrationSnapshotDroppedTable(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE gone (id int PRIMARY KEY)`, `INSERT INTO gone SELECT generate_series(1, 30)`)
	src := openSource(t, db.bind(), hooks{})
	tab := snapTable(t, src, "gone")
	ch, err := src.ReadChunk(context.Background(), tracker.ChunkRequest{Table: tab, Limit: 10})
	if err != nil || len(ch.Rows) != 10 {
		t.Fatalf("first chunk: %d rows, %v", len(ch.Rows), err)
	}
	db.exec(`DROP TABLE gone`)
	_, err = src.ReadChunk(context.Background(), tracker.ChunkRequest{Table: tab, After: ch.Next, Limit: 10})
	if !errors.Is(err, tracker.ErrConfig) || !strings.Contains(err.Error(), "public.gone does not exist") {
		t.Fatalf("dropped table: %v", err)
	}
	t.Log(err)
}

// TestIntegrationSnapshotNudge: on an idle stream, Nudge makes a keepalive
// record at or past a chunk's position arrive soon.
func TestIntegrationSnapshotNudge(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE n (id int PRIMARY KEY)`, `INSERT INTO n VALUES (1)`)
	src := openSource(t, db.bind(), hooks{})
	var kaMu sync.Mutex
	var lastKA string
	rec := &recorder{before: func(r tracker.Record) error {
		if r.Kind == tracker.RecordKeepalive {
			kaMu.Lock()
			lastKA = r.Pos
			kaMu.Unlock()
		}
		return nil
	}}
	start(t, src, "", rec)
	time.Sleep(2 * time.Second) // let the stream settle
	for i := range 3 {
		ch, err := src.ReadChunk(context.Background(), tracker.ChunkRequest{Table: snapTable(t, src, "n"), Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		src.Nudge()
		src.Nudge()
		eventually(t, 5*time.Second, "a keepalive past the chunk", func() bool {
			kaMu.Lock()
			defer kaMu.Unlock()
			c, err := src.ComparePos(lastKA, ch.Pos)
			return err == nil && c >= 0
		})
		t.Logf("nudge %d: keepalive past %s after %s", i, ch.Pos, time.Since(t0))
		if d := time.Since(t0); d > 1500*time.Millisecond {
			t.Errorf("keepalive took %s", d)
		}
	}
}

func TestComparePos(t *testing.T) {
	s := &Source{}
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"0/16B3F48", "0/16B3F48", 0},
		{"0/16B3F47", "0/16B3F48", -1},
		{"1/0", "0/FFFFFFFF", 1},
		{"0/16B3F48;prepared=0/16B2000", "0/16B3F48", 0},
		{"0/16B3F49;prepared=0/16B2000", "0/16B3F48", 1},
		{"", "0/1", -1},
	} {
		got, err := s.ComparePos(tc.a, tc.b)
		if err != nil || got != tc.want {
			t.Errorf("ComparePos(%q, %q) = %d, %v; want %d", tc.a, tc.b, got, err, tc.want)
		}
	}
	if _, err := s.ComparePos("nope", "0/1"); err == nil {
		t.Error("ComparePos of a bad position: no error")
	}
}

// TestIntegrationSnapshotGate proves the gate rule: with writers committing
// around the reads, a chunk holds a transaction iff the stream hands its
// commit at a position at or before the chunk's. Each chunk row must equal
// the row after applying exactly the stream's transactions committed at or
// before the chunk's Pos, and the chunk's key range must hold exactly the
// rows that state has.
func TestIntegrationSnapshotGate(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	const initial = 200
	db.exec(
		`CREATE TABLE g (id int PRIMARY KEY, v bigint NOT NULL)`,
		fmt.Sprintf(`INSERT INTO g SELECT i, 0 FROM generate_series(1, %d) i`, initial),
	)
	src := openSource(t, db.bind(), hooks{})
	rec := &recorder{}
	start(t, src, "", rec)
	tab := snapTable(t, src, "g")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := pgxpool.New(ctx, db.url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	const writers = 4
	var wg sync.WaitGroup
	var txs atomic.Int64
	var next atomic.Int64
	next.Store(1000)
	for w := range writers {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 7))
			for ctx.Err() == nil {
				// Each writer owns the ids = w mod writers: no waits.
				ids := []int{rnd.IntN(initial/writers)*writers + w + 1, rnd.IntN(initial/writers)*writers + w + 1}
				var err error
				switch rnd.IntN(4) {
				case 0:
					id := int(next.Add(1))*writers + w
					_, err = pool.Exec(ctx, `INSERT INTO g VALUES ($1, 1)`, id)
				case 1:
					_, err = pool.Exec(ctx, `DELETE FROM g WHERE id = (SELECT max(id) FROM g WHERE id > 1000 AND id % $1 = $2)`, writers, w)
				default:
					_, err = pool.Exec(ctx, `UPDATE g SET v = v + 1 WHERE id = ANY ($1)`, ids)
				}
				if err != nil && ctx.Err() == nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				txs.Add(1)
			}
		})
	}
	type read struct {
		after string
		ch    tracker.Chunk
	}
	var reads []read
	deadline := time.Now().Add(8 * time.Second)
	for pass := 0; time.Now().Before(deadline) || pass < 3; pass++ {
		after := ""
		for {
			ch, err := src.ReadChunk(context.Background(), tracker.ChunkRequest{Table: tab, After: after, Limit: 37})
			if err != nil {
				t.Fatal(err)
			}
			reads = append(reads, read{after, ch})
			after = ch.Next
			if ch.Done {
				break
			}
		}
	}
	cancel()
	wg.Wait()
	// Wait until the stream is past every chunk.
	var maxPos string
	for _, r := range reads {
		if c, _ := src.ComparePos(r.ch.Pos, maxPos); c > 0 {
			maxPos = r.ch.Pos
		}
	}
	db.exec(`UPDATE g SET v = v WHERE id = 1`)
	eventually(t, 30*time.Second, "the stream past the chunks", func() bool {
		recs := rec.all()
		for i := len(recs) - 1; i >= 0; i-- {
			if recs[i].Kind == tracker.RecordCommit {
				c, _ := src.ComparePos(recs[i].Pos, maxPos)
				return c > 0
			}
		}
		return false
	})

	// The committed transactions in stream order, with their changes.
	type txn struct {
		pos     string
		changes []*tracker.Change
	}
	var commits []txn
	var cur []*tracker.Change
	for _, r := range rec.all() {
		switch r.Kind {
		case tracker.RecordBegin:
			cur = nil
		case tracker.RecordChange:
			cur = append(cur, r.Change)
		case tracker.RecordCommit:
			commits = append(commits, txn{r.Pos, cur})
			cur = nil
		}
	}
	idOf := func(row tracker.Row) int {
		v, _ := row.Get("id")
		n, _ := strconv.Atoi(string(v))
		return n
	}
	near := 0
	for i, r := range reads {
		state := map[int]string{}
		for id := 1; id <= initial; id++ {
			state[id] = "0"
		}
		var before, after int // commits at or before the chunk, after it
		for _, c := range commits {
			cmp, err := src.ComparePos(c.pos, r.ch.Pos)
			if err != nil {
				t.Fatal(err)
			}
			if cmp > 0 {
				after++
				continue
			}
			before++
			for _, ch := range c.changes {
				switch ch.Op {
				case tracker.OpInsert, tracker.OpUpdate:
					v, _ := ch.After.Get("v")
					state[idOf(ch.After)] = string(v)
				case tracker.OpDelete:
					delete(state, idOf(ch.Key))
				}
			}
		}
		if before > 0 && after > 0 {
			near++
		}
		// The chunk's key range: after its start, up to its last row (or
		// the end when done).
		lo := 0
		if r.after != "" {
			var k []string
			json.Unmarshal([]byte(r.after), &k)
			lo, _ = strconv.Atoi(k[0])
		}
		hi := int(^uint(0) >> 1)
		if !r.ch.Done {
			hi = idOf(r.ch.Rows[len(r.ch.Rows)-1].After)
		}
		var want []string
		for id, v := range state {
			if id > lo && id <= hi {
				want = append(want, fmt.Sprintf("%d=%s", id, v))
			}
		}
		var got []string
		for _, row := range r.ch.Rows {
			v, _ := row.After.Get("v")
			got = append(got, fmt.Sprintf("%d=%s", idOf(row.After), v))
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("chunk %d at %s (after %q): rows\n%v\nwant (stream through %s, %d commits)\n%v", i, r.ch.Pos, r.after, got, r.ch.Pos, before, want)
		}
	}
	t.Logf("%d chunks, %d transactions written, %d commits streamed; %d chunks read amid the commits", len(reads), txs.Load(), len(commits), near)
	if near < len(reads)/2 || txs.Load() < 200 {
		t.Fatalf("too few chunks amid the writes (%d of %d) or transactions (%d): the test proves little", near, len(reads), txs.Load())
	}
}

// BenchmarkSnapshotReadChunk reads a 200k-row table in 10k-row chunks and
// reports rows per second.
func BenchmarkSnapshotReadChunk(b *testing.B) {
	db := newTestDB(b)
	const rows = 200000
	db.exec(
		`CREATE TABLE bench (id bigint PRIMARY KEY, name text, qty int, price numeric(12,2), at timestamptz, ok bool, tags jsonb)`,
		fmt.Sprintf(`INSERT INTO bench SELECT g, 'name ' || g, g %% 1000, g / 100.0, '2024-01-01'::timestamptz + g * interval '1 second', g %% 2 = 0, '{"a": 1}'
			FROM generate_series(1, %d) g`, rows),
		`ANALYZE bench`,
	)
	var bd binds.Bind = db.bind()
	src := openSource(b, bd, hooks{})
	tab := snapTable(b, src, "bench")
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	total := 0
	for b.Loop() {
		after := ""
		for {
			ch, err := src.ReadChunk(ctx, tracker.ChunkRequest{Table: tab, After: after, Limit: 10000})
			if err != nil {
				b.Fatal(err)
			}
			total += len(ch.Rows)
			after = ch.Next
			if ch.Done {
				break
			}
		}
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "rows/s")
}
