package nats

import (
	"cmp"
	"slices"

	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire"
)

// truncate re-encodes ev into b with the largest columns of its row images
// left out — a column's value in both images, never the key — until the
// message fits limit, and returns the names of the columns left out; size
// is the message's size as it is. ok is false when even leaving every
// non-key value out is not enough. ev and its change are not modified: the
// tracker shares them (and ev.Data) between the phases.
func (l *lane) truncate(b []byte, ev *tracker.Event, size, limit int) (out []byte, cols []string, ok bool) {
	c := *ev.Change
	c.Before = copyRow(c.Before)
	c.After = copyRow(c.After)
	c.Truncated = slices.Clip(c.Truncated)

	// A column's weight is its bytes in both images: "name":value, each.
	type cand struct {
		name string
		size int
	}
	var cands []cand
	for _, r := range []tracker.Row{c.Before, c.After} {
		for i, v := range r.Values {
			if v == nil {
				continue
			}
			n := r.Names[i]
			j := slices.IndexFunc(cands, func(c cand) bool { return c.name == n })
			if j < 0 {
				j = len(cands)
				cands = append(cands, cand{name: n})
			}
			cands[j].size += len(n) + len(v) + 4
		}
	}
	// Largest first; ties in column order, so that both phases of a change
	// lose the same columns.
	slices.SortStableFunc(cands, func(a, b cand) int { return cmp.Compare(b.size, a.size) })

	e := *ev
	e.Change = &c
	hdr := maxHeaderLen(ev.ID)
	for _, cd := range cands {
		for _, r := range []tracker.Row{c.Before, c.After} {
			if i := slices.Index(r.Names, cd.name); i >= 0 {
				r.Values[i] = nil
			}
		}
		size -= cd.size
		if !slices.Contains(c.Truncated, cd.name) {
			c.Truncated = append(c.Truncated, cd.name)
			size += len(cd.name) + 3
		}
		cols = append(cols, cd.name)
		// The estimate is off by a few bytes (commas, the truncated
		// member's first appearance, escaped names): measure when close.
		if size > limit+64 {
			continue
		}
		l.dataBuf = c.AppendJSON(l.dataBuf[:0])
		out = wire.AppendEvent(b, &e, l.dataBuf)
		if size = len(out) + hdr; size <= limit {
			return out, cols, true
		}
	}
	return nil, cols, false
}

// copyRow returns r with its own Values, sharing Names (which rows of a
// table share and nobody modifies).
func copyRow(r tracker.Row) tracker.Row {
	if r.IsZero() {
		return r
	}
	return tracker.Row{Names: r.Names, Values: slices.Clone(r.Values)}
}
