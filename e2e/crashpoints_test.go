package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The crash-point suite: trackerd is killed at many randomized moments of a
// running workload of single-row, small and large transactions — while it
// streams (behind the writer or not, between or inside a transaction),
// right after a start, and during a graceful shutdown (SIGTERM, then SIGKILL
// a moment later) — and restarted each time. The stream must then hold
// every change exactly once per phase, each after_commit with its
// transaction's total, each change's before_commit ahead of its
// after_commit, and one transaction key per transaction.

// crashPlan is a workload planned up front: transactions in commit order,
// each inserting a run of consecutive row ids. Since one connection writes
// them in order, the stream's expected contents, and so where each kill
// landed, are known.
type crashPlan struct {
	sizes []int // rows of each transaction
	first []int // first row id of each transaction
	ends  []int // events in the stream once the transaction is published
	txOf  []int // row id -> transaction index (index 0 unused)
	big   []int // indexes of the large transactions
	rows  int
}

// newCrashPlan plans transactions of 1 row (mostly) or 2..40 rows until
// they hold small rows, then places nBig transactions of 500..1500 rows at
// random places after the first.
func newCrashPlan(small, nBig int) *crashPlan {
	var sizes []int
	for n := 0; n < small; {
		k := 1
		if rand.IntN(10) < 3 {
			k = 2 + rand.IntN(39)
		}
		sizes = append(sizes, k)
		n += k
	}
	for range nBig {
		at := 1 + rand.IntN(len(sizes))
		sizes = slices.Insert(sizes, at, 500+rand.IntN(1001))
	}
	p := &crashPlan{sizes: sizes, txOf: []int{0}}
	id, events := 1, 0
	for i, k := range sizes {
		p.first = append(p.first, id)
		for range k {
			p.txOf = append(p.txOf, i)
		}
		id += k
		events += 2 * k
		p.ends = append(p.ends, events)
		if k >= 500 {
			p.big = append(p.big, i)
		}
	}
	p.rows = id - 1
	return p
}

func (p *crashPlan) events() int { return 2 * p.rows }

// where describes the stream position n (events stored): between two
// transactions, or inside one, in its before_commit or after_commit half.
func (p *crashPlan) where(n int) string {
	i := sort.SearchInts(p.ends, n) // first transaction ending at or after n
	switch {
	case n == 0 || i < len(p.ends) && p.ends[i] == n:
		return "between transactions"
	case i == len(p.ends):
		return "past the end" // cannot happen: the stream would hold more than planned
	}
	start := p.ends[i] - 2*p.sizes[i]
	if n-start < p.sizes[i] {
		return fmt.Sprintf("inside a %d-row transaction, before_commit half", p.sizes[i])
	}
	return fmt.Sprintf("inside a %d-row transaction, after_commit half", p.sizes[i])
}

// crashWriter writes transactions txs (indexes into plan), each as one
// explicit database transaction.
type crashWriter func(ctx context.Context, plan *crashPlan, txs []int) error

// The kinds of crash point.
const (
	killStreaming = "SIGKILL while streaming"
	killStartup   = "SIGKILL right after start"
	killShutdown  = "SIGTERM then SIGKILL"
)

// crashPoint is one planned kill.
type crashPoint struct {
	kind string
	// inside (killStreaming): aim inside the next large transaction rather
	// than at a random stream size.
	inside bool
	delay  time.Duration // killStartup: after the start; killShutdown: after the SIGTERM
}

// crashSchedule plans n crash points: two thirds while streaming (half of
// them aimed inside large transactions), a sixth right after a start and a
// sixth during a shutdown, in random order. The first is never a startup
// kill: the first process is already streaming.
func crashSchedule(n int) []crashPoint {
	nStartup, nShutdown := n/6, n/6
	var pts []crashPoint
	for i := range n - nStartup - nShutdown {
		pts = append(pts, crashPoint{kind: killStreaming, inside: i%2 == 0})
	}
	for range nShutdown {
		pts = append(pts, crashPoint{kind: killShutdown, delay: time.Duration(rand.IntN(30)) * time.Millisecond})
	}
	rand.Shuffle(len(pts), func(i, j int) { pts[i], pts[j] = pts[j], pts[i] })
	for range nStartup {
		at := 1 + rand.IntN(len(pts))
		pts = slices.Insert(pts, at, crashPoint{kind: killStartup, delay: time.Duration(rand.IntN(300)) * time.Millisecond})
	}
	return pts
}

// aim returns the stream size at which to kill next, the stream holding
// cur events and left streaming kills (this one included) remaining: a
// random step of up to twice the remaining events' fair share, or, when
// inside is set and a large transaction starts within that step, a point
// inside it.
func (p *crashPlan) aim(cur, left int, inside bool) int {
	total := p.events()
	step := max(2*(total-cur)/(left+1), 1)
	if inside {
		for _, i := range p.big {
			start, k := p.ends[i]-2*p.sizes[i], p.sizes[i]
			if start > cur && start <= cur+step {
				return start + k/5 + rand.IntN(2*k-2*k/5)
			}
		}
	}
	return min(total, cur+1+rand.IntN(step))
}

// crashRun drives one crash-point run: trackerd with env over bind key,
// the workload written by write.
type crashRun struct {
	t     *testing.T
	bs    *bus
	env   map[string]string
	key   string
	write crashWriter
	// diag, when set, describes the server's side of a stall.
	diag func() string

	refused int // starts refused because the killed instance still held the bind

	// written is how many events the transactions committed so far make;
	// writeErr is the writer's error, if it failed.
	written  atomic.Int64
	writeErr atomic.Pointer[error]
}

// up waits until p streams or exits, and reports whether it streams.
func (r *crashRun) up(p *proc) bool {
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.out.String(), "msg=streaming bind="+r.key) {
		select {
		case <-p.done:
			return false
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("trackerd did not stream within 60s; output:\n%s", p.out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// retry starts trackerd again after a start that exited: allowed (and
// counted) only when the start was refused because the server still listed
// the killed instance as the bind's reader, as a supervisor would restart
// it; any other exit fails the test.
func (r *crashRun) retry(p *proc) *proc {
	r.t.Helper()
	if !strings.Contains(p.out.String(), "held by another instance") {
		r.t.Fatalf("trackerd exited (%v) before streaming; output:\n%s", p.err, p.out.String())
	}
	if r.refused++; r.refused > 20 {
		r.t.Fatalf("trackerd was refused %d times after kills; last output:\n%s", r.refused, p.out.String())
	}
	time.Sleep(time.Second)
	return startGraceful(r.t, r.env, "run")
}

// stallTimeout is how long the stream may stay put while trackerd streams
// with events to publish before the run counts as stalled.
const stallTimeout = 60 * time.Second

// waitProgress waits until the stream holds target events, failing if
// trackerd exits or the stream does not grow for stallTimeout. On a stall
// it reports what might explain it: trackerd's metrics, its goroutines
// (SIGQUIT) and, through diag, the server's view.
func (r *crashRun) waitProgress(p *proc, target int, what string) {
	t, bs := r.t, r.bs
	t.Helper()
	last, since := bs.count(t), time.Now()
	for last < uint64(target) {
		select {
		case <-p.done:
			t.Fatalf("%s: trackerd exited (%v) while streaming; output:\n%s", what, p.err, p.out.String())
		default:
		}
		if n := bs.count(t); n != last {
			last, since = n, time.Now()
		}
		if time.Since(since) > stallTimeout {
			var diag strings.Builder
			if m := regexp.MustCompile(`msg="HTTP endpoints listening" addr=(http://\S+)`).FindStringSubmatch(p.out.String()); m != nil {
				for _, name := range []string{"trackerd_changes_total", "trackerd_transactions_total", "trackerd_events_published_total",
					"trackerd_events_acked_total", "trackerd_checkpoints_total", "trackerd_open_transactions", "trackerd_replication_lag_bytes"} {
					v, ok := metricValue(m[1], name, r.key)
					fmt.Fprintf(&diag, "%s=%v(%v) ", name, v, ok)
				}
			}
			fmt.Fprintf(&diag, "\nthe writer has committed transactions making %d events", r.written.Load())
			if err := r.writeErr.Load(); err != nil {
				fmt.Fprintf(&diag, " and failed: %v", *err)
			}
			if r.diag != nil {
				diag.WriteString("\n" + r.diag())
			}
			p.signal(syscall.SIGQUIT) // goroutine dump into the output logged below
			p.exitCode(10 * time.Second)
			t.Fatalf("%s: the stream stalled at %d events for %v (waiting for %d) while trackerd streamed; %s", what, last, stallTimeout, target, diag.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// streaming returns p, or the restart that replaced it, once it streams.
func (r *crashRun) streaming(p *proc) *proc {
	for !r.up(p) {
		p = r.retry(p)
	}
	return p
}

func (r *crashRun) run() {
	t, bs := r.t, r.bs
	p := r.streaming(startGraceful(t, r.env, "run"))

	plan := newCrashPlan(scale(5000), max(8, scale(8)))
	points := crashSchedule(max(24, scale(24)))
	total := plan.events()
	streamingLeft := 0
	for _, cp := range points {
		if cp.kind == killStreaming {
			streamingLeft++
		}
	}
	t.Logf("workload: %d transactions (%d of 500+ rows), %d rows, %d events; %d crash points", len(plan.sizes), len(plan.big), plan.rows, total, len(points))

	// The first transaction alone, until the bind has a checkpoint: the
	// crash points are those of a bind that has been running (one that
	// never wrote a checkpoint is TestKillBeforeFirstCheckpoint's case).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.write(ctx, plan, []int{0}); err != nil {
		t.Fatalf("writer: %v", err)
	}
	bs.waitCount(t, uint64(plan.ends[0]), time.Minute)
	eventually(t, time.Minute, "the bind's first checkpoint", func() bool { return hasCheckpoint(bs) })

	// The writer: chunks of about 300 rows, paced so that writing goes on
	// while trackerd is killed and restarted.
	r.written.Store(int64(plan.ends[0]))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var chunk []int
		rows := 0
		for i := 1; i < len(plan.sizes); i++ {
			chunk = append(chunk, i)
			rows += plan.sizes[i]
			if rows < 300 && i < len(plan.sizes)-1 {
				continue
			}
			if err := r.write(ctx, plan, chunk); err != nil {
				r.writeErr.Store(&err)
				return
			}
			r.written.Store(int64(plan.ends[i]))
			chunk, rows = chunk[:0], 0
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(50+rand.IntN(100)) * time.Millisecond):
			}
		}
	}()

	kinds := map[string]int{}
	killed := func(k int, cp crashPoint, detail string) {
		n := int(bs.count(t))
		where := plan.where(n)
		line := fmt.Sprintf("#%d %s at %d events (%s", k+1, cp.kind, n, where)
		if behind := int(r.written.Load()) - n; behind > 0 {
			line += fmt.Sprintf("; %d events behind the writer", behind)
			kinds["behind the writer"]++
		}
		if strings.HasPrefix(where, "inside") {
			kinds["inside a transaction"]++
		}
		t.Log(line + "; " + detail + ")")
		kinds[cp.kind]++
	}
	for k, cp := range points {
		switch cp.kind {
		case killStartup:
			// p was started a moment ago and not waited for.
			for {
				time.Sleep(cp.delay)
				select {
				case <-p.done:
					p = r.retry(p)
					continue
				default:
				}
				break
			}
			detail := fmt.Sprintf("%v after start, before it logged streaming", cp.delay)
			if strings.Contains(p.out.String(), "msg=streaming") {
				detail = fmt.Sprintf("%v after start, after it logged streaming", cp.delay)
			}
			p.signal(syscall.SIGKILL)
			p.exitCode(10 * time.Second)
			killed(k, cp, detail)
		case killShutdown:
			p = r.streaming(p)
			p.signal(syscall.SIGTERM)
			time.Sleep(cp.delay)
			detail := fmt.Sprintf("SIGKILL %v after SIGTERM", cp.delay)
			select {
			case <-p.done:
				if code := p.exitCode(time.Second); code != 0 {
					t.Fatalf("crash point #%d: trackerd exited %d after SIGTERM, want 0", k+1, code)
				}
				detail = fmt.Sprintf("it had shut down cleanly within %v of SIGTERM", cp.delay)
				kinds["shut down before the SIGKILL"]++
			default:
				p.signal(syscall.SIGKILL)
			}
			p.exitCode(30 * time.Second)
			killed(k, cp, detail)
		default:
			p = r.streaming(p)
			target := plan.aim(int(bs.count(t)), streamingLeft, cp.inside)
			streamingLeft--
			r.waitProgress(p, target, fmt.Sprintf("crash point #%d", k+1))
			p.signal(syscall.SIGKILL)
			p.exitCode(10 * time.Second)
			killed(k, cp, fmt.Sprintf("aimed at %d", target))
		}
		p = startGraceful(t, r.env, "run")
	}
	p = r.streaming(p)
	wg.Wait()
	if err := r.writeErr.Load(); err != nil {
		t.Fatalf("writer: %v", *err)
	}
	r.waitProgress(p, total, "after the last crash point")
	time.Sleep(500 * time.Millisecond) // nothing more must arrive
	ms := bs.read(t)
	dups := checkCrashStream(t, ms, plan)
	t.Logf("crash points: %d (%s); restarts refused while the server still held the killed instance's reader: %d; changes checked: %d rows, %d events; duplicates seen: %d",
		len(points), summarize(kinds), r.refused, plan.rows, len(ms), dups)
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(60 * time.Second); code != 0 {
		t.Fatalf("final SIGTERM: exit code %d, want 0", code)
	}
}

// startGraceful is start with a cleanup that, should trackerd still run
// when the test ends (a failure), stops it with SIGTERM and waits up to 30 s
// before start's own SIGKILL: its replication slot is then released by the
// time the bind's cleanup drops it.
func startGraceful(t testing.TB, env map[string]string, args ...string) *proc {
	t.Helper()
	p := start(t, env, args...)
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		p.signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
		}
	})
	return p
}

// hasCheckpoint reports whether the bus's checkpoint bucket holds a
// checkpoint.
func hasCheckpoint(bs *bus) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := bs.js.KeyValue(ctx, bs.bucket)
	if err != nil {
		return false
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return false
	}
	n := 0
	for range keys.Keys() {
		n++
	}
	return n > 0
}

func summarize(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// checkCrashStream asserts that ms holds every planned row exactly once per
// phase and nothing else, each after_commit carrying its transaction's
// total, each change's txseq its place in its transaction, one txkey per
// transaction, and each before_commit ahead of its after_commit. It returns
// the number of duplicated event ids (which fails the test too).
func checkCrashStream(t *testing.T, ms []msg, plan *crashPlan) int {
	t.Helper()
	type rowSeen struct{ before, after []uint64 }
	seen := make([]rowSeen, plan.rows+1)
	ids := make(map[string]int, len(ms))
	txKeys := make(map[int]string)
	indexes := make(map[int]string)
	var origin string
	var errs []string
	fail := func(format string, args ...any) {
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
	}
	for _, m := range ms {
		ids[m.Event.ID()]++
		id, err := strconv.Atoi(string(m.Change.After["id"]))
		if err != nil || id < 1 || id > plan.rows {
			fail("message %d: unexpected event %s (row id %s)", m.Seq, m.Event.ID(), m.Change.After["id"])
			continue
		}
		tx := plan.txOf[id]
		parts := strings.Split(m.Event.ID(), "/")
		if len(parts) != 5 {
			fail("message %d: id %q is not <bind>/<origin>/<txkey>/<index>/<phase>", m.Seq, m.Event.ID())
			continue
		}
		if origin == "" {
			origin = parts[1]
		} else if parts[1] != origin {
			fail("row %d: origin %s, but other events have %s", id, parts[1], origin)
		}
		if k, ok := txKeys[tx]; !ok {
			txKeys[tx] = parts[2]
		} else if k != parts[2] {
			fail("row %d: txkey %s, but its transaction's other events have %s", id, parts[2], k)
		}
		// One index per row, the same in both phases and after any re-send.
		if ix, ok := indexes[id]; !ok {
			indexes[id] = parts[3]
		} else if ix != parts[3] {
			fail("row %d: index %s, but its other events have %s", id, parts[3], ix)
		}
		if want := strconv.Itoa(id - plan.first[tx]); ext(m.Event, "trackerdtxseq") != want {
			fail("row %d: txseq %s (id %s), want %s", id, ext(m.Event, "trackerdtxseq"), m.Event.ID(), want)
		}
		switch m.Event.Type() {
		case "trackerd.before_commit":
			seen[id].before = append(seen[id].before, m.Seq)
		case "trackerd.after_commit":
			seen[id].after = append(seen[id].after, m.Seq)
			if got, want := ext(m.Event, "trackerdtxtotal"), strconv.Itoa(plan.sizes[tx]); got != want {
				fail("row %d: after_commit txtotal %s, want %s", id, got, want)
			}
		default:
			fail("message %d: unexpected type %s", m.Seq, m.Event.Type())
		}
	}
	dups := 0
	for _, n := range ids {
		if n > 1 {
			dups += n - 1
		}
	}
	missing, doubled := 0, 0
	for id := 1; id <= plan.rows; id++ {
		s := seen[id]
		for _, n := range []int{len(s.before), len(s.after)} {
			switch {
			case n == 0:
				missing++
			case n > 1:
				doubled += n - 1
			}
		}
		if len(s.before) == 1 && len(s.after) == 1 && s.before[0] > s.after[0] {
			fail("row %d: before_commit at stream seq %d after its after_commit at %d", id, s.before[0], s.after[0])
		}
	}
	if missing > 0 || doubled > 0 || dups > 0 || len(ms) != plan.events() || len(errs) > 0 {
		t.Errorf("%d messages for %d rows (%d expected): %d events missing, %d changes doubled, %d duplicate ids",
			len(ms), plan.rows, plan.events(), missing, doubled, dups)
		for _, e := range errs {
			t.Error(e)
		}
	}
	return dups
}

func TestPostgresCrashPoints(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY, payload text"})
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
	conn, err := pgx.Connect(ctxT(t, 30*time.Second), b.uri)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tbl := fmt.Sprintf("%q.t", b.schema)
	r := &crashRun{t: t, bs: bs, env: env, key: b.key}
	r.write = func(ctx context.Context, plan *crashPlan, txs []int) error {
		// One simple-protocol round trip; every transaction explicit.
		var sb strings.Builder
		for _, i := range txs {
			first, k := plan.first[i], plan.sizes[i]
			sb.WriteString("BEGIN;")
			if k >= 100 {
				fmt.Fprintf(&sb, "INSERT INTO %s SELECT g, repeat('x', 64) FROM generate_series(%d, %d) g;", tbl, first, first+k-1)
			} else {
				for id := first; id < first+k; id++ {
					fmt.Fprintf(&sb, "INSERT INTO %s VALUES (%d, repeat('x', 64));", tbl, id)
				}
			}
			sb.WriteString("COMMIT;")
		}
		_, err := conn.PgConn().Exec(ctx, sb.String()).ReadAll()
		return err
	}
	r.run()
}

func TestMariaDBCrashPoints(t *testing.T) {
	bs := newBus(t)
	b := newMyBind(t, 1, map[string]string{"t": "id INT PRIMARY KEY, payload VARCHAR(100)"})
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON("t")
	db := mysqlAdmin(t)
	tbl := "`" + b.dbs[0] + "`.t"
	r := &crashRun{t: t, bs: bs, env: env, key: b.key}
	r.diag = func() string {
		// The binlog dump threads and SHOW SLAVE HOSTS, for a stall.
		var sb strings.Builder
		rows, err := db.QueryContext(ctxT(t, 10*time.Second), "SELECT ID, USER, HOST, COMMAND, TIME, COALESCE(STATE, '') FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
		if err != nil {
			return err.Error()
		}
		defer rows.Close()
		for rows.Next() {
			var id, tm int64
			var user, host, cmd, state string
			rows.Scan(&id, &user, &host, &cmd, &tm, &state)
			fmt.Fprintf(&sb, "dump thread %d %s@%s %s %ds %q; ", id, user, host, cmd, tm, state)
		}
		var hosts []string
		if rs, err := db.QueryContext(ctxT(t, 10*time.Second), "SHOW SLAVE HOSTS"); err == nil {
			cols, _ := rs.Columns()
			for rs.Next() {
				vals := make([]sql.RawBytes, len(cols))
				ptrs := make([]any, len(cols))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				rs.Scan(ptrs...)
				hosts = append(hosts, fmt.Sprintf("%s", vals))
			}
			rs.Close()
		}
		fmt.Fprintf(&sb, "slave hosts %v; reader server_id %d", hosts, b.serverID)
		return sb.String()
	}
	r.write = func(ctx context.Context, plan *crashPlan, txs []int) error {
		var sb strings.Builder
		for _, i := range txs {
			first, k := plan.first[i], plan.sizes[i]
			sb.WriteString("BEGIN;")
			if k >= 100 {
				fmt.Fprintf(&sb, "INSERT INTO %s SELECT seq, REPEAT('x', 64) FROM `%s`.seq_%d_to_%d;", tbl, b.dbs[0], first, first+k-1)
			} else {
				for id := first; id < first+k; id++ {
					fmt.Fprintf(&sb, "INSERT INTO %s VALUES (%d, REPEAT('x', 64));", tbl, id)
				}
			}
			sb.WriteString("COMMIT;")
		}
		_, err := db.ExecContext(ctx, sb.String())
		return err
	}
	r.run()
}

// idleBind is a bind over one table t (id, payload) of its own, for the
// tests below.
type idleBind struct {
	key    string
	env    map[string]string
	insert func(id int)
	// ready waits until p follows the server (a MySQL/MariaDB source takes
	// its starting position a moment after it logs streaming).
	ready func(p *proc)
	// registered, when set, reports whether the server still lists a
	// reader with the bind's server_id (MySQL/MariaDB).
	registered func() bool
}

// idleBindCase makes one source's idleBind.
type idleBindCase struct {
	name string
	make func(t *testing.T, bs *bus) idleBind
}

func idleBinds() []idleBindCase {
	return []idleBindCase{
		{"postgresql", func(t *testing.T, bs *bus) idleBind {
			b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY, payload text"})
			env := bs.env(t)
			env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
			db := pgAdmin(t)
			return idleBind{key: b.key, env: env,
				insert: func(id int) { pgExec(t, db, fmt.Sprintf(`INSERT INTO %q.t VALUES (%d, 'x')`, b.schema, id)) },
				ready:  func(p *proc) { p.waitLog(`msg=streaming bind=`+b.key, 60*time.Second) },
			}
		}},
		{"mariadb", func(t *testing.T, bs *bus) idleBind {
			b := newMyBind(t, 1, map[string]string{"t": "id INT PRIMARY KEY, payload VARCHAR(10)"})
			env := bs.env(t)
			env["TRACKER_BINDS"] = b.bindsJSON("t")
			db := mysqlAdmin(t)
			return idleBind{key: b.key, env: env,
				insert: func(id int) { myExec(t, db, fmt.Sprintf("INSERT INTO `%s`.t VALUES (%d, 'x')", b.dbs[0], id)) },
				ready: func(p *proc) {
					p.waitLog(`msg=streaming bind=`+b.key, 60*time.Second)
					p.waitLog(`no checkpoint, starting at the binlog position|binlog dump started`, 60*time.Second)
				},
				registered: func() bool {
					var n int
					rows, err := db.QueryContext(ctxT(t, 10*time.Second), "SHOW SLAVE HOSTS")
					if err != nil {
						return false
					}
					defer rows.Close()
					cols, _ := rows.Columns()
					for rows.Next() {
						vals := make([]any, len(cols))
						ptrs := make([]any, len(cols))
						for i := range vals {
							ptrs[i] = &vals[i]
						}
						rows.Scan(ptrs...)
						id := fmt.Sprint(vals[0]) // an int64, or text
						if raw, ok := vals[0].([]byte); ok {
							id = string(raw)
						}
						if id == strconv.FormatUint(uint64(b.serverID), 10) {
							n++
						}
					}
					return n > 0
				},
			}
		}},
	}
}

// TestKillBeforeFirstCheckpoint: trackerd is killed after its first start
// on a bind, before it wrote any checkpoint (nothing had happened yet); a
// row is committed while it is down; the restart must publish it. A
// PostgreSQL slot holds the position the first start began at; a
// MySQL/MariaDB bind has only what trackerd saved.
func TestKillBeforeFirstCheckpoint(t *testing.T) {
	for _, tc := range idleBinds() {
		t.Run(tc.name, func(t *testing.T) {
			bs := newBus(t)
			ib := tc.make(t, bs)
			p := startGraceful(t, ib.env, "run")
			ib.ready(p)
			p.signal(syscall.SIGKILL)
			p.exitCode(10 * time.Second)
			if hasCheckpoint(bs) {
				t.Log("note: the first start wrote a checkpoint before the kill")
			}
			ib.insert(1)
			// Restarted as a supervisor would, also when the server still
			// lists the killed reader (TestRestartRightAfterKill's case).
			r := &crashRun{t: t, bs: bs, env: ib.env, key: ib.key}
			p = r.streaming(startGraceful(t, ib.env, "run"))
			ib.ready(p)
			deadline := time.Now().Add(20 * time.Second)
			for bs.count(t) < 2 {
				if time.Now().After(deadline) {
					t.Fatalf("the row committed while trackerd was down, after a first start that was killed before any checkpoint, never arrived (%d events): the restart did not begin where the first start did", bs.count(t))
				}
				time.Sleep(20 * time.Millisecond)
			}
			checkExactlyOnce(t, bs.read(t), 1)
			p.signal(syscall.SIGTERM)
			if code := p.exitCode(60 * time.Second); code != 0 {
				t.Fatalf("exit code after SIGTERM = %d, want 0", code)
			}
		})
	}
}

// TestRestartRightAfterKill: trackerd killed on a quiet bind (it has a
// checkpoint, and nothing is being written) is restarted at once, as a
// supervisor would: the restart must stream, not give up because the
// server still lists the killed instance as the bind's reader. (A MariaDB
// binlog dump thread notices its reader is gone only when a write to it
// fails: on a quiet server, the second heartbeat after the kill.)
func TestRestartRightAfterKill(t *testing.T) {
	for _, tc := range idleBinds() {
		t.Run(tc.name, func(t *testing.T) {
			bs := newBus(t)
			ib := tc.make(t, bs)
			p := startGraceful(t, ib.env, "run")
			ib.ready(p)
			ib.insert(1)
			bs.waitCount(t, 2, 30*time.Second)
			eventually(t, 30*time.Second, "the bind's first checkpoint", func() bool { return hasCheckpoint(bs) })
			time.Sleep(time.Second)
			p.signal(syscall.SIGKILL)
			p.exitCode(10 * time.Second)
			if ib.registered != nil {
				// On a busy server the killed reader's dump thread notices
				// at once; on a quiet one it lingers for seconds.
				t.Logf("the killed reader still registered on the server at the restart: %v", ib.registered())
			}
			began := time.Now()
			p = startGraceful(t, ib.env, "run")
			deadline := time.Now().Add(60 * time.Second)
			for !strings.Contains(p.out.String(), "msg=streaming bind="+ib.key) {
				select {
				case <-p.done:
					t.Fatalf("the restart right after kill -9 exited (%v) after %v instead of streaming:\n%s", p.err, time.Since(began).Round(time.Millisecond), p.out.String())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("the restart did not stream within 60s:\n%s", p.out.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			ib.insert(2)
			bs.waitCount(t, 4, 30*time.Second)
			time.Sleep(300 * time.Millisecond)
			checkExactlyOnce(t, bs.read(t), 2)
			p.signal(syscall.SIGTERM)
			if code := p.exitCode(60 * time.Second); code != 0 {
				t.Fatalf("exit code after SIGTERM = %d, want 0", code)
			}
		})
	}
}
