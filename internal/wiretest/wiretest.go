// Package wiretest holds the events that wire's golden files and the
// sink's interoperability tests share. For tests only.
package wiretest

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/trackerd/trackerd/tracker"
)

// row builds a row from names and JSON values; "<absent>" is a value left
// out (an unchanged TOAST column).
func row(kv ...string) tracker.Row {
	var r tracker.Row
	r.Names = []string{}
	for i := 0; i < len(kv); i += 2 {
		r.Names = append(r.Names, kv[i])
		if kv[i+1] == "<absent>" {
			r.Values = append(r.Values, nil)
		} else {
			r.Values = append(r.Values, json.RawMessage(kv[i+1]))
		}
	}
	return r
}

// commit is the commit time of most events.
var commit = time.Date(2024, 5, 1, 12, 30, 45, 123456789, time.FixedZone("CEST", 2*3600))

// Event is one named event of Events.
type Event struct {
	Name string
	Ev   *tracker.Event
}

// Events returns the events of wire's golden files (wire/testdata/events)
// and of its comparisons with sdk-go: every kind of change and phase, and
// the strings that escaping gets wrong (quotes, controls, U+2028, invalid
// UTF-8, white space to trim). Each call builds them anew.
func Events() []Event {
	insert := &tracker.Change{
		Bind: "default", Source: "postgresql", Origin: "9f86d081884c7d65", Op: tracker.OpInsert, Schema: "public", Table: "orders",
		Key:   row("id", "42"),
		After: row("id", "42", "customer", `"Zoë"`, "total", `"19.90"`, "paid", "true", "meta", `{"tags":["a","b"]}`),
		TxID:  "7321", TxKey: "lsn-00000000016B3748", Seq: 0, CommitTime: commit, Pos: "0/16B3748",
	}
	update := &tracker.Change{
		Bind: "default", Source: "postgresql", Origin: "9f86d081884c7d65", Op: tracker.OpUpdate, Schema: "public", Table: "orders",
		Key:       row("id", "42"),
		Before:    row("id", "42", "total", `"19.90"`),
		After:     row("id", "42", "total", `"24.50"`, "blob", "<absent>"),
		Unchanged: []string{"blob"},
		TxID:      "7321", TxKey: "lsn-00000000016B3748", Seq: 1, Index: 1, CommitTime: commit, Pos: "0/16B3790",
	}
	mysqlDelete := &tracker.Change{
		Bind: "shop eu", Source: "mariadb", Origin: "9f86d081884c7d65", Op: tracker.OpDelete, Schema: "shop-eu", Table: "order.items",
		Key:    row("order_id", "7", "line", "2"),
		Before: row("order_id", "7", "line", "2", "sku", `"X-1"`),
		TxID:   "0-1-4711", TxKey: "gtid-0-1-4711", Seq: 3, Index: 3, CommitTime: time.Unix(1714566645, 0), Pos: "mysql-bin.000003:8812",
	}
	weird := &tracker.Change{
		Bind: "b/ä\"\\", Source: "postgresql", Origin: "9f86d081884c7d65", Op: tracker.OpInsert, Schema: " Ünits\t", Table: "tab\u2028le\x01 ",
		Key:   row("k", `"a\"b"`),
		After: row("k", `"a\"b"`, "html", `"<a href=\"x\">&</a>"`),
		TxID:  "9", TxKey: "lsn-0000000000000001", Seq: 7, Index: 7, Pos: "0/1\n",
	}
	invalid := &tracker.Change{
		Bind: "bad\xffbind", Source: "mysql", Origin: "9f86d081884c7d65", Op: tracker.OpInsert, Schema: "s\xc3", Table: "t",
		After: row("v", "1"), TxID: "x\xfe", TxKey: "pos-mysql-bin.000001-4", Pos: "p",
	}
	big := &tracker.Change{
		Bind: "default", Source: "postgresql", Origin: "9f86d081884c7d65", Op: tracker.OpInsert, Schema: "public", Table: "docs",
		Key:   row("id", "1"),
		After: row("id", "1", "body", strconv.Quote(strings.Repeat("lorem ipsum ", 2000))),
		TxID:  "1", TxKey: "lsn-0000000000000010", CommitTime: commit, Pos: "0/10",
	}
	rollbackTx := &tracker.Change{
		Bind: "default", Source: "postgresql", Origin: "9f86d081884c7d65", TxID: "7400", TxKey: "xid-7400-00000000016C0000", SubTx: "7401", Seq: 12, Index: 12,
	}
	snapRow := &tracker.Change{
		Bind: "default", Source: "postgresql", Origin: "9f86d081884c7d65", Op: tracker.OpSnapshot, Schema: "public", Table: "orders",
		Key:   row("id", "42"),
		After: row("id", "42", "customer", `"Zoë"`, "total", `"19.90"`),
		TxID:  "snapshot-01JF3Q8Z", TxKey: "snapshot-01JF3Q8Z", Pos: "0/16B3748",
	}
	snapWeird := &tracker.Change{
		Bind: "shop eu", Source: "mariadb", Origin: "9f86d081884c7d65", Op: tracker.OpSnapshot, Schema: "shop-eu", Table: "order.items",
		Key:   row("order_id", "7", "line", "2"),
		After: row("order_id", "7", "line", "2", "sku", `"X\u2028\"1"`),
		TxID:  "snapshot-b\\f\"", TxKey: "snapshot-b\\f\"", Pos: `{"gtid":"0-1-9","file":"mariadb-bin.000001","pos":4}`,
	}
	lcStart := &tracker.Lifecycle{Type: tracker.LifecycleStarted, Bind: "default", Snapshot: "01JF3Q8Z", Kind: tracker.SnapshotBackfill,
		Tables: []string{"public.orders", "public.users"}, Skipped: []string{"public.nokey"}, Time: commit}
	lcTable := &tracker.Lifecycle{Type: tracker.LifecycleTableDone, Bind: "default", Snapshot: "01JF3Q8Z", Kind: tracker.SnapshotBackfill,
		Table: "public.orders", Rows: 1200, Time: commit.Add(time.Minute)}
	lcFailed := &tracker.Lifecycle{Type: tracker.LifecycleFailed, Bind: "shop eu", Snapshot: "s\"1 ", Kind: tracker.SnapshotInitial,
		Rows: 7, Error: "read shop-eu.order.items: <connection refused> & \"gone\""}
	lcChange := func(l *tracker.Lifecycle, source string) *tracker.Change {
		return &tracker.Change{Bind: l.Bind, Origin: "9f86d081884c7d65", Source: source}
	}
	id := func(c *tracker.Change, p tracker.Phase) string {
		return tracker.EventID(c.Bind, c.Origin, c.TxKey, c.Index, p)
	}
	withData := func(c *tracker.Change) []byte { return c.AppendJSON(nil) }
	return []Event{
		{"insert-before", &tracker.Event{Phase: tracker.PhaseBeforeCommit, Change: insert, ID: id(insert, tracker.PhaseBeforeCommit), Data: withData(insert)}},
		{"insert-after", &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: insert, ID: id(insert, tracker.PhaseAfterCommit), TxTotal: 2, Data: withData(insert)}},
		{"update-toast", &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: update, ID: id(update, tracker.PhaseAfterCommit), TxTotal: 2}},
		{"mysql-delete-escaped", &tracker.Event{Phase: tracker.PhaseBeforeCommit, Change: mysqlDelete, ID: id(mysqlDelete, tracker.PhaseBeforeCommit)}},
		{"non-ascii-control", &tracker.Event{Phase: tracker.PhaseBeforeCommit, Change: weird, ID: id(weird, tracker.PhaseBeforeCommit)}},
		{"invalid-utf8", &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: invalid, ID: id(invalid, tracker.PhaseAfterCommit), TxTotal: 1}},
		{"big-data", &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: big, ID: id(big, tracker.PhaseAfterCommit), TxTotal: 1}},
		{"rollback-subtx", &tracker.Event{Phase: tracker.PhaseRollback, Change: rollbackTx, ID: id(rollbackTx, tracker.PhaseRollback),
			Retract: &tracker.Retraction{TxKey: rollbackTx.TxKey, SubTx: "7401", Ranges: []tracker.SeqRange{{From: 4, To: 9}, {From: 11, To: 11}}}}},
		{"rollback-whole-no-retract", &tracker.Event{Phase: tracker.PhaseRollback, Change: &tracker.Change{Bind: "default", Source: "postgresql", Schema: "public", Table: "orders", TxID: "8", TxKey: "xid-8-0000000000000001"},
			ID: "default/xid-8-0000000000000001/0/rollback"}},
		{"snapshot-row", &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: snapRow, TxTotal: 1, Snapshot: "01JF3Q8Z",
			ID: tracker.SnapshotEventID(snapRow.Bind, snapRow.Origin, "01JF3Q8Z", snapRow)}},
		{"snapshot-row-escaped", &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: snapWeird, TxTotal: 1, Snapshot: "b\\f\"",
			ID: tracker.SnapshotEventID(snapWeird.Bind, snapWeird.Origin, "b\\f\"", snapWeird)}},
		{"lifecycle-started", &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: lcChange(lcStart, "postgresql"), Lifecycle: lcStart,
			ID: tracker.LifecycleEventID("default", "9f86d081884c7d65", lcStart)}},
		{"lifecycle-table-done", &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: lcChange(lcTable, "postgresql"), Lifecycle: lcTable,
			ID: tracker.LifecycleEventID("default", "9f86d081884c7d65", lcTable)}},
		{"lifecycle-failed-escaped", &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: lcChange(lcFailed, "mariadb"), Lifecycle: lcFailed,
			ID: tracker.LifecycleEventID("shop eu", "9f86d081884c7d65", lcFailed)}},
	}
}
