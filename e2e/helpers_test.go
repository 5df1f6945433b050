package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	_ "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pgAdmin connects to the test PostgreSQL as its (super)user.
func pgAdmin(t testing.TB) *pgx.Conn {
	t.Helper()
	u := server(t, "TRACKERD_TEST_POSTGRES_URL")
	conn, err := pgx.Connect(ctxT(t, 30*time.Second), u)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func pgExec(t testing.TB, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(ctxT(t, 2*time.Minute), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// bus is a test's private corner of the NATS server: its own stream,
// subject prefix and checkpoint bucket.
type bus struct {
	url    string
	stream string
	prefix string
	bucket string
	nc     *natsgo.Conn
	js     jetstream.JetStream
}

func newBus(t testing.TB) *bus {
	t.Helper()
	u := server(t, "TRACKERD_TEST_NATS_URL")
	name := uniq("e2e")
	b := &bus{url: u, stream: strings.ToUpper(name), prefix: name, bucket: name + "_cp"}
	nc, err := natsgo.Connect(u)
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	b.nc = nc
	b.js, _ = jetstream.New(nc)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.js.DeleteStream(ctx, b.stream)
		b.js.DeleteKeyValue(ctx, b.bucket)
		nc.Close()
	})
	return b
}

// createStream makes the bus's stream before trackerd does, with a
// duplicate window shorter than DUPLICATE_WINDOW accepts (30 s), for tests
// that must see what JetStream would otherwise drop; trackerd uses an
// existing stream as it is.
func (b *bus) createStream(t testing.TB, window time.Duration) {
	t.Helper()
	_, err := b.js.CreateStream(ctxT(t, 30*time.Second), jetstream.StreamConfig{
		Name: b.stream, Subjects: []string{b.prefix + ".>"}, Storage: jetstream.FileStorage, Duplicates: window,
	})
	if err != nil {
		t.Fatalf("create stream %s: %v", b.stream, err)
	}
}

// env returns trackerd's environment for this bus.
func (b *bus) env(t testing.TB) map[string]string {
	return map[string]string{
		"TRACKER_NATS_URL":            b.url,
		"TRACKER_STREAM_NAME":         b.stream,
		"TRACKER_SUBJECT_PREFIX":      b.prefix,
		"TRACKER_CHECKPOINT_BUCKET":   b.bucket,
		"TRACKER_DATA_DIR":            t.TempDir(),
		"TRACKER_HTTP_ADDR":           "127.0.0.1:0",
		"TRACKER_TRACK_MODIFICATIONS": "true",
		"TRACKER_CHECKPOINT_INTERVAL": "50ms",
	}
}

// msg is one message of the stream.
type msg struct {
	Seq     uint64
	Subject string
	Header  natsgo.Header
	Data    []byte
	Event   cloudevents.Event
	Change  change
}

// change is the data object of an event.
type change struct {
	Op        string                     `json:"op"`
	Schema    string                     `json:"schema"`
	Table     string                     `json:"table"`
	Key       map[string]json.RawMessage `json:"key"`
	Before    map[string]json.RawMessage `json:"before"`
	After     map[string]json.RawMessage `json:"after"`
	Unchanged []string                   `json:"unchanged"`
	Truncated []string                   `json:"truncated"`
	Source    struct {
		Kind       string `json:"kind"`
		Bind       string `json:"bind"`
		Pos        string `json:"pos"`
		TxID       string `json:"txid"`
		TxKey      string `json:"txkey"`
		Seq        int    `json:"seq"`
		CommitTime string `json:"commit_time"`
	} `json:"source"`
}

// count returns the number of messages in the stream (0 when missing).
func (b *bus) count(t testing.TB) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := b.js.Stream(ctx, b.stream)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// waitCount waits until the stream holds at least n messages.
func (b *bus) waitCount(t testing.TB, n uint64, d time.Duration) {
	t.Helper()
	eventually(t, d, fmt.Sprintf("%d messages in stream %s", n, b.stream), func() bool { return b.count(t) >= n })
}

// read returns every message of the stream, decoding each as a CloudEvent
// with sdk-go and its data as a change.
func (b *bus) read(t testing.TB) []msg {
	t.Helper()
	ctx := ctxT(t, 2*time.Minute)
	n := b.count(t)
	if n == 0 {
		return nil
	}
	cons, err := b.js.OrderedConsumer(ctx, b.stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	var out []msg
	for uint64(len(out)) < n {
		batch, err := cons.Fetch(int(min(n-uint64(len(out)), 5000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, _ := m.Metadata()
			mm := msg{Seq: md.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}
			if err := json.Unmarshal(m.Data(), &mm.Event); err != nil {
				t.Fatalf("message %d is not a CloudEvent for sdk-go: %v\n%s", mm.Seq, err, m.Data())
			}
			if mm.Event.Type() != "trackerd.rollback" {
				if err := json.Unmarshal(mm.Event.Data(), &mm.Change); err != nil {
					t.Fatalf("message %d data: %v", mm.Seq, err)
				}
			}
			out = append(out, mm)
		}
		if batch.Error() != nil {
			t.Fatalf("fetch: %v", batch.Error())
		}
		if got == 0 {
			t.Fatalf("stream %s: read %d of %d messages, then nothing", b.stream, len(out), n)
		}
	}
	return out
}

// ext returns a CloudEvent extension attribute as a string.
func ext(e cloudevents.Event, name string) string {
	v, ok := e.Extensions()[name]
	if !ok {
		return ""
	}
	return fmt.Sprint(v)
}

// summary renders messages compactly for assertions: one line each.
func summary(ms []msg) []string {
	var out []string
	for _, m := range ms {
		e := m.Event
		line := fmt.Sprintf("%s %s seq=%s", strings.TrimPrefix(e.Type(), "trackerd."), e.Subject(), ext(e, "trackerdtxseq"))
		if tot := ext(e, "trackerdtxtotal"); tot != "" {
			line += " total=" + tot
		}
		line += " " + m.Change.Op
		if id, ok := m.Change.After["id"]; ok {
			line += " id=" + string(id)
		} else if id, ok := m.Change.Key["id"]; ok {
			line += " key=" + string(id)
		}
		out = append(out, line)
	}
	return out
}

// pgBind describes a PostgreSQL bind over a schema of its own.
type pgBind struct {
	key    string
	schema string
	slot   string
	pub    string
	uri    string
}

// newPGBind creates a schema with the given tables (CREATE TABLE bodies by
// table name) and returns a bind over them; cleanup drops everything,
// including the slot, once trackerd has stopped.
func newPGBind(t testing.TB, tables map[string]string) *pgBind {
	t.Helper()
	admin := pgAdmin(t)
	name := uniq("e2e")
	b := &pgBind{key: "pg", schema: name, slot: name + "_slot", pub: name + "_pub", uri: server(t, "TRACKERD_TEST_POSTGRES_URL")}
	pgExec(t, admin, fmt.Sprintf(`CREATE SCHEMA %q`, b.schema))
	names := make([]string, 0, len(tables))
	for n := range tables {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		pgExec(t, admin, fmt.Sprintf(`CREATE TABLE %q.%q (%s)`, b.schema, n, tables[n]))
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, b.uri)
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

// dropSlot drops a replication slot, first ending the walsender of a killed
// trackerd that may still hold it: a leaked slot pins WAL on a shared server.
func dropSlot(ctx context.Context, t testing.TB, c *pgx.Conn, slot string) {
	for attempt := 0; attempt < 50; attempt++ {
		var exists bool
		if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = $1)`, slot).Scan(&exists); err != nil || !exists {
			return
		}
		c.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
		if _, err := c.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("replication slot %s could not be dropped: drop it by hand, it pins WAL", slot)
}

// tables lists the bind's tables as "schema.table" for the bind's option.
func (b *pgBind) bindsJSON(t testing.TB, tables ...string) string {
	qualified := make([]string, len(tables))
	for i, tb := range tables {
		qualified[i] = b.schema + "." + tb
	}
	m := map[string]any{b.key: map[string]any{"uri": b.uri, "slot": b.slot, "publication": b.pub, "tables": qualified}}
	data, _ := json.Marshal(m)
	return string(data)
}

// mysqlAdmin connects to the test MariaDB.
func mysqlAdmin(t testing.TB) *sql.DB {
	t.Helper()
	u := server(t, "TRACKERD_TEST_MYSQL_URL")
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatalf("TRACKERD_TEST_MYSQL_URL: %v", err)
	}
	pass, _ := pu.User.Password()
	dsn := fmt.Sprintf("%s:%s@tcp(%s)/?multiStatements=true&parseTime=true", pu.User.Username(), pass, pu.Host)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(4)
	t.Cleanup(func() { db.Close() })
	if err := db.PingContext(ctxT(t, 10*time.Second)); err != nil {
		t.Fatalf("connect to MariaDB: %v", err)
	}
	return db
}

func myExec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(ctxT(t, 2*time.Minute), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// natsServer is a nats-server process of the test's own, for stopping and
// restarting NATS under a running trackerd.
type natsServer struct {
	t    testing.TB
	port int
	dir  string
	cmd  *exec.Cmd
}

// natsServerBinary finds a nats-server executable: NATS_SERVER_BIN, PATH,
// or Debian's /usr/sbin/nats-server.
func natsServerBinary(t testing.TB) string {
	if p := os.Getenv("NATS_SERVER_BIN"); p != "" {
		return p
	}
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nats-server"); err == nil {
		return "/usr/sbin/nats-server"
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no nats-server executable (set NATS_SERVER_BIN)")
	}
	t.Skip("no nats-server executable: set NATS_SERVER_BIN or install nats-server")
	return ""
}

func startNATS(t testing.TB, extra ...string) *natsServer {
	t.Helper()
	s := &natsServer{t: t, port: freePort(t), dir: t.TempDir()}
	s.start(extra...)
	t.Cleanup(s.stop)
	return s
}

func (s *natsServer) url() string { return "nats://127.0.0.1:" + strconv.Itoa(s.port) }

func (s *natsServer) start(extra ...string) {
	s.t.Helper()
	args := append([]string{"-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-js", "-sd", filepath.Join(s.dir, "js")}, extra...)
	s.cmd = exec.Command(natsServerBinary(s.t), args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start nats-server: %v", err)
	}
	eventually(s.t, 10*time.Second, "nats-server to accept connections", func() bool {
		nc, err := natsgo.Connect(s.url())
		if err != nil {
			return false
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		_, err = js.AccountInfo(context.Background())
		return err == nil
	})
}

func (s *natsServer) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}
