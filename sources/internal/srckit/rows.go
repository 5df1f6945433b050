package srckit

import (
	"encoding/json"

	"github.com/trackerd/trackerd/tracker"
)

// RowBuilder collects the JSON values of one change's row images (key,
// before, after) in one buffer, and hands them over with two allocations
// whatever the change's width: one for the bytes, one for the values. A
// source appends each value to [RowBuilder.Buf] and records it with
// [RowBuilder.Add] (or records a value the server did not send with
// [RowBuilder.Absent]), then takes the values with [RowBuilder.Values]
// and slices its rows out of them with [Row]. It is reused from change to
// change, and not safe for concurrent use.
type RowBuilder struct {
	buf []byte
	// offs holds each value's [start, end) in buf; -1, -1 for one that
	// was not sent.
	offs []int
}

// maxKept is the largest buffer a RowBuilder keeps for the next change:
// a huge row's buffer is not held for the session.
const maxKept = 1 << 20

// Reset starts a new change.
func (b *RowBuilder) Reset() {
	b.buf = b.buf[:0]
	b.offs = b.offs[:0]
}

// Buf returns the buffer to append the next value to; pass what the
// appending returns to Add.
func (b *RowBuilder) Buf() []byte { return b.buf }

// Add records the value appended to Buf: buf is Buf's result with the
// value appended.
func (b *RowBuilder) Add(buf []byte) {
	b.offs = append(b.offs, len(b.buf), len(buf))
	b.buf = buf
}

// Null records a JSON null.
func (b *RowBuilder) Null() {
	b.offs = append(b.offs, len(b.buf), len(b.buf)+4)
	b.buf = append(b.buf, "null"...)
}

// Absent records a value the server did not send (a nil Row value: see
// [tracker.Row]).
func (b *RowBuilder) Absent() { b.offs = append(b.offs, -1, -1) }

// Len returns the number of values recorded since Reset.
func (b *RowBuilder) Len() int { return len(b.offs) / 2 }

// Values returns the values recorded since Reset, in order, nil for those
// not sent, in a slice with room for extra more at its end (for a key
// whose values are taken from an image). The values share one copy of the
// buffer, which the next change does not touch.
func (b *RowBuilder) Values(extra int) []json.RawMessage {
	n := b.Len()
	data := make([]byte, len(b.buf))
	copy(data, b.buf)
	vals := make([]json.RawMessage, n+extra)
	for i := range n {
		if s := b.offs[2*i]; s >= 0 {
			e := b.offs[2*i+1]
			vals[i] = json.RawMessage(data[s:e:e])
		}
	}
	if cap(b.buf) > maxKept {
		b.buf = nil
	}
	return vals
}

// Row returns the row image of names whose values start at vals[at], its
// values' capacity clipped so that no row can grow into the next.
func Row(names []string, vals []json.RawMessage, at int) tracker.Row {
	end := at + len(names)
	return tracker.Row{Names: names, Values: vals[at:end:end]}
}
