package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

// TestIntegrationConformance runs the sources' conformance suite against
// this source and TRACKERD_TEST_POSTGRES_URL.
func TestIntegrationConformance(t *testing.T) {
	serverURL(t)
	trackertest.RunSourceTests(t, pgHarness{})
}

// pgHarness is trackertest's SourceHarness for PostgreSQL: a database of
// its own per test, a slot of its own per database.
type pgHarness struct{}

func (pgHarness) Kind() binds.Kind { return binds.Postgres }

func (pgHarness) NewDB(t *testing.T) trackertest.SourceDB {
	db := newTestDB(t)
	return &pgSourceDB{db: db, bind: db.bind()}
}

func (pgHarness) Column(kind string) (typ, literal, want string, ok bool) {
	c, ok := map[string][2]string{
		"int":                    {"int4", "42"},
		"int_negative":           {"int4", "-42"},
		"bigint_safe":            {"int8", "9007199254740991"},
		"bigint_unsafe":          {"int8", "9007199254740993"},
		"bigint_unsafe_negative": {"int8", "-9007199254740993"},
		"decimal":                {"numeric(12,2)", "12.50"},
		"double":                 {"float8", "1.5"},
		"float":                  {"float4", "0.1"},
		"bool":                   {"boolean", "true"},
		"text":                   {"text", `'héllo "q" ✓'`},
		"bytes":                  {"bytea", `'\x00ff'`},
		"date":                   {"date", "'2024-05-01'"},
		"timestamp":              {"timestamp(1)", "'2024-05-01 10:00:00.5'"},
		"timestamptz":            {"timestamptz(1)", "'2024-05-01 10:00:00.5+00'"},
		"time":                   {"time", "'10:11:12'"},
		"json":                   {"jsonb", `'{"a": [1, 2]}'`},
	}[kind]
	return c[0], c[1], "", ok
}

type pgSourceDB struct {
	db   *testDB
	bind binds.Bind
}

func (d *pgSourceDB) Exec(t testing.TB, stmts ...string) {
	t.Helper()
	d.db.exec(stmts...)
}

func (d *pgSourceDB) Tx(t testing.TB, stmts ...string) {
	t.Helper()
	d.db.exec("BEGIN; " + strings.Join(stmts, "; ") + "; COMMIT")
}

func (d *pgSourceDB) InsertRows(t testing.TB, table string, from, to int) {
	t.Helper()
	d.db.exec(fmt.Sprintf("INSERT INTO %s SELECT g, repeat('x', 100) FROM generate_series(%d, %d) g", quoteIdent(table), from, to))
}

func (d *pgSourceDB) Open(t testing.TB, opts tracker.SourceOptions) tracker.Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := open(ctx, d.bind, opts, hooks{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Kill terminates the slot's walsender.
func (d *pgSourceDB) Kill(t testing.TB, _ tracker.Source) {
	t.Helper()
	var pid int32
	eventually(t, 30*time.Second, "the slot's walsender", func() bool {
		err := d.db.admin.QueryRow(context.Background(), `SELECT COALESCE(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, d.bind.Slot).Scan(&pid)
		return err == nil && pid != 0
	})
	d.db.exec(fmt.Sprintf(`SELECT pg_terminate_backend(%d)`, pid))
}

func (d *pgSourceDB) End(t testing.TB) string {
	t.Helper()
	var end string
	if err := d.db.admin.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&end); err != nil {
		t.Fatal(err)
	}
	return end
}
