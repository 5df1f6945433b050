package mysql

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
// this source and TRACKERD_TEST_MYSQL_URL.
func TestIntegrationConformance(t *testing.T) {
	testURI(t)
	trackertest.RunSourceTests(t, myHarness{})
}

// myHarness is trackertest's SourceHarness for MySQL and MariaDB: a
// database of its own per test, a server_id of its own per database.
type myHarness struct{}

func (myHarness) Kind() binds.Kind { return binds.MySQL }

func (myHarness) NewDB(t *testing.T) trackertest.SourceDB {
	e := newEnv(t)
	return &mySourceDB{e: e, bind: e.bind()}
}

func (myHarness) Column(kind string) (typ, literal, want string, ok bool) {
	c, ok := map[string][3]string{
		"int":                    {"INT", "42"},
		"int_negative":           {"INT", "-42"},
		"bigint_safe":            {"BIGINT", "9007199254740991"},
		"bigint_unsafe":          {"BIGINT", "9007199254740993"},
		"bigint_unsafe_negative": {"BIGINT", "-9007199254740993"},
		"decimal":                {"DECIMAL(12,2)", "12.50"},
		"double":                 {"DOUBLE", "1.5"},
		"float":                  {"FLOAT", "0.1"},
		"bool":                   {"BOOL", "TRUE", "1"}, // TINYINT(1)
		"text":                   {"VARCHAR(50) CHARACTER SET utf8mb4", `'héllo "q" ✓'`},
		"bytes":                  {"VARBINARY(10)", "x'00ff'"},
		"date":                   {"DATE", "'2024-05-01'"},
		"timestamp":              {"DATETIME(1)", "'2024-05-01 10:00:00.5'"},
		// From the epoch: the session's time zone, whatever it is, then
		// back to UTC in the column.
		"timestamptz": {"TIMESTAMP(1) NULL", "FROM_UNIXTIME(1714557600.5)"},
		"time":        {"TIME", "'10:11:12'"},
		"json":        {"JSON", `'{"a": [1, 2]}'`},
	}[kind]
	return c[0], c[1], c[2], ok
}

type mySourceDB struct {
	e    *env
	bind binds.Bind
	last *Source // the source opened last, for Kill
}

func (d *mySourceDB) Exec(t testing.TB, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		d.e.exec(s)
	}
}

func (d *mySourceDB) Tx(t testing.TB, stmts ...string) {
	t.Helper()
	d.e.exec("START TRANSACTION; " + strings.Join(stmts, "; ") + "; COMMIT")
}

func (d *mySourceDB) InsertRows(t testing.TB, table string, from, to int) {
	t.Helper()
	var version string
	if err := d.e.dbx.QueryRow("SELECT VERSION()").Scan(&version); err != nil {
		t.Fatal(err)
	}
	set := "SET STATEMENT max_recursive_iterations = 100000000 FOR " // MariaDB's default is 1000
	if !strings.Contains(strings.ToLower(version), "mariadb") {
		set = "SET SESSION cte_max_recursion_depth = 100000000; " // MySQL's too
	}
	d.e.exec(fmt.Sprintf("%sINSERT INTO `%s` (id, v) WITH RECURSIVE seq(n) AS (SELECT %d UNION ALL SELECT n + 1 FROM seq WHERE n < %d) "+
		"SELECT n, REPEAT('x', 100) FROM seq", set, table, from, to))
}

func (d *mySourceDB) Open(t testing.TB, opts tracker.SourceOptions) tracker.Source {
	t.Helper()
	src, err := Open(context.Background(), d.bind, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	s := src.(*Source)
	t.Cleanup(func() { s.Close() })
	d.last = s
	return s
}

// Kill KILLs the binlog dump connection of src.
func (d *mySourceDB) Kill(t testing.TB, src tracker.Source) {
	t.Helper()
	s, ok := src.(*Source)
	if !ok {
		s = d.last
	}
	var id uint32
	waitFor(t, "the binlog dump connection", 30*time.Second, func() bool { id = s.dumpConnID.Load(); return id != 0 })
	d.e.adminExec(fmt.Sprintf("KILL %d", id))
}

// End reads the server's binlog end as a source of the bind would.
func (d *mySourceDB) End(t testing.TB) string {
	t.Helper()
	src, err := Open(context.Background(), d.bind, tracker.SourceOptions{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer src.Close()
	return currentPos(t, src.(*Source))
}
