package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
)

// objects renders a footprint's objects as "action kind name" lines.
func objects(fp tracker.Footprint) []string {
	var out []string
	for _, o := range fp.Objects {
		action := "remove"
		switch {
		case o.Missing:
			action = "none"
		case o.Keep != "":
			action = "keep"
		case o.Busy != "":
			action = "busy"
		}
		out = append(out, strings.TrimSpace(action+" "+o.Kind+" "+o.Name))
	}
	return out
}

func exists(t testing.TB, c *pgx.Conn, query, name string) bool {
	t.Helper()
	var ok bool
	if err := c.QueryRow(context.Background(), "SELECT EXISTS ("+query+")", name).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

const (
	slotQ    = `SELECT FROM pg_replication_slots WHERE slot_name = $1`
	pubQ     = `SELECT FROM pg_publication WHERE pubname = $1`
	triggerQ = `SELECT FROM pg_event_trigger WHERE evtname = $1`
)

// TestIntegrationFootprint: what trackerd made for a bind (its slot, the
// publication it created and marked with a comment, an event trigger
// marked for the bind) is listed and removed, and nothing else: a
// publication a user made, one marked for another bind, an event trigger
// without the mark. A slot in use is busy. Footprint's identity is Open's.
func TestIntegrationFootprint(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE items (id int PRIMARY KEY)`)
	b := db.bind()
	b.Tables = []string{"public.items"}
	s := openSource(t, b, hooks{})
	ctx := context.Background()

	var comment string
	if err := db.admin.QueryRow(ctx, `SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = $1`, b.Publication).Scan(&comment); err != nil {
		t.Fatal(err)
	}
	if comment != `trackerd: created for bind "default"; trackerd teardown removes it` {
		t.Fatalf("the publication trackerd created has the comment %q", comment)
	}

	// Event triggers: one trackerd's for this bind, one a user's.
	db.exec(`CREATE FUNCTION trk_noop() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$`,
		`CREATE EVENT TRIGGER trk_ddl ON ddl_command_end EXECUTE FUNCTION trk_noop()`,
		`COMMENT ON EVENT TRIGGER trk_ddl IS `+quoteLiteral(ownerComment(b)),
		`CREATE EVENT TRIGGER users_ddl ON ddl_command_end EXECUTE FUNCTION trk_noop()`)
	t.Cleanup(func() {
		db.admin.Exec(context.Background(), `DROP EVENT TRIGGER IF EXISTS trk_ddl`)
		db.admin.Exec(context.Background(), `DROP EVENT TRIGGER IF EXISTS users_ddl`)
	})

	// The slot in use.
	r := start(t, s, "", &recorder{})
	eventually(t, 20*time.Second, "the slot to be active", func() bool { _, active := slotState(t, db.admin, b.Slot); return active })
	fp, err := Footprint(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if fp.Identity != s.Identity() {
		t.Errorf("Footprint's identity %q, Open's %q", fp.Identity, s.Identity())
	}
	want := []string{"busy replication slot " + b.Slot, "remove publication " + b.Publication, "remove event trigger trk_ddl"}
	if got := objects(fp); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("footprint of a running bind:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := RemoveFootprint(ctx, b, fp); !errors.Is(err, tracker.ErrFenced) {
		t.Fatalf("RemoveFootprint of a busy slot: %v, want ErrFenced", err)
	}
	if !exists(t, db.admin, slotQ, b.Slot) {
		t.Fatal("the busy slot is gone")
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the slot to be free", func() bool { _, active := slotState(t, db.admin, b.Slot); return !active })

	fp, err = Footprint(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	want[0] = "remove replication slot " + b.Slot
	if got := objects(fp); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("footprint:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !regexp.MustCompile(`^logical pgoutput slot, inactive, confirmed_flush_lsn [0-9A-F]+/[0-9A-F]+, wal_status \w+, \d+ bytes of WAL retained$`).MatchString(fp.Objects[0].Detail) {
		t.Errorf("slot detail: %s", fp.Objects[0].Detail)
	}
	done, err := RemoveFootprint(ctx, b, fp)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"dropped replication slot " + b.Slot, "dropped publication " + b.Publication, "dropped event trigger trk_ddl"}; strings.Join(done, "\n") != strings.Join(want, "\n") {
		t.Errorf("removed:\n%s", strings.Join(done, "\n"))
	}
	if exists(t, db.admin, slotQ, b.Slot) || exists(t, db.admin, pubQ, b.Publication) || exists(t, db.admin, triggerQ, "trk_ddl") {
		t.Error("something listed is still there")
	}
	if !exists(t, db.admin, triggerQ, "users_ddl") {
		t.Error("the user's event trigger is gone")
	}

	// Nothing left: everything missing.
	fp, err = Footprint(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if got := objects(fp); strings.Join(got, "\n") != strings.Join([]string{"none replication slot " + b.Slot, "none publication " + b.Publication, "none event trigger"}, "\n") {
		t.Fatalf("footprint after removal:\n%s", strings.Join(got, "\n"))
	}

	// Publications trackerd did not make for this bind are kept.
	legacy := binds.SanitizeName("trackerd_" + b.Key)
	for _, tc := range []struct {
		name, setup string
		keep        bool
	}{
		{"users_pub", `CREATE PUBLICATION users_pub FOR TABLE items`, true},
		{"commented_pub", `CREATE PUBLICATION commented_pub FOR TABLE items; COMMENT ON PUBLICATION commented_pub IS 'the reporting team''s'`, true},
		{"other_bind_pub", `CREATE PUBLICATION other_bind_pub FOR TABLE items; COMMENT ON PUBLICATION other_bind_pub IS ` + quoteLiteral(ownerComment(binds.Bind{Key: "orders"})), true},
		// Made by a trackerd from before the comment: the bind's default name, no comment.
		{legacy, `CREATE PUBLICATION ` + legacy + ` FOR TABLE items`, false},
		{legacy + "_x", `CREATE PUBLICATION ` + legacy + `_x FOR TABLE items`, true},
	} {
		db.exec(tc.setup)
		bb := b
		bb.Publication = tc.name
		fp, err := Footprint(ctx, bb)
		if err != nil {
			t.Fatal(err)
		}
		o := fp.Objects[1]
		if (o.Keep != "") != tc.keep || o.Missing {
			t.Errorf("publication %s: keep %q, want keep %v", tc.name, o.Keep, tc.keep)
		}
		if _, err := RemoveFootprint(ctx, bb, fp); err != nil {
			t.Fatal(err)
		}
		if exists(t, db.admin, pubQ, tc.name) != tc.keep {
			t.Errorf("publication %s: still there %v, want %v", tc.name, !tc.keep, tc.keep)
		}
	}
}

// TestIntegrationReset: reset advances an existing slot to the server's
// current position, creates a dropped one, refuses a slot in use, and
// says how much it skips.
func TestIntegrationReset(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE r (id int PRIMARY KEY, pad text)`)
	b := db.bind()
	ctx := context.Background()
	s := openSource(t, b, hooks{})
	id := s.Identity()
	s.Close()
	from, _ := slotState(t, db.admin, b.Slot)
	db.exec(`INSERT INTO r SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g`)
	var current string
	if err := db.admin.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&current); err != nil {
		t.Fatal(err)
	}
	cur, _ := parseLSN(current)

	res, err := Reset(ctx, b, formatLSN(from)+";prepared="+formatLSN(from), tracker.SourceOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	at, _ := slotState(t, db.admin, b.Slot)
	pos, err := parseLSN(res.Position)
	if err != nil || res.Identity != id || at < cur || pos != at {
		t.Fatalf("reset: %+v (%v); slot at %s, WAL was at %s", res, err, formatLSN(at), current)
	}
	if len(res.Done) != 1 || !strings.HasPrefix(res.Done[0], fmt.Sprintf("advanced replication slot %s from %s to %s", b.Slot, formatLSN(from), res.Position)) {
		t.Errorf("done: %v", res.Done)
	}
	wantSkip := fmt.Sprintf("changes committed after %s up to %s (%d bytes of WAL) are never published; the 1 prepared transactions", formatLSN(from), res.Position, uint64(pos-from))
	if !strings.HasPrefix(res.Skipped, wantSkip) {
		t.Errorf("skipped: %q\nwant it to begin %q", res.Skipped, wantSkip)
	}

	// A dropped slot is made anew at the current position.
	db.exec(`SELECT pg_drop_replication_slot(` + quoteLiteral(b.Slot) + `)`)
	res, err = Reset(ctx, b, res.Position, tracker.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	at, _ = slotState(t, db.admin, b.Slot)
	if res.Position != formatLSN(max(at, pos)) || len(res.Done) != 1 || !strings.HasPrefix(res.Done[0], "created replication slot "+b.Slot+" at ") {
		t.Fatalf("reset of a dropped slot: %+v; slot at %s", res, formatLSN(at))
	}

	// A slot in use: refused.
	s = openSource(t, b, hooks{})
	start(t, s, res.Position, &recorder{})
	eventually(t, 20*time.Second, "the slot to be active", func() bool { _, active := slotState(t, db.admin, b.Slot); return active })
	if _, err := Reset(ctx, b, res.Position, tracker.SourceOptions{}); !errors.Is(err, tracker.ErrFenced) {
		t.Fatalf("reset of a slot in use: %v, want ErrFenced", err)
	}
}

// TestIntegrationCreatingSlotReported: while CREATE_REPLICATION_SLOT waits
// for an open transaction, the source reports creating_slot with the
// oldest open transaction's start and pid, again every slotWaitEvery, and
// reports the bind out of creating_slot once the slot is made (operator
// review row 7).
func TestIntegrationCreatingSlotReported(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE w (id int PRIMARY KEY)`)
	c, err := pgx.Connect(context.Background(), db.url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var pid int32
	if err := c.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(context.Background(), `BEGIN; INSERT INTO w VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	var ours string
	if err := db.admin.QueryRow(context.Background(), `SELECT to_char(xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&ours); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reports []tracker.SourceStatus
	report := func(st tracker.SourceStatus) { mu.Lock(); reports = append(reports, st); mu.Unlock() }
	waiting := func() (n int, last tracker.SourceStatus) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range reports {
			if r.State == tracker.SourceCreatingSlot && r.Detail != "" {
				n++
			}
		}
		if len(reports) > 0 {
			last = reports[len(reports)-1]
		}
		return n, last
	}
	done := make(chan error, 1)
	go func() {
		s, err := open(context.Background(), db.bind(), tracker.SourceOptions{Report: report},
			hooks{slotTimeout: time.Minute, slotWaitFirst: 50 * time.Millisecond, slotWaitEvery: 200 * time.Millisecond})
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	eventually(t, 30*time.Second, "two reports of what the slot waits for", func() bool { n, _ := waiting(); return n >= 2 })
	mu.Lock()
	first := reports[0]
	var detail string
	for _, r := range reports {
		if r.Detail != "" {
			detail = r.Detail
			break
		}
	}
	mu.Unlock()
	if first.State != tracker.SourceCreatingSlot || first.Detail != "" {
		t.Errorf("first report %+v, want creating_slot", first)
	}
	re := regexp.MustCompile(`^PostgreSQL waits for transactions open since (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) \(\d+s ago\), pid (\d+) \(user \w+, database \w+\), before it creates the slot`)
	m := re.FindStringSubmatch(detail)
	if m == nil {
		t.Fatalf("detail %q does not match %s", detail, re)
	}
	if m[2] != fmt.Sprint(pid) && m[1] > ours {
		// The shared server may hold an older transaction of another
		// test, which is named then; never a younger one.
		t.Errorf("detail names pid %s, not the open transaction's %d (since %s) nor an older one: %s", m[2], pid, ours, detail)
	}
	if _, err := c.Exec(context.Background(), `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("open once the transaction ended: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("open did not return after the transaction ended")
	}
	if _, last := waiting(); last.State != tracker.SourceConnecting {
		t.Errorf("last report %+v, want the bind out of creating_slot, connecting (Run reports streaming)", last)
	}
}

// TestIntegrationDroppedSlotNotResumed: a bind whose slot was dropped
// while it was stopped does not resume from its checkpoint with the slot
// Open makes anew (which would skip the changes in between in silence): Run
// fails with ErrResnapshotRequired, naming trackerd reset; after Reset it
// streams again.
func TestIntegrationDroppedSlotNotResumed(t *testing.T) {
	t.Parallel()
	db := newTestDB(t)
	db.exec(`CREATE TABLE d (id int PRIMARY KEY)`)
	b := db.bind()
	s := openSource(t, b, hooks{})
	s.Close()
	from, _ := slotState(t, db.admin, b.Slot)
	db.exec(`SELECT pg_drop_replication_slot(`+quoteLiteral(b.Slot)+`)`, `INSERT INTO d VALUES (1)`)

	s = openSource(t, b, hooks{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.Run(ctx, formatLSN(from), &recorder{})
	if !errors.Is(err, tracker.ErrResnapshotRequired) || !strings.Contains(err.Error(), "trackerd reset --bind default --to current") {
		t.Fatalf("Run from the checkpoint with a new slot: %v, want ErrResnapshotRequired naming reset", err)
	}
	res, err := Reset(ctx, b, formatLSN(from), tracker.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s = openSource(t, b, hooks{})
	rec := &recorder{}
	start(t, s, res.Position, rec)
	db.exec(`INSERT INTO d VALUES (2)`)
	eventually(t, 30*time.Second, "the insert after the reset", func() bool { return len(rec.changes("d")) == 1 })
	if v, ok := rec.changes("d")[0].After.Get("id"); !ok || string(v) != "2" {
		t.Errorf("change: id %s", v)
	}
}
