package mysql

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/sources/internal/srckit"
	"github.com/trackerd/trackerd/tracker"
)

// fakeStream is a stream over synthetic events: MariaDB flavor, tables
// shop.t (id INT UNSIGNED PK, name VARCHAR) tracked and shop.skip not.
func fakeStream(t testing.TB, lb *logBuffer) (*stream, *recorder) {
	t.Helper()
	return fakeStreamAt(t, lb, position{GTID: "0-1-9", File: "bin.000001", Pos: 100})
}

// fakeStreamAt is fakeStream resuming from start.
func fakeStreamAt(t testing.TB, lb *logBuffer, start position) (*stream, *recorder) {
	t.Helper()
	s := &Source{
		bind:   binds.Bind{Key: "default", URI: binds.URI{Database: "shop"}, ExcludeTables: []string{"skip"}},
		log:    testLogger(t, lb),
		info:   &serverInfo{mariadb: true},
		filter: newTableFilter(binds.Bind{URI: binds.URI{Database: "shop"}, ExcludeTables: []string{"skip"}}),
		opts:   tracker.SourceOptions{NativeUnicode: true},
	}
	rec := &recorder{}
	st, err := newStream(s, rec, start)
	if err != nil {
		t.Fatal(err)
	}
	st.schema = newSchemaCache(s.filter, false, map[uint64]string{45: "utf8mb4"}, func(context.Context, string, string) (*infoTable, error) {
		return nil, errors.New("no information_schema here")
	})
	return st, rec
}

type eventMaker struct{ pos uint32 }

// ev wraps e with a header placing it after the previous event.
func (m *eventMaker) ev(typ replication.EventType, e replication.Event, raw []byte) *replication.BinlogEvent {
	size := uint32(replication.EventHeaderSize + len(raw))
	m.pos += size
	hdr := make([]byte, replication.EventHeaderSize)
	return &replication.BinlogEvent{
		Header:  &replication.EventHeader{Timestamp: 1714557600, EventType: typ, ServerID: 1, EventSize: size, LogPos: m.pos},
		Event:   e,
		RawData: append(hdr, raw...),
	}
}

func (m *eventMaker) gtid(seq uint64, flags byte) *replication.BinlogEvent {
	return m.ev(replication.MARIADB_GTID_EVENT, &replication.MariadbGTIDEvent{GTID: gm.MariadbGTID{DomainID: 0, ServerID: 1, SequenceNumber: seq}, Flags: flags}, make([]byte, 20))
}

func (m *eventMaker) tableMap(id uint64, table string) *replication.BinlogEvent {
	tm := &replication.TableMapEvent{
		TableID: id, Schema: []byte("shop"), Table: []byte(table), ColumnCount: 2,
		ColumnType:       []byte{gm.MYSQL_TYPE_LONG, gm.MYSQL_TYPE_VARCHAR},
		ColumnMeta:       []uint16{0, 80},
		ColumnName:       [][]byte{[]byte("id"), []byte("name")},
		SignednessBitmap: []byte{0x80},
		DefaultCharset:   []uint64{45},
		PrimaryKey:       []uint64{0},
		PrimaryKeyPrefix: []uint64{0},
	}
	return m.ev(replication.TABLE_MAP_EVENT, tm, []byte(table))
}

// rows builds a v1 rows event of two-column rows (id, name); for updates
// rows alternate before and after images.
func (m *eventMaker) rows(typ replication.EventType, id uint64, rows ...[2]any) *replication.BinlogEvent {
	body := binary.LittleEndian.AppendUint32(nil, uint32(id))
	body = append(body, 0, 0) // table id is 6 bytes
	body = append(body, 0, 0) // flags
	body = append(body, 2)    // column count
	body = append(body, 0x03) // bitmap1
	e := &replication.RowsEvent{TableID: id, ColumnCount: 2, ColumnBitmap1: []byte{0x03}}
	if typ == replication.UPDATE_ROWS_EVENTv1 {
		body = append(body, 0x03)
		e.ColumnBitmap2 = []byte{0x03}
	}
	for _, r := range rows {
		var nulls byte
		var vals []byte
		if r[0] == nil {
			nulls |= 1
		} else {
			vals = binary.LittleEndian.AppendUint32(vals, r[0].(uint32))
		}
		if r[1] == nil {
			nulls |= 2
		} else {
			s := r[1].(string)
			vals = append(append(vals, byte(len(s))), s...)
		}
		body = append(append(body, nulls), vals...)
	}
	return m.ev(typ, e, body)
}

func (m *eventMaker) xid() *replication.BinlogEvent {
	return m.ev(replication.XID_EVENT, &replication.XIDEvent{XID: 1}, make([]byte, 8))
}

func (m *eventMaker) query(q string) *replication.BinlogEvent {
	return m.ev(replication.QUERY_EVENT, &replication.QueryEvent{Schema: []byte("shop"), Query: []byte(q)}, make([]byte, 13+len(q)))
}

func kinds(recs []tracker.Record) string {
	var b strings.Builder
	for _, r := range recs {
		b.WriteString(map[tracker.RecordKind]string{tracker.RecordBegin: "B", tracker.RecordChange: "C",
			tracker.RecordCommit: "E", tracker.RecordKeepalive: "K", tracker.RecordRollback: "R"}[r.Kind])
	}
	return b.String()
}

func TestStreamTransactions(t *testing.T) {
	lb := &logBuffer{}
	st, rec := fakeStream(t, lb)
	m := &eventMaker{pos: 100}
	ctx := t.Context()
	feed := func(evs ...*replication.BinlogEvent) {
		t.Helper()
		for _, ev := range evs {
			if err := st.handle(ctx, ev); err != nil {
				t.Fatalf("%s: %v", ev.Header.EventType, err)
			}
		}
	}
	// A transaction with an insert of two rows and an update.
	feed(m.gtid(10, replication.BINLOG_MARIADB_FL_TRANSACTIONAL), m.tableMap(5, "t"),
		m.rows(replication.WRITE_ROWS_EVENTv1, 5, [2]any{uint32(1), "a"}, [2]any{uint32(4294967295), nil}),
		m.tableMap(5, "t"),
		m.rows(replication.UPDATE_ROWS_EVENTv1, 5, [2]any{uint32(1), "a"}, [2]any{uint32(1), "b"}),
		m.xid())
	if got := kinds(rec.snapshot()); got != "BCCCE" {
		t.Fatalf("records %s, want BCCCE", got)
	}
	recs := rec.snapshot()
	if recs[0].Tx.TxKey != "gtid-0-1-10" || recs[0].Tx.TxID != "0-1-10" {
		t.Errorf("begin %+v", recs[0].Tx)
	}
	c := recs[2].Change
	if got := string(c.After.AppendJSON(nil)); got != `{"id":4294967295,"name":null}` {
		t.Errorf("second insert %s", got)
	}
	u := recs[3].Change
	if u.Op != tracker.OpUpdate || string(u.Before.AppendJSON(nil)) != `{"id":1,"name":"a"}` || string(u.After.AppendJSON(nil)) != `{"id":1,"name":"b"}` || string(u.Key.AppendJSON(nil)) != `{"id":1}` {
		t.Errorf("update %s", summary(t, u))
	}
	if c.Bind != "" || c.TxID != "" || !c.CommitTime.IsZero() || c.Source != "mariadb" || c.TxKey != "gtid-0-1-10" || !strings.HasPrefix(c.Pos, "bin.000001:") {
		t.Errorf("change fields %+v", c)
	}
	if got, want := recs[4].Pos, (position{GTID: "0-1-10", File: "bin.000001", Pos: m.pos}).String(); got != want {
		t.Errorf("commit pos %s, want %s", got, want)
	}
	if recs[4].Tx.CommitTime.Unix() != 1714557600 {
		t.Errorf("commit time %v", recs[4].Tx.CommitTime)
	}

	// DDL: a keepalive at its end, with its GTID, once the next event
	// shows no rows belong to it.
	feed(m.gtid(11, replication.BINLOG_MARIADB_FL_STANDALONE|replication.BINLOG_MARIADB_FL_DDL), m.query("ALTER TABLE t ADD c INT"))
	if got := kinds(rec.snapshot()[len(recs):]); got != "" {
		t.Fatalf("DDL handed %s before the next event", got)
	}
	feed(m.ev(replication.HEARTBEAT_EVENT, &replication.HeartbeatEvent{}, nil))
	recs = rec.snapshot()
	if last := recs[len(recs)-1]; last.Kind != tracker.RecordKeepalive || !strings.Contains(last.Pos, `"gtid":"0-1-11"`) {
		t.Fatalf("after DDL: %+v", last)
	}
	// An untracked transaction right after: its keepalive waits (throttle)
	// for the next heartbeat.
	st.kaEvery = time.Hour
	n := len(rec.snapshot())
	feed(m.gtid(12, 0), m.tableMap(6, "skip"), m.rows(replication.WRITE_ROWS_EVENTv1, 6, [2]any{uint32(1), "x"}), m.xid())
	if got := kinds(rec.snapshot()[n:]); got != "" {
		t.Fatalf("untracked transaction handed %s", got)
	}
	feed(m.ev(replication.HEARTBEAT_EVENT, &replication.HeartbeatEvent{}, nil))
	recs = rec.snapshot()
	if got := kinds(recs[n:]); got != "K" || !strings.Contains(recs[len(recs)-1].Pos, `"gtid":"0-1-12"`) {
		t.Fatalf("after heartbeat: %s %+v", got, recs[len(recs)-1])
	}
	// A transaction whose GTID repeats an earlier one (gtid_strict_mode
	// off, a replayed binlog) is a new transaction: handed over, under a
	// key naming its place.
	n = len(rec.snapshot())
	start := m.pos
	feed(m.gtid(10, 0), m.tableMap(5, "t"), m.rows(replication.WRITE_ROWS_EVENTv1, 5, [2]any{uint32(9), "again"}), m.xid())
	recs = rec.snapshot()[n:]
	if got := kinds(recs); got != "BCE" {
		t.Fatalf("repeated GTID: handed %s, want BCE", got)
	}
	if want := "gtid-0-1-10-bin.000001-" + itoa(start); recs[0].Tx.TxKey != want || recs[1].Change.TxKey != want || recs[0].Tx.TxID != "0-1-10" {
		t.Errorf("repeated GTID: key %q, id %q, want %q, 0-1-10", recs[0].Tx.TxKey, recs[0].Tx.TxID, want)
	}
	// Statement-format DML is reported, not tracked.
	feed(m.gtid(13, replication.BINLOG_MARIADB_FL_STANDALONE), m.query("/* app */ INSERT INTO t VALUES (5, 'e')"))
	if !strings.Contains(lb.String(), "NOT tracked") || !strings.Contains(lb.String(), `statement="INSERT INTO t"`) || strings.Contains(lb.String(), "'e'") {
		t.Errorf("no statement-format warning:\n%s", lb.String())
	}
	feed(m.ev(replication.HEARTBEAT_EVENT, &replication.HeartbeatEvent{}, nil))
	// TRUNCATE of a tracked table.
	n = len(rec.snapshot())
	feed(m.gtid(14, replication.BINLOG_MARIADB_FL_STANDALONE|replication.BINLOG_MARIADB_FL_DDL), m.query("TRUNCATE TABLE t"))
	recs = rec.snapshot()[n:]
	if kinds(recs) != "BCE" || recs[1].Change.Op != tracker.OpTruncate || recs[1].Change.TxKey != "gtid-0-1-14" {
		t.Fatalf("truncate: %s %+v", kinds(recs), recs)
	}
}

func TestStreamWithoutGTIDs(t *testing.T) {
	st, rec := fakeStream(t, nil)
	st.s.info.mariadb = false
	st.gtids, _ = newGTIDState(false, "")
	st.pos = position{File: "bin.000001", Pos: 100}
	m := &eventMaker{pos: 100}
	anon := m.ev(replication.ANONYMOUS_GTID_EVENT, &replication.GTIDEvent{SID: make([]byte, 16)}, make([]byte, 40))
	start := m.pos - anon.Header.EventSize
	for _, ev := range []*replication.BinlogEvent{anon, m.query("BEGIN"), m.tableMap(5, "t"),
		m.rows(replication.DELETE_ROWS_EVENTv1, 5, [2]any{uint32(3), "c"}), m.query("COMMIT")} {
		if err := st.handle(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	recs := rec.snapshot()
	if kinds(recs) != "BCE" {
		t.Fatalf("records %s", kinds(recs))
	}
	wantKey := "pos-bin.000001-" + itoa(start)
	if recs[0].Tx.TxKey != wantKey || recs[0].Tx.TxID != "bin.000001:"+itoa(start) {
		t.Errorf("tx %+v, want key %s", recs[0].Tx, wantKey)
	}
	if d := recs[1].Change; d.Op != tracker.OpDelete || !d.After.IsZero() || string(d.Before.AppendJSON(nil)) != `{"id":3,"name":"c"}` {
		t.Errorf("delete %s", summary(t, d))
	}
	if got, want := recs[2].Pos, `{"file":"bin.000001","pos":`+itoa(m.pos)+`}`; got != want {
		t.Errorf("commit pos %s, want %s", got, want)
	}
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

// MySQL 8 logs CREATE TABLE ... SELECT as the DDL followed by its rows and
// an XID, all under the DDL's GTID: the rows are one transaction with that
// key, and the GTID is not checkpointed before them.
func TestStreamCreateSelect(t *testing.T) {
	st, rec := fakeStream(t, nil)
	st.s.info.mariadb = false
	st.gtids, _ = newGTIDState(false, "")
	const sid = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	m := &eventMaker{pos: 100}
	gtidEv := m.ev(replication.GTID_EVENT, &replication.GTIDEvent{SID: []byte{0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62}, GNO: 7}, make([]byte, 40))
	for _, ev := range []*replication.BinlogEvent{gtidEv, m.query("CREATE TABLE t2 SELECT * FROM t"), m.tableMap(5, "t"),
		m.rows(replication.WRITE_ROWS_EVENTv1, 5, [2]any{uint32(1), "a"}), m.xid()} {
		if err := st.handle(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	recs := rec.snapshot()
	if kinds(recs) != "BCE" || recs[0].Tx.TxKey != "gtid-"+sid+"-7" || !strings.Contains(recs[2].Pos, sid+":7") {
		t.Fatalf("records %s %+v", kinds(recs), recs)
	}
}

func TestStreamRecoversPanics(t *testing.T) {
	st, _ := fakeStream(t, nil)
	m := &eventMaker{pos: 1000}
	ev := m.ev(replication.ROTATE_EVENT, (*replication.RotateEvent)(nil), nil)
	err := st.handle(t.Context(), ev)
	if !srckit.IsPermanent(err) || !strings.Contains(err.Error(), "bin.000001:1000") || !strings.Contains(err.Error(), "panic") {
		t.Fatalf("got %v, want a decode error naming the position", err)
	}
}

func TestStreamRowsErrors(t *testing.T) {
	st, _ := fakeStream(t, nil)
	m := &eventMaker{pos: 100}
	ctx := t.Context()
	if err := st.handle(ctx, m.gtid(10, 0)); err != nil {
		t.Fatal(err)
	}
	// Rows without their TABLE_MAP.
	err := st.handle(ctx, m.rows(replication.WRITE_ROWS_EVENTv1, 77, [2]any{uint32(1), "a"}))
	if err == nil || !strings.Contains(err.Error(), "without its TABLE_MAP") {
		t.Fatalf("got %v", err)
	}
	// A truncated row.
	if err := st.handle(ctx, m.tableMap(5, "t")); err != nil {
		t.Fatal(err)
	}
	ev := m.rows(replication.WRITE_ROWS_EVENTv1, 5, [2]any{uint32(1), "abc"})
	ev.RawData = ev.RawData[:len(ev.RawData)-2]
	err = st.handle(ctx, ev)
	if !srckit.IsPermanent(err) || !strings.Contains(err.Error(), "shop.t") {
		t.Fatalf("got %v, want a decode error naming the table", err)
	}
}

func TestStatementHead(t *testing.T) {
	for _, tc := range []struct{ q, want string }{
		{"INSERT INTO t VALUES (1, 'secret')", "INSERT INTO t"},
		{"insert into `t`(a,b) values (1,2)", "insert into `t`"},
		{"UPDATE users SET password = 'x' WHERE id = 1", "UPDATE users"},
		{"DELETE FROM t WHERE a = 'b'", "DELETE FROM t"},
		{"/* app */ REPLACE INTO t SELECT * FROM u", "REPLACE INTO t"},
		{"LOAD DATA INFILE 'f' INTO TABLE t", "LOAD DATA INFILE"},
	} {
		if got := statementHead([]byte(tc.q)); got != tc.want {
			t.Errorf("statementHead(%q) = %q, want %q", tc.q, got, tc.want)
		}
	}
}

func TestDemoteHandler(t *testing.T) {
	lb := &logBuffer{}
	h := slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})
	log := slog.New(demoteHandler{h})
	log.Error("kill last connection", "config", "secret-ish", "id", 5)
	out := lb.String()
	if !strings.Contains(out, "level=DEBUG") || strings.Contains(out, "secret-ish") || !strings.Contains(out, "id=5") {
		t.Errorf("got %s", out)
	}
}
