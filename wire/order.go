package wire

import (
	"strconv"
	"strings"
)

// HeaderOrder is the header by which consumers restore a bind's order
// where the stream may hold it out of order (streams without
// allow_batched): "<run>.<laneseq>.<phaseseq>", run a token of the
// publishing lane's run (a new one at each start), laneseq the event's
// place in the bind's stream of change events of this run (1, 2, 3...),
// phaseseq its place among the run's change events of its phase. A
// snapshot's lifecycle events, on their control subjects, carry no such
// header and are not counted: a subscriber to a bind's changes never
// waits for them.
const HeaderOrder = "Trackerd-Order"

// AppendOrder appends a HeaderOrder value to b.
func AppendOrder(b []byte, run string, laneSeq, phaseSeq uint64) []byte {
	b = append(b, run...)
	b = append(b, '.')
	b = strconv.AppendUint(b, laneSeq, 10)
	b = append(b, '.')
	return strconv.AppendUint(b, phaseSeq, 10)
}

// ParseOrder reads a HeaderOrder value; ok is false unless it has the
// form AppendOrder writes, with a run and both counts at least 1.
func ParseOrder(v string) (run string, laneSeq, phaseSeq uint64, ok bool) {
	run, rest, ok := strings.Cut(v, ".")
	if !ok || run == "" {
		return "", 0, 0, false
	}
	s, p, ok := strings.Cut(rest, ".")
	if !ok {
		return "", 0, 0, false
	}
	seq, err1 := strconv.ParseUint(s, 10, 64)
	pseq, err2 := strconv.ParseUint(p, 10, 64)
	if err1 != nil || err2 != nil || seq == 0 || pseq == 0 {
		return "", 0, 0, false
	}
	return run, seq, pseq, true
}
