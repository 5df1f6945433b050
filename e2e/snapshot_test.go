package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// snapTables are the tables of the snapshot tests, with their rows at the
// start: 100,000 rows in three tables.
var snapTables = []struct {
	name string
	rows int
}{{"accounts", 40000}, {"orders", 35000}, {"items", 25000}}

// snapDB is one source's side of the snapshot tests.
type snapDB struct {
	kind   string
	key    string // the bind key
	schema string // the tables' schema (MySQL: database) in events
	exec   func(ctx context.Context, q string) error
	query  func(t testing.TB, table string) map[int64]int64
	binds  func(snapshot string) string // TRACKER_BINDS with the snapshot option
	// upsert and del are the writer's statements.
	upsert func(table string, id, v int64) string
	del    func(table string, id int64) string
}

func newSnapDB(t *testing.T, kind string) *snapDB {
	t.Helper()
	const cols = "id BIGINT PRIMARY KEY, v BIGINT NOT NULL, pad VARCHAR(64) NOT NULL"
	tables := make(map[string]string)
	for _, tb := range snapTables {
		tables[tb.name] = cols
	}
	var names []string
	for _, tb := range snapTables {
		names = append(names, tb.name)
	}
	switch kind {
	case "postgresql":
		b := newPGBind(t, tables)
		admin := pgAdmin(t)
		d := &snapDB{kind: kind, key: b.key, schema: b.schema}
		q := func(tb string) string { return fmt.Sprintf("%q.%q", b.schema, tb) }
		d.exec = func(ctx context.Context, s string) error { _, err := admin.Exec(ctx, s); return err }
		d.query = func(t testing.TB, tb string) map[int64]int64 {
			rows, err := admin.Query(ctxT(t, time.Minute), "SELECT id, v FROM "+q(tb))
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			return idValues(rows.Next, rows.Scan)
		}
		d.binds = withSnapshot(b.bindsJSON(t, names...), b.key)
		d.upsert = func(tb string, id, v int64) string {
			return fmt.Sprintf("INSERT INTO %s VALUES (%d, %d, 'w') ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v", q(tb), id, v)
		}
		d.del = func(tb string, id int64) string { return fmt.Sprintf("DELETE FROM %s WHERE id = %d", q(tb), id) }
		for _, tb := range snapTables {
			pgExec(t, admin, fmt.Sprintf("INSERT INTO %s SELECT g, 0, repeat('x', 60) FROM generate_series(1, %d) g", q(tb.name), tb.rows))
			pgExec(t, admin, "ANALYZE "+q(tb.name))
		}
		return d
	default:
		b := newMyBind(t, 1, tables)
		db := mysqlAdmin(t)
		d := &snapDB{kind: kind, key: b.key, schema: b.dbs[0]}
		q := func(tb string) string { return "`" + b.dbs[0] + "`.`" + tb + "`" }
		d.exec = func(ctx context.Context, s string) error { _, err := db.ExecContext(ctx, s); return err }
		d.query = func(t testing.TB, tb string) map[int64]int64 {
			rows, err := db.QueryContext(ctxT(t, time.Minute), "SELECT id, v FROM "+q(tb))
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			return idValues(rows.Next, rows.Scan)
		}
		d.binds = withSnapshot(b.bindsJSON(names...), b.key)
		d.upsert = func(tb string, id, v int64) string {
			return fmt.Sprintf("INSERT INTO %s VALUES (%d, %d, 'w') ON DUPLICATE KEY UPDATE v = VALUES(v)", q(tb), id, v)
		}
		d.del = func(tb string, id int64) string { return fmt.Sprintf("DELETE FROM %s WHERE id = %d", q(tb), id) }
		for _, tb := range snapTables {
			myExec(t, db, fmt.Sprintf("INSERT INTO %s SELECT seq, 0, REPEAT('x', 60) FROM `%s`.seq_1_to_%d", q(tb.name), b.dbs[0], tb.rows))
			myExec(t, db, "ANALYZE TABLE "+q(tb.name))
		}
		return d
	}
}

// idValues collects the rows of SELECT id, v.
func idValues(next func() bool, scan func(...any) error) map[int64]int64 {
	out := make(map[int64]int64)
	for next() {
		var id, v int64
		scan(&id, &v)
		out[id] = v
	}
	return out
}

// withSnapshot returns TRACKER_BINDS of bindsJSON with bind key's option
// snapshot set to its argument.
func withSnapshot(bindsJSON, key string) func(snapshot string) string {
	return func(snapshot string) string {
		var js map[string]map[string]any
		json.Unmarshal([]byte(bindsJSON), &js)
		js[key]["snapshot"] = snapshot
		data, _ := json.Marshal(js)
		return string(data)
	}
}

// writer updates, inserts and deletes rows of the snapshot tables until
// stopped; each statement is a transaction of its own.
type writer struct {
	stop   chan struct{}
	done   chan struct{}
	writes atomic.Int64
	err    atomic.Value
}

func startWriter(d *snapDB) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		ctx := context.Background()
		for i := int64(1); ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			tb := snapTables[rand.IntN(len(snapTables))]
			id := 1 + rand.Int64N(int64(tb.rows)+5000)
			s := d.upsert(tb.name, id, i)
			if rand.IntN(5) == 0 {
				s = d.del(tb.name, id)
			}
			if err := d.exec(ctx, s); err != nil {
				w.err.Store(err)
				return
			}
			w.writes.Add(1)
		}
	}()
	return w
}

func (w *writer) halt(t testing.TB) {
	close(w.stop)
	<-w.done
	if err, _ := w.err.Load().(error); err != nil {
		t.Fatalf("writer: %v", err)
	}
}

// lifecycle collects a bus's snapshot lifecycle events.
type lifecycle struct {
	mu    sync.Mutex
	types []string
	data  []map[string]any
}

func watchLifecycle(t testing.TB, bs *bus) *lifecycle {
	t.Helper()
	l := &lifecycle{}
	sub, err := bs.nc.Subscribe(bs.prefix+".control.>", func(m *natsgo.Msg) {
		var ev struct {
			Type string         `json:"type"`
			Data map[string]any `json:"data"`
		}
		json.Unmarshal(m.Data, &ev)
		l.mu.Lock()
		l.types = append(l.types, strings.TrimPrefix(ev.Type, "trackerd.snapshot."))
		l.data = append(l.data, ev.Data)
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	return l
}

func (l *lifecycle) count(typ string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, x := range l.types {
		if x == typ {
			n++
		}
	}
	return n
}

// checkApplied applies the stream's after_commit events in order, per table,
// and compares the result with the tables; it also checks that each row
// of a snapshot is in the stream once, and returns the snapshot rows.
func checkApplied(t *testing.T, d *snapDB, ms []msg) int {
	t.Helper()
	state := make(map[string]map[int64]int64)
	seen := make(map[string]int) // snapshot/table/id -> copies
	snapRows := 0
	for _, m := range ms {
		if m.Event.Type() != "trackerd.after_commit" {
			continue
		}
		c := m.Change
		if c.Schema != d.schema {
			continue
		}
		if state[c.Table] == nil {
			state[c.Table] = make(map[int64]int64)
		}
		id, err := strconv.ParseInt(strings.Trim(string(c.Key["id"]), `"`), 10, 64)
		if err != nil {
			t.Fatalf("message %d: key %v", m.Seq, c.Key)
		}
		switch c.Op {
		case "delete":
			delete(state[c.Table], id)
		case "insert", "update", "snapshot":
			v, _ := strconv.ParseInt(strings.Trim(string(c.After["v"]), `"`), 10, 64)
			state[c.Table][id] = v
		}
		if c.Op == "snapshot" {
			snapRows++
			k := ext(m.Event, "trackerdsnapshot") + "/" + c.Table + "/" + strconv.FormatInt(id, 10)
			seen[k]++
			if seen[k] > 1 {
				t.Fatalf("snapshot row %s is in the stream twice (message %d, id %s)", k, m.Seq, m.Event.ID())
			}
		}
	}
	for _, tb := range snapTables {
		want := d.query(t, tb.name)
		got := state[tb.name]
		bad := 0
		for id, v := range want {
			if g, ok := got[id]; !ok || g != v {
				if bad < 5 {
					t.Errorf("%s id %d: applying the stream gives %d (present %v), the table has %d", tb.name, id, g, ok, v)
				}
				bad++
			}
		}
		for id := range got {
			if _, ok := want[id]; !ok {
				if bad < 5 {
					t.Errorf("%s id %d: in the applied stream, not in the table", tb.name, id)
				}
				bad++
			}
		}
		if bad > 0 {
			t.Fatalf("%s: %d rows differ between the applied stream (%d rows) and the table (%d rows)", tb.name, bad, len(got), len(want))
		}
	}
	return snapRows
}

// waitSettled waits until the stream's message count stops growing.
func waitSettled(t testing.TB, bs *bus) {
	t.Helper()
	last, since := bs.count(t), time.Now()
	eventually(t, 2*time.Minute, "the stream settles", func() bool {
		n := bs.count(t)
		if n != last {
			last, since = n, time.Now()
			return false
		}
		return time.Since(since) > 2*time.Second
	})
}

var snapKinds = []string{"postgresql", "mariadb"}

// TestSnapshotInitialWhileWriting: an initial snapshot of 100,000 rows in
// three tables while a writer updates, inserts and deletes rows of the same
// tables: applying every event in stream order gives the tables' state.
func TestSnapshotInitialWhileWriting(t *testing.T) {
	for _, kind := range snapKinds {
		t.Run(kind, func(t *testing.T) {
			d := newSnapDB(t, kind)
			bs := newBus(t)
			lc := watchLifecycle(t, bs)
			env := bs.env(t)
			env["TRACKER_BINDS"] = d.binds("initial")
			env["TRACKER_SNAPSHOT_CHUNK"] = "5000"
			w := startWriter(d)
			p := start(t, env, "run")
			eventually(t, 3*time.Minute, "the snapshot completes", func() bool { return lc.count("completed") == 1 })
			time.Sleep(500 * time.Millisecond) // changes after the snapshot, too
			w.halt(t)
			waitSettled(t, bs)
			p.signal(syscall.SIGTERM)
			if code := p.exitCode(time.Minute); code != 0 {
				t.Fatalf("exit %d", code)
			}
			n := checkApplied(t, d, bs.read(t))
			if n < 90000 {
				t.Fatalf("%d snapshot rows, want about 100,000", n)
			}
			if lc.count("started") != 1 || lc.count("table_done") != 3 {
				t.Fatalf("lifecycle events %v", lc.types)
			}
			for _, line := range p.lines() {
				if strings.Contains(line, "snapshot: table done") && !strings.Contains(line, "rows=") {
					t.Fatalf("table done line without rows: %s", line)
				}
			}
			t.Logf("%s: %d snapshot rows, %d writes during the test", kind, n, w.writes.Load())
		})
	}
}

// TestSnapshotKill9: kill -9 at ten random points of an initial snapshot,
// and of a backfill, with a writer running: every row of the snapshot is in
// the stream once, and applying the stream gives the tables' state.
func TestSnapshotKill9(t *testing.T) {
	for _, kind := range snapKinds {
		for _, mode := range []string{"initial", "backfill"} {
			t.Run(kind+"/"+mode, func(t *testing.T) { snapshotKill9(t, kind, mode) })
		}
	}
}

func snapshotKill9(t *testing.T, kind, mode string) {
	d := newSnapDB(t, kind)
	bs := newBus(t)
	lc := watchLifecycle(t, bs)
	env := bs.env(t)
	env["TRACKER_BINDS"] = d.binds("initial")
	if mode == "backfill" {
		env["TRACKER_BINDS"] = d.binds("never")
	}
	env["TRACKER_SNAPSHOT_CHUNK"] = "2800"
	w := startWriter(d)
	kills := 0
	for kills < 10 && lc.count("completed") == 0 {
		p := start(t, env, "run")
		p.waitLog(`msg=streaming bind=`+d.key, time.Minute)
		if mode == "backfill" && kills == 0 {
			if out, code := runCLI(env, "backfill", "--bind", d.key); code != 0 {
				t.Fatalf("backfill: exit %d\n%s", code, out)
			}
		}
		time.Sleep(time.Duration(200+rand.IntN(900)) * time.Millisecond)
		p.signal(syscall.SIGKILL)
		p.exitCode(time.Minute)
		kills++
	}
	p := start(t, env, "run")
	eventually(t, 3*time.Minute, "the snapshot completes", func() bool { return lc.count("completed") == 1 })
	w.halt(t)
	waitSettled(t, bs)
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(time.Minute); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if kills < 10 {
		t.Fatalf("the snapshot completed after %d kills: the test kills too late", kills)
	}
	n := checkApplied(t, d, bs.read(t))
	if n < 90000 {
		t.Fatalf("%d snapshot rows, want about 100,000", n)
	}
	t.Logf("%s %s: %d kills, %d snapshot rows, %d writes", kind, mode, kills, n, w.writes.Load())
}

// runCLI runs a trackerd command with env and returns its output and exit
// status.
func runCLI(env map[string]string, args ...string) (string, int) {
	cmd := exec.Command(binary, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, _ := cmd.CombinedOutput()
	return string(out), cmd.ProcessState.ExitCode()
}

// TestBackfillKeepsStreaming: a backfill of one table of a running bind
// while another table's changes flow: they keep flowing (no gap over a
// second); the backfill's rows arrive; list shows it; a second backfill
// of the same table is refused while the first runs; two backfills of
// different tables run at once; cancel stops one.
func TestBackfillKeepsStreaming(t *testing.T) {
	for _, kind := range snapKinds {
		t.Run(kind, func(t *testing.T) {
			d := newSnapDB(t, kind)
			bs := newBus(t)
			lc := watchLifecycle(t, bs)
			env := bs.env(t)
			env["TRACKER_BINDS"] = d.binds("never")
			env["TRACKER_SNAPSHOT_CHUNK"] = "2000"
			p := start(t, env, "run")
			p.waitLog(`msg=streaming bind=`+d.key, time.Minute)

			// Another table's changes, 50 a second, received as they come.
			var mu sync.Mutex
			var arrivals []time.Time
			sub, err := bs.nc.Subscribe(bs.prefix+".after_commit.>", func(m *natsgo.Msg) {
				if strings.Contains(m.Subject, ".items.") {
					mu.Lock()
					arrivals = append(arrivals, time.Now())
					mu.Unlock()
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int64(1); ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
					d.exec(context.Background(), d.upsert("items", 1+rand.Int64N(1000), 1_000_000+i))
				}
			}()

			cli := func(args ...string) (string, int) { return runCLI(env, append([]string{"backfill"}, args...)...) }
			table := func(tb string) string { return d.schema + "." + tb }

			start := time.Now()
			out, code := cli("--bind", d.key, "--table", table("accounts"))
			if code != 0 {
				t.Fatalf("backfill: exit %d\n%s", code, out)
			}
			first := strings.TrimSpace(lastLine(out))
			if out, code := cli("--bind", d.key, "--table", table("accounts")); code == 0 || !strings.Contains(out, first) {
				t.Fatalf("a second backfill of the table while the first runs: exit %d\n%s", code, out)
			}
			out, code = cli("--bind", d.key, "--table", table("orders"))
			if code != 0 {
				t.Fatalf("backfill of another table at once: exit %d\n%s", code, out)
			}
			second := strings.TrimSpace(lastLine(out))
			if out, code := cli("--list"); code != 0 || !strings.Contains(out, first) || !strings.Contains(out, second) {
				t.Fatalf("backfill --list: exit %d\n%s", code, out)
			}
			if out, code := cli("--cancel", second); code != 0 {
				t.Fatalf("backfill --cancel: exit %d\n%s", code, out)
			}
			if out, code := cli("--table", "nope.nope"); code != 2 {
				t.Fatalf("backfill of an unknown table: exit %d, want 2\n%s", code, out)
			}
			eventually(t, 3*time.Minute, "the backfill completes", func() bool { return lc.count("completed") == 1 })
			took := time.Since(start)
			time.Sleep(300 * time.Millisecond)
			close(stop)
			wg.Wait()
			if lc.count("cancelled") != 1 {
				t.Fatalf("lifecycle %v: want one cancelled", lc.types)
			}
			mu.Lock()
			var gaps []time.Duration
			for i := 1; i < len(arrivals); i++ {
				gaps = append(gaps, arrivals[i].Sub(arrivals[i-1]))
			}
			n := len(arrivals)
			mu.Unlock()
			sort.Slice(gaps, func(i, j int) bool { return gaps[i] > gaps[j] })
			if n < 10 || gaps[0] > time.Second {
				t.Fatalf("items' changes during the backfill: %d, largest gap %v", n, gaps[0])
			}
			waitSettled(t, bs)
			rows := 0
			for _, m := range bs.read(t) {
				if m.Change.Op == "snapshot" && m.Change.Table == "accounts" {
					rows++
				}
			}
			if rows != 40000 {
				t.Fatalf("%d rows of accounts backfilled, want 40000", rows)
			}
			t.Logf("%s: backfill of 40,000 rows in %v; %d changes of another table meanwhile, largest gap %v", kind, took.Round(time.Millisecond), n, gaps[0])
			p.signal(syscall.SIGTERM)
			if code := p.exitCode(time.Minute); code != 0 {
				t.Fatalf("exit %d", code)
			}
		})
	}
}

// TestResnapshotAfterDroppedSlot: a bind whose slot was dropped while it
// was stopped reads its table again — with `trackerd reset --to snapshot`,
// and by itself with snapshot = "when_needed" — so the row whose change was
// lost with the slot reaches the stream as a snapshot row.
func TestResnapshotAfterDroppedSlot(t *testing.T) {
	for _, how := range []string{"reset", "when_needed"} {
		t.Run(how, func(t *testing.T) {
			bs := newBus(t)
			lc := watchLifecycle(t, bs)
			b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY"})
			admin := pgAdmin(t)
			env := bs.env(t)
			mode := "never"
			if how == "when_needed" {
				mode = how
			}
			env["TRACKER_BINDS"] = withSnapshot(b.bindsJSON(t, "t"), b.key)(mode)
			tbl := fmt.Sprintf("%q.t", b.schema)
			p := start(t, env, "run")
			p.waitLog(`msg=streaming bind=`+b.key, time.Minute)
			pgExec(t, admin, "INSERT INTO "+tbl+" VALUES (1)")
			bs.waitCount(t, 2, time.Minute)
			p.signal(syscall.SIGTERM)
			if code := p.exitCode(30 * time.Second); code != 0 {
				t.Fatalf("run: exit %d", code)
			}
			dropSlot(ctxT(t, 30*time.Second), t, admin, b.slot)
			pgExec(t, admin, "INSERT INTO "+tbl+" VALUES (2)") // its change is lost with the slot

			if how == "reset" {
				out, code := runCLI(env, "reset", "--bind", b.key, "--to", "snapshot")
				if code != 0 || !strings.Contains(out, "the bind's next run reads every row of its tables") {
					t.Fatalf("reset --to snapshot: exit %d\n%s", code, out)
				}
			}
			p = start(t, env, "run")
			if how == "when_needed" {
				p.waitLog(`moving to the server's current position and reading the tables again`, time.Minute)
			}
			eventually(t, time.Minute, "the snapshot completes", func() bool { return lc.count("completed") == 1 })
			pgExec(t, admin, "INSERT INTO "+tbl+" VALUES (3)")
			waitSettled(t, bs)
			p.signal(syscall.SIGTERM)
			if code := p.exitCode(30 * time.Second); code != 0 {
				t.Fatalf("run: exit %d", code)
			}
			var got []string
			for _, m := range bs.read(t) {
				if m.Event.Type() == "trackerd.after_commit" {
					got = append(got, m.Change.Op+":"+string(m.Change.After["id"]))
				}
			}
			if want := "insert:1,snapshot:1,snapshot:2,insert:3"; strings.Join(got, ",") != want {
				t.Fatalf("after_commit events %v, want %s", got, want)
			}
		})
	}
}
