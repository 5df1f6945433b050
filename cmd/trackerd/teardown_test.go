package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
)

// TestTeardownResetUsage: teardown and reset name the bind with --bind;
// reset takes --to current or snapshot, and refuses anything else in one
// line (exit 2).
func TestTeardownResetUsage(t *testing.T) {
	env := map[string]string{"TRACKER_DATABASE_URI": "postgresql://app@db.invalid/shop", "TRACKER_BINDS": `{"orders": "mysql://app@db.invalid/orders"}`}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"teardown"}, "trackerd: teardown needs --bind KEY: the binds are default, orders"},
		{[]string{"teardown", "--bind", "ordres"}, "trackerd: teardown --bind ordres: no such bind; the binds are default, orders"},
		{[]string{"teardown", "--bind", "orders", "extra"}, `trackerd: teardown takes no arguments, got ["extra"]`},
		{[]string{"reset", "--bind", "orders"}, "trackerd: reset needs --to current or --to snapshot: the bind moves to the server's current position, and the changes since its checkpoint are never published (with snapshot, the tables' rows are then read and published)"},
		{[]string{"reset", "--bind", "orders", "--to", "yesterday"}, `trackerd: reset --to "yesterday": want current or snapshot`},
		{[]string{"reset", "--to", "current"}, "trackerd: reset needs --bind KEY: the binds are default, orders"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			e := map[string]string{"HOME": t.TempDir()}
			for k, v := range env {
				e[k] = v
			}
			var out, errOut strings.Builder
			code := run(context.Background(), tc.args, mapEnv(e), &out, &errOut)
			if code != exitUsage || out.String() != "" || errOut.String() != tc.want+"\n" {
				t.Fatalf("exit %d, stdout %q, stderr:\n%s\nwant exit 2 and:\n%s", code, out.String(), errOut.String(), tc.want)
			}
		})
	}
}

// TestBindCheckpoints: teardown and reset take the checkpoint of the
// bind's source, and those its server wrote under a former identity, its
// own first; others (another database sharing the bind key and bucket)
// are left alone.
func TestBindCheckpoints(t *testing.T) {
	b := binds.Bind{Key: "shop"}
	id := "mariadb/1/db2:3306/shop"
	fp := tracker.Footprint{Identity: id, SameServer: func(o string) bool { return strings.HasPrefix(o, "mariadb/1/") && strings.HasSuffix(o, "/shop") }}
	now := time.Now()
	cp := func(source string, age time.Duration) tracker.StoredCheckpoint {
		return tracker.StoredCheckpoint{Key: tracker.CheckpointKey("shop", source), Checkpoint: tracker.Checkpoint{Source: source, Time: now.Add(-age)}}
	}
	all := []tracker.StoredCheckpoint{cp("mariadb/1/db0:3306/shop", time.Hour), cp("mariadb/1/db1:3306/shop", time.Minute), cp(id, 2*time.Hour),
		cp("mariadb/1/db1:3306/other", 0), {Key: "shop.junk"}}
	mine, others := bindCheckpoints(b, fp, all)
	var got []string
	for _, sc := range mine {
		got = append(got, sc.Source)
	}
	if want := []string{id, "mariadb/1/db1:3306/shop", "mariadb/1/db0:3306/shop"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("mine %v, want %v", got, want)
	}
	if len(others) != 2 {
		t.Errorf("others %v, want the other database's and the junk key", others)
	}
	// PostgreSQL: no SameServer, only the identity's own.
	mine, _ = bindCheckpoints(b, tracker.Footprint{Identity: id}, all)
	if len(mine) != 1 || mine[0].Source != id {
		t.Errorf("without SameServer: %v", mine)
	}
	if err := refuseHeld("teardown", b, []tracker.StoredCheckpoint{{Key: "k", Holder: "vm:/data, pid 9"}}); err == nil ||
		!strings.Contains(err.Error(), "teardown of bind shop refused: a running trackerd holds it (vm:/data, pid 9)") {
		t.Errorf("refuseHeld: %v", err)
	}
}
