package e2e

import (
	"strings"
	"testing"
	"time"
)

// Server settings trackerd cannot work with, in a PostgreSQL container of
// the test's own (the host's server is shared and stays as it is).
func TestPostgresServerNotReady(t *testing.T) {
	t.Run("wal_level replica", func(t *testing.T) {
		box := startPGBox(t, "wal_level=replica")
		b := box.bind(map[string]string{"t": "id int PRIMARY KEY"})
		bs := newBus(t)
		env := bs.env(t)
		env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
		chk := start(t, env, "check")
		if code := chk.exitCode(60 * time.Second); code != 1 || !strings.Contains(chk.out.String(), "wal_level = logical") {
			t.Fatalf("check: exit %d, want 1 with the wal_level fix:\n%s", code, chk.out.String())
		}
		p := start(t, env, "run")
		if code := p.exitCode(60 * time.Second); code != 2 {
			t.Fatalf("run: exit %d, want 2:\n%s", code, p.out.String())
		}
		if out := p.out.String(); !strings.Contains(out, "wal_level is replica") || !strings.Contains(out, "ALTER SYSTEM SET wal_level = logical") {
			t.Fatalf("run does not say what is wrong and how to fix it:\n%s", out)
		}
	})
	t.Run("no free replication slot", func(t *testing.T) {
		box := startPGBox(t, "max_replication_slots=1")
		db := box.conn()
		pgExec(t, db, `SELECT pg_create_logical_replication_slot('someone_elses', 'pgoutput')`)
		b := box.bind(map[string]string{"t": "id int PRIMARY KEY"})
		bs := newBus(t)
		env := bs.env(t)
		env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
		p := start(t, env, "run")
		if code := p.exitCode(60 * time.Second); code != 2 {
			t.Fatalf("run: exit %d, want 2:\n%s", code, p.out.String())
		}
		if out := p.out.String(); !strings.Contains(out, "max_replication_slots") || !strings.Contains(out, "someone_elses") {
			t.Fatalf("run does not name the limit and the slots that use it:\n%s", out)
		}
		var n int
		db.QueryRow(ctxT(t, 10*time.Second), `SELECT count(*) FROM pg_replication_slots`).Scan(&n)
		if n != 1 {
			t.Fatalf("%d slots after the refused start, want the 1 that was there", n)
		}
	})
}
