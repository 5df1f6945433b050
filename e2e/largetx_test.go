package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Large transactions: one transaction of a million rows per source must
// come out as exactly its before_commit events then its after_commit
// events, in order, with trackerd's memory bounded (the rows waiting for
// their after_commit spill to disk). And PostgreSQL's streaming of
// in-progress transactions (the bind option "streaming"): before_commit
// events go out before the commit, and rollbacks are published as
// retractions with no after_commit for what they withdrew.

// largeTxRows is the size of the large transactions: 1,000,000 times
// TRACKERD_E2E_SCALE.
func largeTxRows() int { return scale(1_000_000) }

// maxPeakRSS is the bound on trackerd's peak resident memory while it
// streams a large transaction: generous (the measured figure is logged),
// but far below what holding a million rows would take.
const maxPeakRSS = 256 << 20

// privateBus is a bus on a nats-server of the test's own: large streams do
// not weigh on the shared server other tests use.
func privateBus(t testing.TB) *bus {
	t.Helper()
	ns := startNATS(t)
	name := uniq("e2e")
	b := &bus{url: ns.url(), stream: strings.ToUpper(name), prefix: name, bucket: name + "_cp"}
	nc, err := natsgo.Connect(b.url)
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	b.nc = nc
	b.js, _ = jetstream.New(nc)
	return b
}

// httpBase returns the base URL of a running trackerd's HTTP endpoints
// (HTTP_ADDR=127.0.0.1:0), from its log.
func httpBase(p *proc) string {
	return p.waitLog(`msg="HTTP endpoints listening" addr=(http://\S+)`, 60*time.Second)[1]
}

// metricValue scrapes /metrics at base and returns the value of name for bind
// (a labelled sample name{bind="..."}), and whether it was there.
func metricValue(base, name, bind string) (float64, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	prefix := name + `{bind="` + bind + `"} `
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// peakRSS returns the process's peak resident set size (VmHWM) in bytes.
func peakRSS(t testing.TB, p *proc) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("read trackerd's /proc status: %v", err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/<pid>/status")
	return 0
}

// scanStream calls fn for every message of the stream, in order, with its
// Nats-Msg-Id and payload, without decoding it: fast enough for millions.
func scanStream(t testing.TB, b *bus, fn func(i int, id string, data []byte)) int {
	t.Helper()
	ctx := ctxT(t, 10*time.Minute)
	n := int(b.count(t))
	cons, err := b.js.OrderedConsumer(ctx, b.stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(20000))
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	defer it.Stop()
	for i := 0; i < n; i++ {
		m, err := it.Next()
		if err != nil {
			t.Fatalf("stream %s: message %d of %d: %v", b.stream, i+1, n, err)
		}
		fn(i, m.Headers().Get("Nats-Msg-Id"), m.Data())
	}
	return n
}

// jsonField returns the text of the JSON value after key (e.g.
// `"trackerdtxtotal":`) in data, up to the next comma or brace, quotes
// removed: enough for the flat numbers and strings it is used on.
func jsonField(data []byte, key string) string {
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return ""
	}
	v := data[i+len(key):]
	if j := bytes.IndexAny(v, ",}"); j >= 0 {
		v = v[:j]
	}
	return string(bytes.Trim(v, `"`))
}

// spillWatch polls trackerd's trackerd_spilled_bytes for bind until
// stopped and keeps the largest value seen: the open transaction's spill
// file, reported only while the transaction is open.
type spillWatch struct {
	max  atomic.Int64
	stop chan struct{}
	wg   sync.WaitGroup
}

func watchSpill(base, bind string) *spillWatch {
	w := &spillWatch{stop: make(chan struct{})}
	w.wg.Go(func() {
		for {
			if v, ok := metricValue(base, "trackerd_spilled_bytes", bind); ok && int64(v) > w.max.Load() {
				w.max.Store(int64(v))
			}
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	return w
}

func (w *spillWatch) done() int64 {
	close(w.stop)
	w.wg.Wait()
	return w.max.Load()
}

// checkLargeTx streams a transaction of n rows (ids 1..n, inserted in id
// order) written by write through trackerd p and asserts the stream: n
// before_commit events with txseq 0..n-1, then n after_commit events with
// txseq 0..n-1 and txtotal n, one txkey, row i+1 at txseq i. It asserts
// that the transaction spilled and that trackerd's peak RSS stayed under
// maxPeakRSS, and logs the timings and the peak.
func checkLargeTx(t *testing.T, bs *bus, p *proc, bind string, n int, write func()) {
	t.Helper()
	base := httpBase(p)
	spill := watchSpill(base, bind)
	t0 := time.Now()
	write()
	committed := time.Since(t0)
	var first, befores time.Duration
	last, moved := 0, time.Now()
	for {
		c := int(bs.count(t))
		if c != last {
			last, moved = c, time.Now()
		}
		if c > 0 && first == 0 {
			first = time.Since(t0)
		}
		if c >= n && befores == 0 {
			befores = time.Since(t0)
		}
		if c >= 2*n {
			break
		}
		select {
		case <-p.done:
			t.Fatalf("trackerd exited (%v) with %d of %d events in the stream", p.err, c, 2*n)
		default:
		}
		if time.Since(moved) > 2*time.Minute {
			t.Fatalf("the stream stalled at %d of %d events for 2m (%v after the write)", c, 2*n, time.Since(t0))
		}
		time.Sleep(100 * time.Millisecond)
	}
	all := time.Since(t0)
	peak := peakRSS(t, p)
	spilled := spill.done()
	time.Sleep(time.Second) // nothing more must arrive

	t1 := time.Now()
	var txKey string
	var errs []string
	fail := func(format string, args ...any) {
		if len(errs) < 10 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
	}
	total := strconv.Itoa(n)
	got := scanStream(t, bs, func(i int, id string, data []byte) {
		parts := strings.Split(id, "/") // <bind>/<origin>/<txkey>/<index>/<phase>
		if len(parts) != 5 {
			fail("message %d: id %q", i, id)
			return
		}
		if txKey == "" {
			txKey = parts[2]
		} else if parts[2] != txKey {
			fail("message %d: txkey %s, want %s (one transaction)", i, parts[2], txKey)
		}
		seq, phase := i, "before_commit"
		if i >= n {
			seq, phase = i-n, "after_commit"
			if tt := jsonField(data, `"trackerdtxtotal":`); tt != total {
				fail("message %d: txtotal %q, want %s", i, tt, total)
			}
		}
		if ts := jsonField(data, `"trackerdtxseq":`); ts != strconv.Itoa(seq) || parts[4] != phase {
			fail("message %d: id %s, txseq %s, want txseq %d %s", i, id, ts, seq, phase)
		}
		if row := jsonField(data, `"after":{"id":`); row != strconv.Itoa(seq+1) {
			fail("message %d (%s): row id %s, want %d", i, id, row, seq+1)
		}
	})
	read := time.Since(t1)
	if got != 2*n {
		fail("the stream holds %d messages, want %d", got, 2*n)
	}
	for _, e := range errs {
		t.Error(e)
	}
	t.Logf("%d-row transaction: committed in %v; first event after %v, all %d before_commit after %v, all %d events after %v; read back and checked in %v",
		n, committed.Round(time.Millisecond), first.Round(time.Millisecond), n, befores.Round(time.Millisecond), 2*n, all.Round(time.Millisecond), read.Round(time.Millisecond))
	t.Logf("trackerd peak RSS (VmHWM) %.1f MiB; largest trackerd_spilled_bytes seen %.1f MiB", float64(peak)/(1<<20), float64(spilled)/(1<<20))
	if spilled <= 0 {
		t.Errorf("trackerd_spilled_bytes{bind=%q} was never above 0: the transaction did not spill to disk", bind)
	}
	if peak > maxPeakRSS {
		t.Errorf("trackerd's peak RSS %d MiB is over the %d MiB bound: memory is not bounded", peak>>20, maxPeakRSS>>20)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(60 * time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
}

func TestPostgresLargeTransaction(t *testing.T) {
	n := largeTxRows()
	bs := privateBus(t)
	b := newPGBind(t, map[string]string{"big": "id int PRIMARY KEY, payload text"})
	p := startPG(t, bs, b, nil, "big")
	db := pgAdmin(t)
	checkLargeTx(t, bs, p, b.key, n, func() {
		pgExec(t, db, fmt.Sprintf(`INSERT INTO %q.big SELECT g, 'row ' || g FROM generate_series(1, %d) g`, b.schema, n))
	})
}

func TestMariaDBLargeTransaction(t *testing.T) {
	n := largeTxRows()
	bs := privateBus(t)
	b := newMyBind(t, 1, map[string]string{"big": "id INT PRIMARY KEY, payload VARCHAR(40)"})
	p, _ := startMy(t, bs, b, "big")
	db := mysqlAdmin(t)
	checkLargeTx(t, bs, p, b.key, n, func() {
		// One statement in autocommit: one transaction.
		myExec(t, db, fmt.Sprintf("INSERT INTO `%s`.big SELECT seq, CONCAT('row ', seq) FROM `%s`.seq_1_to_%d", b.dbs[0], b.dbs[0], n))
	})
}

// pgBindsWith is b's BINDS over tables with extra bind options and extra
// URI parameters (run-time parameters of trackerd's connections to the
// server).
func pgBindsWith(t testing.TB, b *pgBind, params map[string]string, opts map[string]any, tables ...string) string {
	t.Helper()
	u, err := url.Parse(b.uri)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	for k, v := range params {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	var qualified []string
	for _, tb := range tables {
		qualified = append(qualified, b.schema+"."+tb)
	}
	bind := map[string]any{"uri": u.String(), "slot": b.slot, "publication": b.pub, "tables": qualified}
	for k, v := range opts {
		bind[k] = v
	}
	data, _ := json.Marshal(map[string]any{b.key: bind})
	return string(data)
}

// streamingBindsJSON is b's BINDS with streaming on, and the replication
// connection's logical_decoding_work_mem at its 64kB minimum (a startup
// parameter in the URI, so nothing of the shared server changes): any
// transaction beyond 64kB of changes is streamed while in progress.
func streamingBindsJSON(t testing.TB, b *pgBind, tables ...string) string {
	return pgBindsWith(t, b, map[string]string{"logical_decoding_work_mem": "64kB"}, map[string]any{"streaming": true}, tables...)
}

// rollbackData is the data of a trackerd.rollback event.
type rollbackData struct {
	Op     string `json:"op"`
	TxKey  string `json:"txkey"`
	SubTx  string `json:"subtx"`
	Ranges []struct {
		From int `json:"from"`
		To   int `json:"to"`
	} `json:"ranges"`
}

// streamedRow is what the stream says of one row id.
type streamedRow struct {
	before, after []msg
}

// byRow groups the before_commit and after_commit events of ms by row id,
// and returns the rollback events apart.
func byRow(t *testing.T, ms []msg) (map[int]*streamedRow, []msg) {
	t.Helper()
	rows := map[int]*streamedRow{}
	var rollbacks []msg
	for _, m := range ms {
		if m.Event.Type() == "trackerd.rollback" {
			rollbacks = append(rollbacks, m)
			continue
		}
		id, err := strconv.Atoi(string(m.Change.After["id"]))
		if err != nil {
			t.Fatalf("message %d: row id %s", m.Seq, m.Change.After["id"])
		}
		r := rows[id]
		if r == nil {
			r = &streamedRow{}
			rows[id] = r
		}
		switch m.Event.Type() {
		case "trackerd.before_commit":
			r.before = append(r.before, m)
		case "trackerd.after_commit":
			r.after = append(r.after, m)
		}
	}
	return rows, rollbacks
}

// txKeyOf returns the txkey part of an event id,
// <bind>/<origin>/<txkey>/<index>/<phase>.
func txKeyOf(m msg) string {
	parts := strings.Split(m.Event.ID(), "/")
	if len(parts) != 5 {
		return ""
	}
	return parts[2]
}

// countWhere counts the messages of the stream that match.
func countWhere(t *testing.T, bs *bus, match func(m msg) bool) int {
	n := 0
	for _, m := range bs.read(t) {
		if match(m) {
			n++
		}
	}
	return n
}

func TestPostgresStreamingRollback(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY, pad text"})
	env := bs.env(t)
	env["TRACKER_BINDS"] = streamingBindsJSON(t, b, "t")
	p := startGraceful(t, env, "run")
	p.waitLog(`msg=streaming bind=`+b.key, 60*time.Second)

	ctx := ctxT(t, 5*time.Minute)
	conn, err := pgx.Connect(ctx, b.uri)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tbl := fmt.Sprintf("%q.t", b.schema)
	exec := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	insert := func(from, to int) {
		t.Helper()
		exec(fmt.Sprintf("INSERT INTO %s SELECT g, repeat('p', 200) FROM generate_series(%d, %d) g", tbl, from, to))
	}
	inRange := func(from, to int, typ string) func(m msg) bool {
		return func(m msg) bool {
			id, _ := strconv.Atoi(string(m.Change.After["id"]))
			return m.Event.Type() == typ && id >= from && id <= to
		}
	}
	// waitOpen waits for before_commit events of rows from..to while their
	// transaction is still open: proof that they went out before the
	// commit.
	waitOpen := func(from, to int) {
		t.Helper()
		eventually(t, 60*time.Second, fmt.Sprintf("before_commit events of rows %d..%d while their transaction is open", from, to), func() bool {
			return countWhere(t, bs, inRange(from, to, "trackerd.before_commit")) > 0
		})
	}

	// 1. A transaction whose savepoint is rolled back, then committed.
	exec("BEGIN")
	insert(1, 2000) // 2000 rows of 200 bytes: far beyond 64kB
	waitOpen(1, 2000)
	if n := countWhere(t, bs, inRange(1, 100000, "trackerd.after_commit")); n != 0 {
		t.Fatalf("%d after_commit events while the transaction is open", n)
	}
	exec("SAVEPOINT s")
	insert(2001, 4000)
	waitOpen(2001, 4000)
	exec("ROLLBACK TO SAVEPOINT s")
	insert(4001, 6000)
	exec("COMMIT")
	eventually(t, 60*time.Second, "4000 after_commit events", func() bool {
		return countWhere(t, bs, inRange(1, 6000, "trackerd.after_commit")) >= 4000
	})

	// 2. A streamed transaction rolled back whole.
	exec("BEGIN")
	insert(10001, 12000)
	waitOpen(10001, 12000)
	exec("ROLLBACK")
	// A marker transaction: once its after_commit is in, whatever the
	// rolled-back transactions were to publish is in too.
	exec(fmt.Sprintf("INSERT INTO %s VALUES (99999, 'marker')", tbl))
	eventually(t, 60*time.Second, "the marker's after_commit", func() bool {
		return countWhere(t, bs, inRange(99999, 99999, "trackerd.after_commit")) == 1
	})
	time.Sleep(500 * time.Millisecond)

	ms := bs.read(t)
	rows, rollbacks := byRow(t, ms)
	if len(rollbacks) != 2 {
		t.Fatalf("%d rollback events, want 2 (one for the savepoint, one for the whole transaction):\n%s", len(rollbacks), strings.Join(summary(ms), "\n"))
	}
	decode := func(m msg) rollbackData {
		var d rollbackData
		if err := json.Unmarshal(m.Event.Data(), &d); err != nil || d.Op != "rollback" {
			t.Fatalf("rollback event %s: data %s (%v)", m.Event.ID(), m.Event.Data(), err)
		}
		if d.TxKey != txKeyOf(m) {
			t.Errorf("rollback event %s names txkey %s", m.Event.ID(), d.TxKey)
		}
		return d
	}
	covered := func(d rollbackData) []int {
		var seqs []int
		for _, r := range d.Ranges {
			for s := r.From; s <= r.To; s++ {
				seqs = append(seqs, s)
			}
		}
		return seqs
	}

	// The committed transaction: rows 1..2000 and 4001..6000 once in each
	// phase, with the same txseq in both and txtotal 4000; rows
	// 2001..4000 only as before_commit events, each retracted.
	if rows[1] == nil || len(rows[1].before) == 0 {
		t.Fatal("row 1 has no before_commit event")
	}
	key := txKeyOf(rows[1].before[0])
	var retracted []int
	var lastRetracted uint64
	for id := 1; id <= 6000; id++ {
		r := rows[id]
		if id > 2000 && id <= 4000 {
			if r == nil {
				continue // rolled back before it was streamed
			}
			if len(r.after) != 0 || len(r.before) != 1 {
				t.Fatalf("rolled-back row %d: %d before_commit, %d after_commit events; want 1 and 0", id, len(r.before), len(r.after))
			}
			seq, _ := strconv.Atoi(ext(r.before[0].Event, "trackerdtxseq"))
			retracted = append(retracted, seq)
			lastRetracted = max(lastRetracted, r.before[0].Seq)
			continue
		}
		if r == nil || len(r.before) != 1 || len(r.after) != 1 {
			t.Fatalf("committed row %d: want one event per phase, got %+v", id, r)
		}
		if txKeyOf(r.before[0]) != key || txKeyOf(r.after[0]) != key {
			t.Fatalf("row %d: txkeys %s / %s, want %s", id, txKeyOf(r.before[0]), txKeyOf(r.after[0]), key)
		}
		if bseq, aseq := ext(r.before[0].Event, "trackerdtxseq"), ext(r.after[0].Event, "trackerdtxseq"); bseq != aseq {
			t.Fatalf("row %d: txseq %s before, %s after commit", id, bseq, aseq)
		}
		if tot := ext(r.after[0].Event, "trackerdtxtotal"); tot != "4000" {
			t.Fatalf("row %d: txtotal %s, want 4000", id, tot)
		}
	}
	if len(retracted) == 0 {
		t.Fatal("no before_commit event of the rolled-back savepoint's rows: nothing was streamed before ROLLBACK TO SAVEPOINT")
	}
	sub := decode(rollbacks[0])
	if txKeyOf(rollbacks[0]) != key || sub.SubTx == "" {
		t.Fatalf("first rollback event %s (subtx %q): want the savepoint of transaction %s", rollbacks[0].Event.ID(), sub.SubTx, key)
	}
	slices.Sort(retracted)
	if got := covered(sub); !slices.Equal(got, retracted) {
		t.Fatalf("the savepoint's rollback event retracts txseqs %v, want exactly those of its %d rows' before_commit events %v", sub.Ranges, len(retracted), retracted)
	}
	if rollbacks[0].Seq < lastRetracted {
		t.Errorf("the savepoint's rollback event (stream seq %d) precedes before_commit events it retracts (up to %d)", rollbacks[0].Seq, lastRetracted)
	}
	for id := 1; id <= 6000; id++ {
		if r := rows[id]; r != nil && len(r.after) == 1 && r.after[0].Seq < rollbacks[0].Seq {
			t.Fatalf("after_commit of row %d (stream seq %d) precedes the savepoint's rollback event (%d)", id, r.after[0].Seq, rollbacks[0].Seq)
		}
	}

	// The transaction rolled back whole: before_commit events only, all
	// retracted by one event without subtx.
	var streamed []int
	var key2 string
	for id := 10001; id <= 12000; id++ {
		r := rows[id]
		if r == nil {
			continue
		}
		if len(r.after) != 0 || len(r.before) != 1 {
			t.Fatalf("row %d of the rolled-back transaction: %d before_commit, %d after_commit events; want 1 and 0", id, len(r.before), len(r.after))
		}
		key2 = txKeyOf(r.before[0])
		seq, _ := strconv.Atoi(ext(r.before[0].Event, "trackerdtxseq"))
		streamed = append(streamed, seq)
	}
	whole := decode(rollbacks[1])
	if txKeyOf(rollbacks[1]) != key2 || whole.SubTx != "" {
		t.Fatalf("second rollback event %s (subtx %q): want transaction %s, whole", rollbacks[1].Event.ID(), whole.SubTx, key2)
	}
	slices.Sort(streamed)
	if got := covered(whole); !slices.Equal(got, streamed) {
		t.Fatalf("the whole rollback retracts txseqs %v, want the %d streamed changes' %v", whole.Ranges, len(streamed), streamed)
	}
	if m := rows[99999]; m == nil || len(m.after) != 1 {
		t.Fatal("the marker row did not arrive")
	}
	t.Logf("savepoint: %d rolled-back changes had been streamed and were retracted as %v; whole rollback: %d streamed changes retracted as %v",
		len(retracted), sub.Ranges, len(streamed), whole.Ranges)
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(60 * time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0", code)
	}
}
