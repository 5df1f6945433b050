package e2e

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Faults of PostgreSQL under a running trackerd. Each test asserts the
// stream's contents: every committed row exactly once per phase, nothing
// else.

// walsenderPID returns the PID of the walsender streaming from slot, or 0.
func walsenderPID(t testing.TB, url, slot string) int {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0
	}
	defer c.Close(context.Background())
	var pid *int32
	if err := c.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid); err != nil || pid == nil {
		return 0
	}
	return int(*pid)
}

// terminateWalsender terminates the walsender of slot with
// pg_terminate_backend and waits until trackerd has reconnected (a new
// walsender holds the slot).
func terminateWalsender(t testing.TB, url, slot string) {
	t.Helper()
	var old int
	eventually(t, 30*time.Second, "a walsender on slot "+slot, func() bool { old = walsenderPID(t, url, slot); return old != 0 })
	c, err := pgx.Connect(ctxT(t, 10*time.Second), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var ok bool
	if err := c.QueryRow(ctxT(t, 10*time.Second), `SELECT pg_terminate_backend($1)`, old).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d): %v %v", old, ok, err)
	}
	eventually(t, 60*time.Second, "trackerd to reconnect after pg_terminate_backend", func() bool {
		pid := walsenderPID(t, url, slot)
		return pid != 0 && pid != old
	})
}

// stillRunning fails the test if trackerd has exited.
func stillRunning(t testing.TB, p *proc, when string) {
	t.Helper()
	select {
	case <-p.done:
		t.Fatalf("trackerd exited (%v) %s", p.err, when)
	default:
	}
}

// TestPGWalsenderTerminated terminates trackerd's walsender while
// transactions of 20 statements stream, and in the middle of a 100,000-row
// transaction (35 MB of pgoutput, more than the socket buffers between
// PostgreSQL and trackerd can hold, so PostgreSQL is still sending it).
// trackerd reconnects and resumes after the last transaction it handed
// over: the interrupted one comes again from its Begin, and the events
// trackerd sends again carry the same ids (JetStream drops them, and
// trackerd counts them: the test requires some, as the proof that the
// transaction was cut). The stream holds every row once per phase.
// Terminating one's own walsender is not a server fault: the host's
// PostgreSQL serves.
func TestPGWalsenderTerminated(t *testing.T) {
	bs := newBus(t)
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY, payload text"})
	p := startPG(t, bs, b, nil, "t")
	tbl := fmt.Sprintf("%q.t", b.schema)

	n := scale(6000)
	w := startRowWriter(t, 20, n, 0, pgTxWriter(t, b.uri, tbl))
	kills := 0
	for _, at := range killPoints(2*n, 5) {
		bs.waitCount(t, uint64(at), 2*time.Minute)
		terminateWalsender(t, b.uri, b.slot)
		kills++
	}
	<-w.done
	bs.waitCount(t, uint64(2*n), 2*time.Minute)
	time.Sleep(500 * time.Millisecond)
	again := resent(t, p, bs, b.key)

	// One transaction of 100,000 rows, its walsender terminated while
	// trackerd publishes its before_commit events.
	big := scale(100000)
	pgExec(t, pgAdmin(t), fmt.Sprintf(`INSERT INTO %s SELECT g, repeat('x', 300) FROM generate_series(%d, %d) g`, tbl, n+1, n+big))
	bs.waitCount(t, uint64(2*n+big/4), 3*time.Minute)
	at := bs.count(t)
	terminateWalsender(t, b.uri, b.slot)
	kills++

	ids := pgIDs(t, b.uri, tbl)
	if len(ids) != n+big {
		t.Fatalf("table holds %d rows, want %d (writer failures: %d)", len(ids), n+big, w.failures.Load())
	}
	ms := settleRows(t, bs, ids, 3*time.Minute)
	checkRowsExactlyOnce(t, ms, ids)
	stillRunning(t, p, "after its walsender was terminated")
	againBig := resent(t, p, bs, b.key) - again
	if againBig <= 0 {
		t.Errorf("no event of the large transaction was sent again: the walsender was terminated (at %d events) after "+
			"PostgreSQL had sent all of it, so the test did not cut the transaction", at)
	}
	t.Logf("walsender terminated %d times: %d events sent again after the kills between and inside small transactions; "+
		"the last at %d of %d events, inside the transaction of %d rows: %d of its events sent again; %d events checked",
		kills, again, at, 2*(n+big), big, againBig, len(ms))

	// trackerd counts what JetStream reported as duplicates.
	t.Run("trackerd_sink_duplicates_total counts the events sent again", func(t *testing.T) {
		if dups := trackerdMetric(t, p, "trackerd_sink_duplicates_total"); dups < again+againBig {
			t.Errorf("trackerd_sink_duplicates_total = %d, want at least the %d events sent again", dups, again+againBig)
		}
	})
}

// TestPGServerRestartsWhileStreaming restarts PostgreSQL three ways while a
// writer commits transactions of 10 rows: a fast shutdown (docker stop:
// SIGINT), an immediate shutdown (pg_ctl -m immediate: crash recovery
// follows) and SIGKILL of the container. trackerd keeps running,
// reconnects with backoff each time (its /readyz says not ready while the
// server is down, ready once it is back), and the stream holds every row that
// committed once per phase (the table, read afterwards, says which did:
// a transaction whose COMMIT was cut off may or may not have).
func TestPGServerRestartsWhileStreaming(t *testing.T) {
	pg := startPGBox(t)
	bs := newBus(t)
	b := pg.bind(map[string]string{"t": "id int PRIMARY KEY, payload text"})
	p := startPG(t, bs, b, nil, "t")
	tbl := fmt.Sprintf("%q.t", b.schema)
	w := startRowWriter(t, 10, 0, 2*time.Millisecond, pgTxWriter(t, pg.url(), tbl))

	restartsWhileStreaming(t, p, bs, w, "PostgreSQL", func() []int { return pgIDs(t, pg.url(), tbl) },
		serverFault{"fast shutdown", downAndBack(t, p, b.key, func() { pg.stop(30 * time.Second) }, pg.start)},
		serverFault{"immediate shutdown", func() { pg.immediateShutdown(); pg.start() }},
		serverFault{"SIGKILL", func() { pg.kill(); pg.start() }},
	)
}

// TestPGSlotRewindAfterCrash crashes PostgreSQL after trackerd has
// confirmed everything: a slot's confirmed_flush_lsn lives in memory and
// reaches disk only now and then, so after crash recovery the slot stands
// earlier than what trackerd published (the test checks that it does).
// trackerd resumes from its own position, and what lies between the two
// must not be published again. The duplicate window is 1 s, so that
// JetStream cannot hide a re-sent event: the stream must hold every row
// exactly once per phase without its help. Once with trackerd running
// across the crash (frozen with SIGSTOP while the slot is read), once with
// trackerd killed and restarted from its checkpoint.
func TestPGSlotRewindAfterCrash(t *testing.T) {
	pg := startPGBox(t)
	bs := newBus(t)
	b := pg.bind(map[string]string{"t": "id int PRIMARY KEY, payload text"})
	env := bs.env(t)
	env["TRACKER_BINDS"] = b.bindsJSON(t, "t")
	bs.createStream(t, time.Second) // DUPLICATE_WINDOW takes no less than 30 s
	p := start(t, env, "run")
	p.waitLog(`msg=streaming bind=`+b.key, 60*time.Second)
	tbl := fmt.Sprintf("%q.t", b.schema)
	admin := pg.url()

	confirmed := func() string {
		var l string
		c, err := pgx.Connect(ctxT(t, 10*time.Second), admin)
		if err != nil {
			return ""
		}
		defer c.Close(context.Background())
		c.QueryRow(ctxT(t, 10*time.Second), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, b.slot).Scan(&l)
		return l
	}
	lsnLess := func(a, b string) bool {
		c, err := pgx.Connect(ctxT(t, 10*time.Second), admin)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		var less bool
		if err := c.QueryRow(ctxT(t, 10*time.Second), `SELECT $1::pg_lsn < $2::pg_lsn`, a, b).Scan(&less); err != nil {
			t.Fatal(err)
		}
		return less
	}
	next := 1
	// batch commits transactions of 10 rows, waits until they are
	// published and the slot has confirmed them, and returns the slot's
	// confirmed position.
	batch := func(rows int) string {
		t.Helper()
		write := pgTxWriter(t, pg.url(), tbl)
		for end := next + rows; next < end; next += 10 {
			if err := write(ctxT(t, time.Minute), next, next+10); err != nil {
				t.Fatalf("write: %v", err)
			}
		}
		bs.waitCount(t, uint64(2*(next-1)), 2*time.Minute)
		var target string
		if err := pg.conn().QueryRow(ctxT(t, 10*time.Second), `SELECT pg_current_wal_lsn()::text`).Scan(&target); err != nil {
			t.Fatal(err)
		}
		var l string
		eventually(t, time.Minute, "the slot to confirm the published transactions", func() bool {
			l = confirmed()
			return l != "" && !lsnLess(l, target)
		})
		return l
	}
	// crash writes a batch and crashes PostgreSQL with SIGKILL, calling
	// down while it is down and up once it is back and the slot has been
	// read. A slot reaches disk when its restart_lsn moves, which happens
	// once trackerd confirms past a running-transactions record: CHECKPOINT
	// logs one, the background writer another at most every 15 s. So:
	// CHECKPOINT, one transaction confirmed (the slot is saved there), then
	// the batch, whose confirmations stay in memory. Should the background
	// writer's record land in the batch, the round is tried again.
	crash := func(how string, down, up func()) {
		t.Helper()
		for attempt := 1; ; attempt++ {
			pgExec(t, pg.conn(), "CHECKPOINT")
			batch(10)
			before := batch(scale(2000))
			pg.kill()
			down()
			pg.start()
			after := confirmed()
			up()
			if lsnLess(after, before) {
				t.Logf("%s: the crash rewound the slot from %s to %s", how, before, after)
				return
			}
			if attempt == 3 {
				t.Fatalf("%s: the slot did not rewind in %d crashes (confirmed_flush_lsn %s before, %s after): the test proves nothing", how, attempt, before, after)
			}
			t.Logf("%s: the slot did not rewind (%s); again", how, after)
		}
	}

	// 1. trackerd runs across the crash, frozen (SIGSTOP) so that it
	// cannot reconnect before the slot's position is read.
	crash("trackerd running", func() { p.signal(syscall.SIGSTOP) }, func() {
		p.signal(syscall.SIGCONT)
		p.waitLog(`connection to the database lost: reconnecting`, time.Minute)
	})

	// 2. trackerd killed once its checkpoint caught up (the slot confirmed
	// it), and started again from it after the crash.
	crash("trackerd restarted", func() {
		p.signal(syscall.SIGKILL)
		p.exitCode(10 * time.Second)
	}, func() {
		p = start(t, env, "run")
		p.waitLog(`msg=streaming bind=`+b.key, 60*time.Second)
	})

	batch(scale(1000))
	ids := pgIDs(t, pg.url(), tbl)
	ms := settleRows(t, bs, ids, 2*time.Minute)
	checkRowsExactlyOnce(t, ms, ids)
	stillRunning(t, p, "after the crashes")
	t.Logf("%d rows, %d events checked with a 1s duplicate window", len(ids), len(ms))
}
