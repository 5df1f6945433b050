package main

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/sources/mysql"
	"github.com/trackerd/trackerd/tracker"
)

// TestHeldByHolder: a slot or server_id in use is ok when a running
// trackerd holds the lease of the bind's checkpoint for this very source,
// and stays a failure (or a warning) otherwise (operator review row 5).
func TestHeldByHolder(t *testing.T) {
	pg := binds.Bind{Key: "pg", Kind: binds.Postgres, Slot: "trackerd_shop_pg", URI: binds.URI{Database: "shop"}}
	my := binds.Bind{Key: "my", Kind: binds.MySQL, ServerID: 4242, URI: binds.URI{Database: "orders"}}
	slotBusy := tracker.CheckResult{Name: "slot not in use", Detail: "slot trackerd_shop_pg is in use by PID 77", Fix: "stop the other trackerd following this bind; if that process is stale: SELECT pg_terminate_backend(77);"}
	readerBusy := tracker.CheckResult{Name: "reader server_id", OK: true, Warn: true, Detail: mysql.ReaderConnected + "4242 is connected from 10.0.0.9 (this bind already running, or another reader)", Fix: "give each reader its own server_id"}
	other := tracker.CheckResult{Name: "wal_level", OK: true, Detail: "wal_level is logical"}
	held := func(source string) []tracker.StoredCheckpoint {
		return []tracker.StoredCheckpoint{{Key: "k", Checkpoint: tracker.Checkpoint{Source: source}, Holder: "vm:/var/lib/trackerd, pid 1234"}}
	}
	tests := []struct {
		name string
		b    binds.Bind
		in   tracker.CheckResult
		held []tracker.StoredCheckpoint
		ok   bool
		warn bool
	}{
		{"slot held by the bind's holder", pg, slotBusy, held("pg/7300000000000000001/shop/trackerd_shop_pg"), true, false},
		{"slot, nobody holds the bind", pg, slotBusy, nil, false, false},
		{"slot, holder of another database", pg, slotBusy, held("pg/7300000000000000001/other/trackerd_shop_pg"), false, false},
		{"slot, holder of another slot", pg, slotBusy, held("pg/7300000000000000001/shop/trackerd_shop_x"), false, false},
		{"server_id held by the bind's holder", my, readerBusy, held("mariadb/1/db1:3306/orders"), true, false},
		{"server_id held by the bind's holder, MySQL", my, readerBusy, held("mysql/3e11fa47-71ca-11e1-9e33-c80aa9429562/orders"), true, false},
		{"server_id, nobody holds the bind", my, readerBusy, nil, true, true},
		{"server_id, holder of another database", my, readerBusy, held("mariadb/1/db1:3306/shop"), true, true},
		{"other checks untouched", pg, other, held("pg/1/shop/trackerd_shop_pg"), true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := heldByHolder(tc.b, []tracker.CheckResult{tc.in}, tc.held)
			r := out[0]
			if r.OK != tc.ok || r.Warn != tc.warn {
				t.Fatalf("ok %v warn %v, want %v %v: %+v", r.OK, r.Warn, tc.ok, tc.warn, r)
			}
			changed := r != tc.in
			if want := tc.ok && !tc.warn && tc.in != other; changed != want {
				t.Fatalf("changed %v, want %v: %+v", changed, want, r)
			}
			if changed && (r.Fix != "" || !strings.Contains(r.Detail, "the running trackerd that holds the bind's lease (vm:/var/lib/trackerd, pid 1234)")) {
				t.Errorf("detail %q, fix %q", r.Detail, r.Fix)
			}
		})
	}
}

// TestCheckFixOnce: a fix that the detail carries too ("...; fix: X") is
// printed once, on the fix line (operator review row 14): here a database
// that does not exist, on the test PostgreSQL.
func TestCheckFixOnce(t *testing.T) {
	pgURL := os.Getenv("TRACKERD_TEST_POSTGRES_URL")
	if pgURL == "" {
		t.Skip("set TRACKERD_TEST_POSTGRES_URL (scripts/test.sh does)")
	}
	u, err := url.Parse(pgURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/no_such_database_for_trackerd_check"
	var out, errOut strings.Builder
	code := run(context.Background(), []string{"check"}, mapEnv(map[string]string{
		"TRACKER_DATABASE_URI": u.String(), "TRACKER_TRACK_MODIFICATIONS": "true",
		"TRACKER_EMBEDDED_NATS_ADDR": "127.0.0.1:0", "TRACKER_DATA_DIR": t.TempDir(), "HOME": t.TempDir(),
	}), &out, &errOut)
	if code != exitFailure {
		t.Fatalf("exit %d:\n%s%s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "fix: create the database or correct the URI") {
		t.Fatalf("no fix line:\n%s", out.String())
	}
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, "; fix: ") {
			t.Errorf("a detail repeats its fix: %s", l)
		}
	}
}
