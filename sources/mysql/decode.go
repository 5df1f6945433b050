package mysql

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/trackerd/trackerd/sources/internal/srckit"
	"github.com/trackerd/trackerd/tracker"
)

// Row images: the bytes of a rows event, as the binlog holds them, become
// a Change's Key, Before and After, straight to JSON (values.go encodes
// each value). Pure: no I/O, no server; FuzzDecodeValue and the stream
// tests feed it.

// rowsBody returns the row images of a rows event: its body after the
// post-header, without the checksum, decompressed for MariaDB's compressed
// events.
func (st *stream) rowsBody(ev *replication.BinlogEvent, e *replication.RowsEvent) ([]byte, error) {
	data := ev.RawData
	if len(data) < replication.EventHeaderSize {
		return nil, errShort
	}
	data = data[replication.EventHeaderSize:]
	if st.checksum && !st.inPayload {
		if len(data) < replication.BinlogChecksumLength {
			return nil, errShort
		}
		data = data[:len(data)-replication.BinlogChecksumLength]
	}
	idSize := 6
	t := int(ev.Header.EventType)
	if t >= 1 && t <= len(st.headerLens) && st.headerLens[t-1] == 6 {
		idSize = 4
	}
	p := idSize + 2
	switch ev.Header.EventType {
	case replication.WRITE_ROWS_EVENTv2, replication.UPDATE_ROWS_EVENTv2, replication.DELETE_ROWS_EVENTv2, replication.PARTIAL_UPDATE_ROWS_EVENT:
		if len(data) < p+2 {
			return nil, errShort
		}
		p += int(binary.LittleEndian.Uint16(data[p:]))
	}
	if len(data) < p {
		return nil, errShort
	}
	_, _, n := gm.LengthEncodedInt(data[p:])
	p += n + len(e.ColumnBitmap1) + len(e.ColumnBitmap2)
	if len(data) < p {
		return nil, errShort
	}
	body := data[p:]
	switch ev.Header.EventType {
	case replication.MARIADB_WRITE_ROWS_COMPRESSED_EVENT_V1, replication.MARIADB_UPDATE_ROWS_COMPRESSED_EVENT_V1, replication.MARIADB_DELETE_ROWS_COMPRESSED_EVENT_V1:
		return gm.DecompressMariadbData(body)
	}
	return body, nil
}

// presentCount returns how many of a table's n columns the bitmap present
// marks as in the image, and false when the bitmap is too short.
func presentCount(present []byte, n int) (int, bool) {
	if len(present) < (n+7)/8 {
		return 0, false
	}
	count := 0
	for i := 0; i < n/8; i++ {
		count += bits.OnesCount8(present[i])
	}
	if n%8 != 0 {
		count += bits.OnesCount8(present[n/8] & byte(1<<uint(n%8)-1))
	}
	return count, true
}

// rowDecoder decodes the row images of one rows event.
type rowDecoder struct {
	ti     *tableInfo
	escape bool
	rows   srckit.RowBuilder // reused from change to change
}

// image decodes one row image into d.rows, a value for each column (not
// sent for a column the image leaves out).
func (d *rowDecoder) image(data, present []byte) (int, error) {
	cols := d.ti.cols
	count, ok := presentCount(present, len(cols))
	if !ok {
		return 0, errShort
	}
	nullBytes := (count + 7) / 8
	if len(data) < nullBytes {
		return 0, errShort
	}
	nulls := data[:nullBytes]
	p := nullBytes
	k := 0
	rb := &d.rows
	for i := range cols {
		if present[i>>3]&(1<<uint(i&7)) == 0 {
			rb.Absent()
			continue
		}
		if nulls[k>>3]&(1<<uint(k&7)) != 0 {
			rb.Null()
		} else {
			buf, used, err := appendValue(rb.Buf(), &cols[i], data[p:], d.escape)
			if err != nil {
				return 0, fmt.Errorf("column %q: %w", cols[i].name, err)
			}
			rb.Add(buf)
			p += used
		}
		k++
	}
	return p, nil
}

// change decodes the next row (an update's before and after images) from
// data and returns it as a Change with its row images, key and unchanged
// columns set, and the bytes it used.
func (d *rowDecoder) change(op tracker.Op, data, bitmap1, bitmap2 []byte) (*tracker.Change, int, error) {
	d.rows.Reset()
	n, err := d.image(data, bitmap1)
	if err != nil {
		return nil, 0, err
	}
	images := 1
	if op == tracker.OpUpdate {
		m, err := d.image(data[n:], bitmap2)
		if err != nil {
			return nil, 0, err
		}
		n += m
		images = 2
	}
	ti := d.ti
	ncol := len(ti.cols)
	// The key's values are the image's: room for them at the end.
	vals := d.rows.Values(len(ti.keyIdx))
	c := &tracker.Change{Op: op, Schema: ti.schema, Table: ti.table}
	first := srckit.Row(ti.names, vals, 0)
	var keyFrom tracker.Row
	switch op {
	case tracker.OpInsert:
		c.After = first
		keyFrom = first
	case tracker.OpDelete:
		c.Before = first
		keyFrom = first
	case tracker.OpUpdate:
		c.Before = first
		c.After = srckit.Row(ti.names, vals, ncol)
		// The key names the row the update applies to: its old key, as
		// PostgreSQL sends it when an update changes the key.
		keyFrom = c.Before
	}
	if len(ti.keyIdx) > 0 {
		kv := vals[images*ncol:]
		for j, idx := range ti.keyIdx {
			kv[j] = keyFrom.Values[idx]
		}
		c.Key = tracker.Row{Names: ti.keyNames, Values: kv}
	}
	if !c.After.IsZero() {
		for i, v := range c.After.Values {
			if v == nil {
				c.Unchanged = append(c.Unchanged, ti.names[i])
			}
		}
	}
	return c, n, nil
}
