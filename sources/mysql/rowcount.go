package mysql

import (
	"fmt"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/trackerd/trackerd/sources/internal/srckit"
)

// countRows adds the rows of a rows event of an untracked table to the
// open transaction's count, so that the transaction's tracked changes get
// their places among all its rows (see tracker.Change.Index) whichever
// tables a bind follows. The row images are walked by size only, with the
// column types and metadata of the TABLE_MAP: nothing is decoded, and
// information_schema is never asked.
func (st *stream) countRows(ev *replication.BinlogEvent, e *replication.RowsEvent, ti *tableInfo) error {
	images, partial := 1, false
	switch ev.Header.EventType {
	case replication.WRITE_ROWS_EVENTv0, replication.WRITE_ROWS_EVENTv1, replication.WRITE_ROWS_EVENTv2, replication.MARIADB_WRITE_ROWS_COMPRESSED_EVENT_V1,
		replication.DELETE_ROWS_EVENTv0, replication.DELETE_ROWS_EVENTv1, replication.DELETE_ROWS_EVENTv2, replication.MARIADB_DELETE_ROWS_COMPRESSED_EVENT_V1:
	case replication.UPDATE_ROWS_EVENTv0, replication.UPDATE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv2, replication.MARIADB_UPDATE_ROWS_COMPRESSED_EVENT_V1:
		images = 2
	case replication.PARTIAL_UPDATE_ROWS_EVENT:
		images, partial = 2, true
	default:
		return nil
	}
	body, err := st.rowsBody(ev, e)
	if err == nil && int(e.ColumnCount) != len(ti.cols) {
		err = fmt.Errorf("%d columns, its TABLE_MAP %d", e.ColumnCount, len(ti.cols))
	}
	if err != nil {
		return srckit.Permanent(fmt.Errorf("rows event at %s of untracked table %s.%s: %w", st.posOf(ev), ti.schema, ti.table, err))
	}
	n, err := countImages(ti, body, e.ColumnBitmap1, e.ColumnBitmap2, images, partial)
	if err != nil {
		return srckit.Permanent(fmt.Errorf("count rows of untracked table %s.%s at %s: %w", ti.schema, ti.table, st.posOf(ev), err))
	}
	st.tx.rows += int64(n)
	return nil
}

// countImages returns the number of rows in body, each of images row
// images (2 for updates); partial is set for MySQL's PARTIAL_UPDATE_ROWS_EVENT,
// whose after images start with binlog_row_value_options and, for partial
// JSON updates, a bitmap of the JSON columns.
func countImages(ti *tableInfo, body, bitmap1, bitmap2 []byte, images int, partial bool) (int, error) {
	rows := 0
	for len(body) > 0 {
		n, err := imageSize(ti, body, bitmap1, false)
		if err != nil {
			return rows, fmt.Errorf("row %d: %w", rows+1, err)
		}
		if images == 2 {
			m, err := imageSize(ti, body[n:], bitmap2, partial)
			if err != nil {
				return rows, fmt.Errorf("row %d, after image: %w", rows+1, err)
			}
			n += m
		}
		body = body[n:]
		rows++
	}
	return rows, nil
}

// imageSize returns the byte size of the row image at the start of data.
func imageSize(ti *tableInfo, data, present []byte, partial bool) (int, error) {
	cols := ti.cols
	count, ok := presentCount(present, len(cols))
	if !ok {
		return 0, errShort
	}
	p := 0
	if partial {
		if len(data) == 0 {
			return 0, errShort
		}
		opts, _, m := gm.LengthEncodedInt(data)
		p += m
		if opts&1 != 0 { // PARTIAL_JSON_UPDATES: a bit per JSON column
			p += (ti.jsonCols + 7) / 8
		}
		if len(data) < p {
			return 0, errShort
		}
	}
	nullBytes := (count + 7) / 8
	if len(data) < p+nullBytes {
		return 0, errShort
	}
	nulls := data[p : p+nullBytes]
	p += nullBytes
	k := 0
	for i := range cols {
		if present[i>>3]&(1<<uint(i&7)) == 0 {
			continue
		}
		if nulls[k>>3]&(1<<uint(k&7)) == 0 {
			m, err := valueSize(&cols[i], data[p:])
			if err != nil {
				return 0, fmt.Errorf("column %d: %w", i+1, err)
			}
			p += m
		}
		k++
	}
	return p, nil
}
