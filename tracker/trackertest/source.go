package trackertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/tracker"
)

// SourceHarness is what [RunSourceTests] needs to know of one kind of
// source: how to make a database for a test, and how its types map the
// suite's values.
type SourceHarness interface {
	// Kind is the bind kind the harness's sources follow.
	Kind() binds.Kind
	// NewDB makes an empty database (or schema) on the source's server
	// for one test, removed when the test ends.
	NewDB(t *testing.T) SourceDB
	// Column maps a value kind of the round-trip test ([SourceValues]) to
	// a column type and the SQL literal of its value. ok false leaves the
	// kind out. want, when not empty, is the JSON the source hands over
	// instead of the suite's (its own mapping: MySQL's BOOL is 1).
	Column(kind string) (typ, literal, want string, ok bool)
}

// SourceDB is one test's database, as a [SourceHarness] made it.
type SourceDB interface {
	// Exec runs each statement in a transaction of its own. The suite's
	// SQL is portable: CREATE TABLE with INT, VARCHAR and PRIMARY KEY;
	// INSERT, UPDATE and DELETE.
	Exec(t testing.TB, stmts ...string)
	// Tx runs the statements in one transaction.
	Tx(t testing.TB, stmts ...string)
	// InsertRows inserts the rows with ids from to to (v: 100 characters)
	// into table (id INT PRIMARY KEY, v VARCHAR(200)), in one
	// transaction.
	InsertRows(t testing.TB, table string, from, to int)
	// Open opens a source following every table of the database, with
	// opts. Every call opens the same stream again (the same slot, the
	// same server_id): its identity is the same. The harness closes it
	// when the test ends.
	Open(t testing.TB, opts tracker.SourceOptions) tracker.Source
	// Kill breaks src's replication connection on the server's side (a
	// terminated walsender, a KILLed binlog dump thread) while src runs.
	Kill(t testing.TB, src tracker.Source)
	// End returns the server's current end, as a position of the
	// harness's sources: a Run from it hands over only what commits
	// later.
	End(t testing.TB) string
}

// SourceValues are the values of the round-trip test, by kind, with the
// JSON every source hands over for them (the README, "Subjects and events"), unless its
// harness's Column says otherwise. Each is also checked as NULL.
var SourceValues = []struct{ Kind, Want string }{
	{"int", `42`},
	{"int_negative", `-42`},
	{"bigint_safe", `9007199254740991`},
	{"bigint_unsafe", `"9007199254740993"`},
	{"bigint_unsafe_negative", `"-9007199254740993"`},
	{"decimal", `"12.50"`},
	{"double", `1.5`},
	{"float", `0.1`},
	{"bool", `true`},
	{"text", `"héllo \"q\" ✓"`},
	{"bytes", `"AP8="`},
	{"date", `"2024-05-01"`},
	{"timestamp", `"2024-05-01T10:00:00.5"`},
	{"timestamptz", `"2024-05-01T10:00:00.5Z"`},
	{"time", `"10:11:12"`},
	{"json", `{"a":[1,2]}`},
}

// waitLong bounds every wait of the suite for the source.
const waitLong = 60 * time.Second

// RunSourceTests checks that a source keeps the [tracker.Source] and
// [tracker.Record] contracts: the records' order and positions, which
// Change fields it fills, resuming from a checkpoint, a stable identity,
// its state reports and reconnecting after a killed connection, lag as the
// tracker computes it, a large transaction, and its values. Every real
// source must pass it, against a real server.
func RunSourceTests(t *testing.T, h SourceHarness) {
	t.Run("records and fields", func(t *testing.T) { testSourceRecords(t, h) })
	t.Run("resume from a position", func(t *testing.T) { testSourceResume(t, h) })
	t.Run("reconnect", func(t *testing.T) { testSourceReconnect(t, h) })
	t.Run("lag", func(t *testing.T) { testSourceLag(t, h) })
	t.Run("large transaction", func(t *testing.T) { testSourceLargeTx(t, h) })
	t.Run("values", func(t *testing.T) { testSourceValues(t, h) })
}

// sourceRun is a source's Run in the background, recording what it hands
// over (and checking it against the Record contract as it comes).
type sourceRun struct {
	src    tracker.Source
	cancel context.CancelFunc
	done   chan error

	states States

	mu      sync.Mutex
	recs    []tracker.Record
	grammar recordGrammar
	bad     error
	// before, when set, runs before a record is kept, outside the lock.
	before func(tracker.Record)
	// keep false keeps no change records (only counts them).
	keep    bool
	changes int
}

func newSourceRun() *sourceRun { return &sourceRun{keep: true} }

func (r *sourceRun) Handle(ctx context.Context, rec tracker.Record) error {
	if r.before != nil {
		r.before(rec)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.grammar.check(rec); err != nil && r.bad == nil {
		r.bad = fmt.Errorf("record %d: %w", len(r.recs)+r.changes, err)
	}
	if rec.Kind == tracker.RecordChange {
		r.changes++
		if !r.keep {
			return nil
		}
		c := *rec.Change
		rec.Change = &c
	}
	r.recs = append(r.recs, rec)
	return nil
}

// start opens a source on db and runs it from from until the test ends
// or stop is called.
func (r *sourceRun) start(t testing.TB, db SourceDB, from string) *sourceRun {
	t.Helper()
	r.src = db.Open(t, tracker.SourceOptions{Logger: testLogger(t), Report: r.states.Report})
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.src.Run(ctx, from, r) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop ends Run, and fails the test when it returned an error other than
// its context's, or when a record broke the contract.
func (r *sourceRun) stop(t testing.TB) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Run did not return within 30 s of its context's end")
	}
	r.checkGrammar(t)
}

func (r *sourceRun) checkGrammar(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bad != nil {
		t.Fatalf("the source broke the Record contract: %v", r.bad)
	}
}

func (r *sourceRun) records() []tracker.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]tracker.Record(nil), r.recs...)
}

// committed returns the changes of the transactions whose Commit came, as
// the tracker assembles them: a Begin starts its transaction afresh.
func (r *sourceRun) committed() []*tracker.Change {
	var out []*tracker.Change
	open := map[string][]*tracker.Change{}
	cur := ""
	for _, rec := range r.records() {
		switch rec.Kind {
		case tracker.RecordBegin:
			open[rec.Tx.TxKey] = nil
			if !rec.Tx.Streamed {
				cur = rec.Tx.TxKey
			}
		case tracker.RecordChange:
			k := rec.Change.TxKey
			if k == "" {
				k = cur
			}
			open[k] = append(open[k], rec.Change)
		case tracker.RecordCommit:
			out = append(out, open[rec.Tx.TxKey]...)
			delete(open, rec.Tx.TxKey)
		case tracker.RecordRollback:
			if rec.Tx.SubTx == "" {
				delete(open, rec.Tx.TxKey)
			}
		}
	}
	return out
}

// waitCommitted waits until the changes of committed transactions hold
// n rows of table, and returns those changes.
func (r *sourceRun) waitCommitted(t testing.TB, table string, n int) []*tracker.Change {
	t.Helper()
	var got []*tracker.Change
	Eventually(t, waitLong, fmt.Sprintf("%d committed changes of %s", n, table), func() bool {
		got = got[:0]
		for _, c := range r.committed() {
			if c.Table == table {
				got = append(got, c)
			}
		}
		return len(got) >= n
	})
	r.checkGrammar(t)
	return got
}

// waitStreaming waits for the source to report that it streams, the
// n-th time.
func (r *sourceRun) waitStreaming(t testing.TB, n int) {
	t.Helper()
	Eventually(t, waitLong, fmt.Sprintf("report %d of streaming", n), func() bool {
		return r.states.Count(tracker.SourceStreaming) >= n
	})
}

// runStates is the sequence of states a source reported (States.Sequence)
// from Run's connecting on: Open may report before (creating_slot, then
// connecting).
func runStates(s *States) string {
	seq := s.Sequence()
	if i := strings.Index(seq, "connecting"); i > 0 {
		return seq[i:]
	}
	return seq
}

// recordGrammar checks records, in order, against the Record contract.
type recordGrammar struct {
	open    map[string]*openTxn // by TxKey
	cur     string              // the open transaction that is not streamed
	started bool
}

type openTxn struct {
	streamed   bool
	commitTime time.Time
	index      int64
	changes    int
}

func (g *recordGrammar) check(r tracker.Record) error {
	if g.open == nil {
		g.open = map[string]*openTxn{}
	}
	if r.Kind != tracker.RecordCommit && r.Kind != tracker.RecordKeepalive && r.Pos != "" {
		return fmt.Errorf("a %s record with position %q: positions belong to commits and keepalives", kindName(r.Kind), r.Pos)
	}
	switch r.Kind {
	case tracker.RecordBegin:
		if r.Tx.TxKey == "" || r.Tx.TxID == "" {
			return fmt.Errorf("begin without TxKey or TxID: %+v", r.Tx)
		}
		if r.Change != nil {
			return errors.New("begin with a change")
		}
		if !r.Tx.Streamed {
			// A Begin while another is open: the source reconnected and
			// sends a transaction again from its start.
			delete(g.open, g.cur)
			g.cur = r.Tx.TxKey
		}
		g.open[r.Tx.TxKey] = &openTxn{streamed: r.Tx.Streamed, commitTime: r.Tx.CommitTime}
	case tracker.RecordChange:
		c := r.Change
		if c == nil {
			return errors.New("change record without a change")
		}
		key := c.TxKey
		if key == "" {
			key = g.cur
		}
		tx := g.open[key]
		if tx == nil {
			return fmt.Errorf("change of transaction %q, which is not open", key)
		}
		if tx.streamed && c.TxKey == "" {
			return errors.New("change of a streamed transaction without its TxKey")
		}
		if c.Source == "" || !c.Op.Valid() || c.Schema == "" || c.Table == "" || c.Pos == "" {
			return fmt.Errorf("change lacks Source, Op, Schema, Table or Pos: %+v", c)
		}
		if c.Bind != "" || c.Origin != "" || c.Seq != 0 || c.TxID != "" || !c.CommitTime.IsZero() || c.Truncated != nil {
			return fmt.Errorf("change fills a field the tracker stamps (Bind, Origin, Seq, TxID, CommitTime; Truncated is the sink's): %+v", c)
		}
		if tx.changes > 0 && c.Index <= tx.index {
			return fmt.Errorf("change index %d after %d: Index must grow within a transaction", c.Index, tx.index)
		}
		tx.index = c.Index
		tx.changes++
		switch c.Op {
		case tracker.OpInsert:
			if c.After.IsZero() || !c.Before.IsZero() {
				return fmt.Errorf("insert without its after image, or with a before image: %+v", c)
			}
		case tracker.OpDelete:
			if !c.After.IsZero() || c.Key.IsZero() && c.Before.IsZero() {
				return fmt.Errorf("delete with an after image, or with neither key nor before image: %+v", c)
			}
		case tracker.OpUpdate:
			if c.After.IsZero() {
				return fmt.Errorf("update without its after image: %+v", c)
			}
		}
	case tracker.RecordCommit:
		if r.Pos == "" {
			return errors.New("commit without a position")
		}
		tx := g.open[r.Tx.TxKey]
		if tx == nil && r.Tx.TxKey == "" && !r.Tx.Streamed {
			tx = g.open[g.cur]
		}
		if tx != nil && r.Tx.CommitTime.IsZero() && tx.commitTime.IsZero() {
			return fmt.Errorf("commit of %q with changes but no commit time on its Begin or Commit", r.Tx.TxKey)
		}
		for k, o := range g.open {
			if o == tx {
				delete(g.open, k)
			}
		}
		if tx != nil && !tx.streamed {
			g.cur = ""
		}
	case tracker.RecordRollback:
		if r.Tx.SubTx == "" {
			delete(g.open, r.Tx.TxKey)
			if r.Tx.TxKey == g.cur {
				g.cur = ""
			}
		}
	case tracker.RecordKeepalive:
		if r.Pos == "" {
			return errors.New("keepalive without a position")
		}
		if g.cur != "" {
			return fmt.Errorf("keepalive inside transaction %q", g.cur)
		}
	default:
		return fmt.Errorf("unknown record kind %d", r.Kind)
	}
	return nil
}

func kindName(k tracker.RecordKind) string {
	switch k {
	case tracker.RecordBegin:
		return "begin"
	case tracker.RecordChange:
		return "change"
	case tracker.RecordCommit:
		return "commit"
	case tracker.RecordRollback:
		return "rollback"
	case tracker.RecordKeepalive:
		return "keepalive"
	}
	return strconv.Itoa(int(k))
}

// rowJSON is a row image's JSON.
func rowJSON(r tracker.Row) string { return string(r.AppendJSON(nil)) }

// testSourceRecords checks a few transactions' records and the fields of
// their changes, the state reports and the identity.
func testSourceRecords(t *testing.T, h SourceHarness) {
	db := h.NewDB(t)
	db.Exec(t, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(200))", "CREATE TABLE u (id INT PRIMARY KEY, v VARCHAR(200))")
	r := newSourceRun().start(t, db, "")
	if r.src.Identity() == "" {
		t.Fatal("empty identity")
	}
	r.waitStreaming(t, 1)
	db.Exec(t, "INSERT INTO t VALUES (1, 'a')")
	db.Tx(t, "INSERT INTO t VALUES (2, 'b')", "INSERT INTO t VALUES (3, 'c')", "UPDATE t SET v = 'bb' WHERE id = 2",
		"INSERT INTO u VALUES (10, 'x')", "DELETE FROM t WHERE id = 1")
	r.waitCommitted(t, "t", 5)
	var got []string
	for _, c := range r.committed() {
		got = append(got, fmt.Sprintf("%s %s key=%s after=%s", c.Op, c.Table, rowJSON(c.Key), rowJSON(c.After)))
	}
	want := []string{
		`insert t key={"id":1} after={"id":1,"v":"a"}`,
		`insert t key={"id":2} after={"id":2,"v":"b"}`,
		`insert t key={"id":3} after={"id":3,"v":"c"}`,
		`update t key={"id":2} after={"id":2,"v":"bb"}`,
		`insert u key={"id":10} after={"id":10,"v":"x"}`,
		`delete t key={"id":1} after=null`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Two transactions, each a Begin, its changes and a Commit with the
	// Begin's key and a position.
	var shape []string
	for _, rec := range r.records() {
		switch rec.Kind {
		case tracker.RecordBegin:
			shape = append(shape, "B")
		case tracker.RecordChange:
			shape = append(shape, "C")
		case tracker.RecordCommit:
			shape = append(shape, "E")
		}
	}
	if s := strings.Join(shape, ""); s != "BCEBCCCCCE" {
		t.Fatalf("records %s, want BCE BCCCCCE (keepalives aside)", s)
	}
	if lr, ok := r.src.(tracker.LagReporter); ok {
		if lag := lr.Lag(); lag.Behind != 0 {
			t.Errorf("the source reports Lag.Behind %v: Behind is the tracker's (tracker.Lag), a source leaves it 0", lag.Behind)
		}
	}
	if seq := runStates(&r.states); seq != "connecting streaming" {
		t.Fatalf("state reports %q, want connecting, then streaming with the position", seq)
	}
	id := r.src.Identity()
	r.stop(t)
	again := newSourceRun().start(t, db, "")
	if again.src.Identity() != id {
		t.Fatalf("identity %q, then %q after opening again", id, again.src.Identity())
	}
}

// testSourceResume checks Run's from: nothing at or before it is handed
// over again, nothing after it is lost.
func testSourceResume(t *testing.T, h SourceHarness) {
	db := h.NewDB(t)
	db.Exec(t, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(200))")
	r := newSourceRun().start(t, db, "")
	r.waitStreaming(t, 1)
	db.Exec(t, "INSERT INTO t VALUES (1, 'a')", "INSERT INTO t VALUES (2, 'b')")
	r.waitCommitted(t, "t", 2)
	r.stop(t)
	var first string
	for _, rec := range r.records() {
		if rec.Kind == tracker.RecordCommit {
			first = rec.Pos
			break
		}
	}
	db.Exec(t, "INSERT INTO t VALUES (3, 'c')") // while stopped
	ids := func(cs []*tracker.Change) string {
		var s []string
		for _, c := range cs {
			v, _ := c.After.Get("id")
			s = append(s, string(v))
		}
		return strings.Join(s, ",")
	}

	// From the first transaction's commit: the second and third, once.
	r2 := newSourceRun().start(t, db, first)
	db.Exec(t, "INSERT INTO t VALUES (4, 'd')")
	r2.waitCommitted(t, "t", 3)
	time.Sleep(200 * time.Millisecond) // for anything extra to show up
	if s := ids(r2.committed()); s != "2,3,4" {
		t.Fatalf("from the first commit's position: rows %s, want 2,3,4", s)
	}
	r2.stop(t)

	// From the server's end: only what commits later.
	db.Exec(t, "INSERT INTO t VALUES (5, 'e')")
	end := db.End(t)
	r3 := newSourceRun().start(t, db, end)
	db.Exec(t, "INSERT INTO t VALUES (6, 'f')")
	r3.waitCommitted(t, "t", 1)
	time.Sleep(200 * time.Millisecond)
	if s := ids(r3.committed()); s != "6" {
		t.Fatalf("from the server's end: rows %s, want 6", s)
	}
}

// testSourceReconnect kills the source's connection inside a transaction
// and between transactions: it reports reconnecting, then streaming, and
// hands everything over once, but for a transaction cut off, which comes
// again from its Begin with the same key and indexes.
func testSourceReconnect(t *testing.T, h SourceHarness) {
	db := h.NewDB(t)
	db.Exec(t, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(200))")
	const rows = 20000
	var (
		seen   int
		gate   = make(chan struct{})
		inside = make(chan struct{})
	)
	r := newSourceRun()
	r.before = func(rec tracker.Record) {
		if rec.Kind == tracker.RecordChange && rec.Change.Table == "t" {
			if seen++; seen == 100 {
				close(inside)
				<-gate
			}
		}
	}
	r.start(t, db, "")
	r.waitStreaming(t, 1)
	db.Exec(t, "INSERT INTO t VALUES (0, 'before')")
	db.InsertRows(t, "t", 1, rows)
	select {
	case <-inside:
	case <-time.After(waitLong):
		t.Fatal("the large transaction did not start")
	}
	db.Kill(t, r.src)
	close(gate)
	r.waitStreaming(t, 2)
	cs := r.waitCommitted(t, "t", rows+1)
	if len(cs) != rows+1 {
		t.Fatalf("%d committed changes, want %d", len(cs), rows+1)
	}
	// Every row once among the committed changes; a re-sent transaction
	// keeps its key, and each of its changes its index.
	byID := map[string]int64{}
	for _, c := range cs {
		id, _ := c.After.Get("id")
		if _, dup := byID[string(id)]; dup {
			t.Fatalf("row %s committed twice", id)
		}
		byID[string(id)] = c.Index
	}
	begins := map[string]int{}
	for _, rec := range r.records() {
		switch {
		case rec.Kind == tracker.RecordBegin:
			begins[rec.Tx.TxKey]++
		case rec.Kind == tracker.RecordChange && rec.Change.Table == "t":
			id, _ := rec.Change.After.Get("id")
			if want, ok := byID[string(id)]; !ok || want != rec.Change.Index {
				t.Fatalf("row %s handed over with index %d, committed with %d", id, rec.Change.Index, want)
			}
		}
	}
	if len(begins) != 2 {
		t.Fatalf("begins by key %v, want two transactions", begins)
	}
	for k, n := range begins {
		if n > 1 {
			t.Logf("transaction %s was cut by the kill and handed over %d times", k, n)
		}
	}
	if seq := runStates(&r.states); seq != "connecting streaming reconnecting streaming" {
		t.Fatalf("state reports %q, want connecting streaming reconnecting (with the error) streaming (with the position)", seq)
	}

	// Between transactions.
	db.Kill(t, r.src)
	r.waitStreaming(t, 3)
	db.Exec(t, "INSERT INTO t VALUES (-1, 'after')")
	cs = r.waitCommitted(t, "t", rows+2)
	if len(cs) != rows+2 {
		t.Fatalf("%d committed changes after the second kill, want %d", len(cs), rows+2)
	}
}

// testSourceLag runs the source under a tracker and checks Lag: Behind,
// the tracker's, is the time since the commit of the oldest transaction
// handed over and not confirmed (not the newest), 0 once all is
// confirmed; Bytes, the source's, is known once streaming.
func testSourceLag(t *testing.T, h SourceHarness) {
	db := h.NewDB(t)
	db.Exec(t, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(200))")
	sink := &Sink{Manual: true}
	tr := newSourceTracker(t, h, db, sink, nil)
	defer tr.run(t)()
	stats := func() tracker.BindStats { return tr.Stats()[0] }

	aStart := time.Now()
	db.Exec(t, "INSERT INTO t VALUES (1, 'a')")
	aDone := time.Now()
	Eventually(t, waitLong, "the first transaction", func() bool { return stats().Transactions >= 1 })
	time.Sleep(2500 * time.Millisecond)
	bStart := time.Now()
	db.Exec(t, "INSERT INTO t VALUES (2, 'b')")
	Eventually(t, waitLong, "the second transaction", func() bool { return stats().Transactions >= 2 })
	// Commit times may be whole seconds (MySQL's binlog): the oldest
	// unconfirmed commit is at least as old as aDone; the newest is at
	// most a second older than bStart, 1.5 s younger.
	lag := stats().Lag
	if lower := time.Since(aDone); lag.Behind < lower {
		t.Fatalf("Behind %v with two transactions unconfirmed, want at least %v, the first's age (the newest's is about %v)",
			lag.Behind, lower, time.Since(bStart))
	}
	if upper := time.Since(aStart) + time.Second; lag.Behind > upper {
		t.Fatalf("Behind %v, want at most %v: the first transaction committed after that", lag.Behind, upper)
	}
	Eventually(t, 10*time.Second, "Lag.Bytes above 0 with transactions unconfirmed", func() bool { return stats().Lag.Bytes > 0 })
	sink.Ack("default")
	Eventually(t, waitLong, "Behind 0 once everything is confirmed", func() bool { return stats().Lag.Behind == 0 })
	if b := stats().Lag.Bytes; b < 0 {
		t.Fatalf("Lag.Bytes %d once confirmed, want it known", b)
	}
}

// testSourceLargeTx runs a transaction of 100,000 rows, larger than the
// tracker's spill threshold, through the source (each row once, indexes
// growing) and a tracker that spills it.
func testSourceLargeTx(t *testing.T, h SourceHarness) {
	db := h.NewDB(t)
	db.Exec(t, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(200))")
	const rows = 100000
	var (
		mu     sync.Mutex
		after  int
		badSeq string
		total  int
	)
	seen := make([]bool, rows+1)
	tr := newSourceTracker(t, h, db, nil, func(cfg *config.Config) { cfg.SpillThreshold = 1 << 20 })
	tr.AfterCommit.Connect(func(_ context.Context, c tracker.Change) error {
		mu.Lock()
		defer mu.Unlock()
		id, _ := c.After.Get("id")
		n, err := strconv.Atoi(string(id))
		switch {
		case err != nil || n < 1 || n > rows || seen[n]:
			badSeq = fmt.Sprintf("row %s (after %d rows)", id, after)
		case c.Seq != after:
			badSeq = fmt.Sprintf("row %s has seq %d, want %d", id, c.Seq, after)
		}
		if n >= 1 && n <= rows {
			seen[n] = true
		}
		after++
		return nil
	})
	tr.AfterCommit.ConnectTx(func(_ context.Context, tx tracker.Tx) error {
		mu.Lock()
		defer mu.Unlock()
		total = tx.Total
		return nil
	})
	defer tr.run(t)()
	db.InsertRows(t, "t", 1, rows)
	Eventually(t, 3*waitLong, "100,000 after_commit changes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return after >= rows
	})
	mu.Lock()
	defer mu.Unlock()
	if badSeq != "" || after != rows || total != rows {
		t.Fatalf("%d after_commit changes, a transaction of %d; %s", after, total, badSeq)
	}
}

// testSourceValues checks that each of SourceValues, and NULL, arrives as
// the JSON the README, "Subjects and events" (or the harness) says.
func testSourceValues(t *testing.T, h SourceHarness) {
	db := h.NewDB(t)
	type col struct{ name, kind, want string }
	var cols []col
	ddl := []string{"id INT PRIMARY KEY"}
	lits := []string{"1"}
	nulls := []string{"2"}
	for _, v := range SourceValues {
		typ, lit, want, ok := h.Column(v.Kind)
		if !ok {
			continue
		}
		if want == "" {
			want = v.Want
		}
		name := "c_" + v.Kind
		cols = append(cols, col{name, v.Kind, want})
		ddl = append(ddl, name+" "+typ)
		lits = append(lits, lit)
		nulls = append(nulls, "NULL")
	}
	db.Exec(t, "CREATE TABLE vals ("+strings.Join(ddl, ", ")+")")
	r := newSourceRun().start(t, db, "")
	r.waitStreaming(t, 1)
	db.Exec(t, "INSERT INTO vals VALUES ("+strings.Join(lits, ", ")+")", "INSERT INTO vals VALUES ("+strings.Join(nulls, ", ")+")")
	cs := r.waitCommitted(t, "vals", 2)
	for i, want := range []func(col) string{func(c col) string { return c.want }, func(col) string { return "null" }} {
		for _, c := range cols {
			got, ok := cs[i].After.Get(c.name)
			if !ok {
				t.Errorf("row %d: %s (%s) not sent", i+1, c.name, c.kind)
				continue
			}
			if !sameJSON(got, []byte(want(c))) {
				t.Errorf("row %d: %s (%s) is %s, want %s", i+1, c.name, c.kind, got, want(c))
			}
		}
	}
}

// sameJSON reports whether a and b are the same JSON value, numbers
// compared as written ("0.1" is not "0.10000000149011612").
func sameJSON(a, b []byte) bool {
	dec := func(p []byte) (any, error) {
		d := json.NewDecoder(bytes.NewReader(p))
		d.UseNumber()
		var v any
		err := d.Decode(&v)
		return v, err
	}
	va, err1 := dec(a)
	vb, err2 := dec(b)
	return err1 == nil && err2 == nil && reflect.DeepEqual(va, vb)
}

// sourceTracker is a tracker whose one bind follows a harness's source,
// checking the records it hands over against the Record contract.
type sourceTracker struct {
	*tracker.Tracker
	mu  sync.Mutex
	bad error
}

// run runs the tracker until the returned stop is called, after waiting
// for its bind to be ready (its source reported streaming). stop fails the
// test when Run failed or the source broke the Record contract.
func (st *sourceTracker) run(t testing.TB) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("tracker Run: %v", err)
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.bad != nil {
			t.Errorf("the source broke the Record contract: %v", st.bad)
		}
	}
	if !waitUntil(waitLong, st.Ready) {
		stop()
		t.Fatalf("the bind was not ready (its source reporting streaming) within %v", waitLong)
	}
	return stop
}

// newSourceTracker returns a tracker whose one bind follows db through
// the harness's source, with sink (nil: none) and an in-memory checkpoint
// store; edit, when not nil, changes its configuration.
func newSourceTracker(t *testing.T, h SourceHarness, db SourceDB, sink *Sink, edit func(*config.Config)) *sourceTracker {
	t.Helper()
	cfg := config.Default()
	cfg.DatabaseURI = string(h.Kind()) + "://trackertest@localhost/trackertest"
	track := true
	cfg.TrackModifications = &track
	cfg.DataDir = t.TempDir()
	cfg.CheckpointInterval = 20 * time.Millisecond
	if edit != nil {
		edit(&cfg)
	}
	st := &sourceTracker{}
	open := func(_ context.Context, _ binds.Bind, opts tracker.SourceOptions) (tracker.Source, error) {
		return &checkedSource{Source: db.Open(t, opts), st: st}, nil
	}
	opts := []tracker.Option{tracker.WithSource(h.Kind(), open), tracker.WithCheckpointStore(NewMemStore()),
		tracker.WithLogger(testLogger(t))}
	if sink != nil {
		opts = append(opts, tracker.WithSink(sink))
	}
	tr, err := tracker.New(&cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	st.Tracker = tr
	return st
}

// checkedSource checks the records its source hands over against the
// Record contract on their way to the tracker.
type checkedSource struct {
	tracker.Source
	st *sourceTracker
}

func (s *checkedSource) Run(ctx context.Context, from string, h tracker.Handler) error {
	var g recordGrammar
	return s.Source.Run(ctx, from, tracker.HandlerFunc(func(ctx context.Context, r tracker.Record) error {
		if err := g.check(r); err != nil {
			s.st.mu.Lock()
			if s.st.bad == nil {
				s.st.bad = err
			}
			s.st.mu.Unlock()
		}
		return h.Handle(ctx, r)
	}))
}

// Lag implements tracker.LagReporter with the source's.
func (s *checkedSource) Lag() tracker.Lag {
	if lr, ok := s.Source.(tracker.LagReporter); ok {
		return lr.Lag()
	}
	return tracker.Lag{Bytes: -1}
}

// testLogger logs to t until the test ends.
func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, nil))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
