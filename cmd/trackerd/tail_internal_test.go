package main

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trackerd/trackerd/changefeed"
	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/tracker"
)

// TestTailTarget: without NATS_URL, tail connects to the embedded server
// with the credentials DATA_DIR keeps (F9).
func TestTailTarget(t *testing.T) {
	const url = "nats://127.0.0.1:4999"
	tests := []struct {
		name     string
		files    map[string]string // in DATA_DIR
		natsURL  string
		wantUser string
		wantErr  string
	}{
		{"NATS_URL wins", map[string]string{"nats.url": url, "nats.auth": "NATS_USER=trackerd\nNATS_PASSWORD=pw\n"}, "nats://elsewhere:4222", "cfg-user", ""},
		{"embedded with credentials", map[string]string{"nats.url": url + "\n", "nats.auth": "# x\nNATS_USER=trackerd\nNATS_PASSWORD=pw\n"}, "", "trackerd", ""},
		{"embedded of a trackerd without credentials", map[string]string{"nats.url": url}, "", "", ""},
		{"no embedded server", nil, "", "", "no embedded server is running"},
		{"unusable credentials", map[string]string{"nats.url": url, "nats.auth": "NATS_USER=trackerd\n"}, "", "", "cannot be used"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg := config.Default()
			cfg.DataDir, cfg.NATSURL = dir, tc.natsURL
			cfg.NATS.User, cfg.NATS.Password = "cfg-user", "cfg-pw"
			got, co, err := tailTarget(&cfg, slog.New(slog.DiscardHandler))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !isConfigError(err) {
					t.Fatalf("err = %v, want a usage error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := url
			if tc.natsURL != "" {
				want = tc.natsURL
			}
			if got != want || co.User != tc.wantUser || co.Name != "trackerd tail" {
				t.Fatalf("tailTarget = %q, user %q, name %q; want %q, user %q", got, co.User, co.Name, want, tc.wantUser)
			}
			if tc.wantUser == "trackerd" && co.Password != "pw" {
				t.Fatal("the password of nats.auth is not used")
			}
		})
	}
}

// TestPrettyLine: --pretty's one line per event.
func TestPrettyLine(t *testing.T) {
	row := func(kv ...string) tracker.Row {
		var r tracker.Row
		for i := 0; i < len(kv); i += 2 {
			r.Names = append(r.Names, kv[i])
			if kv[i+1] == "<unsent>" {
				r.Values = append(r.Values, nil)
				continue
			}
			r.Values = append(r.Values, json.RawMessage(kv[i+1]))
		}
		return r
	}
	at := time.Date(2026, 5, 1, 12, 0, 5, 123456789, time.FixedZone("CEST", 7200))
	long := `"` + strings.Repeat("x", 50) + `"`
	tests := []struct {
		name string
		m    changefeed.Message
		want string
	}{
		{"insert", changefeed.Message{Phase: tracker.PhaseAfterCommit, Time: at, Stream: 42, Change: tracker.Change{
			Bind: "default", Schema: "public", Table: "orders", Op: tracker.OpInsert,
			Key: row("id", "1"), After: row("id", "1", "note", `"first"`, "body", long)}},
			`2026-05-01T10:00:05.123Z after_commit  default public.orders insert id=1: id=1 note="first" body="xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... #42`},
		{"update with the old image: changed columns only", changefeed.Message{Phase: tracker.PhaseBeforeCommit, Change: tracker.Change{
			Bind: "pg", Schema: "shop", Table: "orders", Op: tracker.OpUpdate,
			Key: row("id", "1"), Before: row("id", "1", "note", `"a"`, "n", "2"), After: row("id", "1", "note", `"b"`, "n", "2", "big", "<unsent>")}},
			`- before_commit pg shop.orders update id=1: note="a"->"b"`},
		{"update without the old image", changefeed.Message{Phase: tracker.PhaseAfterCommit, Time: at, Change: tracker.Change{
			Bind: "pg", Schema: "shop", Table: "orders", Op: tracker.OpUpdate, Key: row("id", "1"), After: row("id", "1", "note", `"b"`)}},
			`2026-05-01T10:00:05.123Z after_commit  pg shop.orders update id=1: id=1 note="b"`},
		{"delete", changefeed.Message{Phase: tracker.PhaseAfterCommit, Time: at, Stream: 7, Change: tracker.Change{
			Bind: "m", Schema: "app", Table: "t", Op: tracker.OpDelete, Key: row("a", "1", "b", `"x"`)}},
			`2026-05-01T10:00:05.123Z after_commit  m app.t delete a=1 b="x" #7`},
		{"truncate", changefeed.Message{Phase: tracker.PhaseAfterCommit, Time: at, Change: tracker.Change{
			Bind: "m", Schema: "app", Table: "t", Op: tracker.OpTruncate}},
			`2026-05-01T10:00:05.123Z after_commit  m app.t truncate`},
		{"rollback", changefeed.Message{Phase: tracker.PhaseRollback, Stream: 9, Change: tracker.Change{Bind: "pg"},
			Retract: &tracker.Retraction{TxKey: "lsn-00000000016B3748", Ranges: []tracker.SeqRange{{From: 0, To: 2}}}},
			`- rollback      pg rollback tx lsn-00000000016B3748 txseq 0-2 #9`},
		{"snapshot row", changefeed.Message{Phase: tracker.PhaseAfterCommit, Stream: 11, Snapshot: "s1", Change: tracker.Change{
			Bind: "pg", Schema: "shop", Table: "orders", Op: tracker.OpSnapshot, Key: row("id", "1"), After: row("id", "1", "note", `"a"`)}},
			`- after_commit  pg shop.orders snapshot (snapshot s1) id=1: id=1 note="a" #11`},
		{"lifecycle started", changefeed.Message{Phase: tracker.PhaseAfterCommit, Time: at, Snapshot: "s1", Lifecycle: &tracker.Lifecycle{
			Type: tracker.LifecycleStarted, Bind: "pg", Snapshot: "s1", Kind: tracker.SnapshotBackfill, Tables: []string{"shop.orders", "shop.users"}, Skipped: []string{"shop.log"}}},
			`2026-05-01T10:00:05.123Z snapshot      pg snapshot s1 started (backfill) tables=shop.orders,shop.users skipped=shop.log`},
		{"lifecycle table_done", changefeed.Message{Phase: tracker.PhaseAfterCommit, Time: at, Stream: 3, Lifecycle: &tracker.Lifecycle{
			Type: tracker.LifecycleTableDone, Bind: "pg", Snapshot: "s1", Kind: tracker.SnapshotInitial, Table: "shop.orders", Rows: 1200}},
			`2026-05-01T10:00:05.123Z snapshot      pg snapshot s1 table_done (initial) shop.orders rows=1200 #3`},
		{"lifecycle failed", changefeed.Message{Phase: tracker.PhaseAfterCommit, Time: at, Lifecycle: &tracker.Lifecycle{
			Type: tracker.LifecycleFailed, Bind: "pg", Snapshot: "s1", Kind: tracker.SnapshotBackfill, Rows: 7, Error: "gone"}},
			`2026-05-01T10:00:05.123Z snapshot      pg snapshot s1 failed (backfill) rows=7 error="gone"`},
	}
	for _, tc := range tests {
		if got := prettyLine(&tc.m); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
}

// TestTailControlFlags: --control selects lifecycle events; the filters
// that do not apply to them are usage errors, found before connecting.
func TestTailControlFlags(t *testing.T) {
	for _, args := range [][]string{{"--control", "--op", "snapshot"}, {"--control", "--signal", "after_commit"}, {"--control", "--schema", "public"}} {
		var out, errb strings.Builder
		err := cmdTail(t.Context(), args, func(string) (string, bool) { return "", false }, &out, &errb)
		if err == nil || !isConfigError(err) || !strings.Contains(err.Error(), "--control") {
			t.Errorf("tail %v: %v, want a usage error about --control", args, err)
		}
	}
	var out, errb strings.Builder
	if err := cmdTail(t.Context(), []string{"--op", "snapshots"}, func(string) (string, bool) { return "", false }, &out, &errb); err == nil || !isConfigError(err) || !strings.Contains(err.Error(), "snapshot") {
		t.Errorf("tail --op snapshots: %v, want a usage error listing snapshot", err)
	}
}
