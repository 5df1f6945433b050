package postgres

import (
	"errors"
	"slices"
	"strings"
)

// position is the text the source hands over as Record.Pos and resumes
// from: "X/X", the end of the last transaction handed over (everything
// that ended at or before it is published), followed, while prepared
// transactions are open, by ";prepared=" and the LSNs of their PREPARE
// TRANSACTION records: "0/16B3F48;prepared=0/16B2000,0/16B2A10".
//
// A prepared transaction's before_commit events went out at its prepare,
// but the tracker keeps its changes in memory until COMMIT PREPARED: after
// a restart the server must send it again. It does so only when decoding
// starts at or before its prepare, so the position confirmed to the server
// (the slot's confirmed_flush_lsn) is the oldest of these LSNs, and Run
// starts there, skipping what ended at or before the first LSN but the
// prepared transactions listed.
type position struct {
	through  lsn
	prepared []lsn // sorted, no duplicates
}

const preparedTag = ";prepared="

// String returns the position's text form.
func (p position) String() string {
	if len(p.prepared) == 0 {
		return formatLSN(p.through)
	}
	b := make([]byte, 0, 18+len(preparedTag)+18*len(p.prepared))
	b = appendLSN(b, p.through)
	b = append(b, preparedTag...)
	for i, l := range p.prepared {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendLSN(b, l)
	}
	return string(b)
}

// confirm returns the position to confirm to the server and to start
// decoding at: through, or the oldest prepare when that is older.
func (p position) confirm() lsn {
	if len(p.prepared) > 0 && p.prepared[0] < p.through {
		return p.prepared[0]
	}
	return p.through
}

var errBadPosition = errors.New(`not a position (want X/X, optionally followed by ";prepared=X/X,...")`)

// parsePosition parses a position's text; "" is the zero position.
func parsePosition(s string) (position, error) {
	head, list, hasList := strings.Cut(s, preparedTag)
	through, err := parseLSN(head)
	if err != nil {
		return position{}, errBadPosition
	}
	p := position{through: through}
	if !hasList {
		return p, nil
	}
	if head == "" || list == "" {
		return position{}, errBadPosition
	}
	for part := range strings.SplitSeq(list, ",") {
		l, err := parseLSN(part)
		if err != nil || part == "" {
			return position{}, errBadPosition
		}
		p.prepared = append(p.prepared, l)
	}
	slices.Sort(p.prepared)
	p.prepared = slices.Compact(p.prepared)
	return p, nil
}

// positionAt returns the position after the transaction (or keepalive)
// ending at through, with the prepared transactions open now.
func (c *carried) positionAt(through lsn) position {
	p := position{through: through}
	if len(c.prepared) == 0 && len(c.relisted) == 0 {
		return p
	}
	for _, t := range c.prepared {
		p.prepared = append(p.prepared, t.prepareLSN)
	}
	for l := range c.relisted {
		p.prepared = append(p.prepared, l)
	}
	slices.Sort(p.prepared)
	p.prepared = slices.Compact(p.prepared)
	return p
}
