package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackerd/trackerd/tracker"
)

// prepareTx runs stmts in a transaction and prepares it as gid. The test's
// cleanup rolls it back if it is still prepared, even when the test fails:
// a forgotten prepared transaction holds its locks and pins the shared
// server's WAL.
func (db *testDB) prepareTx(gid string, stmts ...string) {
	db.t.Helper()
	db.t.Cleanup(func() { rollbackPrepared(db.t, serverURL(db.t), db.name, gid) })
	db.exec("BEGIN; " + strings.Join(stmts, "; ") + "; PREPARE TRANSACTION " + quoteLiteral(gid))
}

// rollbackPrepared rolls back prepared transaction gid of database dbName
// if it is still there.
func rollbackPrepared(t testing.TB, raw, dbName, gid string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, withDatabase(t, raw, dbName))
	if err != nil {
		t.Errorf("connect to roll back prepared transaction %s: %v", gid, err)
		return
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1`, gid).Scan(&n); err != nil || n == 0 {
		return
	}
	if _, err := c.Exec(ctx, "ROLLBACK PREPARED "+quoteLiteral(gid)); err != nil {
		t.Errorf("ROLLBACK PREPARED %s: %v (roll it back by hand: it pins WAL)", gid, err)
	}
}

// keyOf returns the key of the first change of table with key id.
func (r *recorder) keyOf(table, id string) string {
	for _, c := range r.changes(table) {
		if string(c.Key.AppendJSON(nil)) == `{"id":`+id+`}` {
			return c.TxKey
		}
	}
	return ""
}

// last returns the last record of kind k for transaction key, and whether
// there is one.
func (r *recorder) last(k tracker.RecordKind, key string) (tracker.Record, bool) {
	recs := r.all()
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Kind == k && recs[i].Tx.TxKey == key {
			return recs[i], true
		}
	}
	return tracker.Record{}, false
}

func slotTwoPhase(t testing.TB, c *pgx.Conn, slot string) bool {
	t.Helper()
	var on bool
	if err := c.QueryRow(context.Background(), `SELECT two_phase FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&on); err != nil {
		t.Fatalf("read slot %s: %v", slot, err)
	}
	return on
}

// F3: PREPARE TRANSACTION hands the transaction over at once, as one that
// interleaves with others; COMMIT PREPARED commits it, ROLLBACK PREPARED
// withdraws it.
func TestIntegrationTwoPhase(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE p (id int PRIMARY KEY, v text)`)
	bind := db.bind()
	src := openSource(t, bind, hooks{})
	if !slotTwoPhase(t, db.admin, bind.Slot) {
		t.Fatalf("slot %s created without two-phase", bind.Slot)
	}
	rec := &recorder{}
	start(t, src, "", rec)
	gidC, gidR := uniqueName(t, "c_"), uniqueName(t, "r_")

	db.prepareTx(gidC, `INSERT INTO p VALUES (1, 'prepared')`, `INSERT INTO p VALUES (2, 'prepared')`)
	eventually(t, 20*time.Second, "the prepared rows before COMMIT PREPARED", func() bool { return len(rec.changes("p")) == 2 })
	key := rec.keyOf("p", "1")
	if b, ok := rec.last(tracker.RecordBegin, key); !ok || !b.Tx.Streamed {
		t.Fatalf("prepared transaction %s: begin %+v, want one handed over as streamed", key, b)
	}
	if _, ok := rec.last(tracker.RecordCommit, key); ok {
		t.Fatal("a commit before COMMIT PREPARED")
	}
	// Others commit meanwhile; their positions say the prepared
	// transaction is open, and confirming them does not move the slot past
	// its prepare.
	db.exec(`INSERT INTO p VALUES (3, 'ordinary')`)
	eventually(t, 20*time.Second, "the ordinary transaction", func() bool { return rec.keyOf("p", "3") != "" })
	c3, _ := rec.last(tracker.RecordCommit, rec.keyOf("p", "3"))
	pos, err := parsePosition(c3.Pos)
	if err != nil || len(pos.prepared) != 1 || pos.confirm() >= pos.through {
		t.Fatalf("commit position %q while a transaction is prepared (%v)", c3.Pos, err)
	}
	src.Confirm(c3.Pos)
	eventually(t, 15*time.Second, "the slot to reach the prepare", func() bool {
		c, _ := slotState(t, db.admin, bind.Slot)
		return c == pos.prepared[0]
	})

	db.exec("COMMIT PREPARED " + quoteLiteral(gidC))
	eventually(t, 20*time.Second, "COMMIT PREPARED", func() bool { _, ok := rec.last(tracker.RecordCommit, key); return ok })
	commit, _ := rec.last(tracker.RecordCommit, key)
	if commit.Tx.CommitTime.IsZero() || strings.Contains(commit.Pos, "prepared") {
		t.Fatalf("commit prepared %+v", commit)
	}

	db.prepareTx(gidR, `INSERT INTO p VALUES (4, 'rolled back')`)
	eventually(t, 20*time.Second, "the second prepared transaction", func() bool { return rec.keyOf("p", "4") != "" })
	db.exec("ROLLBACK PREPARED " + quoteLiteral(gidR))
	keyR := rec.keyOf("p", "4")
	eventually(t, 20*time.Second, "ROLLBACK PREPARED", func() bool { _, ok := rec.last(tracker.RecordRollback, keyR); return ok })
	if _, ok := rec.last(tracker.RecordCommit, keyR); ok {
		t.Fatal("a rolled-back prepared transaction committed")
	}
	if got := kinds(dataRecords(rec.all())); got != "BiiBiC C BiR" {
		t.Fatalf("records %q", got)
	}
}

// F3, a crash between PREPARE TRANSACTION and COMMIT PREPARED: the tracker
// lost the prepared transaction's changes, so Run, from the last position
// handed over, gets it again from the server, with the same key and
// indexes, while what was published after its prepare is skipped: an
// ordinary transaction, and a prepared one committed meanwhile. With
// streaming on, the connection that reads again streams nothing (it could
// not tell a streamed transaction published already from a new one) and is
// replaced once past the position.
func TestIntegrationTwoPhaseRestart(t *testing.T) {
	for _, streaming := range []bool{false, true} {
		t.Run(fmt.Sprintf("streaming=%t", streaming), func(t *testing.T) {
			t.Parallel()
			db := newTestDB(t)
			db.exec(`CREATE TABLE p (id int PRIMARY KEY, v text)`)
			bind := db.bind()
			bind.Streaming = streaming
			h := hooks{params: map[string]string{"logical_decoding_work_mem": "64kB"}}
			src := openSource(t, bind, h)
			rec := &recorder{}
			r := start(t, src, "", rec)
			open, done := uniqueName(t, "o_"), uniqueName(t, "d_")
			db.prepareTx(open, `INSERT INTO p VALUES (1, 'open')`, `INSERT INTO p VALUES (2, 'open')`)
			db.prepareTx(done, `INSERT INTO p VALUES (3, 'done')`)
			db.exec(`INSERT INTO p VALUES (4, 'ordinary')`, "COMMIT PREPARED "+quoteLiteral(done))
			eventually(t, 20*time.Second, "COMMIT PREPARED of "+done, func() bool {
				_, ok := rec.last(tracker.RecordCommit, rec.keyOf("p", "3"))
				return ok
			})
			keyOpen := rec.keyOf("p", "1")
			var idx []int64
			for _, c := range rec.changes("p")[:2] {
				idx = append(idx, c.Index)
			}
			last, _ := rec.last(tracker.RecordCommit, rec.keyOf("p", "3"))
			if !strings.Contains(last.Pos, "prepared=") {
				t.Fatalf("last position %q does not name the open prepared transaction", last.Pos)
			}
			src.Confirm(last.Pos)
			time.Sleep(1500 * time.Millisecond) // a status update reaches the server
			if err := r.stop(t); err != nil {
				t.Fatalf("Run: %v", err)
			}

			src2 := openSource(t, bind, h)
			rec2 := &recorder{}
			start(t, src2, last.Pos, rec2)
			eventually(t, 30*time.Second, "the open prepared transaction again", func() bool { return len(rec2.changes("p")) == 2 })
			if streaming {
				// A big transaction streams once the connection is past
				// the position.
				db.exec(`INSERT INTO p SELECT g, repeat('x', 200) FROM generate_series(100, 2099) g`)
				eventually(t, 30*time.Second, "the big transaction", func() bool { return len(rec2.changes("p")) == 2002 })
			}
			db.exec("COMMIT PREPARED " + quoteLiteral(open))
			eventually(t, 20*time.Second, "COMMIT PREPARED of "+open, func() bool { _, ok := rec2.last(tracker.RecordCommit, keyOpen); return ok })
			var got []string
			for i, c := range rec2.changes("p")[:2] {
				if c.TxKey != keyOpen || c.Index != idx[i] {
					t.Errorf("row %s sent again as %s/%d, was %s/%d", c.Key.AppendJSON(nil), c.TxKey, c.Index, keyOpen, idx[i])
				}
				got = append(got, string(c.Key.AppendJSON(nil)))
			}
			if strings.Join(got, " ") != `{"id":1} {"id":2}` {
				t.Fatalf("sent again: %v, want only the open prepared transaction's rows", got)
			}
			if streaming {
				streamed := false
				for _, x := range rec2.all() {
					streamed = streamed || x.Kind == tracker.RecordBegin && x.Tx.Streamed && x.Tx.TxKey != keyOpen
				}
				if !streamed {
					t.Fatal("the big transaction was not streamed after the re-reading")
				}
			}
		})
	}
}

// A slot created without two-phase is switched on by the first START with
// two_phase (PostgreSQL 15 does so at the slot's confirmed position): a
// transaction prepared before that point arrives whole at COMMIT PREPARED,
// later ones at their PREPARE.
func TestIntegrationTwoPhaseExistingSlot(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE p (id int PRIMARY KEY, v text)`)
	bind := db.bind()
	db.exec(`CREATE PUBLICATION `+quoteIdent(bind.Publication)+` FOR TABLE p`,
		`SELECT pg_create_logical_replication_slot(`+quoteLiteral(bind.Slot)+`, 'pgoutput')`)
	before, after := uniqueName(t, "b_"), uniqueName(t, "a_")
	db.prepareTx(before, `INSERT INTO p VALUES (1, 'prepared before')`)
	db.exec(`SELECT pg_replication_slot_advance(` + quoteLiteral(bind.Slot) + `, pg_current_wal_lsn())`)
	if slotTwoPhase(t, db.admin, bind.Slot) {
		t.Fatal("the slot has two-phase already")
	}
	src := openSource(t, bind, hooks{})
	rec := &recorder{}
	start(t, src, "", rec)
	eventually(t, 15*time.Second, "the slot switched to two-phase", func() bool { return slotTwoPhase(t, db.admin, bind.Slot) })
	db.prepareTx(after, `INSERT INTO p VALUES (2, 'prepared after')`)
	eventually(t, 20*time.Second, "the transaction prepared after, at its PREPARE", func() bool { return rec.keyOf("p", "2") != "" })
	if rec.keyOf("p", "1") != "" {
		t.Fatal("the transaction prepared before the switch arrived before its COMMIT PREPARED")
	}
	db.exec("COMMIT PREPARED "+quoteLiteral(before), "COMMIT PREPARED "+quoteLiteral(after))
	eventually(t, 20*time.Second, "both commits", func() bool {
		_, ok1 := rec.last(tracker.RecordCommit, rec.keyOf("p", "1"))
		_, ok2 := rec.last(tracker.RecordCommit, rec.keyOf("p", "2"))
		return ok1 && ok2
	})
	if got := kinds(dataRecords(rec.all())); got != "BiBiC C" {
		t.Fatalf("records %q", got)
	}
}
