package mysql

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	driver "github.com/go-sql-driver/mysql"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

const envMySQL = "TRACKERD_TEST_MYSQL_URL"

// testURI parses TRACKERD_TEST_MYSQL_URL, or skips the test naming it.
func testURI(t testing.TB) binds.URI {
	t.Helper()
	raw := os.Getenv(envMySQL)
	if raw == "" {
		t.Skipf("%s is not set: set it to a MariaDB/MySQL server with log_bin, binlog_format=ROW, binlog_row_image=FULL (e.g. mysql://root@127.0.0.1:3306/test)", envMySQL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("%s: %v", envMySQL, err)
	}
	dialect, drv, _ := strings.Cut(u.Scheme, "+")
	port, _ := strconv.Atoi(u.Port())
	pw, _ := u.User.Password()
	q := map[string][]string{}
	for k, v := range u.Query() {
		q[k] = v
	}
	return binds.URI{Dialect: dialect, Driver: drv, User: u.User.Username(), Password: binds.Secret(pw),
		Host: u.Hostname(), Port: port, Database: strings.TrimPrefix(u.Path, "/"), Query: q}
}

// adminDB opens a plain connection for the test's own SQL.
func adminDB(t testing.TB, u binds.URI, db string) *sql.DB {
	t.Helper()
	cfg := driver.NewConfig()
	cfg.User, cfg.Passwd = u.User, string(u.Password)
	cfg.Net = "tcp"
	port := u.Port
	if port == 0 {
		port = 3306
	}
	host := u.Host
	if host == "" {
		host = "127.0.0.1"
	}
	cfg.Addr = fmt.Sprintf("%s:%d", host, port)
	cfg.DBName = db
	cfg.MultiStatements = true
	conn, err := driver.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := sql.OpenDB(conn)
	d.SetMaxOpenConns(4)
	t.Cleanup(func() { d.Close() })
	return d
}

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// uniqueName derives a database name from the test name and a random
// suffix.
func uniqueName(t testing.TB, suffix string) string {
	n := nonIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(n) > 36 {
		n = n[len(n)-36:]
	}
	return fmt.Sprintf("trk_%s_%s%06d", n, suffix, rand.IntN(1000000))
}

// env is one integration test's server side: a fresh database, dropped
// afterwards.
type env struct {
	t     testing.TB
	uri   binds.URI
	admin *sql.DB
	db    string
	dbx   *sql.DB // connection with db as default database
}

func newEnv(t testing.TB) *env {
	t.Helper()
	u := testURI(t)
	admin := adminDB(t, u, "")
	e := &env{t: t, uri: u, admin: admin, db: uniqueName(t, "")}
	e.adminExec("CREATE DATABASE `" + e.db + "`")
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP DATABASE IF EXISTS `" + e.db + "`"); err != nil {
			t.Logf("drop database %s: %v", e.db, err)
		}
	})
	e.dbx = adminDB(t, u, e.db)
	return e
}

// newDB creates another database for the test.
func (e *env) newDB(suffix string) string {
	name := uniqueName(e.t, suffix)
	e.adminExec("CREATE DATABASE `" + name + "`")
	e.t.Cleanup(func() { e.admin.Exec("DROP DATABASE IF EXISTS `" + name + "`") })
	return name
}

func (e *env) exec(q string, args ...any) {
	e.t.Helper()
	if _, err := e.dbx.Exec(q, args...); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
}

func (e *env) adminExec(q string, args ...any) {
	e.t.Helper()
	if _, err := e.admin.Exec(q, args...); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
}

// bind returns a bind on the test database with a server_id of its own.
func (e *env) bind() binds.Bind {
	u := e.uri
	u.Database = e.db
	return binds.Bind{
		Key: "b" + strconv.Itoa(rand.IntN(100000)), URI: u, Kind: binds.MySQL, Track: true,
		ServerID:  uint32(2_000_000 + rand.IntN(1_000_000_000)),
		Heartbeat: time.Second,
		Pool:      binds.Pool{Size: 2, MaxOverflow: 2, Timeout: 10 * time.Second},
	}
}

// logBuffer is trackertest.Buffer.
type logBuffer = trackertest.Buffer

func testLogger(t testing.TB, lb *logBuffer) *slog.Logger {
	if lb == nil {
		lb = &logBuffer{}
	}
	h := slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo})
	return slog.New(h)
}

func (e *env) open(b binds.Bind, lb *logBuffer, native bool) *Source {
	e.t.Helper()
	src, err := Open(e.t.Context(), b, tracker.SourceOptions{Logger: testLogger(e.t, lb), NativeUnicode: native})
	if err != nil {
		e.t.Fatalf("Open: %v", err)
	}
	s := src.(*Source)
	e.t.Cleanup(func() { s.Close() })
	return s
}

// recorder is a Handler that records what it is handed.
type recorder struct {
	mu      sync.Mutex
	records []tracker.Record
	failAt  int // fail the n-th record (1-based), 0: never
	count   int
}

func (r *recorder) Handle(_ context.Context, rec tracker.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count++
	if r.failAt > 0 && r.count == r.failAt {
		return fmt.Errorf("handler refuses record %d", r.count)
	}
	r.records = append(r.records, rec)
	return nil
}

func (r *recorder) snapshot() []tracker.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]tracker.Record(nil), r.records...)
}

// changes returns the changes handed so far (duplicates included).
func (r *recorder) changes() []*tracker.Change {
	var out []*tracker.Change
	for _, rec := range r.snapshot() {
		if rec.Kind == tracker.RecordChange {
			out = append(out, rec.Change)
		}
	}
	return out
}

// committed returns the changes of transactions whose Commit was handed,
// as the tracker would assemble them: a Begin discards an open
// transaction's changes.
func (r *recorder) committed() []*tracker.Change {
	var out, open []*tracker.Change
	for _, rec := range r.snapshot() {
		switch rec.Kind {
		case tracker.RecordBegin:
			open = nil
		case tracker.RecordChange:
			open = append(open, rec.Change)
		case tracker.RecordCommit:
			out = append(out, open...)
			open = nil
		case tracker.RecordRollback:
			open = nil
		}
	}
	return out
}

// lastPos returns the position of the last Commit or Keepalive.
func (r *recorder) lastPos() string {
	recs := r.snapshot()
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Kind == tracker.RecordCommit || recs[i].Kind == tracker.RecordKeepalive {
			return recs[i].Pos
		}
	}
	return ""
}

// running is a Source's Run in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func (e *env) start(s *Source, from string, h tracker.Handler) *running {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx, from, h) }()
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

// stop cancels Run and waits for it; it returns Run's error unless it is
// the cancellation.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if !ok {
			return nil
		}
		close(r.done)
		if err != nil && err != context.Canceled {
			return err
		}
		return nil
	case <-time.After(30 * time.Second):
		t.Fatalf("Run did not return within 30 s of cancel")
	}
	return nil
}

// waitFor is trackertest.Eventually, its arguments in this package's order.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	trackertest.Eventually(t, d, what, cond)
}

// currentPos is the server's current position, as Run would start.
func currentPos(t testing.TB, s *Source) string {
	t.Helper()
	p, err := s.currentPosition(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p.String()
}

// rowMap decodes a row image for assertions.
func rowMap(t testing.TB, r tracker.Row) map[string]string {
	t.Helper()
	if r.IsZero() {
		return nil
	}
	m := map[string]string{}
	for i, n := range r.Names {
		if r.Values[i] == nil {
			continue
		}
		if !json.Valid(r.Values[i]) {
			t.Fatalf("column %s: invalid JSON %q", n, r.Values[i])
		}
		m[n] = string(r.Values[i])
	}
	return m
}
