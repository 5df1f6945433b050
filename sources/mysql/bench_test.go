package mysql

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/trackerd/trackerd/tracker"
)

// benchTable is a typical row: id BIGINT PK, name VARCHAR(64), qty INT,
// price DECIMAL(10,2), created DATETIME(6), note TEXT.
func benchTable() (*tableInfo, []byte) {
	cols := []column{
		newColumn("id", gm.MYSQL_TYPE_LONGLONG, 0),
		newColumn("name", gm.MYSQL_TYPE_VARCHAR, 256),
		newColumn("qty", gm.MYSQL_TYPE_LONG, 0),
		newColumn("price", gm.MYSQL_TYPE_NEWDECIMAL, 10<<8|2),
		newColumn("created", gm.MYSQL_TYPE_DATETIME2, 6),
		newColumn("note", gm.MYSQL_TYPE_BLOB, 2),
	}
	ti := &tableInfo{schema: "shop", table: "orders", tracked: true, cols: cols, keyIdx: []int{0}, keyNames: []string{"id"}}
	for _, c := range cols {
		ti.names = append(ti.names, c.name)
	}
	row := []byte{0} // null bitmap
	row = append(row, le(8, 123456789)...)
	row = append(row, 0, 0) // two-byte length prefix, filled below
	name := "Widget, blue — large"
	row[len(row)-2] = byte(len(name))
	row = append(row, name...)
	row = append(row, le(4, 42)...)
	row = append(row, 0x80, 0x00, 0x30, 0x39, 0x07) // 12345.07 in DECIMAL(10,2)
	row = append(row, encodeDatetime2(2024, 5, 1, 10, 0, 0, 123456, 6)...)
	row = append(row, prefixed(2, "deliver to the back door, ring twice")...)
	return ti, row
}

func BenchmarkDecodeRow(b *testing.B) {
	ti, row := benchTable()
	d := rowDecoder{ti: ti}
	bitmap := []byte{0x3F}
	b.ReportAllocs()
	b.SetBytes(int64(len(row)))
	for b.Loop() {
		c, n, err := d.change(tracker.OpInsert, row, bitmap, nil)
		if err != nil || n != len(row) || c == nil {
			b.Fatalf("decode: %v (%d of %d bytes)", err, n, len(row))
		}
	}
}

func BenchmarkDecodeUpdateRow(b *testing.B) {
	ti, row := benchTable()
	d := rowDecoder{ti: ti}
	pair := append(append([]byte{}, row...), row...)
	bitmap := []byte{0x3F}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := d.change(tracker.OpUpdate, pair, bitmap, bitmap); err != nil {
			b.Fatal(err)
		}
	}
}

// imageSize walks a row image as the decoder reads it.
func TestImageSize(t *testing.T) {
	ti, row := benchTable()
	d := rowDecoder{ti: ti}
	bitmap := []byte{0x3F}
	_, n, err := d.change(tracker.OpInsert, row, bitmap, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := imageSize(ti, row, bitmap, false); err != nil || got != n || n != len(row) {
		t.Fatalf("imageSize = %d, %v; decoder used %d of %d", got, err, n, len(row))
	}
	rows, err := countImages(ti, append(append(append([]byte{}, row...), row...), row...), bitmap, bitmap, 1, false)
	if err != nil || rows != 3 {
		t.Fatalf("countImages = %d, %v, want 3", rows, err)
	}
	if rows, err := countImages(ti, append(append([]byte{}, row...), row...), bitmap, bitmap, 2, false); err != nil || rows != 1 {
		t.Fatalf("countImages of an update = %d, %v, want 1", rows, err)
	}
	// A partial JSON update's after image: binlog_row_value_options, a
	// bitmap of JSON columns (none here), then the image.
	partial := append(append(append([]byte{}, row...), 1, 0), row...)
	ti.jsonCols = 3
	if rows, err := countImages(ti, partial, bitmap, bitmap, 2, true); err != nil || rows != 1 {
		t.Fatalf("countImages of a partial update = %d, %v, want 1", rows, err)
	}
}

// BenchmarkCountRows walks a row of an untracked table by size only.
func BenchmarkCountRows(b *testing.B) {
	ti, row := benchTable()
	bitmap := []byte{0x3F}
	b.ReportAllocs()
	b.SetBytes(int64(len(row)))
	for b.Loop() {
		if n, err := countImages(ti, row, bitmap, nil, 1, false); err != nil || n != 1 {
			b.Fatal(n, err)
		}
	}
}

// countingHandler counts changes and commits.
type countingHandler struct{ changes, commits atomic.Int64 }

func (h *countingHandler) Handle(_ context.Context, r tracker.Record) error {
	switch r.Kind {
	case tracker.RecordChange:
		h.changes.Add(1)
	case tracker.RecordCommit:
		h.commits.Add(1)
	}
	return nil
}

// BenchmarkStreamEvents runs synthetic one-row transactions (GTID,
// TABLE_MAP, WRITE_ROWS, XID) through the event handler: the source's own
// cost per row, without the network and go-mysql's event parsing.
func BenchmarkStreamEvents(b *testing.B) { benchmarkStreamEvents(b, "t") }

// BenchmarkStreamEventsUntracked is BenchmarkStreamEvents on a table the
// bind does not track: its rows are counted (for Change.Index), not
// decoded, and no change is handed over.
func BenchmarkStreamEventsUntracked(b *testing.B) { benchmarkStreamEvents(b, "skip") }

func benchmarkStreamEvents(b *testing.B, table string) {
	st, _ := fakeStream(b, nil)
	h := &countingHandler{}
	st.h = h
	m := &eventMaker{pos: 100}
	tm := m.tableMap(5, table)
	ctx := context.Background()
	evs := []*replication.BinlogEvent{nil, tm, m.rows(replication.WRITE_ROWS_EVENTv1, 5, [2]any{uint32(1), "some name"}), m.xid()}
	seq := uint64(10)
	b.ReportAllocs()
	for b.Loop() {
		seq++
		evs[0] = m.gtid(seq, 0)
		for _, ev := range evs {
			if err := st.handle(ctx, ev); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s") // one row per transaction, tracked or not
}

// BenchmarkIntegrationThroughput writes rows to a real server, then
// streams them from the position before the writes to a counting handler,
// end to end (server, network, go-mysql, decoding): rows/s.
func BenchmarkIntegrationThroughput(b *testing.B) {
	for _, tc := range []struct {
		name      string
		rows, per int // rows in all, rows per transaction
	}{
		{"100k rows in 1k-row transactions", 100_000, 1000},
		{"20k one-row transactions", 20_000, 1},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := newEnv(b)
			e.exec("CREATE TABLE orders (id BIGINT PRIMARY KEY, name VARCHAR(64), qty INT, price DECIMAL(10,2), created DATETIME(6), note TEXT)")
			bind := e.bind()
			s := e.open(bind, nil, true)
			from := currentPos(b, s)
			s.Close()
			const batch = 500
			var sb strings.Builder
			conn, err := e.dbx.Conn(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			id := 0
			for id < tc.rows {
				if tc.per > 1 {
					if _, err := conn.ExecContext(context.Background(), "BEGIN"); err != nil {
						b.Fatal(err)
					}
				}
				for inTx := 0; inTx < tc.per && id < tc.rows; {
					sb.Reset()
					sb.WriteString("INSERT INTO orders VALUES ")
					n := min(batch, tc.per-inTx, tc.rows-id)
					for k := 0; k < n; k++ {
						if k > 0 {
							sb.WriteByte(',')
						}
						id++
						fmt.Fprintf(&sb, "(%d,'Widget %d',%d,%d.25,'2024-05-01 10:00:00.123456','deliver to the back door')", id, id, id%100, id%1000)
					}
					inTx += n
					if _, err := conn.ExecContext(context.Background(), sb.String()); err != nil {
						b.Fatal(err)
					}
				}
				if tc.per > 1 {
					if _, err := conn.ExecContext(context.Background(), "COMMIT"); err != nil {
						b.Fatal(err)
					}
				}
			}
			conn.Close()
			b.ReportAllocs()
			total := 0
			for b.Loop() {
				src := e.open(bind, nil, true)
				h := &countingHandler{}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- src.Run(ctx, from, h) }()
				deadline := time.Now().Add(5 * time.Minute)
				for h.changes.Load() < int64(tc.rows) {
					if time.Now().After(deadline) {
						b.Fatalf("streamed %d of %d rows", h.changes.Load(), tc.rows)
					}
					time.Sleep(time.Millisecond)
				}
				cancel()
				<-done
				total += tc.rows
			}
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
