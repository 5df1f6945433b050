package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
)

// storedCheckpoint is a checkpoint as the bucket holds it.
type storedCheckpoint struct {
	Key      string
	Source   string `json:"source"`
	Origin   string `json:"origin"`
	Position string `json:"position"`
}

// bindKeys returns the keys of the bucket that belong to bind (its
// checkpoints and leases), and the checkpoints decoded.
func bindKeys(t testing.TB, bs *bus, bind string) (keys []string, cps []storedCheckpoint) {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	kv, err := bs.js.KeyValue(ctx, bs.bucket)
	if err != nil {
		return nil, nil
	}
	all, err := kv.Keys(ctx)
	if err != nil && err != jetstream.ErrNoKeysFound {
		t.Fatalf("keys of %s: %v", bs.bucket, err)
	}
	for _, k := range all {
		if !strings.HasPrefix(k, bind+".") {
			continue
		}
		keys = append(keys, k)
		if strings.HasSuffix(k, ".lease") {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		cp := storedCheckpoint{Key: k}
		if err := json.Unmarshal(e.Value(), &cp); err != nil {
			t.Fatalf("checkpoint %s: %v", k, err)
		}
		cps = append(cps, cp)
	}
	return keys, cps
}

func pgHas(t testing.TB, c *pgx.Conn, query, name string) bool {
	t.Helper()
	var ok bool
	if err := c.QueryRow(ctxT(t, 10*time.Second), "SELECT EXISTS ("+query+")", name).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

const (
	pgSlotQ = `SELECT FROM pg_replication_slots WHERE slot_name = $1`
	pgPubQ  = `SELECT FROM pg_publication WHERE pubname = $1`
)

// runCmd runs a trackerd command to its end and returns its exit status
// and output.
func runCmd(t testing.TB, env map[string]string, args ...string) (int, string) {
	t.Helper()
	p := start(t, env, args...)
	code := p.exitCode(2 * time.Minute)
	return code, p.out.String()
}

// defaultPGBind is a PostgreSQL bind with trackerd's default slot and
// publication names (trackerd_test_<key>, trackerd_<key>), under a bind
// key of its own, over one table of a schema of its own.
type defaultPGBind struct {
	key, schema, slot, pub, uri string
}

func newDefaultPGBind(t *testing.T) *defaultPGBind {
	t.Helper()
	admin := pgAdmin(t)
	key := uniq("td")
	u := server(t, "TRACKERD_TEST_POSTGRES_URL")
	var db string
	if err := admin.QueryRow(ctxT(t, 10*time.Second), `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	b := &defaultPGBind{key: key, schema: uniq("e2e"), slot: "trackerd_" + db + "_" + key, pub: "trackerd_" + key, uri: u}
	pgExec(t, admin, fmt.Sprintf(`CREATE SCHEMA %q`, b.schema))
	pgExec(t, admin, fmt.Sprintf(`CREATE TABLE %q.t (id int PRIMARY KEY)`, b.schema))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, u)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		dropSlot(ctx, t, c, b.slot)
		c.Exec(ctx, fmt.Sprintf(`DROP PUBLICATION IF EXISTS %q`, b.pub))
		c.Exec(ctx, fmt.Sprintf(`DROP SCHEMA IF EXISTS %q CASCADE`, b.schema))
	})
	return b
}

func (b *defaultPGBind) binds() string {
	data, _ := json.Marshal(map[string]any{b.key: map[string]any{"uri": b.uri, "tables": []string{b.schema + ".t"}}})
	return string(data)
}

// TestTeardownPostgres: `trackerd teardown --bind B` lists the bind's slot,
// the publication trackerd made, "none" for the event trigger, and its
// checkpoint; refuses while a running trackerd holds the bind, naming it;
// removes nothing without --yes and exactly what it listed with it; the
// next run starts afresh (a new slot, publication and origin) and streams
// (operator review row 2).
func TestTeardownPostgres(t *testing.T) {
	bs := newBus(t)
	b := newDefaultPGBind(t)
	admin := pgAdmin(t)
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.binds()
	p := start(t, env, "run")
	p.waitLog(`msg=streaming bind=`+b.key, time.Minute)
	pgExec(t, admin, fmt.Sprintf(`INSERT INTO %q.t VALUES (1), (2)`, b.schema))
	bs.waitCount(t, 4, time.Minute)
	_, cps := bindKeys(t, bs, b.key)
	if len(cps) != 1 {
		t.Fatalf("checkpoints %v, want one", cps)
	}
	first := cps[0]

	// Refused while the bind runs: the holder is named, nothing changes.
	for _, args := range [][]string{{"teardown", "--bind", b.key, "--yes"}, {"reset", "--bind", b.key, "--to", "current"}} {
		code, out := runCmd(t, env, args...)
		want := fmt.Sprintf(`^trackerd: %s of bind %s refused: a running trackerd holds it \(\S+, pid %d\); stop that trackerd first`, args[0], regexp.QuoteMeta(b.key), p.cmd.Process.Pid)
		if code != 1 || !regexp.MustCompile(want).MatchString(out) || strings.Count(out, "\n") != 1 {
			t.Fatalf("%v beside the running trackerd: exit %d, output:\n%s\nwant exit 1 and one line matching %s", args, code, out, want)
		}
	}
	if !pgHas(t, admin, pgSlotQ, b.slot) || !pgHas(t, admin, pgPubQ, b.pub) {
		t.Fatal("the refused teardown removed something")
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("run: exit %d", code)
	}

	// Listed, not removed.
	code, out := runCmd(t, env, "teardown", "--bind", b.key)
	t.Logf("teardown:\n%s", out)
	wantLines := []string{
		fmt.Sprintf(`^  remove  replication slot  %s: logical pgoutput slot, inactive, confirmed_flush_lsn \S+, wal_status \w+, \d+ bytes of WAL retained$`, b.slot),
		fmt.Sprintf(`^  remove  publication       %s: for 1 tables, made by trackerd for this bind \(its comment says so\)$`, b.pub),
		`^  none    event trigger     none$`,
		fmt.Sprintf(`^  remove  checkpoint        %s and its lease: at \S+, written \d+s ago \(bucket %s on nats://\S+\)$`, regexp.QuoteMeta(first.Key), bs.bucket),
		fmt.Sprintf(`^nothing was removed: run trackerd teardown --bind %s --yes \(with the same configuration\) to remove what is marked remove$`, regexp.QuoteMeta(b.key)),
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if code != 0 || len(lines) != 1+len(wantLines) || !strings.HasPrefix(lines[0], "bind "+b.key+" (postgres") {
		t.Fatalf("teardown without --yes: exit %d, output:\n%s", code, out)
	}
	for i, re := range wantLines {
		if !regexp.MustCompile(re).MatchString(lines[i+1]) {
			t.Errorf("line %d:\n%s\ndoes not match\n%s", i+2, lines[i+1], re)
		}
	}
	if keys, _ := bindKeys(t, bs, b.key); !pgHas(t, admin, pgSlotQ, b.slot) || !pgHas(t, admin, pgPubQ, b.pub) || len(keys) != 1 {
		t.Fatalf("teardown without --yes removed something (keys %v)", keys)
	}

	// Removed: exactly what was listed.
	code, out = runCmd(t, env, "teardown", "--bind", b.key, "--yes")
	t.Logf("teardown --yes:\n%s", out)
	for _, want := range []string{"dropped replication slot " + b.slot + "\n", "dropped publication " + b.pub + "\n", "removed checkpoint " + first.Key + "\n",
		"bind " + b.key + " is torn down: its next run starts afresh at the server's current position\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("teardown --yes does not say %q", want)
		}
	}
	if code != 0 || strings.Count(out, "dropped ")+strings.Count(out, "removed ") != 3 {
		t.Fatalf("teardown --yes: exit %d, output:\n%s", code, out)
	}
	if keys, _ := bindKeys(t, bs, b.key); pgHas(t, admin, pgSlotQ, b.slot) || pgHas(t, admin, pgPubQ, b.pub) || len(keys) != 0 {
		t.Fatalf("left behind: slot %v, publication %v, keys %v", pgHas(t, admin, pgSlotQ, b.slot), pgHas(t, admin, pgPubQ, b.pub), keys)
	}
	code, out = runCmd(t, env, "teardown", "--bind", b.key, "--yes")
	if code != 0 || !strings.Contains(out, "nothing to remove: bind "+b.key+" leaves nothing behind\n") {
		t.Fatalf("a second teardown: exit %d\n%s", code, out)
	}

	// The next run starts afresh, and streams.
	p = start(t, env, "run")
	p.waitLog(`msg=streaming bind=`+b.key, time.Minute)
	for _, want := range []string{"created replication slot", "creating publication for the bind's tables"} {
		if !strings.Contains(p.out.String(), want) {
			t.Errorf("the run after teardown does not log %q", want)
		}
	}
	pgExec(t, admin, fmt.Sprintf(`INSERT INTO %q.t VALUES (3)`, b.schema))
	bs.waitCount(t, 6, time.Minute)
	if _, cps := bindKeys(t, bs, b.key); len(cps) != 1 || cps[0].Origin == first.Origin {
		t.Errorf("checkpoints after the fresh start %v: want one with a new origin (was %s)", cps, first.Origin)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("run: exit %d", code)
	}
}

// TestTeardownKeepsUsersPublication: a publication the user made and named
// in the bind's configuration is listed as kept, and stays; the slot and
// checkpoint go.
func TestTeardownKeepsUsersPublication(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY"})
	admin := pgAdmin(t)
	pgExec(t, admin, fmt.Sprintf(`CREATE PUBLICATION %q FOR TABLE %q.t`, b.pub, b.schema))
	p := startPG(t, bs, b, nil, "t")
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("run: exit %d", code)
	}
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
	code, out := runCmd(t, env, "teardown", "--bind", b.key, "--yes")
	t.Logf("teardown --yes:\n%s", out)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("  keep    publication       %s: not made by trackerd: it has no trackerd comment and is not named trackerd_pg", b.pub)) ||
		!strings.Contains(out, "dropped replication slot "+b.slot+"\n") || strings.Contains(out, "dropped publication") {
		t.Fatalf("teardown --yes: exit %d", code)
	}
	if !pgHas(t, admin, pgPubQ, b.pub) || pgHas(t, admin, pgSlotQ, b.slot) {
		t.Fatal("the user's publication went, or the slot stayed")
	}
	if keys, _ := bindKeys(t, bs, b.key); len(keys) != 0 {
		t.Fatalf("keys left: %v", keys)
	}
}

// TestTeardownMariaDB: a binlog reader leaves nothing on the server; its
// checkpoint goes, and the next run starts afresh with a new origin.
func TestTeardownMariaDB(t *testing.T) {
	bs := newBus(t)
	b := newMyBind(t, 1, map[string]string{"t": "id INT PRIMARY KEY"})
	p, env := startMy(t, bs, b, "t")
	db := mysqlAdmin(t)
	tbl := "`" + b.dbs[0] + "`.t"
	myExec(t, db, "INSERT INTO "+tbl+" VALUES (1)")
	bs.waitCount(t, 2, time.Minute)
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("run: exit %d", code)
	}
	_, cps := bindKeys(t, bs, b.key)
	if len(cps) != 1 {
		t.Fatalf("checkpoints %v", cps)
	}
	code, out := runCmd(t, env, "teardown", "--bind", b.key)
	t.Logf("teardown:\n%s", out)
	if code != 0 || !strings.Contains(out, "  none    server objects    a binlog reader makes nothing on the server\n") ||
		!strings.Contains(out, "  remove  checkpoint        "+cps[0].Key+" and its lease: at {") {
		t.Fatalf("teardown: exit %d", code)
	}
	code, out = runCmd(t, env, "teardown", "--bind", b.key, "--yes")
	if code != 0 || !strings.Contains(out, "removed checkpoint "+cps[0].Key+"\n") {
		t.Fatalf("teardown --yes: exit %d\n%s", code, out)
	}
	if keys, _ := bindKeys(t, bs, b.key); len(keys) != 0 {
		t.Fatalf("keys left: %v", keys)
	}
	p, _ = startMy(t, bs, b, "t")
	myExec(t, db, "INSERT INTO "+tbl+" VALUES (2)")
	bs.waitCount(t, 4, time.Minute)
	if _, again := bindKeys(t, bs, b.key); len(again) != 1 || again[0].Origin == cps[0].Origin {
		t.Errorf("checkpoints after the fresh start %v: want one with a new origin", again)
	}
	p.signal(syscall.SIGTERM)
	p.exitCode(30 * time.Second)
}

// TestResetPostgresDroppedSlot: a bind whose slot was dropped while
// trackerd was stopped does not silently resume with a new slot (which
// would skip the changes in between): run exits non-zero naming
// `trackerd reset`; reset says what it skips and keeps the origin; the
// next run streams again.
func TestResetPostgresDroppedSlot(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY"})
	admin := pgAdmin(t)
	p := startPG(t, bs, b, nil, "t")
	tbl := fmt.Sprintf("%q.t", b.schema)
	pgExec(t, admin, "INSERT INTO "+tbl+" VALUES (1)")
	bs.waitCount(t, 2, time.Minute)
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(30 * time.Second); code != 0 {
		t.Fatalf("run: exit %d", code)
	}
	_, before := bindKeys(t, bs, b.key)
	dropSlot(ctxT(t, 30*time.Second), t, admin, b.slot)
	pgExec(t, admin, "INSERT INTO "+tbl+" VALUES (2)") // lost with the slot

	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
	code, out := runCmd(t, env, "run")
	if code == 0 || !strings.Contains(out, "re-snapshot required") || !strings.Contains(out, "trackerd reset --bind pg --to current") {
		t.Fatalf("run with the slot dropped: exit %d, output:\n%s", code, out)
	}
	if n := bs.count(t); n != 2 {
		t.Fatalf("the refused run published: %d events", n)
	}

	code, out = runCmd(t, env, "reset", "--bind", b.key, "--to", "current")
	t.Logf("reset:\n%s", out)
	if code != 0 || !regexp.MustCompile(`(?m)^  skipped  changes committed after \S+ up to \S+ \(\d+ bytes of WAL\) are never published$`).MatchString(out) ||
		!strings.Contains(out, "  server   advanced replication slot "+b.slot) || !strings.Contains(out, "the bind's next run streams from there") {
		t.Fatalf("reset: exit %d", code)
	}
	_, after := bindKeys(t, bs, b.key)
	if len(before) != 1 || len(after) != 1 || after[0].Origin != before[0].Origin || after[0].Position == before[0].Position {
		t.Fatalf("checkpoints before %v, after %v: want the origin kept, the position moved", before, after)
	}
	p = startPG(t, bs, b, nil, "t")
	pgExec(t, admin, "INSERT INTO "+tbl+" VALUES (3)")
	bs.waitCount(t, 4, time.Minute)
	time.Sleep(300 * time.Millisecond)
	var ids []string
	for _, m := range bs.read(t) {
		ids = append(ids, string(m.Change.After["id"]))
	}
	if strings.Join(ids, ",") != "1,1,3,3" {
		t.Errorf("ids published: %v, want 1 and 3 (2 was skipped by the reset)", ids)
	}
	p.signal(syscall.SIGTERM)
	p.exitCode(30 * time.Second)
}
