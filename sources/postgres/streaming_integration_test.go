package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackerd/trackerd/tracker"
)

// changeIDs lists "<txkey>/<index> <key>" of a recorder's changes of table.
func changeIDs(r *recorder, table string) []string {
	var out []string
	for _, c := range r.changes(table) {
		out = append(out, fmt.Sprintf("%s/%d %s", c.TxKey, c.Index, c.Key.AppendJSON(nil)))
	}
	return out
}

// F4: a transaction gets the same key and indexes, so the same event ids,
// whether the server streams it or sends it whole at its commit, also when
// its first record is a DDL's or a write to a table the publication does
// not hold (Stream Start then carries that record's LSN; the key is the
// first change message's). Two slots read one publication, one streaming
// with a 64kB decoding budget.
func TestIntegrationStreamedKey(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE s (id int PRIMARY KEY, pad text)`, `CREATE TABLE u (id int PRIMARY KEY)`)
	streamed := db.bind()
	plain := db.bind()
	plain.Publication = streamed.Publication
	db.exec(`CREATE PUBLICATION ` + quoteIdent(streamed.Publication) + ` FOR TABLE s`)
	streamed.Streaming = true
	srcS := openSource(t, streamed, hooks{params: map[string]string{"logical_decoding_work_mem": "64kB"}})
	srcP := openSource(t, plain, hooks{})
	recS, recP := &recorder{}, &recorder{}
	start(t, srcS, "", recS)
	start(t, srcP, "", recP)
	db.exec(
		`BEGIN; CREATE TABLE ddl_first (id int); INSERT INTO s SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g; COMMIT`,
		`BEGIN; INSERT INTO u VALUES (1); INSERT INTO s SELECT g, repeat('x', 200) FROM generate_series(2001, 4000) g; COMMIT`,
		`BEGIN; INSERT INTO s SELECT g, repeat('x', 200) FROM generate_series(4001, 6000) g; COMMIT`,
	)
	eventually(t, 60*time.Second, "6000 rows on both slots", func() bool {
		return len(recS.changes("s")) == 6000 && len(recP.changes("s")) == 6000
	})
	streamedTx := map[string]bool{}
	for _, r := range recS.all() {
		if r.Kind == tracker.RecordBegin && r.Tx.Streamed {
			streamedTx[r.Tx.TxKey] = true
		}
	}
	if len(streamedTx) != 3 {
		t.Fatalf("%d of the 3 transactions streamed", len(streamedTx))
	}
	s, p := changeIDs(recS, "s"), changeIDs(recP, "s")
	for i := range s {
		if s[i] != p[i] {
			t.Fatalf("change %d: %s streamed, %s not (transaction %d of 3)", i, s[i], p[i], i/2000+1)
		}
	}
}

// M5: open streamed transactions handed over before a reconnect that the
// server does not send again (their changes all lie before the new
// connection's start, so they are no longer streamed) are settled by their
// fate: one that rolls back is retracted; one that commits arrives whole,
// under the same key; one that commits with nothing left to publish (its
// rows were in a subtransaction rolled back) is retracted once the stream
// is past its commit.
func TestIntegrationOrphans(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE s (id int PRIMARY KEY, pad text)`)
	bind := db.bind()
	bind.Streaming = true
	src := openSource(t, bind, hooks{params: map[string]string{"logical_decoding_work_mem": "64kB"}, fateEvery: 100 * time.Millisecond})
	rec := &recorder{}
	start(t, src, "", rec)

	ctx := context.Background()
	open := func(stmts ...string) *pgx.Conn {
		c, err := pgx.Connect(ctx, db.url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		for _, s := range append([]string{"BEGIN"}, stmts...) {
			if _, err := c.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		return c
	}
	aborts := open(`INSERT INTO s SELECT g, repeat('a', 200) FROM generate_series(1, 2000) g`)
	commits := open(`INSERT INTO s SELECT g, repeat('b', 200) FROM generate_series(10001, 12000) g`)
	empties := open(`SAVEPOINT sp`, `INSERT INTO s SELECT g, repeat('c', 200) FROM generate_series(20001, 22000) g`)
	eventually(t, 30*time.Second, "changes of the three open transactions", func() bool {
		return rec.keyOf("s", "1") != "" && rec.keyOf("s", "10001") != "" && rec.keyOf("s", "20001") != ""
	})
	keyA, keyB, keyC := rec.keyOf("s", "1"), rec.keyOf("s", "10001"), rec.keyOf("s", "20001")
	db.exec(`INSERT INTO s VALUES (0, 'after them')`)
	eventually(t, 20*time.Second, "the commit after them", func() bool { return rec.keyOf("s", "0") != "" })

	var pid int32
	if err := db.admin.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, bind.Slot).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	db.exec(fmt.Sprintf(`SELECT pg_terminate_backend(%d)`, pid))
	eventually(t, 30*time.Second, "a new connection", func() bool {
		var p int32
		db.admin.QueryRow(ctx, `SELECT COALESCE(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, bind.Slot).Scan(&p)
		return p != 0 && p != pid
	})
	n := len(rec.all())
	for c, s := range map[*pgx.Conn][]string{aborts: {"ROLLBACK"}, commits: {"COMMIT"}, empties: {"ROLLBACK TO SAVEPOINT sp", "COMMIT"}} {
		for _, s := range s {
			if _, err := c.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
	db.exec(`INSERT INTO s VALUES (-1, 'after the fates')`)
	eventually(t, 30*time.Second, "the three settled", func() bool {
		_, a := rec.last(tracker.RecordRollback, keyA)
		_, b := rec.last(tracker.RecordCommit, keyB)
		_, c := rec.last(tracker.RecordRollback, keyC)
		return a && b && c
	})
	var after []string
	for _, r := range rec.all()[n:] {
		switch r.Kind {
		case tracker.RecordRollback:
			after = append(after, "rollback "+map[string]string{keyA: "A", keyB: "B", keyC: "C"}[r.Tx.TxKey])
		case tracker.RecordBegin:
			if r.Tx.TxKey == keyB {
				after = append(after, "begin B")
			}
		case tracker.RecordCommit:
			if r.Tx.TxKey == keyB {
				after = append(after, "commit B")
			}
		}
	}
	// B arrives whole; A's and C's retractions come when their fate is
	// known, in either order with B.
	got := strings.Join(after, ", ")
	for _, want := range []string{"rollback A", "begin B", "commit B", "rollback C"} {
		if strings.Count(got, want) != 1 {
			t.Fatalf("after the reconnect: %s; want each of rollback A, begin B, commit B, rollback C once", got)
		}
	}
	if b := rec.changes("s"); len(b) == 0 {
		t.Fatal("no changes")
	}
	rows := 0
	for _, c := range rec.changes("s") {
		if c.TxKey == keyB {
			rows++
		}
	}
	if rows < 2000 {
		t.Fatalf("%d rows of B", rows)
	}
}

// Two deployments of one bind key on one database, with disjoint tables and
// slots of their own, share the default publication name: the second one
// found the first one's publication, for the first one's tables, and would
// have received nothing, without a word. It stops, saying what to do.
func TestIntegrationPublicationWithoutTheBindsTables(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE a (id int PRIMARY KEY)`, `CREATE TABLE b (id int PRIMARY KEY)`,
		`CREATE TABLE parted (id int PRIMARY KEY) PARTITION BY RANGE (id)`,
		`CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100)`)
	first := db.bind()
	first.Tables = []string{"a", "parted"}
	openSource(t, first, hooks{})
	second := db.bind()
	second.Publication = first.Publication
	second.Tables = []string{"public.b", "a"}
	_, err := open(context.Background(), second, tracker.SourceOptions{Logger: testLogger(t)}, hooks{})
	if !errors.Is(err, tracker.ErrConfig) || !strings.Contains(err.Error(), "publishes none of the bind's tables public.b") || strings.Contains(err.Error(), "public.b, a") {
		t.Fatalf("open with a publication of other tables: %v", err)
	}
	var fail *tracker.CheckResult
	for _, r := range Check(context.Background(), second) {
		if r.Name == "publication" {
			fail = &r
		}
	}
	if fail == nil || fail.OK || !strings.Contains(fail.Fix, "ALTER PUBLICATION") {
		t.Fatalf("check: %+v", fail)
	}
	// A bind of the tables it does publish (the partitioned table through
	// its partition) opens.
	third := db.bind()
	third.Publication = first.Publication
	third.Tables = []string{"parted"}
	openSource(t, third, hooks{})
}
