package e2e

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestResetMariaDBPurgedBinlogs: the binlogs of a stopped bind's checkpoint
// are purged; run refuses ("re-snapshot required", as
// TestMariaDBBinlogsPurgedWhileStopped shows), and says how to go on;
// `trackerd reset --bind my --to current` moves the checkpoint to the end of
// the binlog, keeping its origin and saying what it skips; the next run
// streams again, publishing what is committed after the reset only
// (operator review row 20).
func TestResetMariaDBPurgedBinlogs(t *testing.T) {
	m := startMariaBox(t)
	bs := newBus(t)
	b := m.bind(map[string]string{"t": "id INT PRIMARY KEY"})
	p, env := startMy(t, bs, b, "t")
	tbl := "`" + b.dbs[0] + "`.t"
	db := m.db()
	myExec(t, db, "INSERT INTO "+tbl+" VALUES (1)")
	bs.waitCount(t, 2, time.Minute)
	time.Sleep(300 * time.Millisecond)
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("run: exit %d", code)
	}
	_, before := bindKeys(t, bs, b.key)
	if len(before) != 1 {
		t.Fatalf("checkpoints %v", before)
	}
	var cp struct {
		File string `json:"file"`
	}
	if err := json.Unmarshal([]byte(before[0].Position), &cp); err != nil || cp.File == "" {
		t.Fatalf("checkpoint position %q: %v", before[0].Position, err)
	}
	for id := 2; id <= 4; id++ { // lost with the purged binlogs
		myExec(t, db, fmt.Sprintf("INSERT INTO %s VALUES (%d)", tbl, id))
		myExec(t, db, "FLUSH BINARY LOGS")
	}
	purgeBefore(t, db, cp.File)

	code, out := runCmd(t, env, "run")
	if code == 0 || !strings.Contains(out, "re-snapshot required") {
		t.Fatalf("run with the checkpoint's binlog purged: exit %d, output:\n%s", code, out)
	}
	code, out = runCmd(t, env, "reset", "--bind", b.key, "--to", "current")
	t.Logf("reset:\n%s", out)
	skipped := regexp.MustCompile(`(?m)^  skipped  changes committed after ` + regexp.QuoteMeta(cp.File) + `:\d+ \(GTID [0-9-]+\) up to mysql-bin\.\d+:\d+ \(GTID [0-9-]+\) are never published$`)
	if code != 0 || !skipped.MatchString(out) || !strings.Contains(out, "  was      "+before[0].Position+" (checkpoint "+before[0].Key) {
		t.Fatalf("reset: exit %d", code)
	}
	_, after := bindKeys(t, bs, b.key)
	if len(after) != 1 || after[0].Key != before[0].Key || after[0].Origin != before[0].Origin || after[0].Position == before[0].Position {
		t.Fatalf("checkpoints before %v, after %v: want the origin kept, the position moved", before, after)
	}

	p, _ = startMy(t, bs, b, "t")
	myExec(t, db, "INSERT INTO "+tbl+" VALUES (5)")
	bs.waitCount(t, 4, time.Minute)
	time.Sleep(300 * time.Millisecond)
	var ids []string
	for _, m := range bs.read(t) {
		ids = append(ids, string(m.Change.After["id"]))
	}
	if strings.Join(ids, ",") != "1,1,5,5" {
		t.Errorf("ids published: %v, want 1 and 5 (2 to 4 were skipped by the reset)", ids)
	}
	p.signal(syscall.SIGTERM)
	p.exitCode(30 * time.Second)
}

// purgeBefore purges binary logs until file is gone (MariaDB keeps one
// until its binlog checkpoint has passed it).
func purgeBefore(t testing.TB, db *sql.DB, file string) {
	t.Helper()
	var last string
	var pos int64
	var skip1, skip2 sql.NullString
	if err := db.QueryRowContext(ctxT(t, 10*time.Second), "SHOW MASTER STATUS").Scan(&last, &pos, &skip1, &skip2); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "PURGE BINARY LOGS to remove "+file, func() bool {
		myExec(t, db, "PURGE BINARY LOGS TO '"+last+"'")
		rows, err := db.QueryContext(ctxT(t, 10*time.Second), "SHOW BINARY LOGS")
		if err != nil {
			return false
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			var size int64
			if rows.Scan(&name, &size) == nil && name == file {
				time.Sleep(200 * time.Millisecond)
				return false
			}
		}
		return true
	})
}

// TestResetPostgresInvalidatedSlot: PostgreSQL invalidates a stopped bind's
// slot (max_slot_wal_keep_size): run refuses ("re-snapshot required");
// `trackerd reset --to current` drops the invalidated slot and makes a new
// one, and the next run streams again.
func TestResetPostgresInvalidatedSlot(t *testing.T) {
	pg := startPGBox(t, "max_slot_wal_keep_size=32MB", "max_wal_size=64MB", "min_wal_size=32MB")
	bs := newBus(t)
	b := pg.bind(map[string]string{"t": "id int PRIMARY KEY", "filler": "id int PRIMARY KEY, pad text"})
	p := startPG(t, bs, b, nil, "t")
	db := pg.conn()
	tbl := fmt.Sprintf("%q.t", b.schema)
	pgExec(t, db, "INSERT INTO "+tbl+" VALUES (1)")
	bs.waitCount(t, 2, time.Minute)
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("run: exit %d", code)
	}
	// More WAL than the slot may keep, then checkpoints: the server
	// invalidates the slot.
	eventually(t, 2*time.Minute, "the slot to be invalidated", func() bool {
		pgExec(t, db, fmt.Sprintf(`INSERT INTO %q.filler SELECT g, repeat(md5(g::text), 16) FROM generate_series(1, 50000) g ON CONFLICT (id) DO UPDATE SET pad = EXCLUDED.pad || 'x'`, b.schema))
		pgExec(t, db, "SELECT pg_switch_wal()")
		pgExec(t, db, "CHECKPOINT")
		var status string
		db.QueryRow(ctxT(t, 10*time.Second), "SELECT COALESCE(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1", b.slot).Scan(&status)
		return status == "lost"
	})
	pgExec(t, db, "INSERT INTO "+tbl+" VALUES (2)") // lost with the slot

	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
	code, out := runCmd(t, env, "run")
	if code == 0 || !strings.Contains(out, "re-snapshot required") {
		t.Fatalf("run with the slot invalidated: exit %d, output:\n%s", code, out)
	}
	code, out = runCmd(t, env, "reset", "--bind", b.key, "--to", "current")
	t.Logf("reset:\n%s", out)
	if code != 0 || !strings.Contains(out, "  server   dropped replication slot "+b.slot+", which the server had invalidated (wal_status lost") ||
		!strings.Contains(out, "  server   created replication slot "+b.slot+" at ") || !strings.Contains(out, "  skipped  changes committed after ") {
		t.Fatalf("reset: exit %d", code)
	}
	p = startPG(t, bs, b, nil, "t")
	pgExec(t, db, "INSERT INTO "+tbl+" VALUES (3)")
	bs.waitCount(t, 4, time.Minute)
	time.Sleep(300 * time.Millisecond)
	var ids []string
	for _, m := range bs.read(t) {
		ids = append(ids, string(m.Change.After["id"]))
	}
	if strings.Join(ids, ",") != "1,1,3,3" {
		t.Errorf("ids published: %v, want 1 and 3", ids)
	}
	p.signal(syscall.SIGTERM)
	p.exitCode(30 * time.Second)
}
