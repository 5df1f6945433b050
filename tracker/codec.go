package tracker

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The spill codec: a compact binary form of a Change, for transaction
// buffers that overflow to disk. Strings and byte strings are uvarint
// length-prefixed; rows are a column count, then names and values (a value
// of length 0 with the "absent" flag is a column that was not sent).

const codecVersion = 2

var errCodecShort = errors.New("spill record truncated")

// appendChange appends c's binary encoding to b.
func appendChange(b []byte, c *Change) []byte {
	b = append(b, codecVersion)
	for _, s := range [...]string{c.Bind, c.Source, c.Origin, string(c.Op), c.Schema, c.Table, c.TxID, c.TxKey, c.SubTx, c.Pos} {
		b = appendStr(b, s)
	}
	b = binary.AppendUvarint(b, uint64(c.Seq))
	b = binary.AppendVarint(b, c.Index)
	if c.CommitTime.IsZero() {
		b = binary.AppendVarint(b, 0)
		b = append(b, 0)
	} else {
		b = binary.AppendVarint(b, c.CommitTime.UnixNano())
		b = append(b, 1)
	}
	b = appendRow(b, c.Key)
	b = appendRow(b, c.Before)
	b = appendRow(b, c.After)
	b = appendStrs(b, c.Unchanged)
	b = appendStrs(b, c.Truncated)
	return b
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStrs(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendStr(b, s)
	}
	return b
}

func appendRow(b []byte, r Row) []byte {
	if r.IsZero() {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(len(r.Names)))
	for i, n := range r.Names {
		b = appendStr(b, n)
		v := r.Values[i]
		if v == nil {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		b = appendStr(b, string(v))
	}
	return b
}

// decoder reads the spill codec. names interns column-name slices so that
// changes of one table read back share them, as they did in memory.
type decoder struct {
	b     []byte
	err   error
	names map[string][]string
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCodecShort
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte1() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) str() string { return string(d.bytes()) }

func (d *decoder) strs() []string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = d.str()
	}
	return ss
}

func (d *decoder) row() Row {
	if d.byte1() == 0 {
		return Row{}
	}
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return Row{}
	}
	names := make([]string, n)
	values := make([]json.RawMessage, n)
	for i := range names {
		names[i] = d.str()
		if d.byte1() == 1 {
			// Copy: the record buffer is reused for the next record.
			values[i] = json.RawMessage(d.str())
		}
	}
	return Row{Names: d.intern(names), Values: values}
}

func (d *decoder) intern(names []string) []string {
	if d.names == nil {
		d.names = make(map[string][]string)
	}
	key := strings.Join(names, "\x00")
	if shared, ok := d.names[key]; ok {
		return shared
	}
	d.names[key] = names
	return names
}

// decodeChange decodes one record produced by appendChange.
func (d *decoder) decodeChange(rec []byte) (Change, error) {
	d.b, d.err = rec, nil
	if v := d.byte1(); v != codecVersion && d.err == nil {
		return Change{}, fmt.Errorf("spill record version %d, want %d", v, codecVersion)
	}
	var c Change
	c.Bind = d.str()
	c.Source = d.str()
	c.Origin = d.str()
	c.Op = Op(d.str())
	c.Schema = d.str()
	c.Table = d.str()
	c.TxID = d.str()
	c.TxKey = d.str()
	c.SubTx = d.str()
	c.Pos = d.str()
	c.Seq = int(d.uvarint())
	c.Index = d.varint()
	ns := d.varint()
	if d.byte1() == 1 {
		c.CommitTime = time.Unix(0, ns).UTC()
	}
	c.Key = d.row()
	c.Before = d.row()
	c.After = d.row()
	c.Unchanged = d.strs()
	c.Truncated = d.strs()
	if d.err != nil {
		return Change{}, d.err
	}
	if len(d.b) != 0 {
		return Change{}, fmt.Errorf("spill record has %d trailing bytes", len(d.b))
	}
	return c, nil
}
