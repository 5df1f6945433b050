package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// XA transactions of MariaDB (F3): the binlog holds an XA transaction's
// rows at XA PREPARE, and its XA COMMIT or XA ROLLBACK later, in a group of
// its own. trackerd publishes the before_commit events at XA PREPARE (truly
// before the commit), the after_commit events at XA COMMIT, a retraction at
// XA ROLLBACK; XA COMMIT ... ONE PHASE is an ordinary transaction.

// xaSession is one connection for XA statements (a prepared transaction
// belongs to its connection while it lives); prepared transactions of the
// test left behind are rolled back at the end.
type xaSession struct {
	t    *testing.T
	conn *sql.Conn
	tag  string
}

func newXASession(t *testing.T, db *sql.DB) *xaSession {
	t.Helper()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	x := &xaSession{t: t, conn: conn, tag: uniq("xa")}
	t.Cleanup(func() {
		conn.Close()
		rows, err := db.Query("XA RECOVER")
		if err != nil {
			return
		}
		var ids []string
		for rows.Next() {
			var f, g, b int
			var data string
			if rows.Scan(&f, &g, &b, &data) == nil && strings.HasPrefix(data, x.tag) {
				ids = append(ids, data)
			}
		}
		rows.Close()
		for _, id := range ids {
			db.Exec("XA ROLLBACK '" + id + "'")
		}
	})
	return x
}

func (x *xaSession) exec(qs ...string) {
	x.t.Helper()
	for _, q := range qs {
		if _, err := x.conn.ExecContext(ctxT(x.t, time.Minute), q); err != nil {
			x.t.Fatalf("%s: %v", q, err)
		}
	}
}

// prepare runs an XA transaction of stmts up to XA PREPARE.
func (x *xaSession) prepare(name string, stmts ...string) string {
	x.t.Helper()
	xid := "'" + x.tag + name + "'"
	x.exec("XA START " + xid)
	x.exec(stmts...)
	x.exec("XA END "+xid, "XA PREPARE "+xid)
	return xid
}

// xaSummary renders messages as summary does, rollback events as
// "rollback <txkey> <ranges>".
func xaSummary(ms []msg) []string {
	out := summary(ms)
	for i, m := range ms {
		if m.Event.Type() == "trackerd.rollback" {
			var d rollbackData
			json.Unmarshal(m.Event.Data(), &d)
			out[i] = fmt.Sprintf("rollback %s %v", d.TxKey, d.Ranges)
		}
	}
	return out
}

// cpPosition returns the position of the one checkpoint in the bus's
// bucket (beside its lease).
func cpPosition(t testing.TB, bs *bus) string {
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
			return ""
		}
		var cp struct {
			Position string `json:"position"`
		}
		json.Unmarshal(e.Value(), &cp)
		return cp.Position
	}
	return ""
}

func TestMariaDBXA(t *testing.T) {
	bs := newBus(t)
	b := newMyBind(t, 1, map[string]string{"t": "id INT PRIMARY KEY"})
	env := deployment(t, bs, bs.bucket, map[string]any{"default": myBindConf(b.uri, nil)})
	p := startDeployment(t, env)
	db := mysqlAdmin(t)
	x := newXASession(t, db)
	tbl := "`" + b.dbs[0] + "`.t"

	a := x.prepare("a", "INSERT INTO "+tbl+" VALUES (1), (2)")
	bs.waitCount(t, 2, 30*time.Second)
	time.Sleep(300 * time.Millisecond)
	if got := summary(bs.read(t)); len(got) != 2 || !strings.HasPrefix(got[0], "before_commit") || !strings.HasPrefix(got[1], "before_commit") {
		t.Fatalf("after XA PREPARE the stream holds %v, want the two before_commit events", got)
	}
	myExec(t, db, "INSERT INTO "+tbl+" VALUES (3)")
	x.exec("XA COMMIT " + a)
	r := x.prepare("r", "INSERT INTO "+tbl+" VALUES (4)")
	x.exec("XA ROLLBACK " + r)
	x.exec("XA START '"+x.tag+"one'", "INSERT INTO "+tbl+" VALUES (5)", "XA END '"+x.tag+"one'", "XA COMMIT '"+x.tag+"one' ONE PHASE")
	ms := settle(t, bs, 10)
	q := b.dbs[0] + ".t"
	want := []string{
		"before_commit " + q + " seq=0 insert id=1",
		"before_commit " + q + " seq=1 insert id=2",
		"before_commit " + q + " seq=0 insert id=3",
		"after_commit " + q + " seq=0 total=1 insert id=3",
		"after_commit " + q + " seq=0 total=2 insert id=1",
		"after_commit " + q + " seq=1 total=2 insert id=2",
		"before_commit " + q + " seq=0 insert id=4",
		"rollback " + ms[6].Change.Source.TxKey + " [{0 0}]",
		"before_commit " + q + " seq=0 insert id=5",
		"after_commit " + q + " seq=0 total=1 insert id=5",
	}
	if got := xaSummary(ms); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stream:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	distinctIDs(t, ms)
	// The prepared transaction's events share its key: its XA PREPARE
	// group's GTID.
	if ms[0].Change.Source.TxKey != ms[4].Change.Source.TxKey || !strings.HasPrefix(ms[0].Change.Source.TxKey, "gtid-") {
		t.Errorf("XA transaction keys %q (before) and %q (after)", ms[0].Change.Source.TxKey, ms[4].Change.Source.TxKey)
	}
	stopAll(t, p)
}

// TestMariaDBXAKill9 kills trackerd (SIGKILL) between XA PREPARE and XA
// COMMIT, after its checkpoint has passed the prepare and two later
// transactions. On restart the prepared transaction is read again (its
// before_commit events carry the same ids: JetStream drops them), the two
// later ones are not, and XA COMMIT publishes its after_commit events:
// every event once per phase.
func TestMariaDBXAKill9(t *testing.T) {
	bs := newBus(t)
	b := newMyBind(t, 1, map[string]string{"t": "id INT PRIMARY KEY"})
	env := deployment(t, bs, bs.bucket, map[string]any{"default": myBindConf(b.uri, nil)})
	env["TRACKER_HTTP_ADDR"] = "127.0.0.1:0"
	p := startDeployment(t, env)
	db := mysqlAdmin(t)
	x := newXASession(t, db)
	tbl := "`" + b.dbs[0] + "`.t"

	xid := x.prepare("k", "INSERT INTO "+tbl+" VALUES (1), (2)")
	bs.waitCount(t, 2, 30*time.Second)
	myExec(t, db, "INSERT INTO "+tbl+" VALUES (3)")
	myExec(t, db, "INSERT INTO "+tbl+" VALUES (4)")
	var file string
	var end int64
	var x1, x2 sql.NullString
	if err := db.QueryRowContext(ctxT(t, 10*time.Second), "SHOW MASTER STATUS").Scan(&file, &end, &x1, &x2); err != nil {
		t.Fatal(err)
	}
	bs.waitCount(t, 6, 30*time.Second)
	eventually(t, 30*time.Second, "a checkpoint past row 4 that lists the prepared transaction", func() bool {
		var cp struct {
			File string            `json:"file"`
			Pos  int64             `json:"pos"`
			XA   []json.RawMessage `json:"xa"`
		}
		if json.Unmarshal([]byte(cpPosition(t, bs)), &cp) != nil {
			return false
		}
		return len(cp.XA) == 1 && (cp.File > file || cp.File == file && cp.Pos >= end)
	})
	p.cmd.Process.Kill()
	p.exitCode(30 * time.Second)

	x.exec("XA COMMIT " + xid)
	myExec(t, db, "INSERT INTO "+tbl+" VALUES (5)")
	p2 := startDeployment(t, env)
	ms := settle(t, bs, 10)
	checkRowsExactlyOnce(t, ms, []int{1, 2, 3, 4, 5})
	if got := xaSummary(ms[6:8]); got[0] != "after_commit "+b.dbs[0]+".t seq=0 total=2 insert id=1" {
		t.Errorf("after the restart: %v, want the XA transaction's after_commit events first", got)
	}
	// Sent again: the prepared transaction's two before_commit events, not
	// rows 3 and 4, which the checkpoint had passed.
	if dups := trackerdMetric(t, p2, "trackerd_sink_duplicates_total"); dups != 2 {
		t.Errorf("%d events sent again after the restart, want 2 (the prepared transaction's before_commit events)", dups)
	}
	p2.signal(syscall.SIGTERM)
	if code := p2.exitCode(30 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}
