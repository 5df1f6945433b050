package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// prepareTx runs stmts in a transaction on conn and prepares it as gid.
// The test's cleanup rolls it back if it is still prepared, even when the
// test fails: a forgotten prepared transaction holds its locks and pins the
// shared server's WAL.
func prepareTx(t testing.TB, conn *pgx.Conn, url, gid string, stmts ...string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("connect to roll back prepared transaction %s: %v", gid, err)
			return
		}
		defer c.Close(ctx)
		var n int
		if c.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1`, gid).Scan(&n); n > 0 {
			if _, err := c.Exec(ctx, fmt.Sprintf(`ROLLBACK PREPARED '%s'`, gid)); err != nil {
				t.Errorf("ROLLBACK PREPARED %s: %v (roll it back by hand: it pins WAL)", gid, err)
			}
		}
	})
	pgExec(t, conn, "BEGIN; "+strings.Join(stmts, "; ")+fmt.Sprintf("; PREPARE TRANSACTION '%s'", gid))
}

// phaseTally counts the stream's events by "<phase> <row id>" (insert
// events) and "rollback <txkey>", and maps row ids to transaction keys.
type phaseTally struct {
	n     map[string]int
	txkey map[string]string // row id -> txkey of its before_commit
	total map[string]string // row id -> trackerdtxtotal of its after_commit
}

func tallyPhases(t testing.TB, ms []msg) phaseTally {
	t.Helper()
	pt := phaseTally{n: map[string]int{}, txkey: map[string]string{}, total: map[string]string{}}
	for _, m := range ms {
		phase := strings.TrimPrefix(m.Event.Type(), "trackerd.")
		if phase == "rollback" {
			var r struct {
				TxKey  string `json:"txkey"`
				Ranges []struct{ From, To int }
			}
			if err := json.Unmarshal(m.Event.Data(), &r); err != nil {
				t.Fatalf("rollback event %s: %v", m.Event.Data(), err)
			}
			pt.n["rollback "+r.TxKey]++
			continue
		}
		id := string(m.Change.After["id"])
		pt.n[phase+" "+id]++
		if phase == "before_commit" {
			pt.txkey[id] = m.Change.Source.TxKey
		} else {
			pt.total[id] = ext(m.Event, "trackerdtxtotal")
			if m.Change.Source.TxKey != pt.txkey[id] {
				t.Errorf("row %s: after_commit txkey %s, before_commit %s", id, m.Change.Source.TxKey, pt.txkey[id])
			}
		}
	}
	return pt
}

// checkpointOf returns the position of the checkpoint in the bus's bucket
// (its one key that is not a lease), "" when there is none yet.
func checkpointOf(t testing.TB, bs *bus) string {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	kv, err := bs.js.KeyValue(ctx, bs.bucket)
	if err != nil {
		return ""
	}
	keys, _ := kv.Keys(ctx)
	for _, k := range keys {
		if strings.HasSuffix(k, ".lease") {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		var cp struct {
			Position string `json:"position"`
		}
		if err := json.Unmarshal(e.Value(), &cp); err != nil {
			t.Fatalf("checkpoint %s: %v", e.Value(), err)
		}
		return cp.Position
	}
	return ""
}

func (pt phaseTally) String() string {
	var out []string
	for k, v := range pt.n {
		out = append(out, fmt.Sprintf("%s x%d", k, v))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// F3 end to end: prepared transactions are published at PREPARE
// TRANSACTION (before_commit), COMMIT PREPARED (after_commit) and ROLLBACK
// PREPARED (a retraction), and trackerd killed with SIGKILL between the
// PREPARE and the COMMIT PREPARED loses nothing: its checkpoint keeps the
// slot at the oldest open prepare, so the server sends the prepared
// transactions again after the restart (their before_commit events with the
// same ids, dropped by JetStream), while what was published after them is
// skipped. Every event is in the stream exactly once per phase.
func TestPostgresTwoPhaseKill(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY, v text"})
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
	p := startGraceful(t, env, "run")
	p.waitLog(`msg=streaming bind=`+b.key, 60*time.Second)
	db := pgAdmin(t)
	url := server(t, "TRACKERD_TEST_POSTGRES_URL")
	tbl := fmt.Sprintf("%q.t", b.schema)
	open, done, rolled := uniq("open"), uniq("done"), uniq("rolled")

	pgExec(t, db, "INSERT INTO "+tbl+" VALUES (1, 'ordinary')")
	prepareTx(t, db, url, open, "INSERT INTO "+tbl+" VALUES (10, 'open')", "INSERT INTO "+tbl+" VALUES (11, 'open')")
	prepareTx(t, db, url, done, "INSERT INTO "+tbl+" VALUES (20, 'done')")
	pgExec(t, db, "INSERT INTO "+tbl+" VALUES (30, 'ordinary')")
	pgExec(t, db, fmt.Sprintf("COMMIT PREPARED '%s'", done))
	prepareTx(t, db, url, rolled, "INSERT INTO "+tbl+" VALUES (40, 'rolled back')")
	pgExec(t, db, "INSERT INTO "+tbl+" VALUES (35, 'ordinary')")
	// 1, 20, 30, 35: both phases; 10, 11, 40: before_commit, at PREPARE.
	bs.waitCount(t, 11, 30*time.Second)
	pt := tallyPhases(t, bs.read(t))
	for _, id := range []string{"10", "11", "40"} {
		if pt.n["before_commit "+id] != 1 || pt.n["after_commit "+id] != 0 {
			t.Fatalf("prepared row %s before COMMIT PREPARED: %s", id, pt)
		}
	}
	eventually(t, 30*time.Second, "a checkpoint naming the two open prepared transactions", func() bool {
		_, list, ok := strings.Cut(checkpointOf(t, bs), ";prepared=")
		return ok && strings.Count(list, ",") == 1
	})
	t.Logf("checkpoint at the kill: %s", checkpointOf(t, bs))
	p.signal(syscall.SIGKILL)
	p.exitCode(30 * time.Second)

	p = startGraceful(t, env, "run")
	p.waitLog(`msg=streaming bind=`+b.key, 60*time.Second)
	pgExec(t, db, fmt.Sprintf("COMMIT PREPARED '%s'", open))
	pgExec(t, db, fmt.Sprintf("ROLLBACK PREPARED '%s'", rolled))
	pgExec(t, db, "INSERT INTO "+tbl+" VALUES (50, 'after')")
	bs.waitCount(t, 16, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // nothing more must arrive
	ms := bs.read(t)
	pt = tallyPhases(t, ms)
	want := map[string]int{"rollback " + pt.txkey["40"]: 1}
	for _, id := range []string{"1", "10", "11", "20", "30", "35", "50"} {
		want["before_commit "+id], want["after_commit "+id] = 1, 1
	}
	want["before_commit 40"] = 1
	if len(ms) != 16 || fmt.Sprint(pt.n) != fmt.Sprint(want) {
		t.Fatalf("%d events: %s\nwant once each: %v", len(ms), pt, want)
	}
	if pt.txkey["10"] != pt.txkey["11"] || pt.total["10"] != "2" {
		t.Fatalf("the prepared transaction: keys %s %s, trackerdtxtotal %s", pt.txkey["10"], pt.txkey["11"], pt.total["10"])
	}
	// The restart sent again only the open prepared transactions'
	// before_commit events (10, 11, 40), not what followed them.
	if d := trackerdMetric(t, p, "trackerd_sink_duplicates_total"); d != 3 {
		t.Fatalf("%d events sent again after the restart, want the 3 before_commit events of the open prepared transactions", d)
	}
	if n := trackerdMetric(t, p, `trackerd_open_transactions{bind="`+b.key+`"}`); n != 0 {
		t.Fatalf("trackerd_open_transactions = %d after every prepared transaction ended", n)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("SIGTERM: exit code %d", code)
	}
}

// M5 end to end: an open streamed transaction handed over before trackerd's
// replication connection dropped, and not sent again after it (its changes
// lie before the new connection's start), is freed once it rolls back: its
// before_commit events are retracted and trackerd_open_transactions comes
// back to 0.
func TestPostgresOrphanedStreamedTransaction(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"s": "id int PRIMARY KEY, pad text"})
	env := bs.env(t)
	env["TRACKER_BINDS"] = streamingBindsJSON(t, b, "s")
	p := startGraceful(t, env, "run")
	p.waitLog(`msg=streaming bind=`+b.key, 60*time.Second)
	db := pgAdmin(t)
	tbl := fmt.Sprintf("%q.s", b.schema)
	ctx := ctxT(t, 2*time.Minute)
	bigTx, err := pgx.Connect(ctx, server(t, "TRACKERD_TEST_POSTGRES_URL"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bigTx.Close(context.Background()) })
	for _, s := range []string{"BEGIN", "INSERT INTO " + tbl + " SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g"} {
		if _, err := bigTx.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	eventually(t, 30*time.Second, "before_commit events of the open transaction", func() bool { return bs.count(t) > 0 })
	pgExec(t, db, "INSERT INTO "+tbl+" VALUES (0, 'after it')")
	eventually(t, 30*time.Second, "the commit after it", func() bool {
		for _, m := range bs.read(t) {
			if m.Event.Type() == "trackerd.after_commit" {
				return true
			}
		}
		return false
	})
	if n := trackerdMetric(t, p, `trackerd_open_transactions{bind="`+b.key+`"}`); n != 1 {
		t.Fatalf("trackerd_open_transactions = %d with the streamed transaction open", n)
	}
	var pid int32
	if err := db.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, b.slot).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	pgExec(t, db, fmt.Sprintf("SELECT pg_terminate_backend(%d)", pid))
	eventually(t, 30*time.Second, "trackerd's new replication connection", func() bool {
		var p int32
		db.QueryRow(ctx, `SELECT COALESCE(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, b.slot).Scan(&p)
		return p != 0 && p != pid
	})
	if _, err := bigTx.Exec(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the retraction", func() bool {
		for _, m := range bs.read(t) {
			if m.Event.Type() == "trackerd.rollback" {
				return true
			}
		}
		return false
	})
	eventually(t, 10*time.Second, "trackerd_open_transactions back to 0", func() bool {
		return trackerdMetric(t, p, `trackerd_open_transactions{bind="`+b.key+`"}`) == 0
	})
	pt := tallyPhases(t, bs.read(t))
	if pt.n["rollback "+pt.txkey["1"]] != 1 || pt.n["after_commit 1"] != 0 || pt.n["after_commit 0"] != 1 {
		t.Fatalf("stream: %s", pt)
	}
}
