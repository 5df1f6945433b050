package e2e

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
)

// Faults of NATS under a running trackerd: the server stopped, killed,
// frozen (docker pause: a silent partition) and brought back with its
// JetStream store, while a writer keeps committing rows. Each test asserts
// the stream's contents.

// natsFault names a NATS fault and how to cause and end it, and how long
// to watch trackerd stream after it (0: until the stream has moved on).
type natsFault struct {
	name  string
	begin func()
	end   func()
	watch time.Duration
}

// natsOutages takes NATS away with each of the faults in turn while rows
// stream, bringing it back with its store after each. trackerd must stay
// up, stop reading while it cannot publish, resume when NATS is back, and
// store every row exactly once per phase (the duplicate window, 10 minutes
// by default, drops what it sends again; the events stored before each
// outage must still be there).
func natsOutages(t *testing.T, faults func(ns *natsBox) []natsFault) {
	ns := startNATSBox(t)
	bs := busAt(t, ns.url())
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY, payload text"})
	p := startPG(t, bs, b, nil, "t")
	tbl := fmt.Sprintf("%q.t", b.schema)
	w := startRowWriter(t, 10, 0, 5*time.Millisecond, pgTxWriter(t, b.uri, tbl))

	progress := func(what string) { t.Helper(); progressed(t, p, bs, scale(500), what) }
	progress("events before the first outage")
	for _, f := range faults(ns) {
		before := w.written()
		f.begin()
		during := w.written() - before
		stillRunning(t, p, "while NATS was "+f.name)
		f.end()
		progress("events after NATS was " + f.name)
		for end := time.Now().Add(f.watch); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			stillRunning(t, p, "after NATS was "+f.name)
		}
		t.Logf("NATS %s: %d rows written meanwhile; %d events in the stream", f.name, during, bs.count(t))
	}
	w.halt()
	ids := pgIDs(t, b.uri, tbl)
	ms := settleRows(t, bs, ids, 3*time.Minute)
	checkRowsExactlyOnce(t, ms, ids)
	stillRunning(t, p, "at the end")
	t.Logf("%d rows, %d events checked", len(ids), len(ms))
}

// TestNATSStoppedAndKilled stops NATS (SIGTERM) for 5 s, then kills it
// (SIGKILL) for 5 s, under a steady write load (see natsOutages).
func TestNATSStoppedAndKilled(t *testing.T) {
	natsOutages(t, func(ns *natsBox) []natsFault {
		return []natsFault{
			{"stopped for 5s", func() { ns.stop(10 * time.Second); time.Sleep(5 * time.Second) }, ns.start, 0},
			{"killed for 5s", func() { ns.kill(); time.Sleep(5 * time.Second) }, ns.start, 0},
		}
	})
}

// TestNATSPaused freezes NATS with docker pause for 12 s under a steady
// write load (see natsOutages): a silent partition, in which connections
// stay open and requests wait in socket buffers, to be carried out when
// NATS thaws, after their senders gave up on them. trackerd is watched for
// 12 s after, as what was carried out late can still bite.
func TestNATSPaused(t *testing.T) {
	natsOutages(t, func(ns *natsBox) []natsFault {
		return []natsFault{{"paused for 12s", func() { ns.pause(); time.Sleep(12 * time.Second) }, ns.unpause, 12 * time.Second}}
	})
}

// TestNATSDownLongerThanWalSenderTimeout stops NATS for longer than
// PostgreSQL's wal_sender_timeout while rows stream. trackerd must stop
// reading (trackerd_changes_total stands still from the first seconds of
// the outage to its end, while 20,000 more rows are committed: TCP
// back-pressure holds the walsender), hold its memory (RSS, sampled every
// 200 ms, may grow by less than 64 MiB with MAX_INFLIGHT 1024), keep
// sending status updates so that the walsender survives the outage (the
// same PID holds the slot throughout), not let the slot advance past what
// NATS acknowledged, and deliver everything once NATS is back with its
// store. The 60 s case (PostgreSQL's default timeout) runs only with
// TRACKERD_E2E_SCALE >= 2, for its wall time.
func TestNATSDownLongerThanWalSenderTimeout(t *testing.T) {
	for _, tc := range []struct {
		senderTimeout, outage time.Duration
	}{
		{senderTimeout: 20 * time.Second, outage: 30 * time.Second},
		{senderTimeout: 10 * time.Second, outage: 25 * time.Second},
		{senderTimeout: 60 * time.Second, outage: 70 * time.Second},
	} {
		t.Run(fmt.Sprintf("timeout %v outage %v", tc.senderTimeout, tc.outage), func(t *testing.T) {
			if tc.senderTimeout > 30*time.Second && scale(10) < 20 {
				t.Skip("long outage: runs with TRACKERD_E2E_SCALE >= 2")
			}
			walSenderOutage(t, tc.senderTimeout, tc.outage)
		})
	}
}

// walSenderOutage runs one case of TestNATSDownLongerThanWalSenderTimeout.
func walSenderOutage(t *testing.T, senderTimeout, outage time.Duration) {
	pg := startPGBox(t, "wal_sender_timeout="+strconv.Itoa(int(senderTimeout.Milliseconds()))+"ms")
	ns := startNATSBox(t)
	bs := busAt(t, ns.url())
	b := pg.bind(map[string]string{"t": "id int PRIMARY KEY, payload text"})
	p := startPG(t, bs, b, map[string]string{"TRACKER_MAX_INFLIGHT": "1024"}, "t")
	tbl := fmt.Sprintf("%q.t", b.schema)
	w := startRowWriter(t, 10, 0, 10*time.Millisecond, pgTxWriter(t, pg.url(), tbl))
	bs.waitCount(t, uint64(scale(2000)), 2*time.Minute)

	slotState := func() (pid int, confirmed string) {
		c, err := pgx.Connect(ctxT(t, 10*time.Second), pg.url())
		if err != nil {
			return 0, ""
		}
		defer c.Close(ctxT(t, 5*time.Second))
		var p *int32
		c.QueryRow(ctxT(t, 10*time.Second), `SELECT active_pid, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, b.slot).Scan(&p, &confirmed)
		if p != nil {
			pid = int(*p)
		}
		return pid, confirmed
	}
	pid0, _ := slotState()
	if pid0 == 0 {
		t.Fatal("no walsender holds the slot before the outage")
	}
	rss0 := vmRSS(p.cmd.Process.Pid)
	ns.stop(10 * time.Second)
	stopped := time.Now()
	rows0 := w.written()
	// Let trackerd's last acknowledged position reach the slot, then note
	// it: it must not move while nothing can be acknowledged.
	time.Sleep(2 * time.Second)
	_, conf0 := slotState()
	// Far more than MAX_INFLIGHT events, whatever the writer's pace:
	// 20,000 rows of 500 bytes.
	bulk := scale(20000)
	pgExec(t, pg.conn(), fmt.Sprintf(`INSERT INTO %s SELECT g, repeat('y', 500) FROM generate_series(10000001, %d) g`, tbl, 10000000+bulk))
	changes := func() int { return trackerdMetric(t, p, `trackerd_changes_total{bind="`+b.key+`"}`) }
	readEarly := changes()
	peak := sampleRSS(p.cmd.Process.Pid, 200*time.Millisecond)
	var pids []int
	var confs []string
	for time.Since(stopped) < outage {
		pid, conf := slotState()
		pids = append(pids, pid)
		confs = append(confs, conf)
		stillRunning(t, p, "while NATS was down")
		time.Sleep(500 * time.Millisecond)
	}
	rowsDuring := w.written() - rows0 + bulk
	readLate := changes()
	ns.start()
	peakKiB := peak.halt()
	t.Logf("NATS down %v with wal_sender_timeout %v: %d rows committed meanwhile, %d changes read after the first seconds of the outage; "+
		"trackerd RSS %d KiB before, peak %d KiB during the outage",
		time.Since(stopped).Round(time.Second), senderTimeout, rowsDuring, readLate-readEarly, rss0, peakKiB)
	if readLate != readEarly {
		t.Errorf("trackerd read %d changes while NATS was down (trackerd_changes_total %d after its first seconds, %d at its end): it did not pause reading",
			readLate-readEarly, readEarly, readLate)
	}
	if grew := peakKiB - rss0; grew > 64<<10 {
		t.Errorf("trackerd's RSS grew by %d KiB during the outage (MAX_INFLIGHT 1024): memory is not bounded", grew)
	}

	if slices.ContainsFunc(pids, func(pid int) bool { return pid != pid0 }) {
		t.Errorf("the walsender did not survive the outage: slot holders sampled every 0.5 s were %v, want %d throughout", pids, pid0)
	}
	if slices.ContainsFunc(confs, func(c string) bool { return c != conf0 }) {
		t.Errorf("the slot's confirmed position moved while NATS was down (from %s: %v)", conf0, confs)
	}
	bs.waitCount(t, bs.count(t)+uint64(scale(2000)), 2*time.Minute)
	w.halt()
	ids := pgIDs(t, pg.url(), tbl)
	ms := settleRows(t, bs, ids, 3*time.Minute)
	checkRowsExactlyOnce(t, ms, ids)
	t.Logf("%d rows, %d events checked", len(ids), len(ms))
}

// TestNATSDownLongerThanDuplicateWindow stops NATS (SIGTERM), kills it
// (SIGKILL) and cuts it off the network (docker network disconnect), each
// time for 12 s, more than twice the stream's 5 s duplicate window, under a
// steady write load. Nothing may be lost.
// Duplicates may now appear: events NATS stored but whose acknowledgement
// trackerd never got are sent again when it is back, after the window that
// would have dropped them. They are counted and must be bounded: each a
// second copy of an event stored just before an outage, no more than
// MAX_INFLIGHT (the unacknowledged tail past the last checkpoint) per
// outage.
func TestNATSDownLongerThanDuplicateWindow(t *testing.T) {
	const maxInflight = 512
	ns := startNATSBox(t)
	bs := busAt(t, ns.url())
	b := newPGBind(t, map[string]string{"t": "id int PRIMARY KEY, payload text"})
	// DUPLICATE_WINDOW takes no less than 30 s: the stream is made
	// beforehand with a 5 s window, which trackerd uses as it finds it.
	bs.createStream(t, 5*time.Second)
	p := startPG(t, bs, b, map[string]string{"TRACKER_MAX_INFLIGHT": strconv.Itoa(maxInflight)}, "t")
	tbl := fmt.Sprintf("%q.t", b.schema)
	w := startRowWriter(t, 10, 0, 5*time.Millisecond, pgTxWriter(t, b.uri, tbl))

	progress := func(what string) { t.Helper(); progressed(t, p, bs, scale(1000), what) }
	progress("events before the first outage")
	outages := 0
	for _, f := range []natsFault{
		{"stopped for 12s", func() { ns.stop(10 * time.Second) }, ns.start, 0},
		{"killed for 12s", ns.kill, ns.start, 0},
		{"cut off the network for 12s", ns.disconnect, ns.connect, 0},
	} {
		outages++
		f.begin()
		time.Sleep(12 * time.Second)
		stillRunning(t, p, "while NATS was "+f.name)
		f.end()
		progress("events after NATS was " + f.name)
	}
	w.halt()
	ids := pgIDs(t, b.uri, tbl)
	ms := settleRows(t, bs, ids, 3*time.Minute)

	tl := tallyRows(ms, ids)
	missing, dups := tl.missingAndDuplicated(ids)
	if len(tl.foreign) > 0 {
		t.Errorf("%d events of rows that never committed, or of other operations; first: %v", len(tl.foreign), tl.foreign[:min(5, len(tl.foreign))])
	}
	if missing > 0 {
		t.Fatalf("%d events for %d committed rows: %d missing", len(ms), len(ids), missing)
	}
	if len(ms) != 2*len(ids)+dups {
		t.Fatalf("%d events for %d committed rows and %d duplicates", len(ms), len(ids), dups)
	}
	// Every duplicate is the second copy of one of the last MAX_INFLIGHT
	// events stored before an outage (a gap of more than the window in the
	// stream's timestamps), stored again after it.
	stamps := storedAt(t, bs)
	var gaps []uint64 // the last sequence before each outage
	for i := 1; i < len(ms); i++ {
		if stamps[ms[i].Seq].Sub(stamps[ms[i-1].Seq]) > 5*time.Second {
			gaps = append(gaps, ms[i-1].Seq)
		}
	}
	first := map[string]uint64{}
	perGap := make([]int, len(gaps))
	var stray []string
	for _, m := range ms {
		id := m.Event.ID()
		s, seen := first[id]
		if !seen {
			first[id] = m.Seq
			continue
		}
		g := slices.IndexFunc(gaps, func(last uint64) bool { return s <= last && s+maxInflight > last && m.Seq > last })
		if g < 0 {
			stray = append(stray, fmt.Sprintf("%s at %d and %d", id, s, m.Seq))
			continue
		}
		perGap[g]++
	}
	if len(stray) > 0 {
		t.Errorf("%d duplicates are not re-sends of the last %d events before an outage (outages after sequences %v); first: %v",
			len(stray), maxInflight, gaps, stray[:min(5, len(stray))])
	}
	for g, n := range perGap {
		if n > maxInflight {
			t.Errorf("%d duplicates after the outage following sequence %d: more than MAX_INFLIGHT (%d)", n, gaps[g], maxInflight)
		}
	}
	t.Logf("duplicates per outage: %v (outages after stream sequences %v)", perGap, gaps)
	t.Logf("%d rows, %d events checked; %d duplicates after %d outages longer than the 5s duplicate window (bound: %d per outage)",
		len(ids), len(ms), dups, outages, maxInflight)
}

// storedAt returns when the stream stored each message, by sequence.
func storedAt(t testing.TB, bs *bus) map[uint64]time.Time {
	t.Helper()
	ctx := ctxT(t, 2*time.Minute)
	n := bs.count(t)
	cons, err := bs.js.OrderedConsumer(ctx, bs.stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	out := make(map[uint64]time.Time, n)
	for uint64(len(out)) < n {
		batch, err := cons.FetchNoWait(5000)
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				t.Fatalf("metadata: %v", err)
			}
			out[md.Sequence.Stream] = md.Timestamp
		}
		if got == 0 && batch.Error() == nil {
			time.Sleep(50 * time.Millisecond)
		}
	}
	return out
}
