package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
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
	kind   string
	target int           // killStreaming: kill once the stream holds this many events
	delay  time.Duration // killStartup: after the start; killShutdown: after the SIGTERM
}

// crashSchedule plans n crash points over plan: about two thirds while
// streaming, at increasing stream sizes (half of them aimed inside large
// transactions, the rest anywhere), and the rest right after a start or
// during a shutdown, interleaved at random. The first is never a startup
// kill (the first process is already streaming).
func crashSchedule(plan *crashPlan, n int) []crashPoint {
	nStartup, nShutdown := n/6, n/6
	nStreaming := n - nStartup - nShutdown
	total := plan.events()
	var targets []int
	big := slices.Clone(plan.big)
	rand.Shuffle(len(big), func(i, j int) { big[i], big[j] = big[j], big[i] })
	for _, i := range big[:min(len(big), nStreaming/2)] {
		start, k := plan.ends[i]-2*plan.sizes[i], plan.sizes[i]
		targets = append(targets, start+k/5+rand.IntN(2*k-2*k/5))
	}
	for len(targets) < nStreaming {
		targets = append(targets, total/50+rand.IntN(total*95/100))
	}
	slices.Sort(targets)
	var pts []crashPoint
	last := 0
	for _, tg := range targets {
		tg = max(tg, last+1)
		last = tg
		pts = append(pts, crashPoint{kind: killStreaming, target: tg})
	}
	for range nStartup {
		at := 1 + rand.IntN(len(pts))
		pts = slices.Insert(pts, at, crashPoint{kind: killStartup, delay: time.Duration(rand.IntN(600)) * time.Millisecond})
	}
	for range nShutdown {
		at := rand.IntN(len(pts) + 1)
		pts = slices.Insert(pts, at, crashPoint{kind: killShutdown, delay: time.Duration(rand.IntN(250)) * time.Millisecond})
	}
	return pts
}

// crashRun drives one crash-point run: trackerd with env over bind key,
// the workload written by write.
type crashRun struct {
	t     *testing.T
	bs    *bus
	env   map[string]string
	key   string
	write crashWriter
}

func (r *crashRun) run() {
	t, bs := r.t, r.bs
	streaming := `msg=streaming bind=` + r.key
	p := start(t, r.env, "run")
	p.waitLog(streaming, 60*time.Second)

	plan := newCrashPlan(scale(5000), max(8, scale(8)))
	points := crashSchedule(plan, max(24, scale(24)))
	total := plan.events()
	t.Logf("workload: %d transactions (%d of 500+ rows), %d rows, %d events; %d crash points", len(plan.sizes), len(plan.big), plan.rows, total, len(points))

	// The writer: chunks of about 300 rows, paced so that writing goes on
	// while trackerd is killed and restarted.
	var written atomic.Int64 // events the committed transactions make
	var wg sync.WaitGroup
	var writeErr error
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		var chunk []int
		rows := 0
		for i := range plan.sizes {
			chunk = append(chunk, i)
			rows += plan.sizes[i]
			if rows < 300 && i < len(plan.sizes)-1 {
				continue
			}
			if err := r.write(ctx, plan, chunk); err != nil {
				writeErr = err
				return
			}
			written.Store(int64(plan.ends[i]))
			chunk, rows = chunk[:0], 0
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(50+rand.IntN(100)) * time.Millisecond):
			}
		}
	}()

	kinds := map[string]int{}
	var notes []string
	killed := func(k int, cp crashPoint, detail string) {
		n := int(bs.count(t))
		behind := int(written.Load()) - n
		line := fmt.Sprintf("#%d %s at %d events (%s", k+1, cp.kind, n, plan.where(n))
		if behind > 0 {
			line += fmt.Sprintf("; %d events behind the writer", behind)
			kinds["behind the writer"]++
		}
		if strings.HasPrefix(plan.where(n), "inside") {
			kinds["inside a transaction"]++
		}
		if detail != "" {
			line += "; " + detail
		}
		notes = append(notes, line+")")
		kinds[cp.kind]++
	}
	for k, cp := range points {
		switch cp.kind {
		case killStartup:
			// p was started a moment ago and not waited for.
			time.Sleep(cp.delay)
			detail := "before it logged streaming"
			if strings.Contains(p.out.String(), "msg=streaming") {
				detail = "after it logged streaming"
			}
			p.signal(syscall.SIGKILL)
			p.exitCode(10 * time.Second)
			killed(k, cp, fmt.Sprintf("%v after start, %s", cp.delay, detail))
		case killShutdown:
			p.waitLog(streaming, 60*time.Second)
			p.signal(syscall.SIGTERM)
			time.Sleep(cp.delay)
			detail := fmt.Sprintf("SIGKILL %v after SIGTERM", cp.delay)
			select {
			case <-p.done:
				if code := p.exitCode(time.Second); code != 0 {
					t.Fatalf("crash point #%d: trackerd exited %d after SIGTERM, want 0", k+1, code)
				}
				detail = fmt.Sprintf("had shut down cleanly within %v of SIGTERM", cp.delay)
				kinds["shut down before the SIGKILL"]++
			default:
				p.signal(syscall.SIGKILL)
			}
			p.exitCode(30 * time.Second)
			killed(k, cp, detail)
		default:
			p.waitLog(streaming, 60*time.Second)
			deadline := time.Now().Add(3 * time.Minute)
			for bs.count(t) < uint64(cp.target) {
				if time.Now().After(deadline) {
					t.Fatalf("crash point #%d: the stream did not reach %d events within 3m (it holds %d)", k+1, cp.target, bs.count(t))
				}
				select {
				case <-p.done:
					t.Fatalf("trackerd exited (%v) while streaming; output:\n%s", p.err, p.out.String())
				default:
				}
				time.Sleep(2 * time.Millisecond)
			}
			p.signal(syscall.SIGKILL)
			p.exitCode(10 * time.Second)
			killed(k, cp, fmt.Sprintf("aimed at %d", cp.target))
		}
		p = start(t, r.env, "run")
	}
	p.waitLog(streaming, 60*time.Second)
	wg.Wait()
	if writeErr != nil {
		t.Fatalf("writer: %v", writeErr)
	}
	bs.waitCount(t, uint64(total), 3*time.Minute)
	time.Sleep(500 * time.Millisecond) // nothing more must arrive
	ms := bs.read(t)
	for _, n := range notes {
		t.Log(n)
	}
	dups := checkCrashStream(t, ms, plan)
	t.Logf("crash points: %d (%s); changes checked: %d rows, %d events; duplicates seen: %d",
		len(points), summarize(kinds), plan.rows, len(ms), dups)
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(60 * time.Second); code != 0 {
		t.Fatalf("final SIGTERM: exit code %d, want 0", code)
	}
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
		if len(parts) != 4 {
			fail("message %d: id %q is not <bind>/<txkey>/<txseq>/<phase>", m.Seq, m.Event.ID())
			continue
		}
		if k, ok := txKeys[tx]; !ok {
			txKeys[tx] = parts[1]
		} else if k != parts[1] {
			fail("row %d: txkey %s, but its transaction's other events have %s", id, parts[1], k)
		}
		if want := strconv.Itoa(id - plan.first[tx]); ext(m.Event, "trackerdtxseq") != want || parts[2] != want {
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
