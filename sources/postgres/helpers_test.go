package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

const envURL = "TRACKERD_TEST_POSTGRES_URL"

// serverURL returns the test server's URL, or skips the test saying which
// variable to set.
func serverURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(envURL)
	if u == "" {
		t.Skipf("%s is not set: set it to a PostgreSQL server with wal_level=logical, e.g. postgres://postgres@127.0.0.1:5432/test", envURL)
	}
	return u
}

// uniqueName derives a lower-case identifier from the test name and a
// random suffix, so that tests sharing a server never share an object.
func uniqueName(t testing.TB, prefix string) string {
	t.Helper()
	var sb strings.Builder
	for _, r := range strings.ToLower(t.Name()) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('_')
		}
	}
	base := sb.String()
	base = strings.TrimPrefix(base, "testintegration")
	if len(base) > 36 {
		base = base[:36]
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	return prefix + base + "_" + hex.EncodeToString(rnd[:])
}

// withDatabase returns raw with its database replaced.
func withDatabase(t testing.TB, raw, db string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("parse %s: %v", envURL, err)
	}
	u.Path = "/" + db
	return u.String()
}

// bindFor builds a bind for raw's server and database db.
func bindFor(t testing.TB, raw, db, slot string) binds.Bind {
	t.Helper()
	u, err := binds.Parse(raw)
	if err != nil {
		t.Fatalf("parse %s: %v", envURL, err)
	}
	u.Database = db
	return binds.Bind{
		Key:         "default",
		Kind:        binds.Postgres,
		URI:         u,
		Track:       true,
		Slot:        slot,
		Publication: slot + "_pub",
		Pool:        binds.Pool{Size: 2, MaxOverflow: 2, Timeout: 10 * time.Second},
	}
}

// testDB is a database created for one test, dropped (with its slots) at
// the end.
type testDB struct {
	t     testing.TB
	url   string // the server URL with this database
	name  string
	admin *pgx.Conn
}

func newTestDB(t testing.TB) *testDB {
	t.Helper()
	raw := serverURL(t)
	ctx := context.Background()
	root, err := pgx.Connect(ctx, raw)
	if err != nil {
		t.Fatalf("connect to %s: %v", envURL, err)
	}
	name := uniqueName(t, "trk_")
	if _, err := root.Exec(ctx, "CREATE DATABASE "+quoteIdent(name)); err != nil {
		root.Close(ctx)
		t.Fatalf("create database: %v", err)
	}
	db := &testDB{t: t, url: withDatabase(t, raw, name), name: name}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if db.admin != nil {
			db.admin.Close(ctx)
		}
		dropSlots(t, ctx, root, "database = $1", name)
		if _, err := root.Exec(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(name)+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
		root.Close(ctx)
	})
	if db.admin, err = pgx.Connect(ctx, db.url); err != nil {
		t.Fatalf("connect to the test database: %v", err)
	}
	return db
}

// dropSlots drops the slots matching where, terminating their walsenders.
func dropSlots(t testing.TB, ctx context.Context, c *pgx.Conn, where string, args ...any) {
	t.Helper()
	for i := 0; ; i++ {
		rows, err := c.Query(ctx, "SELECT slot_name::text, COALESCE(active_pid, 0) FROM pg_replication_slots WHERE "+where, args...)
		if err != nil {
			t.Errorf("list slots: %v", err)
			return
		}
		var names []string
		var pids []int32
		for rows.Next() {
			var n string
			var p int32
			if err := rows.Scan(&n, &p); err != nil {
				t.Errorf("list slots: %v", err)
			}
			names, pids = append(names, n), append(pids, p)
		}
		rows.Close()
		if len(names) == 0 {
			return
		}
		for j, n := range names {
			if pids[j] != 0 {
				if i > 20 { // not gone by itself within 2 s
					c.Exec(ctx, "SELECT pg_terminate_backend($1)", pids[j])
				}
				continue
			}
			c.Exec(ctx, "SELECT pg_drop_replication_slot($1)", n)
		}
		if i > 200 {
			t.Errorf("slots still there: %v", names)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// exec runs statements on the test database as the admin.
func (db *testDB) exec(stmts ...string) {
	db.t.Helper()
	for _, s := range stmts {
		if _, err := db.admin.Exec(context.Background(), s); err != nil {
			db.t.Fatalf("%s: %v", s, err)
		}
	}
}

// bind returns a bind of the test database with its own slot.
func (db *testDB) bind() binds.Bind {
	return bindFor(db.t, serverURL(db.t), db.name, uniqueName(db.t, "s_"))
}

// testLogger logs to the test.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// recorder is a Handler that keeps every record.
type recorder struct {
	mu   sync.Mutex
	recs []tracker.Record
	// before, when set, runs before a record is kept; an error stops Run.
	before func(tracker.Record) error
}

func (r *recorder) Handle(ctx context.Context, rec tracker.Record) error {
	if r.before != nil {
		if err := r.before(rec); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.recs = append(r.recs, rec)
	r.mu.Unlock()
	return nil
}

func (r *recorder) all() []tracker.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]tracker.Record(nil), r.recs...)
}

// changes returns the changes of one table.
func (r *recorder) changes(table string) []*tracker.Change {
	var out []*tracker.Change
	for _, rec := range r.all() {
		if rec.Kind == tracker.RecordChange && rec.Change.Table == table {
			out = append(out, rec.Change)
		}
	}
	return out
}

// eventually polls cond until it holds or the time is up (trackertest.Eventually).
var eventually = trackertest.Eventually

// running is a source whose Run is in progress.
type running struct {
	src    *Source
	cancel context.CancelFunc
	done   chan error
}

// openSource opens a source for b, closed at the end of the test.
func openSource(t testing.TB, b binds.Bind, h hooks) *Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := open(ctx, b, tracker.SourceOptions{Logger: testLogger(t)}, h)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// start runs s in the background until the test ends or stop is called.
func start(t testing.TB, s *Source, from string, h tracker.Handler) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{src: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx, from, h) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop ends Run and returns its error (nil for a clean stop).
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- nil
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("Run did not return after its context ended")
		return nil
	}
}

// slotState reads a slot's confirmed_flush_lsn and activity.
func slotState(t testing.TB, c *pgx.Conn, slot string) (confirmed lsn, active bool) {
	t.Helper()
	var s string
	err := c.QueryRow(context.Background(), "SELECT COALESCE(confirmed_flush_lsn::text, '0/0'), active FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&s, &active)
	if err != nil {
		t.Fatalf("read slot %s: %v", slot, err)
	}
	l, err := parseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l, active
}
