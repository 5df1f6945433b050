package mysql

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/trackerd/trackerd/tracker"
)

// feeder hands synthetic events to a stream, failing the test on errors.
func feeder(t *testing.T, st *stream) func(evs ...*replication.BinlogEvent) {
	return func(evs ...*replication.BinlogEvent) {
		t.Helper()
		for _, ev := range evs {
			if err := st.handle(t.Context(), ev); err != nil {
				t.Fatalf("%s at %d: %v", ev.Header.EventType, ev.Header.LogPos, err)
			}
		}
	}
}

// xaPrepareEv builds an XA_PREPARE_LOG_EVENT for gtrid (bqual empty,
// formatID 1).
func (m *eventMaker) xaPrepareEv(gtrid string, one bool) *replication.BinlogEvent {
	body := []byte{0}
	if one {
		body[0] = 1
	}
	body = binary.LittleEndian.AppendUint32(body, 1)
	body = binary.LittleEndian.AppendUint32(body, uint32(len(gtrid)))
	body = binary.LittleEndian.AppendUint32(body, 0)
	body = append(body, gtrid...)
	return m.ev(replication.XA_PREPARE_LOG_EVENT, &replication.GenericEvent{}, body)
}

// xid renders gtrid as the server serializes it.
func xidOf(gtrid string) string { return serializeXID([]byte(gtrid), nil, 1) }

// A change's Index is its row's place among all rows of the transaction,
// those of untracked tables included, so that binds following different
// tables of one database never give two changes the same id.
func TestStreamIndexCountsUntrackedRows(t *testing.T) {
	st, rec := fakeStream(t, nil)
	feed := feeder(t, st)
	m := &eventMaker{pos: 100}
	feed(m.gtid(10, replication.BINLOG_MARIADB_FL_TRANSACTIONAL),
		m.tableMap(6, "skip"), m.rows(replication.WRITE_ROWS_EVENTv1, 6, [2]any{uint32(1), "x"}, [2]any{nil, "null id"}), // rows 0, 1
		m.tableMap(5, "t"), m.rows(replication.WRITE_ROWS_EVENTv1, 5, [2]any{uint32(1), "a"}), // 2
		m.tableMap(6, "skip"), m.rows(replication.UPDATE_ROWS_EVENTv1, 6, [2]any{uint32(1), "x"}, [2]any{uint32(1), nil}), // 3
		m.tableMap(6, "skip"), m.rows(replication.DELETE_ROWS_EVENTv1, 6, [2]any{uint32(1), "y"}), // 4
		m.tableMap(5, "t"), m.rows(replication.WRITE_ROWS_EVENTv1, 5, [2]any{uint32(2), "b"}, [2]any{uint32(3), "c"}), // 5, 6
		m.xid())
	var got []int64
	for _, c := range rec.changes() {
		got = append(got, c.Index)
	}
	if fmt.Sprint(got) != "[2 5 6]" {
		t.Fatalf("indexes %v, want [2 5 6]", got)
	}
	// The next transaction counts from 0 again.
	feed(m.gtid(11, 0), m.tableMap(5, "t"), m.rows(replication.WRITE_ROWS_EVENTv1, 5, [2]any{uint32(4), "d"}), m.xid())
	if cs := rec.changes(); cs[len(cs)-1].Index != 0 {
		t.Errorf("first row of the next transaction has index %d", cs[len(cs)-1].Index)
	}
	// A truncated row of an untracked table is a decode error, not a
	// miscount.
	feed(m.gtid(12, 0), m.tableMap(6, "skip"))
	ev := m.rows(replication.WRITE_ROWS_EVENTv1, 6, [2]any{uint32(1), "abc"})
	ev.RawData = ev.RawData[:len(ev.RawData)-2]
	if err := st.handle(t.Context(), ev); err == nil || !strings.Contains(err.Error(), "untracked table shop.skip") {
		t.Fatalf("truncated untracked row: %v", err)
	}
}

// F2: without gtid_strict_mode (MariaDB's default) a transaction whose
// GTID sequence is below an earlier one is new: it is handed over, and the
// position moves forward (MariaDB resumes by file and offset).
func TestStreamGTIDOutOfOrder(t *testing.T) {
	st, rec := fakeStream(t, nil)
	feed := feeder(t, st)
	m := &eventMaker{pos: 100}
	feed(m.gtid(20, 0), m.tableMap(5, "t"), m.rows(replication.WRITE_ROWS_EVENTv1, 5, [2]any{uint32(1), "twenty"}), m.xid())
	start5 := m.pos
	feed(m.gtid(5, 0), m.tableMap(5, "t"), m.rows(replication.WRITE_ROWS_EVENTv1, 5, [2]any{uint32(2), "five"}), m.xid())
	recs := rec.snapshot()
	if kinds(recs) != "BCEBCE" {
		t.Fatalf("records %s, want BCEBCE (both transactions)", kinds(recs))
	}
	if recs[3].Tx.TxKey != "gtid-0-1-5-bin.000001-"+itoa(start5) || recs[3].Tx.TxID != "0-1-5" {
		t.Errorf("lower GTID: key %q id %q", recs[3].Tx.TxKey, recs[3].Tx.TxID)
	}
	p20, err := parsePosition(recs[2].Pos)
	if err != nil {
		t.Fatal(err)
	}
	p5, err := parsePosition(recs[5].Pos)
	if err != nil {
		t.Fatal(err)
	}
	if !before(p20.filePos(), p5.filePos()) || p5.Pos != m.pos {
		t.Errorf("position went from %s to %s, want forward to offset %d", recs[2].Pos, recs[5].Pos, m.pos)
	}
	// The GTID part is the server's own GTID position there (what
	// BINLOG_GTID_POS reports), and resuming goes by file and offset.
	if p5.GTID != "0-1-5" {
		t.Errorf("GTID state %q, want the server's 0-1-5", p5.GTID)
	}
	if st.s.useGTID(p5) {
		t.Errorf("MariaDB position %s resumes by GTID; want file and offset", recs[5].Pos)
	}
	if at := p5.resumeAt(); at.String() != p5.filePos().String() {
		t.Errorf("resumes at %s, want %s", at, p5.filePos())
	}
}

// F3: an XA transaction's prepared part is handed over as a streamed
// transaction when XA PREPARE is read, its XA COMMIT commits it, its XA
// ROLLBACK rolls it back, and a position lists it until then.
func TestStreamXA(t *testing.T) {
	lb := &logBuffer{}
	st, rec := fakeStream(t, lb)
	feed := feeder(t, st)
	m := &eventMaker{pos: 100}
	const prepared = replication.BINLOG_MARIADB_FL_TRANSACTIONAL | mariadbFlPreparedXA
	const completed = replication.BINLOG_MARIADB_FL_STANDALONE | replication.BINLOG_MARIADB_FL_TRANSACTIONAL | mariadbFlCompletedXA

	startA := m.pos
	prepareA := []*replication.BinlogEvent{m.gtid(30, prepared),
		m.tableMap(6, "skip"), m.rows(replication.WRITE_ROWS_EVENTv1, 6, [2]any{uint32(9), "untracked"}),
		m.tableMap(5, "t"), m.rows(replication.WRITE_ROWS_EVENTv1, 5, [2]any{uint32(1), "a"}, [2]any{uint32(2), "b"}),
		m.query("XA END X'6178',X'',1"), m.xaPrepareEv("ax", false)}
	feed(prepareA...)
	recs := rec.snapshot()
	if kinds(recs) != "BCCK" {
		t.Fatalf("XA PREPARE: records %s, want BCCK", kinds(recs))
	}
	if !recs[0].Tx.Streamed || recs[0].Tx.TxKey != "gtid-0-1-30" || recs[1].Change.TxKey != "gtid-0-1-30" {
		t.Errorf("XA begin %+v, change key %q: want a streamed gtid-0-1-30", recs[0].Tx, recs[1].Change.TxKey)
	}
	if recs[1].Change.Index != 1 || recs[2].Change.Index != 2 {
		t.Errorf("indexes %d, %d, want 1, 2", recs[1].Change.Index, recs[2].Change.Index)
	}
	wantXA := `"xa":[{"xid":"X'6178',X'',1","key":"gtid-0-1-30","gtid":"0-1-30","file":"bin.000001","pos":` + itoa(startA) + `}]`
	if !strings.Contains(recs[3].Pos, wantXA) {
		t.Fatalf("position after XA PREPARE %s, want it to hold %s", recs[3].Pos, wantXA)
	}

	// Another transaction commits while it is prepared.
	tx31 := []*replication.BinlogEvent{m.gtid(31, 0), m.tableMap(5, "t"), m.rows(replication.WRITE_ROWS_EVENTv1, 5, [2]any{uint32(3), "c"}), m.xid()}
	feed(tx31...)
	recs = rec.snapshot()
	after31 := recs[len(recs)-1].Pos
	if kinds(recs[4:]) != "BCE" || recs[4].Tx.Streamed || !strings.Contains(after31, wantXA) {
		t.Fatalf("transaction 31: %s, position %s", kinds(recs[4:]), after31)
	}

	// XA COMMIT: the prepared transaction's commit.
	commitA := []*replication.BinlogEvent{m.gtid(32, completed), m.query("XA COMMIT X'6178',X'',1")}
	feed(commitA...)
	recs = rec.snapshot()
	if last := recs[len(recs)-1]; last.Kind != tracker.RecordCommit || last.Tx.TxKey != "gtid-0-1-30" || strings.Contains(last.Pos, `"xa"`) ||
		!strings.Contains(last.Pos, `"gtid":"0-1-32"`) {
		t.Fatalf("XA COMMIT handed %+v", last)
	}

	// XA ROLLBACK of another: its retraction.
	n := len(rec.snapshot())
	feed(m.gtid(33, prepared), m.tableMap(5, "t"), m.rows(replication.WRITE_ROWS_EVENTv1, 5, [2]any{uint32(4), "d"}),
		m.query("XA END X'6278',X'',1"), m.xaPrepareEv("bx", false),
		m.gtid(34, completed), m.query("XA ROLLBACK X'6278',X'',1"))
	recs = rec.snapshot()[n:]
	if kinds(recs) != "BCKRK" || recs[3].Tx.TxKey != "gtid-0-1-33" || strings.Contains(recs[4].Pos, `"xa"`) {
		t.Fatalf("XA ROLLBACK: %s %+v", kinds(recs), recs)
	}

	// The XA COMMIT of a transaction prepared before the bind's start: a
	// warning.
	feed(m.gtid(35, completed), m.query("XA COMMIT 'old'"))
	if !strings.Contains(lb.String(), "prepared before the position") || !strings.Contains(lb.String(), `xid=X'6F6C64',X'',1`) {
		t.Errorf("no warning for an unknown XA COMMIT:\n%s", lb.String())
	}

	// A restart from the position after transaction 31 (the tracker lost
	// its buffer of the prepared transaction): the stream resumes at the
	// XA PREPARE group, hands it over again with the same key and indexes,
	// skips transaction 31, and commits it at XA COMMIT.
	p31, err := parsePosition(after31)
	if err != nil {
		t.Fatal(err)
	}
	if at := p31.resumeAt(); at.File != "bin.000001" || at.Pos != startA {
		t.Fatalf("resume at %s, want the XA PREPARE group's start %d", at, startA)
	}
	st2, rec2 := fakeStreamAt(t, nil, p31)
	feed2 := feeder(t, st2)
	feed2(prepareA...)
	feed2(tx31...)
	feed2(commitA...)
	got := rec2.snapshot()
	if kinds(got) != "BCCE" {
		t.Fatalf("after the restart: %s, want BCCE (the prepared transaction again, then its commit)", kinds(got))
	}
	if got[0].Tx.TxKey != "gtid-0-1-30" || !got[0].Tx.Streamed || got[1].Change.Index != 1 || got[2].Change.Index != 2 || got[3].Tx.TxKey != "gtid-0-1-30" {
		t.Errorf("again: %+v %+v %+v", got[0].Tx, got[1].Change, got[3].Tx)
	}
	if strings.Contains(got[3].Pos, `"xa"`) || !strings.Contains(got[3].Pos, `"pos":`+itoa(commitA[1].Header.LogPos)) {
		t.Errorf("commit position %s", got[3].Pos)
	}
}

// MySQL logs XA START and, for XA COMMIT ... ONE PHASE, an
// XA_PREPARE_LOG_EVENT with its one-phase flag: an ordinary commit.
func TestStreamXAOnePhaseMySQL(t *testing.T) {
	st, rec := fakeStream(t, nil)
	st.s.info.mariadb = false
	st.gtids, _ = newGTIDState(false, "")
	feed := feeder(t, st)
	m := &eventMaker{pos: 100}
	gtidEv := func(gno int64) *replication.BinlogEvent {
		return m.ev(replication.GTID_EVENT, &replication.GTIDEvent{SID: []byte{0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62}, GNO: gno}, make([]byte, 40))
	}
	feed(gtidEv(7), m.query("XA START X'6f6e65',X'',1"), m.tableMap(5, "t"), m.rows(replication.WRITE_ROWS_EVENTv1, 5, [2]any{uint32(1), "a"}),
		m.query("XA END X'6f6e65',X'',1"), m.xaPrepareEv("one", true))
	recs := rec.snapshot()
	if kinds(recs) != "BCE" || recs[2].Tx.TxKey != recs[0].Tx.TxKey || strings.Contains(recs[2].Pos, `"xa"`) {
		t.Fatalf("ONE PHASE: %s %+v", kinds(recs), recs)
	}
	// A two-phase one: prepared, then XA COMMIT in a group of its own.
	feed(gtidEv(8), m.query("XA START 'two'"), m.tableMap(5, "t"), m.rows(replication.WRITE_ROWS_EVENTv1, 5, [2]any{uint32(2), "b"}),
		m.query("XA END 'two'"), m.xaPrepareEv("two", false), gtidEv(9), m.query("XA COMMIT X'74776f',X'',1"))
	recs = rec.snapshot()[3:]
	if kinds(recs) != "BCKE" || recs[3].Tx.TxKey != "gtid-3e11fa47-71ca-11e1-9e33-c80aa9429562-8" {
		t.Fatalf("two-phase: %s %+v", kinds(recs), recs)
	}
}

func TestParseXID(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"X'617831',X'',1", "X'617831',X'',1"},
		{"'ax1'", "X'617831',X'',1"},
		{" 'ax2' , 'bq' , 7 ", "X'617832',X'6271',7"},
		{"0x6178, b'01100010'", "X'6178',X'62',1"},
		{`"it's"`, "X'69742773',X'',1"},
		{"'a''b', '', 0", "X'612762',X'',0"},
		{"X'6f6e65',X'',1 ONE PHASE", "X'6F6E65',X'',1"},
	} {
		got, err := parseXID([]byte(tc.in))
		if err != nil || got != tc.want {
			t.Errorf("parseXID(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "abc", "X'6", "'a', 'b', x"} {
		if got, err := parseXID([]byte(bad)); err == nil {
			t.Errorf("parseXID(%q) = %q, want an error", bad, got)
		}
	}
	for in, want := range map[string]bool{" 'x' ONE PHASE": true, "X'78',X'',1 one phase;": true, " 'x ONE PHASE'": false, " 'x'": false} {
		if got := onePhase([]byte(in)); got != want {
			t.Errorf("onePhase(%q) = %v", in, got)
		}
	}
}

// FuzzParseXID: parseXID never panics, and what it returns is the
// serialized form, which parses to itself.
func FuzzParseXID(f *testing.F) {
	for _, s := range []string{"X'617831',X'',1", "'ax1'", " 'a' , 'b' , 7 ", "0x61, b'0110'", `"it's"`, "'x' ONE PHASE", "'", "X'6", "'a',"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, q []byte) {
		got, err := parseXID(q)
		if err != nil {
			return
		}
		again, err := parseXID([]byte(got))
		if err != nil || again != got {
			t.Fatalf("parseXID(%q) = %q, which parses to %q, %v", q, got, again, err)
		}
	})
}
